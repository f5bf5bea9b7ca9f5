"""Province-level region codes (GB/T 2260) with names and a tile-grid position.

Releases carry ``person.region`` generalized to some level of the GB/T 2260 hierarchy (county,
city, province, or ``*`` when the release suppressed it). Indicators are published by province —
the coarsest level every release reaches — so figures from different releases line up. The grid
position places each province on an 8 × 8 tile map (one equal square per province, roughly where
it lies): a choropleth that needs no map tiles and no boundary files, since the enclave has no
network.
"""

from __future__ import annotations

#: code → (name, grid row, grid column)
PROVINCES: dict[str, tuple[str, int, int]] = {
    "230000": ("黑龙江省", 0, 7),
    "150000": ("内蒙古自治区", 1, 4), "220000": ("吉林省", 1, 7),
    "650000": ("新疆维吾尔自治区", 2, 0), "620000": ("甘肃省", 2, 3), "140000": ("山西省", 2, 4),
    "130000": ("河北省", 2, 5), "110000": ("北京市", 2, 6), "210000": ("辽宁省", 2, 7),
    "630000": ("青海省", 3, 2), "640000": ("宁夏回族自治区", 3, 3), "610000": ("陕西省", 3, 4),
    "410000": ("河南省", 3, 5), "120000": ("天津市", 3, 6), "370000": ("山东省", 3, 7),
    "540000": ("西藏自治区", 4, 1), "510000": ("四川省", 4, 2), "500000": ("重庆市", 4, 3),
    "420000": ("湖北省", 4, 4), "340000": ("安徽省", 4, 5), "320000": ("江苏省", 4, 6),
    "310000": ("上海市", 4, 7),
    "530000": ("云南省", 5, 2), "520000": ("贵州省", 5, 3), "430000": ("湖南省", 5, 4),
    "360000": ("江西省", 5, 5), "330000": ("浙江省", 5, 6),
    "450000": ("广西壮族自治区", 6, 3), "440000": ("广东省", 6, 4), "350000": ("福建省", 6, 5),
    "710000": ("台湾省", 6, 6),
    "820000": ("澳门特别行政区", 7, 3), "460000": ("海南省", 7, 4), "810000": ("香港特别行政区", 7, 5),
}
UNKNOWN = "000000"


def province_label(code: str) -> str:
    if code in PROVINCES:
        return PROVINCES[code][0]
    if code == UNKNOWN:
        return "unknown region"
    if code == "*":
        return "region withheld by the release"
    return code
