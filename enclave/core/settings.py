"""The enclave's one typed settings object.

Paths, limits and thresholds live here, never as literals elsewhere. Every setting carries a help
text (``docs/settings.md`` is generated from these, and a test fails when one is undocumented).

Resolution order: defaults < ``<home>/settings.toml`` < environment (``ENCLAVE_HOME`` only) <
explicit ``--home`` on the command line. The machine-wide names of ``[hub]`` (Unix users and
groups, the nftables table, the ports) default to those of the home's instance
(:func:`instance_names`), so two homes never share them; the file's own values win.
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from dataclasses import dataclass, field, fields, make_dataclass, replace
from pathlib import Path
from typing import Any

from enclave.core.disclosure_registry import overrides as disclosure_overrides
from enclave.core.errors import ConfigurationError

DEFAULT_HOME = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "enclave"
#: the instance whose machine-wide names are the [hub] defaults below (the default home's)
DEFAULT_INSTANCE = "enclave"
#: an instance name: short enough that "<instance>-policymakers" is a valid group name (32)
INSTANCE_NAME = re.compile(r"[a-z](?:[a-z0-9]|-(?=[a-z0-9])){0,14}")
#: derived port blocks: PORT_BLOCKS blocks of PORT_BLOCK_SIZE ports from PORT_BLOCK_START, below
#: Linux's ephemeral ports (32768-60999)
PORT_BLOCK_START, PORT_BLOCK_SIZE, PORT_BLOCKS = 20000, 10, 1000
#: the machine-wide ownership registry (root, one JSON file per enclave home); $ENCLAVE_REGISTRY
#: moves it (the tests keep theirs per run)
DEFAULT_REGISTRY = Path("/var/lib/enclave/instances")


def _setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True, slots=True)
class IngestSettings:
    max_reject_share: float = _setting(
        1.0,
        "Largest share of a file's rows that may be rejected: a file over it refuses the whole "
        "ingest, rolled back, with the file and its reject counts named (1.0 = never refuse; "
        "below it, rejected rows are quarantined with their reason).",
    )
    progress: bool = _setting(True, "Show progress bars on long runs (off when not on a terminal).")


@dataclass(frozen=True, slots=True)
class ReleaseSettings:
    risk_threshold_public: float = _setting(
        0.05, "Highest re-identification risk a release for public sharing may have (GB/T 37964)."
    )
    risk_threshold_controlled: float = _setting(
        0.2, "Highest re-identification risk for controlled sharing (GB/T 37964)."
    )
    risk_threshold_enclave: float = _setting(
        1 / 3, "Highest re-identification risk for use inside the enclave (GB/T 37964)."
    )
    max_suppression: float = _setting(
        0.05, "Default largest share of patients the anonymization may suppress."
    )
    date_shift_days: int = _setting(
        180, "Per-patient date shift is drawn from [-N, N] days (never 0), one offset per patient."
    )
    max_lattice_nodes: int = _setting(
        5_000_000, "Largest generalization lattice the optimal search will explore."
    )


#: [disclosure]: the preset, and one override per threshold a disclosure rule declares with a
#: setting (enclave.core.disclosure_rules; negative = keep the preset's value)
DisclosureSettings = make_dataclass(
    "DisclosureSettings",
    [("preset", str, _setting(
        "acro",
        "Disclosure-control preset for checked outputs: acro, opensafely, opensafely-midpoint6, "
        "abs or strict (acro's thresholds, class disclosure suppressed instead of reviewed; "
        "thresholds in docs/disclosure.md).",
    ))] + [(t.name, type(t.default), _setting(type(t.default)(-1), t.setting))
           for t in disclosure_overrides()],
    frozen=True, slots=True,
)
DisclosureSettings.__module__ = __name__


@dataclass(frozen=True, slots=True)
class SynthSettings:
    """The synthetic twin build (package ``synthetic``), with the privacy bar a twin must meet."""

    seed: int = _setting(20240601, "Seed of every random choice of the build (split, fit, sample).")
    holdout_share: float = _setting(
        0.2, "Share of the release's patients held out of fitting, to measure overfitting against.")
    fit_max_patients: int = _setting(
        20_000, "Largest number of training patients the synthesizers are fitted on (a sample above).")
    size_ratio: float = _setting(
        1.0, "Synthetic patients per patient of the release.")
    sample_chunk_patients: int = _setting(
        50_000, "Synthetic patients generated (with all their rows) per chunk.")
    max_categories: int = _setting(
        500, "A text/code column with more distinct values than this is not synthesized (left null).")
    categorical_max_distinct: int = _setting(
        30, "A numeric column with at most this many distinct values is modelled as a category.")
    max_group_categories: int = _setting(
        10_000, "Most distinct value tuples of a table's code group merged with its parent's context "
             "(the codes are then drawn from their exact distribution given the parent).")
    min_rows_per_tuple: float = _setting(
        4.0, "Fewest fitted rows per distinct value tuple (on average) for columns to be drawn jointly with "
             "the parent context (fewer: each tuple would be a few patients' own, and the twin would copy "
             "them; the DCR overfitting bar caught it on a 600-patient release).")
    min_rows_per_context: float = _setting(
        60.0, "Fewest child rows per parent context value (on average): the parent's context columns "
              "(synthetic.chain Link.context) are dropped from the last while fewer (a context few rows "
              "share would hand them back to the twin).")
    merge_slack: float = _setting(
        1.5, "Categorical columns are modelled as one category of value tuples when their distinct "
             "tuples are at most this many times those of the larger column (near dependence).")
    min_group_rows: int = _setting(
        20, "Fewest rows of a code group that get their own value distribution (else pooled).")
    quantile_points: int = _setting(
        101, "Most quantiles kept per value distribution (between the 0.5 and 99.5 percentiles).")
    copula_engine: str = _setting(
        "numpy", "Gaussian copula of each table: 'numpy' (synthetic.copula, uniform marginals: every "
                 "modelled column is already a rank or a category) or 'sdv' (SDV's GaussianCopulaSynthesizer "
                 "with default_distribution; slower, same model).")
    default_distribution: str = _setting(
        "uniform", "SDV GaussianCopula marginal distribution. Every modelled column is already a rank in "
                   "(0, 1) (numbers: their quantile rank; categories: SDV's uniform encoding), so "
                   "'uniform' is exact; 'beta' scored the same and samples ~3x slower (scipy's beta ppf).")
    eval_patients: int = _setting(
        3_000, "Patients (real and synthetic) the SDMetrics quality and diagnostic reports use.")
    privacy_rows: int = _setting(
        2_000, "Rows per table (training, holdout, synthetic, random) the DCR metrics sample; they "
               "cost rows x rows pair distances (in DuckDB).")
    new_row_sample: int = _setting(
        2_000, "Synthetic (and holdout) rows per table checked for a matching training record by "
               "new-row synthesis (against every training record; the identical-record share counts "
               "all rows).")
    # --- the privacy bar: the build refuses to publish a twin that misses any of these ------------
    min_dcr_baseline_protection: float = _setting(
        0.5, "Lowest SDMetrics DCRBaselineProtection (any table) a published twin may have.")
    min_dcr_overfitting_protection: float = _setting(
        0.8, "Lowest SDMetrics DCROverfittingProtection against the holdout (any table).")
    min_new_row_synthesis: float = _setting(
        0.9, "Lowest SDMetrics NewRowSynthesis of the records (QIs + sensitive attributes), any table.")
    max_identical_share: float = _setting(
        0.05, "Highest share of synthetic records (QIs + sensitive attributes) identical to a training "
              "record, any table.")
    max_unique_identical_share: float = _setting(
        0.01, "Highest share of synthetic records identical to a record only one training row has "
              "(a copied individual), any table.")
    small_domain_identical_share: float = _setting(
        0.5, "A table where at least this share of real holdout records repeat a training record "
             "exactly is a small record domain: its DCR baseline and new-row bars do not apply (the "
             "identical-record bars still do).")
    holdout_tolerance: float = _setting(
        0.1, "Where real holdout patients themselves miss an absolute bar (small record domains), the "
             "bar becomes the holdout's own score, worse by at most this much (about two standard "
             "errors of the subsampled metrics).")



@dataclass(frozen=True, slots=True)
class HubSettings:
    """The locked-down JupyterHub (package ``enclave.io.hub``): where it listens, who may log in."""

    instance: str = _setting(
        "", "Name of this enclave on the machine (lower-case letters, digits, '-'; at most 15): "
            "the Unix users and groups, the nftables table and the ports of [hub] derive from "
            "it, so two enclave homes never share them (the defaults shown here are those of "
            "instance 'enclave'). Empty = derived from the home: 'enclave' for the default home, "
            "else '<folder name>-<6 hex of the home's path>'. A name set explicitly in [hub] "
            "always wins (docs/hub.md, 'Several enclaves on one machine').")
    ip: str = _setting("127.0.0.1", "Address the hub's public proxy listens on.")
    port: int = _setting(8000, "Port of the hub's public proxy (what researchers open).")
    hub_port: int = _setting(8081, "Port of the hub's own API (behind the proxy).")
    proxy_api_port: int = _setting(8001, "Port of configurable-http-proxy's REST API.")
    airlock_port: int = _setting(8091, "Port the airlock service listens on (behind the proxy).")
    dashboards_port: int = _setting(8092, "Port of the dashboards' hub-OAuth gate (behind the proxy).")
    dashboards_app_port: int = _setting(
        8093, "Port the Streamlit dashboards app listens on (127.0.0.1 only, reached via the gate).")
    userenv_dir: str = _setting(
        "/opt/enclave/userenv",
        "World-readable Python environment the user servers and kernels run from (built from the "
        "system Python by `enclave hub userenv`).")
    system_python: str = _setting("/usr/bin/python3", "Interpreter the user environment is built from.")
    researchers_group: str = _setting("enclave-researchers", "Unix group of every researcher.")
    stewards_group: str = _setting("enclave-stewards", "Unix group of data stewards.")
    policymakers_group: str = _setting("enclave-policymakers", "Unix group of policymakers.")
    project_group_prefix: str = _setting("enp-", "Prefix of each project's Unix group (enp-<id>).")
    idle_timeout_s: int = _setting(3600, "A user server idle this long is stopped by the culler.")
    cull_every_s: int = _setting(60, "How often the idle culler looks for idle user servers.")
    egress_budget_mb: float = _setting(
        20.0, "Bytes per user and day (MiB) that may reach the browser as file contents "
        "(contents API) and kernel output; past it transfers are refused and the stewards get "
        "an egress.alert audit event.")
    iopub_max_message_bytes: int = _setting(
        4 << 20, "Largest single kernel output (bytes) sent to the browser; larger ones are "
        "withheld with a notice.")
    iopub_data_rate_limit: int = _setting(
        1_000_000, "Kernel output rate (bytes/second, averaged over 3 s) above which Jupyter "
        "pauses sending output to the browser.")
    access_check_interval_s: int = _setting(
        30, "How often the hub's enclave-access service makes project groups, running processes "
        "and release modes agree with the control database (removed members, closed or expired "
        "projects lose access within this time).")
    upload_max_bytes: int = _setting(
        1_000_000, "Largest text file a user may save or open through the contents API (base64, "
                   "i.e. uploaded or binary, files are always refused).")
    notebook_max_bytes: int = _setting(
        20_000_000, "Largest notebook a user may save or open through the contents API.")
    spawn_timeout_s: int = _setting(60, "Longest a user server may take to start.")
    egress_table: str = _setting(
        "enclave_egress", "Name of the nftables table (family inet) holding the researchers' egress rule.")
    demo_user_prefix: str = _setting(
        "demo-", "Prefix of the demo users `enclave up` creates (<prefix>researcher, "
                 "<prefix>steward1, <prefix>steward2, <prefix>policymaker).")
    serviceenv_dir: str = _setting(
        "/opt/enclave/serviceenv",
        "World-readable Python environment the hub services (airlock, dashboards, idle culler) run "
        "from as their own users (built from the system Python like the user environment).")
    airlock_user: str = _setting(
        "enclave-airlock", "System user the airlock service runs as: owns the airlock folder, "
                           "reads the project releases (member of their groups), nothing else.")
    dashboards_user: str = _setting(
        "enclave-dash", "System user the dashboards (gate and app) run as: reads the indicator "
                        "tables only.")
    culler_user: str = _setting(
        "nobody", "System user the idle-culler service runs as (it needs no files, only its hub "
                  "token).")
    login_max_failures_user: int = _setting(
        5, "Failed logins of one user name within login_window_s after which that name is locked "
           "out for login_lockout_s (attempts then are refused without asking PAM).")
    login_max_failures_address: int = _setting(
        20, "Failed logins from one client address (any user names) within login_window_s after "
            "which that address is locked out for login_lockout_s.")
    login_window_s: int = _setting(
        600, "Window (seconds) in which failed logins are counted towards a lockout.")
    login_lockout_s: int = _setting(
        300, "How long (seconds) a locked-out user name or address is refused; each lockout is "
             "audited once (hub.login_locked).")
    anchor_check_s: int = _setting(
        60, "How often (seconds) the hub process (root) looks for new approvals in the audit "
            "trail and, when it finds one, writes the chain head to the anchor file.")
    anchor_max_age_s: int = _setting(
        86400, "Longest time (seconds) between two audit anchors: an older newest anchor is "
               "renewed even when nothing was approved.")

    @property
    def egress_budget_bytes(self) -> int:
        """``egress_budget_mb`` in bytes (what the user servers and the airlock compare with)."""
        return int(self.egress_budget_mb * (1 << 20))


@dataclass(frozen=True, slots=True)
class AirlockSettings:
    approvals_pass: int = _setting(
        1, "Steward approvals an output needs when the airlock's own checks pass.")
    approvals_review: int = _setting(
        2, "Independent, blind steward approvals an output needs when the checks say review or "
           "fail, or the differencing ledger has hits.")
    busy_timeout_s: float = _setting(
        30.0, "Seconds a writer waits for the airlock database's write lock before giving up.")
    max_upload_bytes: int = _setting(
        20_000_000, "Largest total size of the files of one export request.")
    max_files: int = _setting(20, "Most files one export request may carry.")
    max_audit_event_bytes: int = _setting(
        4096, "Largest audit event (the JSON body) another process may append through the "
              "service's POST /api/audit; larger ones are refused.")


@dataclass(frozen=True, slots=True)
class ResearchSettings:
    """The researcher API (``enclave.research``): where a user's own bundles and ledger live."""

    user_dir: str = _setting(
        "~/.enclave",
        "Per-user folder (in the researcher's home) holding pending export bundles (exports/) and "
        "the local differencing ledger (ledger.duckdb).")
    survival_intervals: tuple = _setting(
        (1, 7, 14, 30, 60, 90, 180, 365, 730),
        "Candidate reporting intervals (in the duration's unit) of a Kaplan-Meier curve: the "
        "smallest one whose every reported step passes the rules is used.")
    recheck_timeout_s: int = _setting(
        300, "Longest a recheck (the sandboxed process re-running an output) may take, in "
        "seconds of wall time.")
    sandbox_memory_mb: int = _setting(
        6144, "Address-space limit of the sandbox that re-runs an output's SQL (MiB); DuckDB in "
        "it may use three fifths of it.")
    sandbox_cpu_s: int = _setting(
        600, "CPU-time limit of the sandbox that re-runs an output's SQL (seconds, all threads).")
    sandbox_tmp_mb: int = _setting(
        256, "Size of the sandbox's private /tmp (MiB), the only place it can write.")
    sandbox_threads: int = _setting(
        2, "Threads DuckDB and polars may use inside the sandbox.")
    sandbox_max_answer_mb: int = _setting(
        512, "Largest answer (cells and the ledger's patient sets) the sandbox may send back "
        "(MiB).")
    codelist_max_codes: int = _setting(
        100_000, "Most codes one researcher code list (ws.codelist) may hold; the airlock "
        "refuses a record whose code list is longer.")
    codelist_max_code_chars: int = _setting(
        64, "Longest text code (characters) a researcher code list may hold.")


