"""Shared page parts: the table, the filters, the provenance line, tables with suppression marks,
CSV downloads and the province tile map. Only the ``dashboards`` package imports streamlit."""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Sequence

import pandas as pd
import polars as pl
import streamlit as st

from dashboards.data import ALL, FILTERS, FilterError, IndicatorTable, resolve_path
from enclave.indicators.regions import PROVINCES

SUPPRESSED = "suppressed"
FILTER_LABELS = {"year": "Year", "region": "Region (province)", "level": "Hospital level"}


def _argument_path() -> str | None:
    """``streamlit run dashboards/app.py -- --indicators DIR``: the table named on the command
    line (unknown arguments are left alone)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--indicators")
    args, _ = parser.parse_known_args(sys.argv[1:])
    return args.indicators


@st.cache_resource(show_spinner=False)
def _open(path: str) -> IndicatorTable:
    """One table per server, shared by every session (it is read-only and remembers answers).

    Everything loaded by now — Streamlit, pandas, polars, pyarrow, DuckDB and the table's labels
    — lives as long as the server, so it is moved out of the garbage collector's sight
    (``gc.freeze``): otherwise every full collection walks those ~200,000 objects again while
    holding the GIL, and a new session's last elements wait for it."""
    tbl = IndicatorTable(path)
    gc.freeze()
    return tbl


def table() -> IndicatorTable:
    return _open(str(resolve_path(_argument_path())))


def provenance(tbl: IndicatorTable) -> None:
    """The data's release and date, on every page."""
    st.caption(tbl.info.line())


def header(tbl: IndicatorTable, title: str, intro: str) -> None:
    st.title(title)
    provenance(tbl)
    st.markdown(intro)


def footer(tbl: IndicatorTable) -> None:
    r = tbl.info.rounding
    st.divider()
    st.caption(
        f"**{SUPPRESSED}** marks a value withheld by the disclosure rules: it describes fewer than "
        f"{tbl.info.min_patients} people, fails a dominance rule, or would let a withheld value "
        f"be worked out from the totals (secondary suppression). Counts are rounded to multiples "
        f"of {r.get('base')} by a fixed key per cell (consistent rounding), so two refreshes "
        f"cannot be subtracted to reveal anyone; no count below {r.get('floor')} is shown. Rates "
        f"are computed from the rounded counts.")
    provenance(tbl)


def filters(tbl: IndicatorTable, which: Sequence[str] = FILTERS) -> dict[str, str]:
    """Sidebar filters, preset from the URL's query parameters when those hold known values.
    Unknown values (quotes, SQL fragments, unknown regions) are ignored with a warning and never
    echoed or passed on."""
    out: dict[str, str] = {}
    for dim in which:
        options = [ALL] + tbl.known(dim)
        wanted = st.query_params.get(dim)
        index = 0
        if wanted is not None:
            try:
                tbl.validate({dim: wanted})
                index = options.index(wanted)
            except (FilterError, ValueError):
                st.sidebar.warning(f"The {FILTER_LABELS[dim].lower()} in the link is not one "
                                   "this table holds; showing all.")
        out[dim] = st.sidebar.selectbox(FILTER_LABELS[dim], options, index=index, key=f"f_{dim}",
                                        format_func=lambda v, d=dim: tbl.label(d, v))
    return tbl.validate(out)


def ignored(tbl: IndicatorTable, indicator: str, flt: dict[str, str]) -> None:
    off = [FILTER_LABELS[d].lower() for d, v in flt.items()
           if v != ALL and d in FILTERS and indicator in tbl.indicators
           and not tbl.applies(indicator, d)]
    if off:
        st.info(f"{tbl.tile(indicator)['title']} is not broken down by {', '.join(off)}; "
                "that filter does not apply here.")


def _labelled(tbl: IndicatorTable, frame: pl.DataFrame, by: Sequence[str]) -> pl.DataFrame:
    return frame.with_columns([pl.col(d).replace(tbl.labels[d]) for d in by if d in tbl.labels])


def display(tbl: IndicatorTable, cells: pl.DataFrame, by: Sequence[str], value_name: str
            ) -> pd.DataFrame:
    """A displayable frame: labels for codes, the value (blank when suppressed), a mark and why."""
    out = cells.select(
        *by, pl.col("value").cast(pl.Float64).alias(value_name),
        pl.when(pl.col("suppressed")).then(pl.lit(SUPPRESSED)).otherwise(pl.lit("")).alias("status"),
        pl.col("reason").fill_null("").alias("why"))
    return _labelled(tbl, out, by).to_pandas()


def show(frame: pd.DataFrame, name: str) -> None:
    """The frame as shown, and the same (already checked) aggregates as a CSV download."""
    st.dataframe(frame, hide_index=True, width="stretch")
    st.download_button(f"Download {name} (CSV)", frame.to_csv(index=False).encode("utf-8"),
                       file_name=f"{name}.csv", mime="text/csv", key=f"dl_{name}")


