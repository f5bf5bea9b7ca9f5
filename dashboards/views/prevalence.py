"""Prevalence of chronic conditions by province, age band and sex."""

import streamlit as st

from dashboards import common as c

tbl, flt = c.page("pr_title", "pr_intro", ("year", "region", "level"))
c.ignored(tbl, "condition_patients", flt, "pr_title")
if c.available(tbl, "condition_patients", "prevalence_per_1000"):
    lang = c.lang()
    parts = [("condition_patients", "c_people"), ("prevalence_per_1000", "c_per_1000")]
    by_cond = c.view(tbl, parts, flt, ["condition"])
    st.subheader(c.t("pr_all", lang))
    c.chart(by_cond, "bar", by_cond.by[0], by_cond.values[1], horizontal=True)
    c.advise(tbl, by_cond, "condition_patients", flt, ["condition"])
    c.show(by_cond, "prevalence_by_condition")
    conditions = tbl.known("condition")
    cond = st.selectbox(c.t("pr_condition", lang), conditions, key="condition",
                        index=conditions.index("hypertension") if "hypertension" in conditions
                        else 0, format_func=lambda v: c.label(tbl, "condition", v, lang))
    name = c.label(tbl, "condition", cond, lang)
    f2 = {**flt, "condition": cond}
    st.subheader(c.t("pr_age_sex", lang, cond=name))
    age_sex = c.view(tbl, parts, f2, ["age_band", "sex"], drop={"sex": ["All"]})
    c.chart(age_sex, "bar", age_sex.by[0], age_sex.values[1], color=age_sex.by[1])
    c.advise(tbl, age_sex, "condition_patients", f2, ["age_band", "sex"])
    c.show(age_sex, "prevalence_by_age_sex")
    st.subheader(c.t("pr_region", lang, cond=name))
    c.region_section(tbl, parts, f2, "prevalence_per_1000", "c_per_1000",
                     c.t("pr_map", lang, cond=name), "prevalence_by_region")
c.footer(tbl)
