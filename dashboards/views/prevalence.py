"""Prevalence of chronic conditions by province, age band and sex."""

import streamlit as st

from dashboards import common as c

tbl = c.table()
c.header(tbl, "Chronic disease prevalence",
         "People with a condition recorded (in the year, or ever for All years) per 1,000 people "
         "in the records (with a visit that year). The denominator is the pooled records, not the "
         "census population.")
flt = c.filters(tbl, ("year", "region", "level"))
c.ignored(tbl, "condition_patients", flt)
if c.available(tbl, "condition_patients", "prevalence_per_1000"):
    parts = [("condition_patients", "people"), ("prevalence_per_1000", "per 1,000")]
    by_cond = c.combined(tbl, parts, flt, ["condition"])
    st.subheader("All chronic conditions")
    c.chart(by_cond, "bar", "condition", "per 1,000", horizontal=True)
    c.show(by_cond, "prevalence_by_condition")
    conditions = tbl.known("condition")
    cond = st.selectbox("Condition", conditions, key="condition",
                        index=conditions.index("hypertension") if "hypertension" in conditions
                        else 0)
    f2 = {**flt, "condition": cond}
    st.subheader(f"{cond}: by age band and sex")
    age_sex = c.combined(tbl, parts, f2, ["age_band", "sex"])
    c.chart(age_sex, "bar", "age_band", "per 1,000", color="sex")
    c.show(age_sex, "prevalence_by_age_sex")
    st.subheader(f"{cond}: by province")
    f3 = {k: v for k, v in f2.items() if k != "region"}
    regions = tbl.cells("prevalence_per_1000", f3, ["region"])
    c.tile_map(tbl, regions, "per 1,000", f"{cond} per 1,000 people")
    c.show(c.combined(tbl, parts, f3, ["region"]), "prevalence_by_region")
c.footer(tbl)