@dataclass(frozen=True, slots=True)
class DashboardSettings:
    """The policymakers' dashboards (``dashboards/``)."""

    language: str = _setting(
        "zh", "Language the dashboards open in: 'zh' (Chinese, for a Chinese deployment) or 'en' "
        "(English); every page has a switch to the other, and ?lang=zh or ?lang=en in a link picks one.")

    def __post_init__(self) -> None:
        if self.language not in ("zh", "en"):
            raise ConfigurationError(
                f"dashboards.language must be 'zh' or 'en', not {self.language!r}")


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """Which engine runs the set-based work (``enclave.io.engine``): DuckDB embedded, or Spark."""

    backend: str = _setting(
        "duckdb",
        "Engine of the set-based work opened through enclave.io.engine (today: the indicator "
        "build's cells): 'duckdb' (embedded, one machine) or 'pyspark' (Spark, through ibis).")
    spark_master: str = _setting(
        "local[2]", "Spark master URL when backend = 'pyspark' (e.g. spark://host:7077, yarn, "
        "k8s://https://api:6443); local[N] runs Spark in this process's machine.")
    spark_shuffle_partitions: int = _setting(
        8, "spark.sql.shuffle.partitions: partitions after a shuffle (about 2-3 per core in the "
        "cluster; small on one machine).")
    spark_driver_memory: str = _setting("2g", "spark.driver.memory of the enclave's driver.")
    spark_bind_address: str = _setting(
        "127.0.0.1", "Address the Spark driver binds and advertises (loopback for local mode; "
        "the driver's cluster address otherwise).")
    spark_local_dir: str = _setting(
        "", "spark.local.dir: scratch space for shuffles and spilled data; keep it inside the "
        "restricted zone (empty = <home>/restricted/spark).")
    spark_conf: tuple = _setting(
        (), "Further Spark properties as 'key=value' strings (e.g. 'spark.executor.memory=8g').")


