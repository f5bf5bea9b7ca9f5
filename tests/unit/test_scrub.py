"""Tests of the free-text scrubber for Chinese clinical notes (enclave.io.release.scrub)."""

from __future__ import annotations

import datetime as dt
import doctest

import polars as pl
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

import enclave.io.release.scrub
from enclave.core.errors import BadInputError
from enclave.io.demo.population import build_population
from enclave.io.release.scrub import TOKENS, KnownIdentifiers, scrub
from enclave.logic.codes.resident_id import check_char

ZERO = dict.fromkeys(TOKENS, 0)
FULLWIDTH = str.maketrans("0123456789X", "０１２３４５６７８９Ｘ")


def rid(region: str, birth: str, seq: int) -> str:
    body = f"{region}{birth}{seq:03d}"
    return body + check_char(body)


def rid_ending_in_x() -> str:
    for seq in range(1000):
        number = rid("440105", "19851120", seq)
        if number.endswith("X"):
            return number
    raise AssertionError("no sequence number gives check character X")


def bad_checksum(number: str) -> str:
    wrong = "0" if number[-1] != "0" else "1"
    return number[:-1] + wrong


RID = rid("110101", "19900307", 123)
RID2 = rid("330106", "19720815", 46)
RID_X = rid_ending_in_x()
LEGACY = "110101" + "900307" + "123"  # 15 digits: YYMMDD, no check character


def run(*notes: str | None, known: KnownIdentifiers | None = None):
    return scrub(pl.Series("note", list(notes), dtype=pl.String), known)


def assert_absent(texts: pl.Series, values: list[str]) -> None:
    joined = "\n".join(t for t in texts.to_list() if t is not None)
    for value in values:
        assert value not in joined


# ----------------------------------------------------------------------------- resident IDs

@pytest.mark.parametrize(("note", "values"), [
    (f"身份证号：{RID}。", [RID]),
    (f"身份证号:{RID}", [RID]),
    (f"身份证号 {RID[:6]} {RID[6:14]} {RID[14:]} 已核对", [RID, RID[6:14] + " " + RID[14:]]),
    (f"证件号 {RID[:6]}-{RID[6:14]}-{RID[14:]}", [RID, RID[6:14]]),
    (f"身份证号码为{RID_X.lower()}，已登记", [RID_X, RID_X.lower(), RID_X[:17]]),
    (f"患者出示证件 {RID_X}", [RID_X, RID_X[:17]]),
    (f"{RID}、{RID2}均为其本人证件", [RID, RID2]),
    (f"公民身份号码：{RID.translate(FULLWIDTH)}", [RID.translate(FULLWIDTH)]),
    (f"旧身份证：{LEGACY}", [LEGACY]),
    (f"15位旧号{LEGACY}仍在使用", [LEGACY]),
    (f"身份证号：{bad_checksum(RID)}（疑有误）", [bad_checksum(RID)]),
    (f"公民身份号码{bad_checksum(RID2)}", [bad_checksum(RID2)]),
])
def test_resident_ids_in_several_forms(note, values):
    result = run(note)
    assert_absent(result.texts, values)
    assert result.counts == ZERO | {"resident_id": 2 if RID2 in note else 1}
    assert TOKENS["resident_id"] in result.texts[0]


def test_checksum_invalid_number_without_keyword_stays():
    bad = bad_checksum(RID)
    note = f"检验条码{bad}，标本合格"
    assert run(note).texts[0] == note


def test_id_inside_a_longer_digit_run_is_not_an_id():
    note = f"订单流水号{RID}77，已缴费"
    assert run(note).texts[0] == note


# ----------------------------------------------------------------------------- phones

@pytest.mark.parametrize(("note", "values", "n"), [
    ("联系电话：13812345678。", ["13812345678"], 1),
    ("手机 138-1234-5678，备用 139 8765 4321", ["138-1234-5678", "139 8765 4321", "1234-5678", "8765 4321"], 2),
    ("电话：+86 150 1111 2222", ["150 1111 2222", "1111 2222"], 1),
    ("家属电话+8615011112222", ["15011112222"], 1),
    ("紧急联系86-18600001111", ["18600001111"], 1),
    ("手机（+86）13700001111", ["13700001111"], 1),
    ("13812345678/13987654321均可联系", ["13812345678", "13987654321"], 2),
    ("座机010-87654321转123", ["87654321", "010-87654321"], 1),
    ("科室电话(020)12345678", ["12345678"], 1),
    ("家中电话 0755-8765432", ["8765432"], 1),
    ("户籍地电话02187654321", ["02187654321", "87654321"], 1),
    ("电话：6512 3456（宅）", ["6512 3456"], 1),
    ("Tel: 6512-3456", ["6512-3456"], 1),
    ("手机13000000000HbA1c 7.2%", ["13000000000"], 1),
    ("TEL13812345678（本人）", ["13812345678"], 1),
])
def test_phones_in_several_forms(note, values, n):
    result = run(note)
    assert_absent(result.texts, values)
    assert result.counts == ZERO | {"phone": n}