def chart(frame: pd.DataFrame, mark: str, x: str, y: str, color: str | None = None,
          horizontal: bool = False, title: str | None = None) -> None:
    """A bar or line chart as a plain Vega-Lite spec (no Altair object: drawing a spec costs
    about a millisecond, building and validating an Altair chart a hundred). Withheld values are
    left out of the chart; the table below it marks them."""
    cat = {"field": x, "type": "nominal" if mark == "bar" else "ordinal", "sort": None,
           "axis": {"labelLimit": 320} if horizontal else {"labelAngle": 0}}
    val = {"field": y, "type": "quantitative"}
    enc: dict = {"y": cat, "x": val} if horizontal else {"x": cat, "y": val}
    enc["tooltip"] = [{"field": x}, {"field": y}] + ([{"field": color}] if color else [])
    if color:
        enc["color"] = {"field": color, "type": "nominal"}
        if mark == "bar":
            enc["yOffset" if horizontal else "xOffset"] = {"field": color}
    spec = {"mark": {"type": mark, "point": True} if mark == "line" else {"type": mark},
            "encoding": enc, "height": 260}
    if title:
        spec["title"] = title
    st.vega_lite_chart(frame, spec, width="stretch")


def tile_map(tbl: IndicatorTable, cells: pl.DataFrame, value_name: str, title: str) -> None:
    """Province tile map: one square per province, placed roughly where it lies — no map tiles and
    no boundary files, since the enclave has no network. Withheld values are grey."""
    vals = dict(zip(cells["region"].to_list(), cells["value"].to_list()))
    df = pd.DataFrame([{"name": name[:3], "row": r, "col": c, "value": vals.get(code),
                        "status": ("no data" if code not in vals else
                                   SUPPRESSED if vals[code] is None else "shown")}
                       for code, (name, r, c) in PROVINCES.items()])
    enc = {"x": {"field": "col", "type": "ordinal", "axis": None},
           "y": {"field": "row", "type": "ordinal", "axis": None}}
    spec = {"title": title, "height": 320, "encoding": enc, "layer": [
        {"mark": {"type": "rect", "stroke": "white"},
         "encoding": {"color": {"condition": {"test": "datum.value !== null", "field": "value",
                                              "type": "quantitative", "title": value_name,
                                              "scale": {"scheme": "blues"}},
                                "value": "#dddddd"},
                      "tooltip": [{"field": "name"}, {"field": "value", "title": value_name},
                                  {"field": "status"}]}},
        {"mark": {"type": "text", "fontSize": 10}, "encoding": {"text": {"field": "name"}}}]}
    st.vega_lite_chart(df, spec, width="stretch")


#: displayed columns that hold counts of people or events (each ≥ the threshold, or withheld)
COUNT_COLUMNS = ("people", "visits", "stays", "readmitted stays", "repeat tests")


def combined(tbl: IndicatorTable, parts: Sequence[tuple[str, str]], flt: dict[str, str],
             by: Sequence[str]) -> pd.DataFrame:
    """Several indicators side by side (one value column each, named as given), with one status
    and why column: withheld values stay blank, each with its own reason."""
    by = list(by)
    frames, names = [], []
    for i, (indicator, name) in enumerate(parts):
        if indicator not in tbl.indicators:
            continue
        names.append(name)
        frames.append(tbl.cells(indicator, flt, by).select(
            *by, pl.col("value").cast(pl.Float64).alias(name),
            pl.col("suppressed").alias(f"_s{len(names)}"), pl.col("reason").alias(f"_w{len(names)}")))
    if not frames:
        return pd.DataFrame()
    out = frames[0]
    for f in frames[1:]:
        out = out.join(f, on=by, how="full", coalesce=True, nulls_equal=True) if by else \
            pl.concat([out, f], how="horizontal")
    status = pl.concat_list([pl.when(pl.col(f"_s{k}")).then(pl.lit(f"{n} {SUPPRESSED}"))
                             for k, n in enumerate(names, 1)]).list.drop_nulls().list.join(", ")
    why = pl.concat_list([pl.col(f"_w{k}") for k in range(1, len(names) + 1)]
                         ).list.drop_nulls().list.unique(maintain_order=True).list.join("; ")
    out = out.with_columns(status.alias("status"), why.alias("why")).select(
        *by, *names, "status", "why")
    return _labelled(tbl, out, by).to_pandas()


def metric(tbl: IndicatorTable, label: str, indicator: str, flt: dict[str, str],
           fmt: str = "{:,.0f}") -> None:
    if indicator not in tbl.indicators:
        st.metric(label, "not available")
        return
    c = tbl.cells(indicator, flt)
    if c.height == 0:
        st.metric(label, "no data")
    elif c["suppressed"][0]:
        st.metric(label, SUPPRESSED, help=c["reason"][0])
    else:
        st.metric(label, fmt.format(c["value"][0]))


def available(tbl: IndicatorTable, *indicators: str) -> bool:
    missing = [i for i in indicators if i not in tbl.indicators]
    if missing:
        st.warning("This release does not hold what these indicators need "
                   f"({', '.join(missing)}); see the build manifest.")
    return not missing