@dataclass(frozen=True, slots=True)
class Settings:
    home: Path = _setting(DEFAULT_HOME, "The enclave's data root; every zone lives under it.")
    ingest: IngestSettings = _setting(IngestSettings(), "Ingest limits.")
    release: ReleaseSettings = _setting(ReleaseSettings(), "Release thresholds and defaults.")
    disclosure: DisclosureSettings = _setting(
        DisclosureSettings(), "Output-checking (statistical disclosure control) policy."
    )
    airlock: AirlockSettings = _setting(
        AirlockSettings(), "Export requests: approvals needed, database and upload limits."
    )
    synthetic: SynthSettings = _setting(SynthSettings(), "Synthetic twin build and its privacy bar.")
    hub: HubSettings = _setting(HubSettings(), "The locked-down JupyterHub and its services.")
    research: ResearchSettings = _setting(
        ResearchSettings(), "The researcher API: per-user folder, survival curve intervals, recheck."
    )
    engine: EngineSettings = _setting(
        EngineSettings(), "The engine of the set-based work: embedded DuckDB or Spark (ibis)."
    )
    dashboards: DashboardSettings = _setting(
        DashboardSettings(), "The policymakers' dashboards: the language they open in."
    )

    # --- zones, derived from home -------------------------------------------------------
    @property
    def restricted_dir(self) -> Path:
        """Restricted zone (0700): raw extracts, identified store, keys, person index."""
        return self.home / "restricted"

    @property
    def store_path(self) -> Path:
        return self.restricted_dir / "cdm.duckdb"

    @property
    def keys_dir(self) -> Path:
        return self.restricted_dir / "keys"

    @property
    def control_path(self) -> Path:
        """The control database (SQLite, in the airlock's 0700 folder): projects, export
        requests, votes and the audit trail, so a change and its audit event commit together.
        No patient data."""
        return self.home / "airlock" / "airlock.sqlite"

    @property
    def releases_dir(self) -> Path:
        """Release zone: desensitized/<project>/<version>/, synthetic/<version>/, indicators/."""
        return self.home / "releases"

    @property
    def audit_dir(self) -> Path:
        return self.home / "audit"


