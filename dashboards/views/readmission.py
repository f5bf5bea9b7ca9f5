"""30-day readmission by discharging hospital."""

import streamlit as st

from dashboards import common as c

tbl = c.table()
c.header(tbl, "30-day readmission by hospital",
         "Inpatient stays followed by another inpatient admission at any pooled hospital within "
         "30 days of discharge — a readmission elsewhere is only visible in pooled records.")
flt = c.filters(tbl)
if c.available(tbl, "inpatient_stays", "readmissions_30d", "readmission_rate"):
    parts = [("inpatient_stays", "stays"), ("readmissions_30d", "readmitted stays"),
             ("readmission_rate", "rate %")]
    f = {k: v for k, v in flt.items() if k != "level"}
    by_h = c.combined(tbl, parts, f, ["hospital"])
    level = flt.get("level", "All")
    if level != "All":
        names = {tbl.label("hospital", h) for h, lv in tbl.hospital_level.items() if lv == level}
        by_h = by_h[by_h["hospital"].isin(names)]
    by_h.insert(1, "level", [next((lv for h, lv in tbl.hospital_level.items()
                                   if tbl.label("hospital", h) == n), "") for n in by_h["hospital"]])
    c.chart(by_h, "bar", "hospital", "rate %")
    c.show(by_h, "readmission_by_hospital")
    st.subheader("All hospitals")
    c.show(c.combined(tbl, parts, f, []), "readmission_total")
c.footer(tbl)
