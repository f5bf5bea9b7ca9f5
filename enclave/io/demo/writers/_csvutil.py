"""Shared machinery of the delimited demo writers (pinyin CSV, Chinese CSV, 病案首页).

A dialect is data: a :class:`CsvDialect` lists its files (:class:`FileLayout`: contract column →
header), its date/datetime formats, sex codes, visit-type words and boolean words. The same object
renders the clean frames and produces the ``site.toml`` that ``enclave.io.ingest.adapters.csv_dialect``
reads back, so writer and adapter cannot drift apart.

Defects are applied in two steps: :func:`apply_typed_defects` changes the typed frames for defects
that are still valid values (bad checksum, sex flip, end before start, blank field, garbled code,
unknown patient id), the rest (impossible date, duplicated line, truncated last line) are applied to
the rendered text by :func:`render_file_rows` and :func:`write_csv`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from enclave.io.demo.clinical import code_maps
from enclave.io.demo.writers import Defect, DefectKind, HospitalSpec, WriteResult
from enclave.io.ingest.normalize import CHINESE_DATE
from enclave.io.ingest.staging import kind_schema
from enclave.logic.codes.resident_id import CHECK_CHARS, check_char

ROW = "__row"  # original row index of a typed frame, carried through rendering
GARBLED_CODES = ("E11.9OO", "??", "I1O.X", "糖尿病")
TYPED_KINDS = frozenset({DefectKind.BAD_ID_CHECKSUM, DefectKind.IDENTITY_CONFLICT, DefectKind.DATE_ORDER,
                         DefectKind.MISSING_REQUIRED, DefectKind.UNKNOWN_CODE, DefectKind.UNKNOWN_PATIENT})


@dataclass(frozen=True, slots=True)
class FileLayout:
    kind: str
    file: str
    columns: tuple[tuple[str, str], ...]  # (contract column, header)
    constants: tuple[str, ...] = ()  # contract columns given once in site.toml, not per row

    def header(self, column: str) -> str | None:
        return dict(self.columns).get(column)


@dataclass(frozen=True, slots=True)
class CsvDialect:
    encoding: str
    date_format: str  # strftime pattern or normalize.CHINESE_DATE (written without zero padding)
    datetime_format: str
    sex: dict[str, str]  # M/F/U → written code
    visit_types: dict[str, str]  # outpatient/inpatient/emergency → written word
    booleans: tuple[str, str]  # (true, false)
    files: tuple[FileLayout, ...] = field(default_factory=tuple)


def fmt_date(fmt: str, y: int, m: int, d: int, hh: int = 0, mm: int = 0, ss: int = 0) -> str:
    """Format possibly impossible dates (Feb 30) by plain substitution."""
    if fmt == CHINESE_DATE:
        return f"{y}年{m}月{d}日"
    out = fmt.replace("%Y", f"{y:04d}").replace("%m", f"{m:02d}").replace("%d", f"{d:02d}")
    return out.replace("%H", f"{hh:02d}").replace("%M", f"{mm:02d}").replace("%S", f"{ss:02d}")


def date_expr(col: pl.Expr, fmt: str) -> pl.Expr:
    if fmt == CHINESE_DATE:
        return pl.format("{}年{}月{}日", col.dt.year(), col.dt.month(), col.dt.day())
    return col.dt.strftime(fmt)


# ----------------------------------------------------------------------------------- defects
def apply_typed_defects(
    frames: dict[str, pl.DataFrame], defects: list[Defect]
) -> tuple[dict[str, pl.DataFrame], dict[str, int], list[Defect]]:
    """Apply the defects that stay valid typed values; returns (frames, planted, rest)."""
    frames = {k: f.with_row_index(ROW).with_columns(pl.col(ROW).cast(pl.Int64)) for k, f in frames.items()}
    planted: dict[str, int] = {}
    rest = []
    for i, d in enumerate(defects):
        frame = frames.get(d.frame_kind)
        if d.kind not in TYPED_KINDS or frame is None or d.row >= frame.height:
            rest.append(d)
            continue
        row = frame.row(d.row, named=True)
        change: dict[str, object] = {}
        if d.kind == DefectKind.BAD_ID_CHECKSUM and _canonical(row.get("resident_id")):
            rid = row["resident_id"].upper()
            good = CHECK_CHARS.index(check_char(rid[:17]))
            change["resident_id"] = rid[:17] + CHECK_CHARS[(good + 1 + i % 10) % 11]
        elif d.kind == DefectKind.IDENTITY_CONFLICT and row.get("sex") in ("M", "F"):
            change["sex"] = "F" if row["sex"] == "M" else "M"
        elif d.kind == DefectKind.DATE_ORDER and row.get("start_date") is not None:
            import datetime as dt

            change["end_date"] = row["start_date"] - dt.timedelta(days=3)
            if row.get("start_datetime") is not None:
                change["end_datetime"] = row["start_datetime"] - dt.timedelta(days=3)
        elif d.kind == DefectKind.MISSING_REQUIRED and row.get("site_patient_id"):
            change["site_patient_id"] = None
        elif d.kind == DefectKind.UNKNOWN_CODE and "code" in row:
            change["code"] = GARBLED_CODES[i % len(GARBLED_CODES)]
        elif d.kind == DefectKind.UNKNOWN_PATIENT and row.get("site_patient_id"):
            mrn = row["site_patient_id"]
            change["site_patient_id"] = mrn[:2] + "9" + mrn[3:] if len(mrn) > 3 else mrn + "9999"
        if not change:
            continue
        frames[d.frame_kind] = _set_row(frame, d.row, change)
        planted[str(d.kind)] = planted.get(str(d.kind), 0) + 1
    return frames, planted, rest


def _canonical(rid: str | None) -> bool:
    return bool(rid) and len(rid) == 18 and rid[:17].isdigit()


def _set_row(frame: pl.DataFrame, row: int, change: dict[str, object]) -> pl.DataFrame:
    hit = pl.col(ROW) == row
    return frame.with_columns([
        pl.when(hit).then(pl.lit(v, dtype=frame.schema[c])).otherwise(pl.col(c)).alias(c)
        for c, v in change.items()
    ])


# --------------------------------------------------------------------------------- rendering
def render(frame: pl.DataFrame, layout: FileLayout, dialect: CsvDialect) -> pl.DataFrame:
    """Typed frame (with ``__row``) → all-text frame with the layout's headers (plus ``__row``)."""
    schema = kind_schema(layout.kind)
    exprs = []
    for column, header in layout.columns:
        if column in layout.constants:
            continue
        col = pl.col(column)
        t = schema[column]
        if column == "sex":
            e = col.replace_strict(dialect.sex, default=col)
        elif column == "visit_type":
            e = col.replace_strict(dialect.visit_types, default=col)
        elif t == pl.Date:
            e = date_expr(col, dialect.date_format)
        elif isinstance(t, pl.Datetime):
            e = col.dt.strftime(dialect.datetime_format)
        elif t == pl.Boolean:
            e = pl.when(col).then(pl.lit(dialect.booleans[0])).when(~col).then(pl.lit(dialect.booleans[1]))
        else:
            e = col.cast(pl.Utf8)
        exprs.append(e.cast(pl.Utf8).alias(header))
    return frame.select(pl.col(ROW), *exprs)