def _merge(obj: Any, data: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(obj)}
    changes: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigurationError(f"{where}: unknown setting '{key}' (known: {', '.join(known)})")
        current = getattr(obj, key)
        if hasattr(current, "__dataclass_fields__"):
            if not isinstance(value, dict):
                raise ConfigurationError(f"{where}: '{key}' must be a table")
            changes[key] = _merge(current, value, f"{where}.{key}")
        elif isinstance(current, Path):
            changes[key] = Path(value)
        else:
            if isinstance(current, bool) != isinstance(value, bool) or (
                isinstance(current, (int, float)) and not isinstance(value, (int, float))
            ):
                raise ConfigurationError(f"{where}: '{key}' has the wrong type")
            changes[key] = type(current)(value)
    return replace(obj, **changes)


def resolve_home(home: str | Path | None = None) -> Path:
    """The absolute enclave home: ``home``, else ``$ENCLAVE_HOME``, else the default."""
    return Path(home or os.environ.get("ENCLAVE_HOME") or DEFAULT_HOME).expanduser().resolve()


def registry_dir() -> Path:
    """The machine-wide ownership registry of enclave homes (:mod:`enclave.io.hub.registry`):
    ``$ENCLAVE_REGISTRY``, else /var/lib/enclave/instances. Machine-wide on purpose, so it is
    not a per-home setting: two homes must look into the same one."""
    return Path(os.environ.get("ENCLAVE_REGISTRY") or DEFAULT_REGISTRY)


