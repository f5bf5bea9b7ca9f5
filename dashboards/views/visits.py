"""Visits per 1,000 people by year, province, hospital level and visit type."""

import streamlit as st

from dashboards import common as c

tbl, flt = c.page("vi_title", "vi_intro")
if c.available(tbl, "visits", "visits_per_1000"):
    lang = c.lang()
    parts = [("visits", "c_visits"), ("visits_per_1000", "c_per_1000")]
    no_year = {k: v for k, v in flt.items() if k != "year"}
    by_year = c.view(tbl, parts, no_year, ["year"])
    st.subheader(c.t("vi_year", lang))
    c.chart(c.full_years(tbl, by_year), "line", by_year.by[0], by_year.values[1])
    c.partial_note(tbl)
    c.show(by_year, "visits_by_year")
    left, right = st.columns(2)
    with left:
        st.subheader(c.t("vi_type", lang))
        c.show(c.view(tbl, parts, flt, ["visit_type"]), "visits_by_type")
    with right:
        st.subheader(c.t("vi_level", lang))
        no_level = {k: v for k, v in flt.items() if k != "level"}
        c.show(c.view(tbl, parts, no_level, ["level"]), "visits_by_level")
    c.region_section(tbl, parts, flt, "visits_per_1000", "c_per_1000", c.t("vi_map", lang),
                     "visits_by_region", advised="visits")
c.footer(tbl)
