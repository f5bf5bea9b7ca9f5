"""The dashboards' words and orders (dashboards/i18n.py): both languages complete, levels in order."""

from __future__ import annotations

import re
import string

from dashboards.data import DIMENSIONS as DASH_DIMENSIONS
from dashboards.i18n import LANGUAGES, TEXT, level_label, short_province, sort_key, t, value_label
from enclave.io.indicators.build import DIMENSIONS
from enclave.io.indicators.regions import PROVINCES


def test_every_message_has_both_languages_with_the_same_fields():
    for key, texts in TEXT.items():
        assert len(texts) == len(LANGUAGES) and all(x.strip() for x in texts), key
        fields = [{f for _, f, _, _ in string.Formatter().parse(x) if f} for x in texts]
        assert fields[0] == fields[1], key


def test_hospital_levels_sort_primary_secondary_tertiary():
    levels = ["三级甲等", "二级甲等", "一级", "unknown", "三级乙等", "二级乙等", "二级"]
    assert sorted(levels, key=lambda v: sort_key("level", v)) == [
        "一级", "二级甲等", "二级乙等", "二级", "三级甲等", "三级乙等", "unknown"]
    assert level_label("三级甲等", "en") == "Tertiary A (三级甲等)"
    assert level_label("一级", "en") == "Primary (一级)" and level_label("一级", "zh") == "一级"


def test_age_bands_and_years_sort_by_number():
    bands = ["10-14", "5-9", "80+", "0-4", "unknown", "45-49"]
    assert sorted(bands, key=lambda v: sort_key("age_band", v)) == [
        "0-4", "5-9", "10-14", "45-49", "80+", "unknown"]


def test_every_province_has_a_full_and_a_short_name_in_both_languages():
    for code, (name, _, _) in PROVINCES.items():
        assert value_label("region", code, "en") != code
        assert value_label("region", code, "zh", name) == name
        for lang in LANGUAGES:
            short = short_province(code, lang)
            assert short and len(short) <= (3 if lang == "zh" else 12), (code, short)
    assert short_province("650000", "zh") == "新疆" and short_province("450000", "zh") == "广西"


def test_withheld_is_one_word_per_language_and_says_nothing_about_zeros():
    zero = re.compile(r"zero|empty|nobody|no people|为零|没有人|无人", re.IGNORECASE)
    for lang in LANGUAGES:
        assert not zero.search(t("withheld", lang)) and not zero.search(t("footer", lang, k=10,
                                                                           base=5, floor=10))
    assert t("withheld", "zh") != t("no_data", "zh") and t("withheld", "en") != t("no_data", "en")


def test_the_app_and_the_build_name_the_same_dimensions():
    assert DASH_DIMENSIONS == DIMENSIONS