def is_default_home(home: Path) -> bool:
    """The default home: this user's, or the same layout of any other user (services running as
    their own users must derive the same names for the root's default home)."""
    return home == DEFAULT_HOME.expanduser().resolve() or home.parts[-3:] == (
        ".local", "share", "enclave")


def derive_instance(home: Path) -> str:
    """The instance of a home without ``hub.instance``: ``enclave`` for the default home, else the
    home folder's name (letters and digits, at most 8) and 6 hex of the SHA-256 of its path."""
    if is_default_home(home):
        return DEFAULT_INSTANCE
    slug = re.sub(r"[^a-z0-9]", "", home.name.lower())[:8]
    if not slug[:1].isalpha():
        slug = ("e" + slug)[:8]
    return f"{slug}-{hashlib.sha256(str(home).encode()).hexdigest()[:6]}"


#: the [hub] settings naming something machine-wide, each derived from the instance
MACHINE_WIDE = ("researchers_group", "stewards_group", "policymakers_group",
                "project_group_prefix", "egress_table", "demo_user_prefix", "airlock_user",
                "dashboards_user", "port", "hub_port", "proxy_api_port", "airlock_port",
                "dashboards_port", "dashboards_app_port")


def instance_names(instance: str) -> dict[str, Any]:
    """The machine-wide names of an instance (the :data:`MACHINE_WIDE` settings): the [hub]
    defaults for ``enclave``; for any other, the names carry the instance, the project group
    prefix a short tag of it (``p<6 hex>-``: a group name holds 32 characters, a project id 24),
    and the ports are the block the tag picks (:data:`PORT_BLOCK_START` ...)."""
    if instance == DEFAULT_INSTANCE:
        defaults = HubSettings()
        return {name: getattr(defaults, name) for name in MACHINE_WIDE}
    tag = hashlib.sha256(instance.encode()).hexdigest()[:6]
    base = PORT_BLOCK_START + PORT_BLOCK_SIZE * (int(tag, 16) % PORT_BLOCKS)
    return {
        "researchers_group": f"{instance}-researchers", "stewards_group": f"{instance}-stewards",
        "policymakers_group": f"{instance}-policymakers", "project_group_prefix": f"p{tag}-",
        "egress_table": instance.replace("-", "_") + "_egress",
        "demo_user_prefix": f"{instance}-", "airlock_user": f"{instance}-airlock",
        "dashboards_user": f"{instance}-dash",
        "port": base, "hub_port": base + 1, "proxy_api_port": base + 2, "airlock_port": base + 3,
        "dashboards_port": base + 4, "dashboards_app_port": base + 5,
    }


