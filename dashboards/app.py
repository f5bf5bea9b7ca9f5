"""Policymaker dashboards: entry point (``streamlit run dashboards/app.py -- --indicators DIR``).

Reads only a published indicator table (``enclave indicators build``); see docs/dashboards.md.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

st.set_page_config(page_title="Health system indicators", layout="wide")

HERE = Path(__file__).parent
PAGES = [
    st.Page(HERE / "views" / "overview.py", title="Overview", url_path="overview", default=True),
    st.Page(HERE / "views" / "prevalence.py", title="Chronic disease", url_path="prevalence"),
    st.Page(HERE / "views" / "visits.py", title="Visits", url_path="visits"),
    st.Page(HERE / "views" / "readmission.py", title="Readmission", url_path="readmission"),
    st.Page(HERE / "views" / "repeat_tests.py", title="Repeat tests", url_path="repeat-tests"),
    st.Page(HERE / "views" / "costs.py", title="Costs", url_path="costs"),
    st.Page(HERE / "views" / "medicines.py", title="Medicines", url_path="medicines"),
]
st.navigation(PAGES).run()
