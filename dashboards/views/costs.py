"""Average cost per visit by hospital level."""

import streamlit as st

from dashboards import common as c

tbl = c.table()
c.header(tbl, "Average cost per visit by hospital level",
         "Mean total cost (CNY) of a visit, from the cost records of the pooled hospitals. A mean "
         "is withheld when too few people contribute or a few dominate it.")
flt = c.filters(tbl)
if c.available(tbl, "cost_per_visit"):
    name = "mean cost per visit (CNY)"
    f = {k: v for k, v in flt.items() if k != "level"}
    by_level = c.display(tbl, tbl.cells("cost_per_visit", f, ["level"]), ["level"], name)
    c.chart(by_level, "bar", "level", name)
    c.show(by_level, "cost_by_level")
    st.subheader("By level and visit type")
    by_type = c.display(tbl, tbl.cells("cost_per_visit", f, ["level", "visit_type"]),
                        ["level", "visit_type"], name)
    if flt.get("level", "All") != "All":
        by_type = by_type[by_type["level"] == flt["level"]]
    c.show(by_type, "cost_by_level_type")
    st.subheader("By year")
    no_year = {k: v for k, v in flt.items() if k != "year"}
    by_year = c.display(tbl, tbl.cells("cost_per_visit", no_year, ["year"]), ["year"], name)
    c.chart(by_year, "line", "year", name)
    c.show(by_year, "cost_by_year")
c.footer(tbl)