def test_phone_shaped_digits_inside_longer_runs_stay():
    note = "条码 2138123456789，批号 013812345678901"
    assert run(note).texts[0] == note


# ----------------------------------------------------------------------------- record numbers

@pytest.mark.parametrize(("note", "values", "kind"), [
    ("病案号：1100000123。", ["1100000123"], "record_number"),
    ("住院号 ZY2023001，", ["ZY2023001"], "record_number"),
    ("门诊号是MZ88123", ["MZ88123"], "record_number"),
    ("病历号为 BL-7788", ["BL-7788"], "record_number"),
    ("就诊卡号:00112233", ["00112233"], "record_number"),
    ("MRN: A12345", ["A12345"], "record_number"),
    ("病案号码：2200000456", ["2200000456"], "record_number"),
    ("医保卡号：YB11010110000123", ["YB11010110000123", "11010110000123"], "insurance_number"),
    ("医保号 GZ2020123", ["GZ2020123"], "insurance_number"),
    ("社保卡号为440105123456", ["440105123456"], "insurance_number"),
    ("医疗保险号：HZ-556677", ["HZ-556677", "556677"], "insurance_number"),
])
def test_record_numbers_after_keywords(note, values, kind):
    result = run(note)
    assert_absent(result.texts, values)
    assert result.counts == ZERO | {kind: 1}


# ----------------------------------------------------------------------------- names

@pytest.mark.parametrize(("note", "values", "n"), [
    ("患者王芳，女，45岁。", ["王芳"], 1),
    ("患者高明，男，60岁，因胸痛入院", ["高明"], 1),
    ("患者欧阳娜娜诉头痛2天", ["欧阳娜娜"], 1),
    ("姓名：于海涛", ["于海涛"], 1),
    ("患者姓名：司马光明", ["司马光明"], 1),
    ("家属刘强陪同就诊", ["刘强"], 1),
    ("其母林秀英体健，其父陈建国已故", ["林秀英", "陈建国"], 2),
    ("联系人：赵丽，电话不详", ["赵丽"], 1),
    ("病人孙晓燕，女", ["孙晓燕"], 1),
    ("张先生诉乏力，李女士陪同", ["张先生", "李女士"], 2),
    ("陈老师为其邻居", ["陈老师"], 1),
    ("王建国先生今日复诊", ["王建国"], 1),
    ("经刘医生会诊后转入", ["刘医生"], 1),
])
def test_names_after_keywords_and_with_titles(note, values, n):
    result = run(note)
    assert_absent(result.texts, values)
    assert result.counts == ZERO | {"name": n}


# ----------------------------------------------------------------------------- addresses

@pytest.mark.parametrize(("note", "values"), [
    ("现住址：广东省广州市荔湾区人民路12号3栋101室。", ["荔湾区人民路12号3栋101室", "广东省广州市"]),
    ("上海市浦东新区张江路88弄5号1202室", ["张江路88弄5号1202室", "浦东新区"]),
    ("家住朝阳区建国路88号5号楼1单元1001，独居", ["建国路88号5号楼1单元1001", "1单元1001"]),
    ("住址：人民路12号3栋101室", ["人民路12号3栋101室"]),
    ("浙江省杭州市西湖区文三路90号", ["文三路90号", "西湖区"]),
    ("户籍：新疆维吾尔自治区乌鲁木齐市天山区解放路10号", ["解放路10号", "乌鲁木齐市"]),
    ("居住在四川省成都市武侯区人民南路四段1号", ["人民南路四段1号", "武侯区"]),
])
def test_addresses_with_and_without_province(note, values):
    result = run(note)
    assert_absent(result.texts, values)
    assert result.counts == ZERO | {"address": 1}


# ----------------------------------------------------------------------------- clinical text stays

