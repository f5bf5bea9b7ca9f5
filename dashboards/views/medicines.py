"""Medicine use over time, by medicine group."""

import streamlit as st

from dashboards import common as c

tbl = c.table()
c.header(tbl, "Medicine use over time",
         "People with at least one prescription of a medicine group in the year.")
flt = c.filters(tbl)
if c.available(tbl, "medicine_patients"):
    no_year = {k: v for k, v in flt.items() if k != "year"}
    over = c.display(tbl, tbl.cells("medicine_patients", no_year, ["year", "medicine"]),
                     ["year", "medicine"], "people")
    c.chart(over, "line", "year", "people", color="medicine")
    c.show(over, "medicines_by_year")
    st.subheader("Medicine groups in the selected year" if flt.get("year", "All") != "All"
                 else "Medicine groups, all years")
    c.show(c.display(tbl, tbl.cells("medicine_patients", flt, ["medicine"]), ["medicine"],
                     "people"), "medicines")
c.footer(tbl)
