"""The dashboards' two languages: Chinese (``zh``) and English (``en``).

Every word a page shows comes from here: the page texts (:data:`TEXT`), the names of the
dimension values the indicator table holds in English or as codes (visit types, sexes,
conditions, medicine groups, lab tests, hospital levels, provinces), and the one public wording
of a withheld cell. Codes without a translation (hospital names, which the sources give in
Chinese only) are shown as they are. No streamlit here: the tests read the same tables.

The language a page opens in is ``?lang=zh|en`` in its link, else the session's choice (the
switch in the sidebar), else the deployment's ``[dashboards] language`` setting, passed by
``enclave up`` as ``--language`` (``dashboards_command``), else Chinese.
"""

from __future__ import annotations

import re

LANGUAGES = {"zh": "中文", "en": "English"}
DEFAULT_LANGUAGE = "zh"
ENV_LANGUAGE = "ENCLAVE_DASHBOARDS_LANGUAGE"

#: message id → (Chinese, English); ``{name}`` fields are filled by :func:`t`
TEXT: dict[str, tuple[str, str]] = {
    "app_title": ("卫生健康指标", "Health system indicators"),
    "language": ("语言 / Language", "Language / 语言"),
    "page_overview": ("概览", "Overview"),
    "page_prevalence": ("慢性病", "Chronic disease"),
    "page_visits": ("就诊", "Visits"),
    "page_readmission": ("再入院", "Readmission"),
    "page_repeat_tests": ("重复检查", "Repeat tests"),
    "page_costs": ("费用", "Costs"),
    "page_medicines": ("药品", "Medicines"),
    "all": ("全部", "All"),
    "unknown": ("未知", "unknown"),
    "withheld": ("已隐去", "withheld"),
    "no_data": ("无数据", "no data"),
    "not_available": ("不可用", "not available"),
    "partial": ("（不完整）", " (partial)"),
    "f_year": ("年份", "Year"),
    "f_region": ("地区（省份）", "Region (province)"),
    "f_level": ("医院等级", "Hospital level"),
    "f_test": ("检查项目", "Lab test"),
    "f_condition": ("疾病", "Condition"),
    "f_visit_type": ("就诊类型", "Visit type"),
    "bad_link": ("链接中的{what}不在本指标表中，显示全部。",
                 "The {what} in the link is not one this table holds; showing all."),
    "provenance": (("数据：{version}，由数据发布 {release}（sha256 {sha}，发布于 {released}）于 {built} "
                   "计算；统计披露控制策略 {policy}（{phash}）。"),
                   ("Data: {version}, computed from release {release} (sha256 {sha}, released "
                   "{released}) on {built}; disclosure policy {policy} ({phash}).")),
    "footer": (("**已隐去** 表示该数值按统计披露控制规则不予公开：它涉及的人数少于 {k} 人、被少数人主导，"
               "或可能由合计推算出其他已隐去的数值。所有已隐去的数值使用同一说明，不透露其大小。"
               "**无数据** 表示记录中没有这一组合。计数按每个单元格的固定密钥舍入到 {base} 的倍数"
               "（一致性舍入，consistent rounding），两次更新相减也无法识别任何人；不显示小于 {floor} 的计数。"
               "比率由舍入后的计数计算。"),
               ("**withheld** marks a value the disclosure rules do not publish: it describes fewer "
               "than {k} people, a few people dominate it, or it would let another withheld value "
               "be worked out from the totals. Every withheld value carries the same words, which "
               "say nothing about its size. **no data** marks a combination the records do not "
               "hold. Counts are rounded to multiples of {base} by a fixed key per cell "
               "(consistent rounding), so two refreshes cannot be subtracted to reveal anyone; no "
               "count below {floor} is shown. Rates are computed from the rounded counts.")),
    "not_broken_down": ("{title}未按{dims}细分；该筛选条件在此不适用。",
                        "{title} is not broken down by {dims}; that filter does not apply here."),
    "missing": ("本数据发布缺少这些指标所需的数据（{ids}）。",
                "This release does not hold what these indicators need ({ids})."),
    "chart_withheld": ("此选择下图中的所有数值均已隐去或无数据，故不绘图。",
                       ("Every value of this chart is withheld or has no data at this selection, "
                       "so nothing is drawn.")),
    "mostly_withheld": ("在当前细分程度下，{shown}/{total} 个数值可以公开。{advice}",
                        ("At this level of detail only {shown} of {total} values can be "
                        "published. {advice}")),
    "advice_clear": ("将「{dim}」设为“全部”可公开 {better}/{total} 个。",
                     "Set {dim} to All to see {better} of {total}."),
    "advice_coarser": ("请查看上方的合计，或选择更粗的分组（例如全部年份、全部地区）。",
                       "Use the totals above, or a coarser view (all years, all regions)."),
    "partial_years": ("不完整年份（记录仅覆盖部分月份，数值偏低并非趋势）：{years}；图中不绘出，表中标注。",
                      ("Partial years (the records cover only some months, so low values are not "
                      "a trend): {years}; left out of the charts, marked in the tables.")),
    "rt_pick": ("检查项目", "Lab test"),
    "download": ("下载 {name}（CSV）", "Download {name} (CSV)"),
    # column names
    "c_people": ("人数", "people"),
    "c_visits": ("就诊次数", "visits"),
    "c_stays": ("住院次数", "stays"),
    "c_readmitted": ("30天内再入院次数", "readmitted stays"),
    "c_rate_pct": ("比率 %", "rate %"),
    "c_per_1000": ("每千人", "per 1,000"),
    "c_repeats": ("重复检查次数", "repeat tests"),
    "c_tests": ("检查次数", "lab results"),
    "c_share": ("重复占比 %", "share repeated %"),
    "c_repeat_cost": ("重复检查费用（元）", "cost of repeats (CNY)"),
    "c_mean_cost": ("平均费用（元）", "mean cost (CNY)"),
    "d_year": ("年份", "year"),
    "d_region": ("省份", "province"),
    "d_level": ("医院等级", "hospital level"),
    "d_hospital": ("医院", "hospital"),
    "d_age_band": ("年龄组", "age band"),
    "d_sex": ("性别", "sex"),
    "d_visit_type": ("就诊类型", "visit type"),
    "d_condition": ("疾病", "condition"),
    "d_test": ("检查项目", "test"),
    "d_medicine": ("药品类别", "medicine group"),
    "d_pair": ("医院对（先 → 后）", "hospital pair (earlier → repeat)"),
    # overview
    "ov_title": ("汇集健康记录：概览", "Pooled health records: overview"),
    "ov_intro": ("来自所有医院汇集记录的汇总数据。任何页面都不显示个人记录；每个数值都通过了统计披露控制规则。",
                 ("Aggregate figures from the pooled records of every hospital. No row-level data "
                 "is shown anywhere; every figure passed the disclosure rules.")),
    "m_people": ("记录中的人数", "People in the records"),
    "m_visits": ("就诊次数", "Visits"),
    "m_stays": ("住院次数", "Inpatient stays"),
    "m_cost_in": ("每次住院平均费用（元）", "Average cost per inpatient stay (CNY)"),
    "m_cost_out": ("每次门诊平均费用（元）", "Average cost per outpatient visit (CNY)"),
    "ov_map": ("各省记录人数", "People in the records by province"),
    "ov_age_sex": ("按年龄组和性别的人数", "People by age band and sex"),
    "ov_by_region": ("按省份的人数", "People by province"),
    # prevalence
    "pr_title": ("慢性病患病率", "Chronic disease prevalence"),
    "pr_intro": (("每千名记录内人员（当年有就诊者）中记录有该疾病（当年，或“全部”年份时为曾经）的人数。"
                 "分母是汇集记录，而非普查人口。"),
                 ("People with a condition recorded (in the year, or ever for All years) per 1,000 "
                 "people in the records (with a visit that year). The denominator is the pooled "
                 "records, not the census population.")),
    "pr_all": ("全部慢性病", "All chronic conditions"),
    "pr_condition": ("疾病", "Condition"),
    "pr_age_sex": ("{cond}：按年龄组和性别", "{cond}: by age band and sex"),
    "pr_region": ("{cond}：按省份", "{cond}: by province"),
    "pr_map": ("{cond}：每千人", "{cond} per 1,000 people"),
    # visits
    "vi_title": ("每千人就诊次数", "Visits per 1,000 people"),
    "vi_intro": ("汇集医院的就诊次数，按记录内每千人计（按患者所在省份和医院等级）。",
                 ("Visits to the pooled hospitals per 1,000 people in the records (by the "
                 "patient's province and the hospital's level).")),
    "vi_year": ("按年份", "By year"),
    "vi_type": ("按就诊类型", "By visit type"),
    "vi_level": ("按医院等级", "By hospital level"),
    "vi_map": ("各省每千人就诊次数", "Visits per 1,000 people by province"),
    # readmission
    "re_title": ("各医院30天再入院", "30-day readmission by hospital"),
    "re_intro": ("出院后30天内在任一汇集医院再次住院的住院次数——在其他医院的再入院只有在汇集记录中才能看到。",
                 ("Inpatient stays followed by another inpatient admission at any pooled hospital "
                 "within 30 days of discharge — a readmission elsewhere is only visible in pooled "
                 "records.")),
    "re_all": ("全部医院", "All hospitals"),
    # repeat tests
    "rt_title": ("30天内在另一家医院重复检查", "Repeat tests at another hospital within 30 days"),
    "rt_intro": (("信息孤岛的代价：同一人同一检查项目在较早结果后1–30天内于另一家医院再次检查。"
                 "占比为重复检查占全部检查结果的百分比，费用为这些重复检查的费用。"),
                 ("The cost of information islands: a lab test repeated for the same person at a "
                 "different hospital 1–30 days after an earlier result. The share is repeats per "
                 "100 lab results; the cost is what the repeats cost.")),
    "m_repeats": ("重复检查次数", "Repeat tests"),
    "m_share": ("重复占比 %", "Share repeated %"),
    "m_repeat_cost": ("重复检查费用（元）", "Cost of repeats (CNY)"),
    "rt_level": ("按医院等级", "By hospital level"),
    "rt_year": ("按年份", "By year"),
    "rt_region": ("按省份", "By province"),
    "rt_map": ("各省重复检查占比 %", "Share of lab results repeated, by province (%)"),
    "rt_pairs": ("重复最多的医院对", "Hospital pairs that repeat most"),
    "rt_pairs_note": ("先做检查的医院 → 30天内重复该检查的医院。",
                      ("The hospital of the earlier result → the hospital that repeated it "
                      "within 30 days.")),
    "rt_test": ("按检查项目", "By test"),
    # costs
    "co_title": ("按医院等级的就诊平均费用", "Average cost per visit by hospital level"),
    "co_intro": (("汇集医院费用记录中一次就诊的平均总费用（元），住院与门诊分开列出（二者相差约五十倍，"
                 "不宜合并平均）。参与人数过少或由少数人主导的平均值不予公开。"),
                 ("Mean total cost (CNY) of a visit from the cost records of the pooled hospitals, "
                 "inpatient stays and outpatient visits apart (they differ some fiftyfold, so one "
                 "mean of both says little). A mean is withheld when too few people contribute or "
                 "a few dominate it.")),
    "co_level": ("按医院等级和就诊类型", "By hospital level and visit type"),
    "co_year": ("按年份和就诊类型", "By year and visit type"),
    "co_region": ("按省份和就诊类型", "By province and visit type"),
    # medicines
    "me_title": ("药品使用趋势", "Medicine use over time"),
    "me_intro": ("当年至少有一张该类药品处方的人数。", ("People with at least one prescription of a "
                 "medicine group in the year.")),
    "me_year": ("按年份和药品类别", "By year and medicine group"),
    "me_groups_year": ("{year}年各药品类别", "Medicine groups in {year}"),
    "me_groups_all": ("各药品类别（全部年份）", "Medicine groups, all years"),
    "me_level": ("按医院等级", "By hospital level"),
}