CLINICAL = [
    "二甲双胍 0.5g 每日两次", "2023年1月5日", "2023-01-05 08:30", "诊断：E11.900 2型糖尿病",
    "内分泌科", "广州市第一人民医院", "北京协和医院", "上海市第六人民医院内分泌科",
    "血压 130/80 mmHg", "HbA1c 7.2%", "空腹血糖 7.8 mmol/L", "白细胞计数 12.5×10^9/L",
    "胰岛素 8 U 皮下注射 每日3次", "阿司匹林 100mg qd", "予0.9%氯化钠注射液 250ml 静滴",
    "ICD-10 I10", "体重 65.5kg", "身高 170cm", "心率 80 次/分", "ALT 45 U/L",
    "血钾 3.5mmol/L，血钠 140mmol/L", "PLT 250×10^9/L", "尿量 1500ml/24h", "CT示右肺上叶结节 8mm",
    "复查时间：2024-03-15", "随访至2024年3月", "第3次住院", "住院3楼", "心内科病区12床",
    "外科病区5楼", "心前区3级杂音", "眼科3楼",
    "患者高热3天", "患者于昨日出现胸痛", "患者曾于2019年行PCI术", "患者黄疸3天，周身乏力",
    "患者全身乏力", "患者陆续出现水肿", "患者平素体健", "患者明显好转", "患者白细胞升高",
    "患者查体合作", "患者解大便3次", "患者严重贫血", "患者连续3天发热", "患者尚可",
    "患者有高血压病史10年", "患者无药物过敏史", "患者男性，65岁", "病人诉头痛",
    "母亲高血压病史", "父亲糖尿病史", "其母健在", "血糖升高明显", "查体：神清，双下肢无水肿",
    "主任医师查房", "责任护士宣教", "康复科会诊", "于北京大学第一医院就诊",
    "住院号码不详", "门诊号：无", "MRN pending", "电话随访",
]


def test_clinical_content_is_not_scrubbed():
    result = run(*CLINICAL)
    assert result.texts.to_list() == CLINICAL
    assert result.counts == ZERO


def test_mixed_note_counts_every_kind():
    note = (f"出院小结：患者李建华，男，56岁。身份证号：{RID}。联系电话：138-1234-5678，"
            f"家属张丽电话13900001111。病案号：1100000123。医保卡号：YB11010110000123。"
            f"现住址：江苏省南京市玄武区中山路1号2栋302室。予二甲双胍 0.5g 每日两次，"
            f"2023年1月5日复查HbA1c 7.2%。")
    result = run(note, None, "")
    assert result.counts == {"resident_id": 1, "phone": 2, "record_number": 1,
                             "insurance_number": 1, "name": 2, "address": 1}
    assert_absent(result.texts, [RID, "138-1234-5678", "13900001111", "1100000123",
                                 "YB11010110000123", "李建华", "张丽", "中山路1号2栋302室"])
    for kept in ("二甲双胍 0.5g 每日两次", "2023年1月5日", "HbA1c 7.2%", "出院小结"):
        assert kept in result.texts[0]
    assert result.texts[1] is None and result.texts[2] == ""
    assert result.texts.name == "note" and result.texts.len() == 3


def test_tokens_already_present_are_not_counted():
    result = run("〔姓名〕已脱敏，电话13812345678")
    assert result.counts == ZERO | {"phone": 1}


# ----------------------------------------------------------------------------- known identifiers

def test_known_names_are_replaced_without_any_keyword():
    known = KnownIdentifiers(names=["韩梅梅", "李雷", "王"], addresses=[], phones=[],
                             resident_ids=[], record_numbers=[])
    notes = ["今日韩梅梅来院取报告，李雷代为签字", "王老师来电", "检查所见：王氏手法复位"]
    result = run(*notes, known=known)
    assert_absent(result.texts, ["韩梅梅", "李雷"])
    assert result.texts[0] == "今日〔姓名〕来院取报告，〔姓名〕代为签字"
    # a one-character known name is not matched exactly (it would destroy 王氏手法)
    assert result.texts[2] == notes[2]
    assert result.counts == ZERO | {"name": 3}  # two known names + 王老师 by the title pattern


def test_known_values_longest_first():
    known = KnownIdentifiers(names=["林海", "王芳", "王芳芳"], addresses=["北京市东城区林海路8号"])
    result = run("王芳芳住在北京市东城区林海路8号", known=known)
    assert result.texts[0] == "〔姓名〕住在〔地址〕"
    assert result.counts == ZERO | {"name": 1, "address": 1}


