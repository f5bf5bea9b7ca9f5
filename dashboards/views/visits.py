"""Visits per 1,000 people by year, province, hospital level and visit type."""

import streamlit as st

from dashboards import common as c

tbl = c.table()
c.header(tbl, "Visits per 1,000 people",
         "Visits to the pooled hospitals per 1,000 people in the records (by the patient's "
         "province and the hospital's level).")
flt = c.filters(tbl)
if c.available(tbl, "visits", "visits_per_1000"):
    parts = [("visits", "visits"), ("visits_per_1000", "per 1,000")]
    no_year = {k: v for k, v in flt.items() if k != "year"}
    by_year = c.combined(tbl, parts, no_year, ["year"])
    st.subheader("By year")
    c.chart(by_year, "line", "year", "per 1,000")
    c.show(by_year, "visits_by_year")
    st.subheader("By visit type")
    c.show(c.combined(tbl, parts, flt, ["visit_type"]), "visits_by_type")
    no_region = {k: v for k, v in flt.items() if k != "region"}
    c.tile_map(tbl, tbl.cells("visits_per_1000", no_region, ["region"]), "per 1,000",
               "Visits per 1,000 people by province")
    c.show(c.combined(tbl, parts, no_region, ["region"]), "visits_by_region")
c.footer(tbl)