def impossible_dates(
    text: pl.DataFrame, typed: pl.DataFrame, layout: FileLayout, dialect: CsvDialect,
    defects: list[Defect], planted: dict[str, int],
) -> pl.DataFrame:
    """Write Feb 30 of the row's year into its start date (and start datetime) cells."""
    targets = [d for d in defects if d.kind == DefectKind.IMPOSSIBLE_DATE and d.frame_kind == layout.kind]
    date_col = layout.header("start_date") or layout.header("date") or layout.header("birth_date")
    dt_col = layout.header("start_datetime")
    rows = set(text[ROW].to_list()) if targets else set()
    for d in targets:
        if date_col is None or d.row not in rows:
            continue
        year = typed.row(d.row, named=True)
        year = next((year[c].year for c in ("start_date", "date", "birth_date") if year.get(c)), 2023)
        change = {date_col: fmt_date(dialect.date_format, year, 2, 30)}
        if dt_col:
            change[dt_col] = fmt_date(dialect.datetime_format, year, 2, 30, 9, 30, 0)
        hit = pl.col(ROW) == d.row
        text = text.with_columns([pl.when(hit).then(pl.lit(v)).otherwise(pl.col(c)).alias(c)
                                  for c, v in change.items()])
        planted[str(d.kind)] = planted.get(str(d.kind), 0) + 1
    return text


def order_rows(text: pl.DataFrame, kind: str, defects: list[Defect], planted: dict[str, int]) -> tuple[pl.DataFrame, bool]:
    """Duplicate the DUPLICATE_ROW targets, move one TRUNCATED_LINE target to the end."""
    present = set(text[ROW].to_list())
    dups = {d.row for d in defects if d.kind == DefectKind.DUPLICATE_ROW and d.frame_kind == kind
            and d.row in present}
    cut = [d.row for d in defects if d.kind == DefectKind.TRUNCATED_LINE and d.frame_kind == kind
           and d.row in present and d.row not in dups][:1]
    if not dups and not cut:
        return text, False
    rows = text[ROW]
    rep = pl.when(rows.is_in(list(dups))).then(2).otherwise(1)
    out = text.with_columns(rep.alias("__n"))
    out = out.select(pl.all().repeat_by("__n").explode()).drop("__n") if dups else out.drop("__n")
    if cut:
        out = pl.concat([out.filter(pl.col(ROW) != cut[0]), out.filter(pl.col(ROW) == cut[0])])
        planted[str(DefectKind.TRUNCATED_LINE)] = planted.get(str(DefectKind.TRUNCATED_LINE), 0) + 1
    if dups:
        planted[str(DefectKind.DUPLICATE_ROW)] = planted.get(str(DefectKind.DUPLICATE_ROW), 0) + len(dups)
    return out, bool(cut)