#: dimension → code → (Chinese, English), for codes the table holds in English or as codes
VALUES: dict[str, dict[str, tuple[str, str]]] = {
    "sex": {"F": ("女", "female"), "M": ("男", "male")},
    "visit_type": {"inpatient": ("住院", "inpatient"), "outpatient": ("门诊", "outpatient"),
                   "emergency": ("急诊", "emergency"), "other": ("其他", "other")},
    "condition": {
        "hypertension": ("高血压", "hypertension"), "diabetes": ("糖尿病", "diabetes"),
        "hyperlipidaemia": ("高脂血症", "hyperlipidaemia"),
        "coronary heart disease": ("冠心病", "coronary heart disease"),
        "chronic kidney disease": ("慢性肾脏病", "chronic kidney disease"),
        "asthma": ("哮喘", "asthma"), "COPD": ("慢阻肺", "COPD"), "stroke": ("脑卒中", "stroke"),
        "atrial fibrillation": ("心房颤动", "atrial fibrillation"),
        "heart failure": ("心力衰竭", "heart failure")},
    "medicine": {
        "antidiabetics": ("降糖药", "antidiabetics"),
        "antihypertensives": ("降压药", "antihypertensives"), "statins": ("他汀类", "statins"),
        "antiplatelets": ("抗血小板药", "antiplatelets"), "antibiotics": ("抗生素", "antibiotics"),
        "analgesics": ("镇痛药", "analgesics"), "bronchodilators": ("支气管扩张剂", "bronchodilators"),
        "nitrates": ("硝酸酯类", "nitrates"), "other medicines": ("其他药品", "other medicines")},
    "test": {
        "Body mass index (BMI) [Ratio]": ("体重指数", "Body mass index"),
        "Cholesterol [Mass/volume] in Serum or Plasma": ("总胆固醇", "Cholesterol"),
        "Cholesterol in HDL [Mass/volume] in Serum or Plasma": ("高密度脂蛋白胆固醇",
                                                                 "HDL cholesterol"),
        "Cholesterol in LDL [Mass/volume] in Serum or Plasma by Direct assay": (
            "低密度脂蛋白胆固醇", "LDL cholesterol"),
        "Creatinine [Mass/volume] in Serum or Plasma": ("肌酐", "Creatinine"),
        "Diastolic blood pressure": ("舒张压", "Diastolic blood pressure"),
        "Systolic blood pressure": ("收缩压", "Systolic blood pressure"),
        "Glucose [Mass/volume] in Serum or Plasma": ("血糖", "Glucose"),
        "Hemoglobin A1c/Hemoglobin.total in Blood": ("糖化血红蛋白", "HbA1c"),
        "Hemoglobin [Mass/volume] in Blood": ("血红蛋白", "Hemoglobin"),
        "Leukocytes [#/volume] in Blood by Automated count": ("白细胞计数", "Leukocytes"),
        "Potassium [Moles/volume] in Serum or Plasma": ("血钾", "Potassium"),
        "Sodium [Moles/volume] in Serum or Plasma": ("血钠", "Sodium"),
        "Triglyceride [Mass/volume] in Serum or Plasma": ("甘油三酯", "Triglyceride"),
        "Urea nitrogen [Mass/volume] in Serum or Plasma": ("尿素氮", "Urea nitrogen"),
        "unmapped test": ("未映射的检查", "unmapped test")},
}

