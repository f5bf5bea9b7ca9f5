"""Overview: people, visits, stays and costs in the pooled records; people by province and age."""

import streamlit as st

from dashboards import common as c

tbl = c.table()
c.header(tbl, "Pooled health records: overview",
         "Aggregate figures from the pooled records of every hospital. No row-level data is "
         "shown anywhere; every figure passed the disclosure rules.")
flt = c.filters(tbl)
cols = st.columns(4)
with cols[0]:
    c.metric(tbl, "People in the records", "people", flt)
with cols[1]:
    c.metric(tbl, "Visits", "visits", flt)
with cols[2]:
    c.metric(tbl, "Inpatient stays", "inpatient_stays", flt)
with cols[3]:
    c.metric(tbl, "Average cost per visit (CNY)", "cost_per_visit", flt)
c.ignored(tbl, "people", flt)
if c.available(tbl, "people"):
    left, right = st.columns(2)
    by_region = tbl.cells("people", {}, ["region"])
    with left:
        c.tile_map(tbl, by_region, "people", "People in the records by province")
    age_sex = c.display(tbl, tbl.cells("people", flt, ["age_band", "sex"]), ["age_band", "sex"],
                        "people")
    with right:
        st.subheader("People by age band and sex")
        c.chart(age_sex, "bar", "age_band", "people", color="sex")
    c.show(age_sex, "people_by_age_sex")
    c.show(c.display(tbl, by_region, ["region"], "people"), "people_by_region")
c.footer(tbl)