def _with_instance(settings: Settings, explicit: set[str], where: str) -> Settings:
    """Fill ``hub.instance`` and the machine-wide names ``explicit`` (the [hub] keys of the
    settings file) does not set."""
    instance = settings.hub.instance or derive_instance(settings.home)
    if not INSTANCE_NAME.fullmatch(instance):
        raise ConfigurationError(
            f"{where}: hub.instance '{instance}' is not an instance name (a lower-case letter, "
            "then up to 14 lower-case letters, digits or single '-', not ending with '-')")
    derived = {k: v for k, v in instance_names(instance).items() if k not in explicit}
    return replace(settings, hub=replace(settings.hub, instance=instance, **derived))


def load_settings(home: str | Path | None = None) -> Settings:
    """Settings for the enclave rooted at ``home`` (or ``$ENCLAVE_HOME``, or the default), with
    the machine-wide names of its instance (:func:`instance_names`) where the file sets none."""
    root = resolve_home(home)
    settings = Settings(home=root)
    file = root / "settings.toml"
    explicit: set[str] = set()
    if file.exists():
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{file}: not valid TOML ({exc})") from None
        data.pop("home", None)
        settings = _merge(settings, data, str(file))
        if isinstance(data.get("hub"), dict):
            explicit = set(data["hub"])
    return _with_instance(settings, explicit, str(file))


def iter_settings(obj: Any = None, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted name, default, help) for every setting: the source of docs/settings.md."""
    obj = obj if obj is not None else Settings()
    rows = []
    for f in fields(obj):
        value = getattr(obj, f.name)
        name = f"{prefix}{f.name}"
        if hasattr(value, "__dataclass_fields__"):
            rows.extend(iter_settings(value, name + "."))
        else:
            rows.append((name, value, f.metadata.get("help", "")))
    return rows
