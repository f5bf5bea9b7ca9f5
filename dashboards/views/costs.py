"""Average cost per visit by hospital level, year and province: inpatient stays and outpatient
visits apart (a mean over both mixes ~14k CNY stays with ~250 CNY visits)."""

import streamlit as st

from dashboards import common as c

tbl, flt = c.page("co_title", "co_intro")
if c.available(tbl, "cost_per_visit"):
    lang = c.lang()
    parts = [("cost_per_visit", "c_mean_cost")]
    types = [vt for vt in tbl.known("visit_type") if vt in ("inpatient", "outpatient")] or \
        tbl.known("visit_type")
    no_level = {k: v for k, v in flt.items() if k != "level"}
    no_year = {k: v for k, v in flt.items() if k != "year"}
    st.subheader(c.t("co_level", lang))
    cols = st.columns(len(types))
    for col, vt in zip(cols, types):
        with col:
            v = c.view(tbl, parts, {**no_level, "visit_type": vt}, ["level"])
            c.chart(v, "bar", v.by[0], v.values[0], title=c.label(tbl, "visit_type", vt, lang))
    by_level = c.view(tbl, parts, no_level, ["level", "visit_type"], drop={"visit_type": ["All"]})
    c.show(by_level, "cost_by_level_type")
    st.subheader(c.t("co_year", lang))
    cols = st.columns(len(types))
    for col, vt in zip(cols, types):
        with col:
            v = c.view(tbl, parts, {**no_year, "visit_type": vt}, ["year"])
            c.chart(c.full_years(tbl, v), "line", v.by[0], v.values[0], title=c.label(tbl, "visit_type", vt, lang))
    c.partial_note(tbl)
    by_year = c.view(tbl, parts, no_year, ["year", "visit_type"], drop={"visit_type": ["All"]})
    c.show(by_year, "cost_by_year_type")
    st.subheader(c.t("co_region", lang))
    no_region = {k: v for k, v in flt.items() if k != "region"}
    by_region = c.view(tbl, parts, no_region, ["region", "visit_type"],
                       drop={"visit_type": ["All"]})
    c.advise(tbl, by_region, "cost_per_visit", no_region, ["region", "visit_type"])
    c.show(by_region, "cost_by_region_type")
c.footer(tbl)