#: province code → (English name, Chinese short name, English short name) for the tile map
PROVINCES: dict[str, tuple[str, str, str]] = {
    "110000": ("Beijing", "北京", "Beijing"), "120000": ("Tianjin", "天津", "Tianjin"),
    "130000": ("Hebei", "河北", "Hebei"), "140000": ("Shanxi", "山西", "Shanxi"),
    "150000": ("Inner Mongolia", "内蒙古", "Inner Mong."), "210000": ("Liaoning", "辽宁", "Liaoning"),
    "220000": ("Jilin", "吉林", "Jilin"), "230000": ("Heilongjiang", "黑龙江", "Heilongj."),
    "310000": ("Shanghai", "上海", "Shanghai"), "320000": ("Jiangsu", "江苏", "Jiangsu"),
    "330000": ("Zhejiang", "浙江", "Zhejiang"), "340000": ("Anhui", "安徽", "Anhui"),
    "350000": ("Fujian", "福建", "Fujian"), "360000": ("Jiangxi", "江西", "Jiangxi"),
    "370000": ("Shandong", "山东", "Shandong"), "410000": ("Henan", "河南", "Henan"),
    "420000": ("Hubei", "湖北", "Hubei"), "430000": ("Hunan", "湖南", "Hunan"),
    "440000": ("Guangdong", "广东", "Guangdong"), "450000": ("Guangxi", "广西", "Guangxi"),
    "460000": ("Hainan", "海南", "Hainan"), "500000": ("Chongqing", "重庆", "Chongqing"),
    "510000": ("Sichuan", "四川", "Sichuan"), "520000": ("Guizhou", "贵州", "Guizhou"),
    "530000": ("Yunnan", "云南", "Yunnan"), "540000": ("Tibet", "西藏", "Tibet"),
    "610000": ("Shaanxi", "陕西", "Shaanxi"), "620000": ("Gansu", "甘肃", "Gansu"),
    "630000": ("Qinghai", "青海", "Qinghai"), "640000": ("Ningxia", "宁夏", "Ningxia"),
    "650000": ("Xinjiang", "新疆", "Xinjiang"), "710000": ("Taiwan", "台湾", "Taiwan"),
    "810000": ("Hong Kong", "香港", "HK"), "820000": ("Macao", "澳门", "Macao"),
    "000000": ("unknown region", "未知", "unknown"), "*": ("region withheld", "已隐去", "withheld"),
}
_LEVEL_NAMES = {"一": ("Primary", 1), "二": ("Secondary", 2), "三": ("Tertiary", 3)}
_GRADES = {"甲": ("A", 0), "乙": ("B", 1), "丙": ("C", 2)}
_LEVEL = re.compile(r"^([一二三])级(?:([甲乙丙])等)?")