def write_csv(path: Path, text: pl.DataFrame, encoding: str, *, truncate_last: bool = False,
              chunk_rows: int = 500_000) -> Path:
    """Write an all-text frame (``__row`` dropped) as CSV in ``encoding``, big frames in slices."""
    frame = text.drop(ROW) if ROW in text.columns else text
    path.parent.mkdir(parents=True, exist_ok=True)
    n = frame.height
    with path.open("wb") as out:
        if n == 0:
            out.write(frame.write_csv(null_value="").encode(encoding))
            return path
        for start in range(0, n, chunk_rows):
            part = frame.slice(start, chunk_rows)
            s = part.write_csv(include_header=start == 0, null_value="", quote_style="necessary")
            if truncate_last and start + chunk_rows >= n:
                s = _truncate_last_line(s)
            out.write(s.encode(encoding))
    return path


def _truncate_last_line(s: str) -> str:
    body = s.removesuffix("\n")
    head, _, last = body.rpartition("\n")
    parts = last.split(",")
    cut = ",".join(parts[:2]) + "," + parts[2][: max(0, len(parts[2]) // 2)] if len(parts) > 3 else last[:1]
    return (head + "\n" if head else "") + cut


# --------------------------------------------------------------------------------- site.toml
def toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k), ensure_ascii=False)} = {toml_value(x)}"
                                for k, x in v.items()) + " }"
    return json.dumps(str(v), ensure_ascii=False)


def toml_table(name: str, values: dict[str, object]) -> str:
    lines = [f"[{name}]"]
    lines += [f"{json.dumps(str(k), ensure_ascii=False)} = {toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def site_header(hospital: HospitalSpec, dialect: str, encoding: str) -> str:
    return toml_table("site", {
        "id": hospital.site_id, "name": hospital.name, "dialect": dialect, "encoding": encoding,
        "linkage": "resident_id", "level": hospital.level, "region_code": hospital.region_code,
    })


def csv_tables(dialect: CsvDialect, frames: dict[str, pl.DataFrame], layouts=None) -> str:
    """The ``[csv]`` defaults and ``[files.<kind>]`` tables for the csv_dialect adapter."""
    parts = [toml_table("csv", {
        "delimiter": ",", "quote": '"',
        "date_formats": [dialect.date_format], "datetime_formats": [dialect.datetime_format],
        "sex_codes": {v: k for k, v in dialect.sex.items()},
        "true_values": [dialect.booleans[0]], "false_values": [dialect.booleans[1]],
    })]
    for layout in layouts or dialect.files:
        parts.append(toml_table(f"files.{layout.kind}", {"pattern": layout.file}))
        parts.append(toml_table(f"files.{layout.kind}.columns",
                                {c: h for c, h in layout.columns if c not in layout.constants}))
        consts = {}
        for c in layout.constants:
            vals = frames[layout.kind][c].drop_nulls().unique().to_list() if layout.kind in frames else []
            if vals:
                consts[c] = vals[0]
        if consts:
            parts.append(toml_table(f"files.{layout.kind}.constants", consts))
        if layout.header("visit_type"):
            parts.append(toml_table(f"files.{layout.kind}.values.visit_type",
                                    {v: k for k, v in dialect.visit_types.items()}))
    return "\n".join(parts)


def code_tables(maps: dict[str, dict[str, str]]) -> str:
    return "\n".join(toml_table(f"codes.{kind}", table) for kind, table in maps.items())


def write_files(
    out_dir: Path, frames: dict[str, pl.DataFrame], defects: list[Defect], dialect: CsvDialect,
    layouts: tuple[FileLayout, ...] | None = None, filters: dict[str, pl.Expr] | None = None,
    typed: tuple[dict[str, pl.DataFrame], dict[str, int], list[Defect]] | None = None,
) -> tuple[list[Path], dict[str, int]]:
    """Render and write each layout's file; returns (files, planted counts)."""
    typed_frames, planted, rest = typed or apply_typed_defects(frames, defects)
    files = []
    for layout in layouts or dialect.files:
        frame = typed_frames.get(layout.kind)
        if frame is None:
            continue
        if filters and layout.file in filters:
            frame = frame.filter(filters[layout.file])
        text = render(frame, layout, dialect)
        text = impossible_dates(text, typed_frames[layout.kind], layout, dialect, rest, planted)
        text, cut = order_rows(text, layout.kind, rest, planted)
        files.append(write_csv(out_dir / layout.file, text, dialect.encoding, truncate_last=cut))
    return files, planted


def write_csv_dialect(out_dir: Path, hospital: HospitalSpec, frames: dict[str, pl.DataFrame],
                      defects: list[Defect], dialect: CsvDialect) -> WriteResult:
    """The whole writer of a one-file-per-kind CSV dialect: files, planted defects, site.toml."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files, planted = write_files(out_dir, frames, defects, dialect)
    toml = "\n".join([site_header(hospital, "csv", dialect.encoding), csv_tables(dialect, frames),
                      code_tables(code_maps(hospital.dialect))])
    return WriteResult(files=files, site_toml=toml, planted=planted)
