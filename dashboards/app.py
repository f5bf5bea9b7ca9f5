"""Policymaker dashboards: entry point (``streamlit run dashboards/app.py -- --indicators DIR
[--language zh|en]``).

Reads only a published indicator table (``enclave indicators build``); see docs/dashboards.md.
The language switch sits in the sidebar of every page (:func:`dashboards.common.language_switch`);
page titles follow it.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboards.common import language_switch
from dashboards.i18n import t

HERE = Path(__file__).parent
#: page script → URL path (under the server's base URL, e.g. /services/dashboards/)
PAGES = {"overview": "overview", "prevalence": "prevalence", "visits": "visits",
         "readmission": "readmission", "repeat_tests": "repeat-tests", "costs": "costs",
         "medicines": "medicines"}

st.set_page_config(page_title="卫生健康指标 · Health system indicators", layout="wide")
lang = language_switch()
st.navigation([st.Page(HERE / "views" / f"{name}.py", title=t(f"page_{name}", lang),
                       url_path=path, default=name == "overview")
               for name, path in PAGES.items()]).run()
