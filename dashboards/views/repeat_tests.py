"""Repeat examinations of the same test at a different hospital within 30 days: per hospital
level, year and province the repeats, their share of all lab results and their cost, and the
hospital pairs that repeat most."""

import numpy as np
import streamlit as st

from dashboards import common as c

PAIRS_SHOWN = 10

tbl, flt = c.page("rt_title", "rt_intro")
needed = ("lab_tests", "repeat_tests", "repeat_tests_cost", "repeat_test_share",
          "repeat_test_pairs")
if c.available(tbl, *needed):
    lang = c.lang()
    tests = tbl.known("test")
    test = st.selectbox(c.t("rt_pick", lang), ["All", *tests], key="test",
                        format_func=lambda v: c.label(tbl, "test", v, lang))
    f = {**flt, "test": test}
    cols = st.columns(3)
    for col, (key, ind, fmt) in zip(cols, (("m_repeats", "repeat_tests", "{:,.0f}"),
                                           ("m_share", "repeat_test_share", "{:,.1f}"),
                                           ("m_repeat_cost", "repeat_tests_cost", "{:,.0f}"))):
        with col:
            c.metric(tbl, key, ind, f, fmt)
    parts = [("repeat_tests", "c_repeats"), ("lab_tests", "c_tests"),
             ("repeat_test_share", "c_share"), ("repeat_tests_cost", "c_repeat_cost")]
    left, right = st.columns(2)
    with left:
        st.subheader(c.t("rt_level", lang))
        no_level = {k: v for k, v in f.items() if k != "level"}
        by_level = c.view(tbl, parts, no_level, ["level"])
        c.chart(by_level, "bar", by_level.by[0], by_level.values[2])
    with right:
        st.subheader(c.t("rt_year", lang))
        no_year = {k: v for k, v in f.items() if k != "year"}
        by_year = c.view(tbl, parts, no_year, ["year"])
        c.chart(c.full_years(tbl, by_year), "line", by_year.by[0], by_year.values[2])
        c.partial_note(tbl)
    c.show(by_level, "repeat_tests_by_level")
    c.show(by_year, "repeat_tests_by_year")
    st.subheader(c.t("rt_region", lang))
    c.region_section(tbl, parts, f, "repeat_test_share", "c_share", c.t("rt_map", lang),
                     "repeat_tests_by_region", advised="repeat_tests")
    st.subheader(c.t("rt_pairs", lang))
    st.caption(c.t("rt_pairs_note", lang))
    pairs = c.view(tbl, [("repeat_test_pairs", "c_repeats")], {"year": flt["year"]}, ["pair"],
                   drop={"pair": ["All"]})
    if pairs.values:
        col = pairs.values[0]
        order = np.argsort(-pairs.frame[col].fillna(-1).to_numpy(), kind="stable")
        pairs = pairs.where(order[:PAIRS_SHOWN])
        c.chart(pairs, "bar", pairs.by[0], col, horizontal=True)
    c.show(pairs, "repeat_tests_by_hospital_pair")
    st.subheader(c.t("rt_test", lang))
    no_test = {k: v for k, v in f.items() if k != "test"}
    by_test = c.view(tbl, parts, no_test, ["test"], drop={"test": ["All"]})
    c.chart(by_test, "bar", by_test.by[0], by_test.values[0], horizontal=True)
    c.show(by_test, "repeat_tests_by_test")
c.footer(tbl)
