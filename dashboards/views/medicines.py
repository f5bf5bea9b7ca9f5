"""Medicine use over time, by medicine group and hospital level."""

import streamlit as st

from dashboards import common as c

tbl, flt = c.page("me_title", "me_intro")
if c.available(tbl, "medicine_patients"):
    lang = c.lang()
    parts = [("medicine_patients", "c_people")]
    no_year = {k: v for k, v in flt.items() if k != "year"}
    st.subheader(c.t("me_year", lang))
    over = c.view(tbl, parts, no_year, ["year", "medicine"])
    c.chart(c.full_years(tbl, over), "line", over.by[0], over.values[0], color=over.by[1])
    c.partial_note(tbl)
    c.advise(tbl, over, "medicine_patients", no_year, ["year", "medicine"])
    c.show(over, "medicines_by_year")
    year = flt.get("year", "All")
    st.subheader(c.t("me_groups_year", lang, year=c.label(tbl, "year", year, lang))
                 if year != "All" else c.t("me_groups_all", lang))
    groups = c.view(tbl, parts, flt, ["medicine"])
    c.chart(groups, "bar", groups.by[0], groups.values[0], horizontal=True)
    c.show(groups, "medicines")
    st.subheader(c.t("me_level", lang))
    no_level = {k: v for k, v in flt.items() if k != "level"}
    c.show(c.view(tbl, parts, no_level, ["medicine", "level"], drop={"level": ["All"]}),
           "medicines_by_level")
c.footer(tbl)
