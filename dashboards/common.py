"""Shared page parts: the table, the language, the filters, provenance, tables that mark withheld
values, CSV downloads, charts and the province tile map. Only the ``dashboards`` package imports
streamlit.

Contracts every page keeps through these parts:

* a withheld value reads **withheld** (已隐去) in its own cell, in the table and in the CSV; a
  combination the records do not hold reads **no data** (无数据); neither is ever blank, ``None``
  or ``NaN``, and every withheld value carries the same words (the footer explains them);
* a chart whose every value is withheld or missing says so instead of drawing an empty frame;
* a table that is mostly withheld says which coarser view publishes more (:func:`advise`);
* every word comes from :mod:`dashboards.i18n` in the session's language.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import polars as pl
import streamlit as st

from dashboards import i18n
from dashboards.data import (
    ALL,
    FILTERS,
    FilterError,
    IndicatorTable,
    resolve_path,
    take_preopened,
)
from dashboards.i18n import LANGUAGES, t
from enclave.io.indicators.regions import PROVINCES

#: every wording of a withheld value (both languages): the only text a withheld cell shows
SUPPRESSED = i18n.TEXT["withheld"][1]
WITHHELD_TEXTS = frozenset(i18n.TEXT["withheld"])
NO_DATA_TEXTS = frozenset(i18n.TEXT["no_data"])
#: column message ids of counts of people or events (each ≥ the threshold, or withheld)
COUNT_KEYS = ("c_people", "c_visits", "c_stays", "c_readmitted", "c_repeats", "c_tests")
COUNT_COLUMNS = frozenset(i18n.TEXT[k][i] for k in COUNT_KEYS for i in (0, 1))
#: share of withheld values above which a table says which coarser view to use
MOSTLY_WITHHELD = 0.5


def _arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """``streamlit run dashboards/app.py -- --indicators DIR --language zh|en`` (unknown
    arguments are left alone; ``argv``: the script's arguments, by default its own)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--indicators")
    parser.add_argument("--language")
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    return args


def default_language() -> str:
    """The deployment's language: ``--language``, else ``$ENCLAVE_DASHBOARDS_LANGUAGE``, else
    Chinese (an unknown value falls back to Chinese)."""
    lang = _arguments().language or os.environ.get(i18n.ENV_LANGUAGE) or i18n.DEFAULT_LANGUAGE
    return lang if lang in LANGUAGES else i18n.DEFAULT_LANGUAGE


def language_switch() -> str:
    """The sidebar's language switch (every page); the first run of a session takes ``?lang=``
    from the link when it is a known language, else :func:`default_language`."""
    if "lang" not in st.session_state:
        wanted = st.query_params.get("lang")
        st.session_state["lang"] = wanted if wanted in LANGUAGES else default_language()
    lang = st.sidebar.radio(t("language", st.session_state["lang"]), list(LANGUAGES),
                            format_func=LANGUAGES.get, key="lang", horizontal=True)
    return lang


def lang() -> str:
    value = st.session_state.get("lang")
    return value if value in LANGUAGES else default_language()


@st.cache_resource(show_spinner=False)
def _open(path: str) -> IndicatorTable:
    """One table per server, shared by every session (it is read-only and remembers answers).

    Everything loaded by now — Streamlit, pandas, polars, pyarrow, DuckDB and the table's labels
    — lives as long as the server, so it is moved out of the garbage collector's sight
    (``gc.freeze``): otherwise every full collection walks those ~200,000 objects again while
    holding the GIL, and a new session's last elements wait for it."""
    tbl = take_preopened(path) or IndicatorTable(path)
    gc.freeze()
    return tbl


def table() -> IndicatorTable:
    return _open(str(resolve_path(_arguments().indicators)))


def label(tbl: IndicatorTable, dimension: str, code: str | None, language: str | None = None
          ) -> str:
    """The shown name of a code: translated, the table's own label (hospitals), years the
    records cover in part marked."""
    language = language or lang()
    text = i18n.value_label(dimension, code, language, tbl.labels.get(dimension, {}).get(code))
    if dimension == "year" and code in tbl.partial_years:
        text += t("partial", language)
    return text


def provenance(tbl: IndicatorTable) -> None:
    """The data's release and date, on every page."""
    i = tbl.info
    st.caption(t("provenance", lang(), version=i.version, release=i.source_release,
                 sha=i.source_sha256[:12], released=i.source_created_at[:10],
                 built=i.built_at[:10], policy=i.policy, phash=i.policy_sha256[:12]))


def header(tbl: IndicatorTable, title_key: str, intro_key: str) -> None:
    st.title(t(title_key, lang()))
    provenance(tbl)
    st.markdown(t(intro_key, lang()))


def footer(tbl: IndicatorTable) -> None:
    r = tbl.info.rounding
    st.divider()
    st.caption(t("footer", lang(), k=tbl.info.min_patients, base=r.get("base"),
                 floor=r.get("floor")))
    provenance(tbl)


def filters(tbl: IndicatorTable, which: Sequence[str] = FILTERS) -> dict[str, str]:
    """Sidebar filters, preset from the URL's query parameters when those hold known values.
    Unknown values (quotes, SQL fragments, unknown regions) are ignored with a warning and never
    echoed or passed on."""
    out: dict[str, str] = {}
    language = lang()
    for dim in which:
        options = [ALL] + tbl.known(dim)
        wanted = st.query_params.get(dim)
        index = 0
        if wanted is not None:
            try:
                tbl.validate({dim: wanted})
                index = options.index(wanted)
            except (FilterError, ValueError):
                st.sidebar.warning(t("bad_link", language, what=t(f"f_{dim}", language)))
        out[dim] = st.sidebar.selectbox(t(f"f_{dim}", language), options, index=index,
                                        key=f"f_{dim}",
                                        format_func=lambda v, d=dim: label(tbl, d, v, language))
    return tbl.validate(out)


def page(title_key: str, intro_key: str, which: Sequence[str] = FILTERS
         ) -> tuple[IndicatorTable, dict[str, str]]:
    """How every page opens: the indicator table, the page's title, provenance and intro, and the
    sidebar filters ``which`` with the values chosen."""
    tbl = table()
    header(tbl, title_key, intro_key)
    return tbl, filters(tbl, which)


def ignored(tbl: IndicatorTable, indicator: str, flt: dict[str, str], title_key: str) -> None:
    """A note naming the filters ``indicator`` is not broken down by (they do not apply)."""
    language = lang()
    off = [t(f"f_{d}", language) for d, v in flt.items()
           if v != ALL and d in FILTERS and indicator in tbl.indicators
           and not tbl.applies(indicator, d)]
    if off:
        st.info(t("not_broken_down", language, title=t(title_key, language),
                  dims=", ".join(off)))


@dataclass(slots=True)
class View:
    """What a table or chart shows: ``frame`` has the ``by`` columns (shown names) and one
    numeric column per value (NaN where withheld or missing); ``withheld`` marks, per value
    column, the rows the rules withheld (the rest of the NaNs are cells the table lacks)."""

    frame: pd.DataFrame
    by: list[str]
    values: list[str]
    withheld: dict[str, np.ndarray]
    decimals: dict[str, int]

    def where(self, keep: np.ndarray) -> View:
        """The rows ``keep`` selects (a boolean mask, or positions in the order wanted)."""
        return View(self.frame.iloc[keep].reset_index(drop=True), self.by, self.values,
                    {k: w[keep] for k, w in self.withheld.items()}, self.decimals)

    def shown(self) -> int:
        return int(sum((~np.isnan(self.frame[v].to_numpy(dtype=float))).sum()
                       for v in self.values))

    def total(self) -> int:
        return len(self.frame) * len(self.values)


def _decimals(tbl: IndicatorTable, indicator: str) -> int:
    return 1 if tbl.tile(indicator)["unit"] in ("%", "per 1,000") else 0


#: views already made, per table, request and language (the table never changes): a filter
#: change re-runs the page script, and most of its views are the same as before
_VIEWS: OrderedDict[tuple, View] = OrderedDict()
_VIEWS_LOCK = threading.Lock()
VIEWS_CACHE_SIZE = 2048


def view(tbl: IndicatorTable, parts: Sequence[tuple[str, str]], flt: dict[str, str],
         by: Sequence[str], drop: dict[str, Sequence[str]] | None = None) -> View:
    """Indicators side by side, one value column each (``parts``: indicator, column message id),
    one row per level of the ``by`` axes (in their display order), other axes at the filters;
    ``drop`` leaves out codes of a ``by`` axis (e.g. the ``All`` visit type). Each caller gets
    its own copy (views are remembered per request and language)."""
    language = lang()
    key = (id(tbl), tuple(parts), tuple(sorted(flt.items())), tuple(by),
           tuple(sorted((d, tuple(c)) for d, c in (drop or {}).items())), language)
    with _VIEWS_LOCK:
        hit = _VIEWS.get(key)
        if hit is not None:
            _VIEWS.move_to_end(key)
    if hit is None:
        hit = _make_view(tbl, parts, flt, by, drop or {}, language)
        with _VIEWS_LOCK:
            _VIEWS[key] = hit
            while len(_VIEWS) > VIEWS_CACHE_SIZE:
                _VIEWS.popitem(last=False)
    return View(hit.frame.copy(), list(hit.by), list(hit.values), dict(hit.withheld),
                dict(hit.decimals))


def _make_view(tbl: IndicatorTable, parts: Sequence[tuple[str, str]], flt: dict[str, str],
               by: Sequence[str], drop: dict[str, Sequence[str]], language: str) -> View:
    by = list(by)
    frames, names, decimals = [], [], {}
    for indicator, key in parts:
        if indicator not in tbl.indicators:
            continue
        name = t(key, language)
        names.append(name)
        decimals[name] = _decimals(tbl, indicator)
        k = len(names)
        cells = tbl.cells(indicator, flt, by)
        for d, codes in drop.items():
            cells = cells.filter(~pl.col(d).is_in(list(codes)))
        frames.append(cells.with_row_index(f"_o{k}").select(
            *by, f"_o{k}", pl.col("value").cast(pl.Float64).alias(name),
            pl.col("suppressed").alias(f"_s{k}")))
    if not frames:
        return View(pd.DataFrame(), [], [], {}, {})
    out = frames[0]
    for f in frames[1:]:
        out = out.join(f, on=by, how="full", coalesce=True, nulls_equal=True) if by else \
            pl.concat([out, f], how="horizontal")
    if by and len(frames) > 1:
        out = out.sort([f"_o{k}" for k in range(1, len(frames) + 1)], nulls_last=True)
    withheld = {n: out[f"_s{k}"].fill_null(False).to_numpy() for k, n in enumerate(names, 1)}
    shown_by = [t(f"d_{d}", language) for d in by]
    out = out.select(*[pl.col(d).cast(pl.String).replace(
        {v: label(tbl, d, v, language) for v in out[d].drop_nulls().unique().to_list()}
    ).fill_null("").alias(s) for d, s in zip(by, shown_by)], *names)
    return View(out.to_pandas(), shown_by, names, withheld, decimals)


def _text(v: View) -> pd.DataFrame:
    """The view as shown: numbers formatted, withheld and missing values in words."""
    language = lang()
    out = v.frame[v.by].copy()
    for name in v.values:
        col = v.frame[name].to_numpy(dtype=float)
        fmt = f"{{:,.{v.decimals[name]}f}}"
        out[name] = [t("withheld", language) if w else t("no_data", language) if np.isnan(x)
                     else fmt.format(x) for x, w in zip(col, v.withheld[name])]
    return out


def show(v: View, name: str) -> None:
    """The view as a table, and the same (already checked) aggregates as a CSV download."""
    if not v.values:
        st.info(t("no_data", lang()))
        return
    shown = _text(v)
    st.dataframe(shown, hide_index=True, width="stretch")
    st.download_button(t("download", lang(), name=name),
                       shown.to_csv(index=False).encode("utf-8-sig"),
                       file_name=f"{name}.csv", mime="text/csv", key=f"dl_{name}")


def advise(tbl: IndicatorTable, v: View, indicator: str, flt: dict[str, str],
           by: Sequence[str]) -> None:
    """When most of ``v`` is withheld, say so and which coarser view publishes more: the
    filter whose clearing publishes the most values of ``indicator`` by ``by``."""
    total, shown = v.total(), v.shown()
    if total < 4 or shown >= (1 - MOSTLY_WITHHELD) * total:
        return
    language = lang()
    best = None
    for dim, value in flt.items():
        if value == ALL or not tbl.applies(indicator, dim) or f"f_{dim}" not in i18n.TEXT:
            continue
        cells = tbl.cells(indicator, {**flt, dim: ALL}, by)
        n = int((~cells["suppressed"]).sum())
        rows = max(cells.height, 1)
        if best is None or n / rows > best[1] / best[2]:
            best = (dim, n, rows)
    if best and best[1] / best[2] > shown / total:
        advice = t("advice_clear", language, dim=t(f"f_{best[0]}", language), better=best[1],
                   total=best[2])
    else:
        advice = t("advice_coarser", language)
    st.info(t("mostly_withheld", language, shown=shown, total=total, advice=advice))


def full_years(tbl: IndicatorTable, v: View) -> View:
    """``v`` (by year first) without the years the records cover only in part: a chart would
    draw them as dips (the tables keep them, marked)."""
    if not tbl.partial_years or not v.by:
        return v
    marked = {label(tbl, "year", y) for y in tbl.partial_years}
    return v.where(~v.frame[v.by[0]].isin(marked).to_numpy())


def partial_note(tbl: IndicatorTable) -> None:
    """Under a chart or table by year: which years the records cover only in part."""
    if tbl.partial_years:
        years = ", ".join(sorted(tbl.partial_years))
        st.caption(t("partial_years", lang(), years=years))


def chart(v: View, mark: str, x: str, y: str, color: str | None = None,
          horizontal: bool = False, title: str | None = None) -> None:
    """A bar or line chart of ``v`` (``x``, ``y``, ``color``: its shown column names) as a plain
    Vega-Lite spec (no Altair object: drawing a spec costs about a millisecond, building and
    validating an Altair chart a hundred). Withheld and missing values are left out (the table
    marks them); a chart with no value left says so instead of drawing an empty frame. Tooltips
    carry the full labels."""
    frame = v.frame[v.frame[y].notna()] if y in v.frame else v.frame.iloc[0:0]
    if frame.empty:
        st.info(t("chart_withheld", lang()))
        return
    cat = {"field": x, "type": "nominal" if mark == "bar" else "ordinal", "sort": None,
           "axis": {"labelLimit": 360} if horizontal else {"labelAngle": 0, "labelLimit": 200}}
    val = {"field": y, "type": "quantitative"}
    enc: dict = {"y": cat, "x": val} if horizontal else {"x": cat, "y": val}
    enc["tooltip"] = [{"field": x}, {"field": y}] + ([{"field": color}] if color else [])
    if color:
        enc["color"] = {"field": color, "type": "nominal", "sort": None}
        if mark == "bar":
            enc["yOffset" if horizontal else "xOffset"] = {"field": color, "sort": None}
    spec = {"mark": {"type": mark, "point": True, "tooltip": True} if mark == "line"
            else {"type": mark, "tooltip": True}, "encoding": enc, "height": 260}
    if title:
        spec["title"] = title
    st.vega_lite_chart(frame, spec, width="stretch")


def tile_map(tbl: IndicatorTable, cells: pl.DataFrame, value_name: str, title: str) -> None:
    """Province tile map: one square per province, placed roughly where it lies — no map tiles and
    no boundary files, since the enclave has no network. A tile shows a short name; hovering
    shows the full name, the value, or whether it is withheld or has no data (grey)."""
    language = lang()
    vals = dict(zip(cells["region"].to_list(), cells["value"].to_list()))
    sup = dict(zip(cells["region"].to_list(), cells["suppressed"].to_list()))
    rows = []
    for code, (_, r, c) in PROVINCES.items():
        state = ("no_data" if code not in vals or (vals[code] is None and not sup[code]) else
                 "withheld" if sup[code] else None)
        rows.append({"name": i18n.short_province(code, language),
                     "full": label(tbl, "region", code, language), "row": r, "col": c,
                     "value": None if state else vals[code],
                     "status": t(state, language) if state else ""})
    df = pd.DataFrame(rows)
    enc = {"x": {"field": "col", "type": "ordinal", "axis": None},
           "y": {"field": "row", "type": "ordinal", "axis": None}}
    tips = [{"field": "full", "title": t("d_region", language)},
            {"field": "value", "title": value_name, "format": ",.1f"},
            {"field": "status", "title": " "}]
    shown, hidden = "datum.status === ''", "datum.status !== ''"
    values = df["value"].dropna()
    # white names on the darker two fifths of the scale
    dark = float(values.min() + 0.6 * (values.max() - values.min())) if len(values) else 0.0
    spec = {"title": title, "height": 340, "encoding": enc, "layer": [
        {"transform": [{"filter": hidden}],  # withheld or no data: grey, said on hover
         "mark": {"type": "rect", "stroke": "white", "color": "#dddddd"},
         "encoding": {"tooltip": tips}},
        {"transform": [{"filter": shown}],
         "mark": {"type": "rect", "stroke": "white"},
         "encoding": {"color": {"field": "value", "type": "quantitative", "title": value_name,
                                "scale": {"scheme": "blues"}},
                      "tooltip": tips}},
        {"mark": {"type": "text", "fontSize": 10 if language == "zh" else 9}, "encoding": {
            "text": {"field": "name"}, "tooltip": tips,
            "color": {"condition": [{"test": f"{shown} && datum.value > {dark}", "value": "white"},
                                    {"test": shown, "value": "#222222"}],
                      "value": "#666666"}}}]}
    st.vega_lite_chart(df, spec, width="stretch")


def region_section(tbl: IndicatorTable, parts: Sequence[tuple[str, str]], flt: dict[str, str],
                   mapped: str, value_key: str, title: str, name: str,
                   advised: str | None = None) -> None:
    """The section by province: the tile map of ``mapped`` (its legend ``value_key``, its title
    ``title``), then the table of ``parts`` by province (downloadable as ``name``), advised on
    ``advised`` when given; both on ``flt`` less its province."""
    language = lang()
    no_region = {k: v for k, v in flt.items() if k != "region"}
    tile_map(tbl, tbl.cells(mapped, no_region, ["region"]), t(value_key, language), title)
    by_region = view(tbl, parts, no_region, ["region"])
    if advised:
        advise(tbl, by_region, advised, no_region, ["region"])
    show(by_region, name)


def metric(tbl: IndicatorTable, label_key: str, indicator: str, flt: dict[str, str],
           fmt: str = "{:,.0f}") -> None:
    language = lang()
    name = t(label_key, language)
    if indicator not in tbl.indicators:
        st.metric(name, t("not_available", language))
        return
    c = tbl.cells(indicator, flt)
    if c.height == 0:
        st.metric(name, t("no_data", language))
    elif c["suppressed"][0]:
        st.metric(name, t("withheld", language))
    elif c["value"][0] is None:
        st.metric(name, t("no_data", language))
    else:
        st.metric(name, fmt.format(c["value"][0]))


def available(tbl: IndicatorTable, *indicators: str) -> bool:
    """Whether the table holds ``indicators`` (a build publishes all of them or fails; a table
    built with ``--skip-missing`` may lack some: the page says so)."""
    missing = [i for i in indicators if i not in tbl.indicators]
    if missing:
        st.error(t("missing", lang(), ids=", ".join(missing)))
    return not missing