def test_known_numbers_are_replaced_anywhere():
    known = KnownIdentifiers(record_numbers=["1100000123", "77"], phones=["65123456"],
                             resident_ids=[bad_checksum(RID)], insurance_numbers=["YB11010110000123"])
    notes = ["复查结果见1100000123号报告，第77次", "宅电65123456",
             f"旧档案记录{bad_checksum(RID)}", "结算凭证YB11010110000123"]
    result = run(*notes, known=known)
    assert_absent(result.texts, ["1100000123", "65123456", bad_checksum(RID), "YB11010110000123"])
    assert "第77次" in result.texts[0]  # shorter than the minimum length: not matched exactly
    assert result.counts == ZERO | {"record_number": 1, "phone": 1, "resident_id": 1,
                                    "insurance_number": 1}


def test_known_identifiers_are_frozen_tuples():
    known = KnownIdentifiers(names=["王芳"], phones=["13812345678"])
    assert known.names == ("王芳",) and known.addresses == ()
    with pytest.raises(AttributeError):
        known.names = ()  # type: ignore[misc]
    with pytest.raises(BadInputError):
        KnownIdentifiers(names="王芳")  # type: ignore[arg-type]
    # numbers stored as integers are matched as text; missing values are ignored
    assert KnownIdentifiers(phones=[13812345678, None]).phones == ("13812345678",)  # type: ignore[list-item]
    result = run("来电13812345678", known=KnownIdentifiers(phones=[13812345678]))  # type: ignore[list-item]
    assert result.texts[0] == "来电〔电话〕"


def test_all_null_column():
    result = scrub(pl.Series("note", [None, None]))
    assert result.texts.to_list() == [None, None] and result.texts.dtype == pl.String
    assert result.counts == ZERO


def test_non_text_column_is_refused_without_values():
    with pytest.raises(BadInputError) as err:
        scrub(pl.Series("note_id", [13812345678]))
    assert "note_id" in str(err.value) and "13812345678" not in str(err.value)


def test_module_docstring_examples_run():
    failures, tried = doctest.testmod(enclave.io.release.scrub)
    assert tried > 0 and failures == 0


# ----------------------------------------------------------------------------- demo population

def test_demo_population_notes_leave_no_identifier():
    pop = build_population(1500, 5, seed=11)
    notes = pl.concat([pop.frames[h.site_id]["note"].select("text") for h in pop.hospitals])["text"]
    ids = pop.identifiers
    planted = [v for kind in ("names", "resident_ids", "phones", "addresses", "mrns", "insurance_nos")
               for v in ids[kind]]
    assert planted and notes.len() > 500
    joined_in = "\n".join(notes.to_list())
    assert any(v in joined_in for v in ids["resident_ids"])  # the notes do carry identifiers
    expected = {"resident_id": joined_in.count("身份证号："), "phone": joined_in.count("联系电话："),
                "record_number": joined_in.count("病案号："), "address": joined_in.count("现住址："),
                "name": joined_in.count("：患者"), "insurance_number": 0}
    for known in (None, KnownIdentifiers(names=ids["names"], addresses=ids["addresses"],
                                         phones=ids["phones"], resident_ids=ids["resident_ids"],
                                         record_numbers=ids["mrns"],
                                         insurance_numbers=ids["insurance_nos"])):
        result = scrub(notes, known)
        joined = "\n".join(result.texts.to_list())
        assert [v for v in planted if v in joined] == []
        assert result.counts == expected


# ----------------------------------------------------------------------------- properties

SURNAMES = ["王", "李", "张", "刘", "陈", "杨", "赵", "吴", "徐", "孙", "朱", "郭", "林", "罗",
            "郑", "梁", "谢", "宋", "唐", "许", "高", "何", "黄", "周", "马", "胡", "欧阳", "司马"]
GIVEN = list("伟强磊军勇杰涛明超华建国平刚辉波斌宇浩鹏飞鑫俊峰亮文博志晨阳龙海东林成"
             "芳娜敏静丽艳娟霞秀英玲燕婷雪慧颖琳洁萍红梅兰凤云佳欣怡倩丹月琴晶")
REGIONS = [("110101", "北京市东城区"), ("310104", "上海市徐汇区"), ("440106", "广东省广州市天河区"),
           ("330106", "浙江省杭州市西湖区"), ("510107", "四川省成都市武侯区"),
           ("420106", "湖北省武汉市武昌区"), ("610113", "陕西省西安市雁塔区")]
STREETS = ["人民路", "解放路", "中山路", "建设路", "和平路", "文化路", "长江路", "学院路"]


