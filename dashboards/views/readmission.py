"""30-day readmission by discharging hospital."""

import numpy as np
import streamlit as st

from dashboards import common as c

tbl, flt = c.page("re_title", "re_intro")
if c.available(tbl, "inpatient_stays", "readmissions_30d", "readmission_rate"):
    lang = c.lang()
    parts = [("inpatient_stays", "c_stays"), ("readmissions_30d", "c_readmitted"),
             ("readmission_rate", "c_rate_pct")]
    f = {k: v for k, v in flt.items() if k != "level"}
    by_h = c.view(tbl, parts, f, ["hospital"])
    names = {c.label(tbl, "hospital", h, lang): lv for h, lv in tbl.hospital_level.items()}
    levels = [names.get(n, "") for n in by_h.frame[by_h.by[0]]] if by_h.by else []
    level = flt.get("level", "All")
    if level != "All":
        by_h = by_h.where(np.array([lv == level for lv in levels], dtype=bool))
        levels = [level] * len(by_h.frame)
    if by_h.by:
        by_h.frame.insert(1, c.t("d_level", lang), [c.label(tbl, "level", lv, lang) if lv else ""
                                                    for lv in levels])
        by_h.by.append(c.t("d_level", lang))
        c.chart(by_h, "bar", by_h.by[0], by_h.values[2])
    c.show(by_h, "readmission_by_hospital")
    st.subheader(c.t("re_all", lang))
    c.show(c.view(tbl, parts, f, []), "readmission_total")
c.footer(tbl)
