"""The ingest's row-level transforms after parsing, as ibis expressions (DuckDB or Spark).

A staged batch of clinical events (conditions, drugs, measurements, procedures, observations,
notes, deaths) goes through the same steps on every engine:

1. :func:`check_events` — resolve each row's patient and visit, then quarantine rows that reference
   an unknown patient, end before they start, or carry an invalid code (a row whose visit is
   unknown keeps its place, without a visit, under the warning ``unknown_visit``); then merge exact
   duplicates (the first row of each group in file order is kept) and, for deaths, second deaths of
   a person;
2. :func:`map_concepts` — the standard and source concept of each row's code;
3. :func:`convert_units` — measurements in each analyte's canonical unit, with the UCUM concept of
   the unit; a unit the analyte cannot be converted from quarantines the row.

Lookups that are judged once per distinct code (syntax, vocabulary, new local concepts) are small
tables built by :class:`enclave.io.ingest.concepts.ConceptMapper` and joined here; numbering new rows
and writing them stays with the loader, which compiles these expressions on the store's DuckDB
connection. ``tests/spec/test_ingest_engines.py`` holds DuckDB and Spark to the same rows.

Bookkeeping follows the staging contract (:mod:`enclave.io.ingest.staging`): ``_reject`` /
``_reject_column`` hold the first reason a row failed (a later check never overwrites it),
``_dup`` marks a merged duplicate, ``_warning`` / ``_warning_column`` the first warning a loaded
row is counted under (:class:`enclave.io.ingest.staging.LoadWarning`), and ``_i`` is the row's
position in the batch (the order that decides which of several duplicates is kept).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import ibis
import ibis.expr.types as ir

from enclave.io.ingest.staging import LoadWarning, RejectReason

#: staged columns a transform may change (the others it only reads, or adds)
CHANGED = ("_reject", "_reject_column", "_dup", "_warning", "_warning_column", "range_low",
           "range_high")
#: columns of the code checks table (one row per distinct invalid (code_system, code) pair)
CODE_CHECK_COLUMNS = ("code_system", "code", "_why", "_why_column")
#: columns of the code map table (one row per distinct pending (code_system, code) pair)
CODE_MAP_COLUMNS = ("code_system", "code", "std_system", "std_code", "_target",
                    "source_concept_id")


def _pending(t: ir.Table) -> ir.BooleanValue:
    return t._reject.isnull() & ~t._dup


def reject_if(t: ir.Table, cond: ir.BooleanValue, reason: RejectReason | ir.StringValue,
              column: str | ir.StringValue) -> ir.Table:
    """Quarantine the pending rows where ``cond`` holds (null counts as false) with ``reason``,
    naming ``column``; rows already rejected or merged keep what they have."""
    hit = _pending(t) & cond.fill_null(False)
    why = ibis.literal(str(reason)) if isinstance(reason, str) else reason
    col = ibis.literal(column) if isinstance(column, str) else column
    return t.mutate(_reject=ibis.ifelse(hit, why, t._reject),
                    _reject_column=ibis.ifelse(hit, col, t._reject_column))


def warn_if(t: ir.Table, cond: ir.BooleanValue, warning: LoadWarning, column: str) -> ir.Table:
    """Count the pending rows where ``cond`` holds under ``warning`` (they stay loadable), naming
    ``column``; a row keeps the first warning it got."""
    hit = _pending(t) & t._warning.isnull() & cond.fill_null(False)
    return t.mutate(_warning=ibis.ifelse(hit, ibis.literal(str(warning)), t._warning),
                    _warning_column=ibis.ifelse(hit, ibis.literal(column), t._warning_column))


def later_rows(t: ir.Table, keys: Sequence[str]) -> ir.Table:
    """``_later``: the ``_i`` of every pending row that repeats an earlier pending row of its
    ``keys`` group (null equals null, as in a GROUP BY) — the rows a merge marks as duplicates.

    Exact, and cheap when duplicates are rare: the rows are first bucketed by one hash of their
    keys (equal keys hash alike, so a row alone in its bucket repeats nothing), and only the rows
    of shared buckets are partitioned by the keys themselves. One hash aggregate over every row
    and joins with small build sides on both engines: no sort, and the only window runs over the
    few rows of shared buckets."""
    live = t.filter(_pending(t))
    # + 0.0 turns -0.0 into 0.0, which a GROUP BY counts as equal but a hash might not
    key = ibis.struct({k: live[k] + 0.0 if live[k].type().is_floating() else live[k]
                       for k in keys})
    hashed = live.select(live._i, _h=key.hash())
    shared = hashed.group_by("_h").aggregate(_n=hashed.count()).filter(lambda b: b._n > 1)
    cand = hashed.join(shared, "_h").select("_i")
    rows = live.join(cand, "_i")
    # the first row of each key group (null equals null, as in a GROUP BY) by a window over the
    # candidates only: ``cand`` is read once, not again by an anti join with the groups
    rows = rows.mutate(_first=rows._i.min().over(group_by=[rows[k] for k in keys]))
    later = rows.filter(rows._i != rows._first)
    return later.select(_later=later._i)


def merge_duplicates(t: ir.Table, later: ir.Table) -> ir.Table:
    """Mark the pending rows of ``t`` named in ``later`` (:func:`later_rows` of ``t`` or of an
    earlier stage of the same rows) as duplicates."""
    # a left join on the one integer, not ``IN (subquery)``: Spark plans NOT IN as a null-aware
    # anti join (a nested loop over both sides), and a join with the few repeated rows on the
    # build side is cheap on both engines
    j = t.left_join(later, t._i == later._later)
    return j.mutate(_dup=j._dup | (_pending(j) & j._later.notnull())).drop("_later")


def content_columns(t: ir.Table) -> list[str]:
    """The staged content columns (not bookkeeping)."""
    return [c for c in t.columns if not c.startswith("_")]


def check_events(rows: ir.Table, patients: ir.Table, visits: ir.Table | None = None,
                 code_checks: ir.Table | None = None,
                 known_deaths: ir.Table | None = None) -> ir.Table:
    """``rows`` with ``person_id`` (and ``visit_occurrence_id`` where the kind has visits), rows
    quarantined for unknown patient / date order / invalid code, rows of an unknown visit warned
    (``unknown_visit``, visit NULL), and duplicates merged.

    ``patients``: ``site_patient_id``, ``person_id`` of the site; ``visits``: ``site_visit_id``,
    ``visit_occurrence_id``; ``code_checks``: :data:`CODE_CHECK_COLUMNS`; ``known_deaths``:
    ``person_id`` of the persons the store already has a death for (deaths only: a second death of
    a person, in the batch or against the store, is merged)."""
    own = rows.columns
    if "_warning" not in own:
        rows = rows.mutate(_warning=ibis.null("string"), _warning_column=ibis.null("string"))
    # Every check below is a function of the content columns, so identical rows pass or fail
    # together: the repeated rows can be found on the staged rows, before the joins (a group
    # that fails is rejected whole, and a rejected row is never merged).
    later = later_rows(rows, content_columns(rows))
    p = patients.select(_sp=patients.site_patient_id, person_id=patients.person_id.cast("int64"))
    t = rows.left_join(p, rows.site_patient_id == p._sp).drop("_sp")
    t = reject_if(t, t.person_id.isnull(), RejectReason.UNKNOWN_PATIENT, "site_patient_id")
    if "site_visit_id" in own:
        if visits is None:
            raise ValueError("rows with site_visit_id need the visits table")
        v = visits.select(_sv=visits.site_visit_id,
                          visit_occurrence_id=visits.visit_occurrence_id.cast("int64"))
        t = t.left_join(v, t.site_visit_id == v._sv).drop("_sv")
        # an event is a fact without its visit: loaded with no visit, counted under a warning
        t = warn_if(t, t.site_visit_id.notnull() & t.visit_occurrence_id.isnull(),
                    LoadWarning.UNKNOWN_VISIT, "site_visit_id")
    if "end_date" in own and "start_date" in own:
        t = reject_if(t, t.end_date < t.start_date, RejectReason.DATE_ORDER, "end_date")
    if code_checks is not None:
        c = code_checks.select(_cs=code_checks.code_system, _cc=code_checks.code,
                               _why=code_checks._why, _why_column=code_checks._why_column)
        t = t.left_join(c, (t.code_system == c._cs) & (t.code == c._cc)).drop("_cs", "_cc")
        t = reject_if(t, t._why.notnull(), t._why, t._why_column).drop("_why", "_why_column")
    t = merge_duplicates(t, later)
    if known_deaths is not None:
        t = merge_duplicates(t, later_rows(t, ["person_id"]))
        t = t.mutate(_dup=t._dup | (_pending(t) & t.person_id.isin(known_deaths.person_id)))
    return t


def map_concepts(rows: ir.Table, code_map: ir.Table) -> ir.Table:
    """``rows`` with ``std_system``, ``std_code``, ``source_concept_id`` and
    ``target_concept_id`` from ``code_map`` (:data:`CODE_MAP_COLUMNS`); a concept id the source
    already carries (``concept_id``, ``source_concept_id``; 0 counts as none) wins over the
    mapped one."""
    m = code_map.select(_cs=code_map.code_system, _cc=code_map.code,
                        std_system=code_map.std_system, std_code=code_map.std_code,
                        _target=code_map._target.cast("int64"),
                        _source=code_map.source_concept_id.cast("int64"))
    t = rows.left_join(m, (rows.code_system == m._cs) & (rows.code == m._cc)).drop("_cs", "_cc")

    def given(col: str) -> ir.IntegerValue:  # a concept id the source carries (0 = none)
        return t[col].cast("int64").nullif(0) if col in rows.columns else ibis.null("int64")

    return t.mutate(target_concept_id=given("concept_id").coalesce(t._target),
                    source_concept_id=given("source_concept_id").coalesce(t._source)
                    ).drop("_target", "_source")


def unit_spelling(unit: ir.StringValue, synonyms: Mapping[str, str]) -> ir.StringValue:
    """The UCUM spelling of a unit as given (trimmed; unknown spellings pass through)."""
    s = unit.strip()
    return s.lower().substitute(dict(synonyms), else_=s)


def convert_units(rows: ir.Table, conversions: ir.Table, ucum: ir.Table,
                  synonyms: Mapping[str, str]) -> ir.Table:
    """Measurements in their analyte's canonical unit.

    ``conversions``: ``loinc``, ``unit``, ``factor``, ``unit_concept_id`` for every accepted unit
    of a known analyte; ``ucum``: ``concept_code``, ``concept_id`` of the UCUM units the store
    knows. A pending row of a known analyte whose unit is given but not accepted is quarantined
    (``unknown_unit``); other rows keep their value (factor 1)."""
    # spelled once per distinct unit and joined back: trimming and lower-casing every row's unit
    # costs about a microsecond each, and a batch has millions of rows but a handful of units
    units = rows.select(_u=rows.unit).distinct()
    units = units.mutate(_unit=unit_spelling(units._u, synonyms))
    t = rows.left_join(units, rows.unit == units._u).drop("_u")
    conv = conversions.select(_loinc=conversions.loinc, _cu=conversions.unit,
                              _factor=conversions.factor.cast("float64"),
                              _unit_cid=conversions.unit_concept_id.cast("int64"))
    t = t.left_join(conv, (t.std_code == conv._loinc) & (t._unit == conv._cu)).drop("_loinc", "_cu")
    analytes = conversions.select(_known=conversions.loinc).distinct()
    t = t.left_join(analytes, t.std_code == analytes._known)
    known = (t.std_system == "LOINC") & t._known.notnull()
    t = reject_if(t, known & t._unit.notnull() & t._factor.isnull(),
                  RejectReason.UNKNOWN_UNIT, "unit").drop("_known")
    u = ucum.select(_uc=ucum.concept_code, _ucum_id=ucum.concept_id.cast("int64"))
    t = t.left_join(u, t._unit == u._uc).drop("_uc")
    factor = t._factor.fill_null(1.0)
    return t.mutate(
        value_converted=t.value * factor,
        range_low=t.range_low * factor,
        range_high=t.range_high * factor,
        unit_concept_id=ibis.coalesce(t._unit_cid, t._ucum_id, ibis.literal(0, "int64")),
    ).drop("_unit", "_factor", "_unit_cid", "_ucum_id")