@st.composite
def identities(draw):
    region, place = draw(st.sampled_from(REGIONS))
    birth = draw(st.dates(dt.date(1920, 1, 1), dt.date(2020, 12, 31)))
    number = rid(region, birth.strftime("%Y%m%d"), draw(st.integers(0, 999)))
    if draw(st.booleans()):
        number = number.lower()
    mobile = draw(st.sampled_from("3456789")) + "".join(
        draw(st.lists(st.sampled_from("0123456789"), min_size=9, max_size=9)))
    mobile = "1" + mobile
    name = draw(st.sampled_from(SURNAMES)) + "".join(
        draw(st.lists(st.sampled_from(GIVEN), min_size=1, max_size=2)))
    address = (place + draw(st.sampled_from(STREETS)) + f"{draw(st.integers(1, 999))}号"
               + f"{draw(st.integers(1, 40))}栋{draw(st.integers(101, 2999))}室")
    mrn = draw(st.sampled_from(["", "ZY", "MZ", "A"])) + str(draw(st.integers(100000, 99999999)))
    return {"number": number, "mobile": mobile, "name": name, "address": address, "mrn": mrn}


PHONE_FORMS = [lambda m: m, lambda m: f"{m[:3]}-{m[3:7]}-{m[7:]}", lambda m: f"{m[:3]} {m[3:7]} {m[7:]}",
               lambda m: "+86 " + m, lambda m: "86-" + m]
ID_FORMS = [lambda n: n, lambda n: f"{n[:6]} {n[6:14]} {n[14:]}", lambda n: n.translate(FULLWIDTH),
            # legacy 15 digits (YYMMDD, no check character) for those born in the 1900s
            lambda n: n[:6] + n[8:17] if n[6:8] == "19" else n]
TEMPLATES = [
    "出院小结：患者{name}，{sex}，{age}岁。因2型糖尿病入院，予胰岛素治疗后好转出院。",
    "身份证号：{number}。", "身份证号码 {number}", "公民身份号码为{number}，", "证件{number}已核验",
    "联系电话：{phone}。", "家属手机{phone}", "电话 {phone}，",
    "病案号：{mrn}。", "住院号 {mrn}", "门诊号是{mrn}",
    "现住址：{address}。", "家住{address}，", "{address}",
    "姓名：{name}", "联系人{name}，", "家属{name}陪同",
]


@hsettings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(people=st.lists(identities(), min_size=1, max_size=4),
       parts=st.lists(st.tuples(st.sampled_from(TEMPLATES), st.integers(0, 3),
                                st.integers(0, len(PHONE_FORMS) - 1), st.integers(0, len(ID_FORMS) - 1),
                                st.sampled_from(["男", "女"]), st.integers(1, 99),
                                st.sampled_from(CLINICAL[:12] + ["", "。"])),
                      min_size=1, max_size=8))
def test_property_no_identifier_survives(people, parts):
    notes, planted = [], []
    for template, who, phone_form, id_form, sex, age, filler in parts:
        person = people[who % len(people)]
        phone = PHONE_FORMS[phone_form](person["mobile"])
        number = ID_FORMS[id_form](person["number"])
        text = template.format(name=person["name"], sex=sex, age=age, number=number,
                               phone=phone, mrn=person["mrn"], address=person["address"])
        notes.append(text + filler)
        for field in ("{name}", "{number}", "{phone}", "{mrn}", "{address}"):
            if field in template:
                value = {"{name}": person["name"], "{number}": number, "{phone}": phone,
                         "{mrn}": person["mrn"], "{address}": person["address"]}[field]
                planted.append(value)
    # a single note too, so that the identifiers also meet each other
    notes.append("。".join(notes))
    result = run(*notes)
    assert_absent(result.texts, planted)
    for person in people:
        assert_absent(result.texts, [person["number"].upper(), person["number"].lower(),
                                     person["mobile"], person["name"], person["address"]])


@hsettings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parts=st.lists(st.sampled_from(CLINICAL), min_size=1, max_size=10),
       joins=st.lists(st.sampled_from(["，", "。", "；", " ", "\n"]), min_size=10, max_size=10),
       when=st.dates(dt.date(1990, 1, 1), dt.date(2030, 12, 31)),
       dose=st.decimals(min_value="0.01", max_value="999.99", places=2))
def test_property_clinical_text_is_unchanged(parts, joins, when, dose):
    extra = [f"{when.year}年{when.month}月{when.day}日", when.isoformat(), f"剂量 {dose}mg"]
    pieces = parts + extra
    note = "".join(p + joins[i % len(joins)] for i, p in enumerate(pieces))
    result = run(note)
    assert result.texts[0] == note
    assert result.counts == ZERO