def lang_index(lang: str) -> int:
    return 0 if lang == "zh" else 1


def t(key: str, lang: str, **fields: object) -> str:
    """The message ``key`` in ``lang``, its ``{fields}`` filled."""
    text = TEXT[key][lang_index(lang)]
    return text.format(**fields) if fields else text


def level_rank(code: str) -> tuple:
    """Sort key of a hospital level: 一级 < 二级 < 三级, within a level 甲 < 乙 < 丙, then levels
    the pattern does not know, ``unknown`` last."""
    m = _LEVEL.match(code or "")
    if not m:
        return (9, 9, code == "unknown", code or "")
    grade = _GRADES[m.group(2)][1] if m.group(2) else 3
    return (_LEVEL_NAMES[m.group(1)][1], grade, False, code)


def level_label(code: str, lang: str) -> str:
    """``三级甲等`` in Chinese; ``Tertiary A (三级甲等)`` in English."""
    m = _LEVEL.match(code or "")
    if lang == "zh" or not m:
        return code
    name = _LEVEL_NAMES[m.group(1)][0] + (f" {_GRADES[m.group(2)][0]}" if m.group(2) else "")
    return f"{name} ({code})"


def sort_key(dimension: str, code: str) -> tuple:
    """Display order of a dimension's codes: years and age bands by number, levels by
    :func:`level_rank`, the rest by code; ``unknown`` last."""
    if dimension == "level":
        return level_rank(code)
    if dimension in ("year", "age_band"):
        m = re.match(r"\d+", code or "")
        return (0, int(m.group()), code) if m else (1, 0, code or "")
    return (code in ("unknown", "000000", "*"), code or "")


def value_label(dimension: str, code: str | None, lang: str, fallback: str | None = None
                ) -> str:
    """The shown name of ``code`` on ``dimension`` (``fallback``: the table's own label)."""
    if code is None:
        return ""
    if code == "All":
        return t("all", lang)
    if code == "unknown":
        return t("unknown", lang)
    if dimension == "level":
        return level_label(code, lang)
    if dimension == "region":
        if lang == "en" and code in PROVINCES:
            return PROVINCES[code][0]
        return fallback or code
    names = VALUES.get(dimension, {}).get(code)
    if names:
        return names[lang_index(lang)]
    return fallback or code


def short_province(code: str, lang: str) -> str:
    """The tile map's label: a short name that fits a tile (the tooltip has the full name)."""
    names = PROVINCES.get(code)
    if not names:
        return code
    return names[1] if lang == "zh" else names[2]
