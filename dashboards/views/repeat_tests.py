"""Repeat examinations of the same test at a different hospital within 30 days."""

import streamlit as st

from dashboards import common as c

tbl = c.table()
c.header(tbl, "Repeat tests at another hospital within 30 days",
         "The cost of information islands: a lab test repeated for the same person at a "
         "different hospital 1–30 days after an earlier result. The avoidable cost is what the "
         "repeats cost.")
flt = c.filters(tbl)
if c.available(tbl, "repeat_tests", "repeat_tests_cost"):
    parts = [("repeat_tests", "repeat tests"), ("repeat_tests_cost", "avoidable cost (CNY)")]
    by_test = c.combined(tbl, parts, flt, ["test"])
    c.chart(by_test, "bar", "test", "avoidable cost (CNY)", horizontal=True)
    c.show(by_test, "repeat_tests_by_test")
    st.subheader("By year")
    no_year = {k: v for k, v in flt.items() if k != "year"}
    tests = tbl.known("test")
    pick = st.selectbox("Test", tests, key="test") if tests else None
    if pick:
        c.show(c.combined(tbl, parts, {**no_year, "test": pick}, ["year"]), "repeat_tests_by_year")
c.footer(tbl)
