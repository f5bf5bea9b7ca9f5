"""Overview: people, visits, stays and costs (inpatient and outpatient apart); people by
province, age band and sex."""

import streamlit as st

from dashboards import common as c

tbl, flt = c.page("ov_title", "ov_intro")
types = tbl.known("visit_type")
cols = st.columns(3)
with cols[0]:
    c.metric(tbl, "m_people", "people", flt)
with cols[1]:
    c.metric(tbl, "m_visits", "visits", flt)
with cols[2]:
    c.metric(tbl, "m_stays", "inpatient_stays", flt)
# inpatient and outpatient means side by side, never one mean of both (~14k against ~250 CNY)
cols = st.columns(3)
for col, (vt, key) in zip(cols, (("inpatient", "m_cost_in"), ("outpatient", "m_cost_out"))):
    if vt in types:
        with col:
            c.metric(tbl, key, "cost_per_visit", {**flt, "visit_type": vt})
c.ignored(tbl, "people", flt, "m_people")
if c.available(tbl, "people"):
    lang = c.lang()
    parts = [("people", "c_people")]
    left, right = st.columns(2)
    with left:
        c.tile_map(tbl, tbl.cells("people", {}, ["region"]), c.t("c_people", lang),
                   c.t("ov_map", lang))
    age_sex = c.view(tbl, parts, flt, ["age_band", "sex"], drop={"sex": ["All"]})
    with right:
        st.subheader(c.t("ov_age_sex", lang))
        c.chart(age_sex, "bar", age_sex.by[0], age_sex.values[0], color=age_sex.by[1])
    c.advise(tbl, age_sex, "people", flt, ["age_band", "sex"])
    c.show(age_sex, "people_by_age_sex")
    st.subheader(c.t("ov_by_region", lang))
    c.show(c.view(tbl, parts, {}, ["region"]), "people_by_region")
c.footer(tbl)
