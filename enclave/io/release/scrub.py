"""Free-text scrubber for Chinese clinical notes (pure logic, part of the release builder).

:func:`scrub` replaces direct identifiers in a polars String Series by tokens in Chinese
brackets and counts the replacements per kind (counts only, never values):

=================  ============  ==========================================================
kind               token         found by
=================  ============  ==========================================================
resident_id        〔身份证号〕  digit runs of 18 (17 digits + digit/X) or 15 characters,
                                 also written in groups (``110101 19900101 1234``), whose
                                 GB 11643 check character and birth date are valid; any
                                 15–18 character number after 身份证(号)/证件号/公民身份号码
phone              〔电话〕      mobiles ``1[3-9]x xxxx xxxx`` (``+86``/``86-``, spaces or
                                 dashes 3-4-4), landlines ``0xx(x)-xxxxxxx(x)`` (area code in
                                 brackets, extension ``转``/``-``), any number after 电话/手机
record_number      〔病案号〕    a code with a digit after 病案号/住院号/门诊号/病历号/
                                 就诊卡号/登记号/MRN
insurance_number   〔医保号〕    a code with a digit after 医保(卡)号/社保卡号/医疗保险号
name               〔姓名〕      2–4 characters starting with a common surname after 姓名/
                                 患者/家属/其母…; surname + 先生/女士/老师/医生…
address            〔地址〕      from the first administrative unit (a province name, or
                                 ``…省/市/区/县``) to the last number marker (``…号/栋/单元/
                                 室/楼/弄``); any address after 住址/地址
=================  ============  ==========================================================

Values the caller knows (:class:`KnownIdentifiers`, taken from the restricted store's identity
tables) are replaced wherever they occur, longest first, with one Aho-Corasick pass
(``str.replace_many``): names and addresses before the patterns (so a whole address goes before
its parts), numbers after them (so that a short record number cannot split a phone number).
Known strings shorter than :data:`MIN_EXACT_LENGTH` of their kind are not matched exactly (a
one-character name would destroy text); the context patterns cover them.

Limits, on purpose: after 患者/家属 a surname that also starts clinical words (高热, 于昨日,
黄疸…) counts only before a sex marker or a verb of a person (``患者高明，男``), otherwise only the
known list catches it; a digit run longer than an ID or a phone is not an ID or a phone; exact
matching also replaces a two-character known name inside words (a patient 高明 in 升高明显).

Clinical content stays: doses (``0.5g``), lab values, dates (``2023年1月5日``), ICD codes,
department and hospital names. Everything is vectorized (regex passes over the whole Series);
only the distinct candidate ID numbers are validated, and they are validated in polars.

>>> import polars as pl
>>> from enclave.io.release.scrub import KnownIdentifiers, scrub
>>> notes = pl.Series(["患者张伟，男，45岁。电话：138-1234-5678。二甲双胍 0.5g 每日两次。"])
>>> result = scrub(notes)
>>> result.texts[0]
'患者〔姓名〕，男，45岁。电话：〔电话〕。二甲双胍 0.5g 每日两次。'
>>> result.counts["name"], result.counts["phone"], result.counts["address"]
(1, 1, 0)
>>> scrub(pl.Series(["家属李娜陪同，李娜诉患者夜间咳嗽"]),
...       KnownIdentifiers(names=["李娜"])).texts[0]
'家属〔姓名〕陪同，〔姓名〕诉患者夜间咳嗽'

Nothing here prints, logs or raises a text or an identifier.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import polars as pl

from enclave.core.errors import BadInputError
from enclave.logic.codes.resident_id import normalize_expr

#: replacement token per kind (the kinds of :attr:`ScrubResult.counts`)
TOKENS: dict[str, str] = {
    "resident_id": "〔身份证号〕",
    "phone": "〔电话〕",
    "record_number": "〔病案号〕",
    "insurance_number": "〔医保号〕",
    "name": "〔姓名〕",
    "address": "〔地址〕",
}

#: known strings shorter than this (characters, after stripping) are not matched exactly
MIN_EXACT_LENGTH: dict[str, int] = {
    "name": 2,
    "address": 6,
    "phone": 7,
    "resident_id": 15,
    "record_number": 6,
    "insurance_number": 6,
}


def _strings(values: Iterable[str] | None) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str):
        raise BadInputError("KnownIdentifiers: each field takes a list of strings, not one string")
    return tuple(str(v) for v in values if v is not None)


@dataclass(frozen=True, slots=True)
class KnownIdentifiers:
    """Identifier values known from the restricted store, replaced wherever they occur.

    ``record_numbers`` are medical record numbers (and insurance numbers, when the caller does
    not keep them apart); ``insurance_numbers`` is optional and only changes the token.
    """

    names: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    resident_ids: tuple[str, ...] = ()
    record_numbers: tuple[str, ...] = ()
    insurance_numbers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("names", "addresses", "phones", "resident_ids", "record_numbers",
                     "insurance_numbers"):
            object.__setattr__(self, name, _strings(getattr(self, name)))

    def textual(self) -> list[tuple[str, str]]:
        """(value, kind) pairs of the names and addresses, long enough to match exactly."""
        return _eligible([("address", self.addresses), ("name", self.names)])

    def numeric(self) -> list[tuple[str, str]]:
        """(value, kind) pairs of the numbers, long enough to match exactly.

        Resident IDs come in both spellings of a final ``X`` (other spellings of valid numbers
        are found by the checksum pattern anyway).
        """
        ids: list[str] = []
        for v in self.resident_ids:
            v = v.strip()
            ids += [v, v.upper(), v.lower()]
        return _eligible([("resident_id", ids), ("phone", self.phones),
                          ("insurance_number", self.insurance_numbers),
                          ("record_number", self.record_numbers)])


def _eligible(groups: list[tuple[str, Iterable[str]]]) -> list[tuple[str, str]]:
    seen: dict[str, str] = {}
    for kind, values in groups:
        for v in values:
            v = v.strip()
            if len(v) >= MIN_EXACT_LENGTH[kind] and v not in seen:
                seen[v] = kind
    return sorted(seen.items(), key=lambda vk: -len(vk[0]))


@dataclass(frozen=True, slots=True)
class ScrubResult:
    """The scrubbed texts (same length and order, nulls kept) and replacements per kind."""

    texts: pl.Series
    counts: dict[str, int]


# --------------------------------------------------------------------------- building blocks

_D = "[0-9０-９]"
_X = "[XxＸｘ]"
_SEP = r"[\s:：#＃]*(?:是|为|叫)?[\s:：]*"
_B = r"(?-u:\b)"  # ASCII word boundary: Chinese characters count as non-word, digits as word

#: a compact list of common surnames (two-character ones first so they win over their first char)
_COMPOUND_SURNAMES = ("欧阳", "司马", "诸葛", "上官", "司徒", "东方", "皇甫", "尉迟", "公孙",
                      "慕容", "令狐", "夏侯", "长孙", "宇文", "轩辕", "端木", "独孤", "南宫",
                      "西门", "呼延", "澹台", "申屠", "钟离", "濮阳", "太史", "百里")
_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林高罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程"
    "苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付傅方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛"
    "郝龚邵万钱严覃武戴莫孔向汤常温康施文牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷詹申欧耿关兰焦"
    "俞左柳甘祝包宁尚符舒阮柯纪梅童凌毕单季裴霍涂成苗谷盛曲翁冉骆蓝路游辛靳管柴蒙鲍华喻祁蒲房"
    "滕屈饶解牟艾尤阳穆农司卓古吉缪简车项连芦麦褚娄窦戚岑景党宫费卜冷晏席卫米柏宗瞿桂全佟应臧"
    "闵苟邬边卞姬师和仇栾隋商刁沙荣巫寇桑郎甄丛仲虞敖巩明佘池查麻苑迟邝封谈匡鞠惠荆乐冀郁胥"
)
#: surnames that also start common clinical words right after 患者/母亲 (高热, 曾因, 于昨日,
#: 黄疸, 周身, 全身, 陆续, 尚可, 查体, 解大便, 严重, 白细胞, 主任…): after those weak keywords
#: they count only when a sex marker or a verb of a person follows (``患者高明，男``,
#: ``家属于海陪同``)
_AMBIGUOUS = "于高曾常史余何万成白全安明康方向和文石左关黄周胡马许苏陆连查解尚应单包毛管严任宁齐华乐师邢池易温"

#: characters that end a given name in running clinical text
_NAME_STOP = ("男女性岁因于以在诉述称主自今昨前近来入出院住诊经行曾有无既现和与及的是为被由等年日"
              "时分患病者系并伴再又后表示签同意要求拒陪告知说代电送带到去已未不也均都对将把请予给"
              "向之其父母妻夫儿科室床号诊治疗查体血压")
_GIVEN = rf"[\p{{Han}}--[{_NAME_STOP}]]"


def _surname(chars: str) -> str:
    return "(?:" + "|".join(_COMPOUND_SURNAMES) + f"|[{chars}])"


_ALL_SURNAME = _surname(_SURNAMES)
_CLEAR_SURNAME = _surname("".join(c for c in _SURNAMES if c not in _AMBIGUOUS))

_STRONG_NAME_KEYS = ("患者姓名", "病人姓名", "姓名", "联系人", "监护人", "委托人", "代理人",
                     "签字人", "签名", "陪护人", "授权人")
_WEAK_NAME_KEYS = ("患者", "病人", "患儿", "家属", "配偶", "之子", "之女", "之父", "之母", "其父",
                   "其母", "其妻", "其夫", "其子", "其女", "丈夫", "妻子", "儿子", "女儿", "父亲",
                   "母亲")
_SOCIAL_TITLES = ("先生", "女士", "小姐", "老师", "太太", "师傅", "阿姨")
_MEDICAL_TITLES = ("医生", "医师", "大夫", "护士", "主任", "教授")


def _alt(words: Iterable[str]) -> str:
    return "(?:" + "|".join(sorted(words, key=len, reverse=True)) + ")"


#: what follows a name for sure: a sex marker (``，男，``) or a verb of a person (陪同, 签字…)
_NAME_FOLLOW = (r"([，,、\s]*[（(]?[男女]性?[，,、）)\s]"
                "|陪同|签字|签名|代诉|表示|要求|同意|拒绝|来院|到院|探视)")

_NAME_RULES: tuple[tuple[str, str], ...] = (
    # after a keyword that announces a name: any surname
    (f"({_alt(_STRONG_NAME_KEYS)})({_SEP}){_ALL_SURNAME}{_GIVEN}{{1,3}}", "${1}${2}〔姓名〕"),
    # after a weak keyword, an ambiguous surname needs a following sex marker or verb
    ((f"({_alt(_WEAK_NAME_KEYS)})({_SEP})(?:{_ALL_SURNAME}{_GIVEN}{{1,2}}{_NAME_FOLLOW}"
      f"|{_CLEAR_SURNAME}{_GIVEN}{{1,2}})"), "${1}${2}〔姓名〕${3}"),
    (f"{_ALL_SURNAME}{_GIVEN}{{0,2}}?({_alt(_SOCIAL_TITLES)})", "〔姓名〕${1}"),
    (f"{_CLEAR_SURNAME}{_GIVEN}{{0,2}}?({_alt(_MEDICAL_TITLES)})", "〔姓名〕${1}"),
)

# resident IDs --------------------------------------------------------------------------------
#: candidates for validation: maximal runs of at least 15 digits (plus a final X), or runs of
#: digit groups separated by single spaces or dashes
_ID_CANDIDATE = rf"{_D}{{15,}}{_X}?|{_D}+(?:[ \-　]{_D}+)+(?:[ \-　]?{_X})?"
_ID_KEYS = ("公民身份号码", "身份证号码", "身份证号", "身份证", "身份号码", "证件号码", "证件号")
#: after a keyword: any 15–18 character number (typos included)
_ID_AFTER_KEY = (f"({_alt(_ID_KEYS)})({_SEP}){_D}(?:[ \\-]?{_D}){{13,16}}[ \\-]?(?:{_D}|{_X})",
                 "${1}${2}〔身份证号〕")

# record numbers -------------------------------------------------------------------------------
_CODE = r"[A-Za-z0-9０-９\-]*[0-9０-９][A-Za-z0-9０-９\-]*"
_MRN_KEYS = ("病案号", "住院号", "门诊号", "病历号", "就诊卡号", "登记号", "就诊号", "档案号")
_INSURANCE_KEYS = ("医保卡号", "医保号", "社保卡号", "社保号", "医疗保险号", "医保编号", "医保账号")
_RECORD_RULES: tuple[tuple[str, str], ...] = (
    (f"({_alt(_INSURANCE_KEYS)}码?)({_SEP}){_CODE}", "${1}${2}〔医保号〕"),
    (f"({_alt(_MRN_KEYS)}码?|{_B}MRN|{_B}mrn)({_SEP}){_CODE}", "${1}${2}〔病案号〕"),
)

# phones ---------------------------------------------------------------------------------------
#: where a number starts or ends when no other digit touches it: an ASCII word boundary, or a
#: Latin letter (``手机13812345678TEL``), captured so that the replacement puts it back
_EDGE = r"(?:(?-u:\b)|([A-Za-z_]))"
_MOBILE = (rf"(?:[(（][+＋]?86[)）][ \-]?|[+＋]86[ \-]?|{_EDGE}(?:86[ \-]?)?)"
           rf"1[3-9][0-9](?:[ \-]?[0-9]{{4}}){{2}}{_EDGE}")
_LANDLINE = (rf"(?:[(（]0[0-9]{{2,3}}[)）][ \-]?|{_EDGE}0[0-9]{{2,3}}[ \-]?)[0-9]{{7,8}}"
             rf"(?:(?:转|分机|-|[ ]?ext\.?)[0-9]{{1,5}})?{_EDGE}")
_PHONE_KEYS = ("联系电话", "联系方式", "电话号码", "手机号码", "手机号", "电话", "手机", "座机")
_PHONE_RULES: tuple[tuple[str, str], ...] = (
    (f"(?:{_MOBILE}|{_LANDLINE})", "${1}${3}〔电话〕${2}${4}"),
    (rf"({_alt(_PHONE_KEYS)}|{_B}[Tt][Ee][Ll]\.?)({_SEP})[+＋]?[0-9][0-9 \-]{{5,18}}[0-9]{_EDGE}",
     "${1}${2}〔电话〕${3}"),
)

# addresses ------------------------------------------------------------------------------------
_PROVINCES = ("北京", "天津", "上海", "重庆", "河北", "山西", "辽宁", "吉林", "黑龙江", "江苏",
              "浙江", "安徽", "福建", "江西", "山东", "河南", "湖北", "湖南", "广东", "海南",
              "四川", "贵州", "云南", "陕西", "甘肃", "青海", "台湾", "内蒙古", "广西", "西藏",
              "宁夏", "新疆", "香港", "澳门")
_PROVINCE_SUFFIX = ("省", "市", "壮族自治区", "回族自治区", "维吾尔自治区", "自治区", "特别行政区")
#: characters that cannot be part of a place name (they introduce an address or are clinical)
_PLACE_STOP = "住址现家在于居籍贯至往来自从到为是的和及回去生出户口通讯联系病科诊院室床楼号区市县省前后患者"
_PLACE = rf"[\p{{Han}}--[{_PLACE_STOP}]]"
_ADMIN_SUFFIX = ("自治区", "自治州", "地区", "省", "市", "盟", "区", "县", "旗")
_ADMIN_START = f"(?:{_alt(_PROVINCES)}{_alt(_PROVINCE_SUFFIX)}?|{_PLACE}{{2,6}}?{_alt(_ADMIN_SUFFIX)})"
_ADDR_CHAR = r"[\p{Han}A-Za-z0-9０-９\-－#＃]"
_BUILDING_MARKER = ("号楼", "单元", "栋", "幢", "座", "楼")
_NUMBER_MARKER = ("号院", "号", "层", "室", "户", "弄", "组")
#: the last number marker; after a building/unit marker also a bare room number (``1单元1001``)
_ADDR_END = f"{_D}+(?:{_alt(_BUILDING_MARKER)}(?:{_D}{{2,5}})?|{_alt(_NUMBER_MARKER)})"
_ADDRESS_KEYS = ("现住址", "家庭住址", "户籍地址", "通讯地址", "联系地址", "居住地址", "住址",
                 "地址", "住所")
_ADDRESS_RULES: tuple[tuple[str, str], ...] = (
    (f"{_ADMIN_START}{_ADDR_CHAR}{{0,40}}{_ADDR_END}", "〔地址〕"),
    (f"({_alt(_ADDRESS_KEYS)})({_SEP}){_ADDR_CHAR}{{1,40}}{_ADDR_END}", "${1}${2}〔地址〕"),
)


# --------------------------------------------------------------------------- passes

_ANY_TOKEN = _alt(re.escape(t) for t in TOKENS.values())
_ALNUM_RUN = re.compile("[0-9A-Za-z]+")


def _replace(texts: pl.Series, rules: Iterable[tuple[str, str]]) -> pl.Series:
    for pattern, value in rules:
        texts = texts.str.replace_all(pattern, value)
    return texts


def _replace_known(texts: pl.Series, pairs: list[tuple[str, str]]) -> pl.Series:
    """One leftmost-first Aho-Corasick pass (``pairs`` come longest first), run only on the rows
    that contain a run of letters/digits as long as the shortest such run of any value."""
    if not pairs:
        return texts
    patterns, tokens = [v for v, _ in pairs], [TOKENS[k] for _, k in pairs]
    shortest = min(max((len(r) for r in _ALNUM_RUN.findall(v)), default=0) for v in patterns)
    if shortest < 4:
        return texts.str.replace_many(patterns, tokens, leftmost=True)
    rows = texts.str.contains(f"[0-9A-Za-z]{{{shortest},}}").fill_null(False).arg_true()
    if rows.len() == 0:
        return texts
    done = texts.gather(rows).str.replace_many(patterns, tokens, leftmost=True)
    return texts.clone().scatter(rows, done)


def _valid_id_literals(texts: pl.Series) -> list[str]:
    """Distinct substrings of ``texts`` that are resident ID numbers with a valid checksum."""
    runs = (texts.to_frame("t").select(pl.col("t").str.extract_all(_ID_CANDIDATE).alias("c"))
            .explode("c").drop_nulls().unique())
    # a run of 18 digits followed by an unrelated X (``…1234X光``): also try it without the X
    runs = pl.concat([runs, runs.filter(pl.col("c").str.contains(f"^{_D}{{18}}{_X}$"))
                      .select(pl.col("c").str.slice(0, 18))])
    digits = pl.col("c").str.replace_all(r"[ \-　]", "")
    cands = runs.filter(digits.str.len_chars().is_in([15, 18]))
    valid = cands.filter(normalize_expr(pl.col("c")).is_not_null())
    return sorted(valid["c"].to_list(), key=len, reverse=True)


def _count(texts: pl.Series) -> dict[str, int]:
    if not texts.str.contains("〔", literal=True).any():
        return dict.fromkeys(TOKENS, 0)
    found = texts.str.extract_all(_ANY_TOKEN).explode().drop_nulls().value_counts()
    per_token = dict(zip(found[:, 0].to_list(), found["count"].to_list(), strict=True))
    return {kind: int(per_token.get(token, 0)) for kind, token in TOKENS.items()}


def scrub(texts: pl.Series, known: KnownIdentifiers | None = None) -> ScrubResult:
    """Replace Chinese direct identifiers in ``texts`` by tokens; see the module docstring."""
    if texts.dtype == pl.Null:
        texts = texts.cast(pl.String)
    if texts.dtype != pl.String:
        raise BadInputError(f"scrub: the notes column {texts.name!r} must hold text, "
                            f"not {texts.dtype}")
    known = known or KnownIdentifiers()
    before = _count(texts)
    out = _replace_known(texts, known.textual())
    ids = _valid_id_literals(out)
    if ids:
        out = out.str.replace_many(ids, [TOKENS["resident_id"]] * len(ids), leftmost=True)
    out = _replace(out, [_ID_AFTER_KEY])
    out = _replace(out, _RECORD_RULES)
    out = _replace(out, _PHONE_RULES)
    out = _replace_known(out, known.numeric())
    out = _replace(out, _ADDRESS_RULES)
    out = _replace(out, _NAME_RULES)
    after = _count(out)
    return ScrubResult(out.rename(texts.name), {k: after[k] - before[k] for k in TOKENS})
