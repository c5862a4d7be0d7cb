"""The NGSI-LD query languages (q, scopeQ, geoQ, type expressions) on hand-written canonical entities."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time
from typing import Any

import orjson
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from kizuna.errors import BadRequestData, InvalidRequest
from kizuna.query import (
    GEOMETRIES,
    AttrPath,
    Comparison,
    Exists,
    GeoQuery,
    NotExists,
    Pattern,
    QAnd,
    QOr,
    Range,
    ScopeAnd,
    ScopeOr,
    ScopePattern,
    TypeAnd,
    TypeName,
    TypeOr,
    Uri,
    ValueList,
    check_regex,
    matches,
    parse_attrs_list,
    parse_geoq,
    parse_q,
    parse_scope_q,
    parse_type_expr,
)

SDM = "https://smartdatamodels.org/"
STAMP = {"createdAt": "2024-01-01T00:00:00Z", "modifiedAt": "2024-05-01T20:00:00Z"}
ZOO = [6.76, 51.43]  # Duisburg zoo entrance


def expand(name: str) -> str:
    return SDM + name


def prop(value: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "Property", "value": value, **STAMP, **extra}


STREETLIGHT: dict[str, Any] = {
    "id": "urn:ngsi-ld:Streetlight:1",
    "type": [SDM + "Streetlight"],
    "scope": ["/Duisburg/Zoo"],
    **STAMP,
    SDM + "powerState": [prop("on", observedAt="2024-05-01T20:00:00Z")],
    SDM + "illuminanceLevel": [prop(0.8, unitCode="P1")],
    SDM + "lanternHeight": [prop(10)],
    SDM + "dateLastLampChange": [prop({"@type": "DateTime", "@value": "2023-11-02T08:00:00Z"})],
    SDM + "address": [
        prop(
            {
                SDM + "streetAddress": "Mülheimer Straße 273",
                SDM + "addressLocality": "Duisburg",
                SDM + "postalCode": "47058",
            }
        )
    ],
    SDM + "refStreetlightGroup": [
        {"type": "Relationship", "object": "urn:ngsi-ld:StreetlightGroup:zoo", **STAMP},
    ],
    SDM + "name": [
        {"type": "LanguageProperty", "languageMap": {"en": "Zoo entrance", "de": "Zooeingang"}, **STAMP},
    ],
    SDM + "category": [{"type": "VocabProperty", "vocab": SDM + "streetlight", **STAMP}],
    SDM + "location": [{"type": "GeoProperty", "value": {"type": "Point", "coordinates": ZOO}, **STAMP}],
}

TRAFFIC: dict[str, Any] = {
    "id": "urn:ngsi-ld:TrafficFlowObserved:A59-1",
    "type": [SDM + "TrafficFlowObserved", SDM + "Observation"],
    "scope": ["/Duisburg/A59/North", "/Duisburg/Center"],
    **STAMP,
    SDM + "intensity": [
        prop(1200, observedAt="2024-05-01T08:00:00Z", **{SDM + "reliability": prop(0.9)}),
        prop(300, observedAt="2024-05-01T09:00:00Z", datasetId="urn:ngsi-ld:dataset:lane2"),
    ],
    SDM + "averageVehicleSpeed": [prop(87.5, unitCode="KMH")],
    SDM + "congested": [prop(False)],
    SDM + "dateObserved": [prop("2024-05-01T08:00:00Z")],
    SDM + "inspectionDate": [prop({"@type": "Date", "@value": "2024-04-30"})],
    SDM + "openingTime": [prop("06:30:00")],
    SDM + "refRoadSegment": [
        {
            "type": "Relationship",
            "object": ["urn:ngsi-ld:RoadSegment:A59-1", "urn:ngsi-ld:RoadSegment:A59-2"],
        },
    ],
    SDM + "vehicleTypes": [{"type": "ListProperty", "valueList": ["car", "lorry"]}],
    SDM + "observedBy": [
        {
            "type": "ListRelationship",
            "objectList": [{"object": "urn:ngsi-ld:Device:loop1"}, {"object": "urn:ngsi-ld:Device:loop2"}],
        }
    ],
    SDM + "rawCounts": [{"type": "JsonProperty", "json": [1, 2, 3]}],
}


def path(attribute: str, *subs: str, metadata: str | None = None, keys: tuple[str, ...] = ()) -> AttrPath:
    return AttrPath(attribute, subs, metadata, keys)


def detail_of(excinfo: pytest.ExceptionInfo[BadRequestData]) -> str:
    assert type(excinfo.value) is BadRequestData
    return excinfo.value.detail


# -- q: grammar ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("speed", Exists(path("speed"))),
        ("!speed", NotExists(path("speed"))),
        ("speed==50", Comparison(path("speed"), "==", 50)),
        ("speed!=50", Comparison(path("speed"), "!=", 50)),
        ("speed>50", Comparison(path("speed"), ">", 50)),
        ("speed>=50", Comparison(path("speed"), ">=", 50)),
        ("speed<50", Comparison(path("speed"), "<", 50)),
        ("speed<=50", Comparison(path("speed"), "<=", 50)),
        ("speed==-1.5e3", Comparison(path("speed"), "==", -1500.0)),
        ("speed==0.25", Comparison(path("speed"), "==", 0.25)),
        ('name=="say \\"hi\\""', Comparison(path("name"), "==", 'say "hi"')),
        ('name=="a;b|c==(d)"', Comparison(path("name"), "==", "a;b|c==(d)")),
        ("on==true", Comparison(path("on"), "==", True)),
        ("on!=false", Comparison(path("on"), "!=", False)),
        ("t>2018-12-04T12:00:00Z", Comparison(path("t"), ">", datetime(2018, 12, 4, 12, tzinfo=UTC))),
        (
            "t<2018-12-04T12:00:00.5Z",
            Comparison(path("t"), "<", datetime(2018, 12, 4, 12, 0, 0, 500000, UTC)),
        ),
        ("t>2018-12-04T13:00:00+01:00", Comparison(path("t"), ">", datetime(2018, 12, 4, 12, tzinfo=UTC))),
        ("d>=2018-12-04", Comparison(path("d"), ">=", date(2018, 12, 4))),
        ("h<12:00:00", Comparison(path("h"), "<", time(12, tzinfo=UTC))),
        ("ref==urn:ngsi-ld:X:1", Comparison(path("ref"), "==", Uri("urn:ngsi-ld:X:1"))),
        ("speed==1..5", Comparison(path("speed"), "==", Range(1, 5))),
        ("speed!=-1.5..5", Comparison(path("speed"), "!=", Range(-1.5, 5))),
        ('name=="a".."b"', Comparison(path("name"), "==", Range("a", "b"))),
        (
            "t==2018-01-01T00:00:00Z..2019-01-01T00:00:00Z",
            Comparison(
                path("t"), "==", Range(datetime(2018, 1, 1, tzinfo=UTC), datetime(2019, 1, 1, tzinfo=UTC))
            ),
        ),
        ("speed==1,2,3", Comparison(path("speed"), "==", ValueList((1, 2, 3)))),
        ('s!="a","b"', Comparison(path("s"), "!=", ValueList(("a", "b")))),
        ("r==urn:a:1,urn:a:2", Comparison(path("r"), "==", ValueList((Uri("urn:a:1"), Uri("urn:a:2"))))),
        ("a.b", Exists(path("a", "b"))),
        ("a.b.c==1", Comparison(path("a", "b", "c"), "==", 1)),
        ("a.observedAt", Exists(path("a", metadata="observedAt"))),
        ('a.b.unitCode=="KMH"', Comparison(path("a", "b", metadata="unitCode"), "==", "KMH")),
        ("a.datasetId==urn:d:1", Comparison(path("a", metadata="datasetId"), "==", Uri("urn:d:1"))),
        ("a[b]==1", Comparison(path("a", keys=("b",)), "==", 1)),
        ("a[b.c]==1", Comparison(path("a", keys=("b", "c")), "==", 1)),
        ("a[b][c]", Exists(path("a", keys=("b", "c")))),
        ("a.s[k]==1", Comparison(path("a", "s", keys=("k",)), "==", 1)),
        ("id==urn:x:1", Comparison(path("id"), "==", Uri("urn:x:1"))),
        ("name~=(?i)^ford", Pattern(path("name"), "(?i)^ford")),
        ("name!~=^Z", Pattern(path("name"), "^Z", negated=True)),
        ('name~="^a|b$"', Pattern(path("name"), "^a|b$")),
        ("name~=a(b|c)d;x", QAnd((Pattern(path("name"), "a(b|c)d"), Exists(path("x"))))),
        ("name~=a|x", QOr((Pattern(path("name"), "a"), Exists(path("x"))))),
        ("(name~=[)]x)", Pattern(path("name"), "[)]x")),
        ("a;b", QAnd((Exists(path("a")), Exists(path("b"))))),
        ("a|b", QOr((Exists(path("a")), Exists(path("b"))))),
        (
            "a;b|c;d",
            QOr((QAnd((Exists(path("a")), Exists(path("b")))), QAnd((Exists(path("c")), Exists(path("d")))))),
        ),
        ("a|b;c", QOr((Exists(path("a")), QAnd((Exists(path("b")), Exists(path("c"))))))),
        ("a;(b|c)", QAnd((Exists(path("a")), QOr((Exists(path("b")), Exists(path("c"))))))),
        ("((a))", Exists(path("a"))),
        (
            " a == 1 ; ( b | !c ) ",
            QAnd((Comparison(path("a"), "==", 1), QOr((Exists(path("b")), NotExists(path("c")))))),
        ),
    ],
)
def test_parse_q(text: str, expected: Any) -> None:
    assert parse_q(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "position 0: expected an attribute name, found end of input"),
        ("a==", "position 3: expected a value"),
        ("a=b", "position 1: expected a comparison operator"),
        ("a==bare", "position 3: expected a value"),
        ("a==1 2", "position 5: expected ';' or '|' or end of input"),
        ("(a", "position 2: expected ')'"),
        ("a)", "position 1: unbalanced ')'"),
        ("a;;b", "position 2: expected an attribute name"),
        ("a|", "position 2: expected an attribute name"),
        ("a[b", "position 3: expected '.' or ']'"),
        ("a.", "position 2: expected a sub-attribute or metadata name"),
        ("a>1..2", "range is only allowed with == and !="),
        ("a>1,2", "value list is only allowed with == and !="),
        ("a==true..false", "as range bound"),
        ("a>true", "position 2: expected a number, quoted string, DateTime, Date or Time after >"),
        ("a<urn:x:1", "after <"),
        ('a=="open', "position 3: unterminated quoted string"),
        ("a==2018-13-01", "position 3: expected a valid Date"),
        ("a==2018-12-01T25:00:00Z", "expected a valid DateTime"),
        ("a==1e999", "expected a valid number"),
        ("a.observedAt.b", "metadata 'observedAt' must end the attribute path"),
        ("a.observedAt[x]", "cannot be followed by a compound value key"),
        ("id.x==1", "'id' has no sub-attributes"),
        ("x~=", "position 3: expected a regular expression"),
        ("x~=(?=a)b", "position 3: invalid regular expression: invalid perl operator"),
        ("x~=(", "invalid regular expression"),
        ("x~=" + "a" * 600, "longer than 512 characters"),
        ("a;" * 5000 + "a", "longer than 8192 characters"),
        ("(" * 65 + "a" + ")" * 65, "position 64: parentheses nested deeper than 64 levels"),
        ("!a==1", "expected ';' or '|' or end of input"),
    ],
)
def test_parse_q_errors(text: str, fragment: str) -> None:
    with pytest.raises(BadRequestData) as excinfo:
        parse_q(text)
    assert fragment in detail_of(excinfo)
    assert excinfo.value.status == 400


def test_nesting_up_to_the_limit_is_fine() -> None:
    assert parse_q("(" * 64 + "a" + ")" * 64) == Exists(path("a"))


def test_resolve_expands_attribute_sub_attribute_and_compound_names_only() -> None:
    q = parse_q("a.b[c.d]==1;e.f.observedAt;id==urn:x:1;!g|h~=z")
    assert q.resolve(expand) == QOr(
        (
            QAnd(
                (
                    Comparison(AttrPath(SDM + "a", (SDM + "b",), None, (SDM + "c", SDM + "d")), "==", 1),
                    Exists(AttrPath(SDM + "e", (SDM + "f",), "observedAt")),
                    Comparison(path("id"), "==", Uri("urn:x:1")),
                    NotExists(AttrPath(SDM + "g")),
                )
            ),
            Pattern(AttrPath(SDM + "h"), "z"),
        )
    )
    assert q.attribute_names() == {"a", "e", "g", "h"}


def test_check_regex() -> None:
    assert check_regex("^urn:ngsi-ld:Streetlight:.*$") == "^urn:ngsi-ld:Streetlight:.*$"
    assert check_regex("(x+)*y") == "(x+)*y"  # RE2 runs it in linear time: no need to refuse it
    for unsupported in (r"(a)\1", "(?=a)b", "x" * 513, "(unclosed"):
        with pytest.raises(BadRequestData, match="Invalid regular expression"):
            check_regex(unsupported)


# -- q: evaluation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('powerState=="on"', True),
        ('powerState=="off"', False),
        ('powerState!="off"', True),
        ('powerState!="on"', False),
        ('powerState=="off","on"', True),
        ('powerState!="off","on"', False),
        ('powerState>"off"', True),  # lexicographic: "on" > "off"
        ('powerState<"off"', False),
        ("powerState>5", False),  # string against number: no match, no error
        ("powerState", True),
        ("!powerState", False),
        ("missing", False),
        ("!missing", True),
        ('missing!="x"', False),
        ("missing==1", False),
        ("lanternHeight==10", True),
        ("lanternHeight==10.0", True),
        ("lanternHeight>9", True),
        ("lanternHeight>10", False),
        ("lanternHeight>=10", True),
        ("lanternHeight<10", False),
        ("lanternHeight<=10", True),
        ('lanternHeight>"a"', False),
        ("lanternHeight==true", False),
        ("illuminanceLevel==0.5..1", True),
        ("illuminanceLevel==0.8..0.8", True),
        ("illuminanceLevel==0.9..1", False),
        ("illuminanceLevel!=0.9..1", True),
        ('illuminanceLevel.unitCode=="P1"', True),
        ("illuminanceLevel.observedAt", False),
        ("powerState.observedAt", True),
        ("powerState.createdAt<2024-01-02T00:00:00Z", True),
        ("powerState.observedAt>=2024-05-01T19:00:00Z", True),
        ("powerState.observedAt>=2024-05-01T21:00:00+02:00", True),  # 19:00Z
        ("powerState.observedAt<2024-05-01T20:00:00Z", False),
        ("powerState.observedAt==2024-05-01T22:00:00+02:00", True),
        ("powerState.observedAt==2024-05-01T00:00:00Z..2024-05-01T23:59:59Z", True),
        ("dateLastLampChange>2023-01-01T00:00:00Z", True),  # {"@type": "DateTime", "@value": ...}
        ("dateLastLampChange<2023-01-01T00:00:00Z", False),
        ('address[streetAddress]=="Mülheimer Straße 273"', True),
        ("address[addressLocality]~=^Duis", True),
        ('address[postalCode]=="47058","47059"', True),
        ("address[country]", False),
        ("address[postalCode]>47000", False),  # postal codes are strings
        ("refStreetlightGroup==urn:ngsi-ld:StreetlightGroup:zoo", True),
        ('refStreetlightGroup=="urn:ngsi-ld:StreetlightGroup:zoo"', True),
        ("refStreetlightGroup==urn:ngsi-ld:StreetlightGroup:park", False),
        ('name=="Zooeingang"', True),
        ("name~=(?i)zoo entrance", True),
        ('category=="https://smartdatamodels.org/streetlight"', True),
        ("id==urn:ngsi-ld:Streetlight:1", True),
        ("id~=Streetlight", True),
        ("powerState~=^o", True),
        ("powerState!~=^of", True),
        ("powerState!~=^o", False),
        ("lanternHeight~=1", False),  # regexes only see strings
        ("lanternHeight!~=1", False),
        ('powerState=="off";lanternHeight>5|lanternHeight==10', True),  # (F;T)|T
        ('powerState=="off";(lanternHeight>5|lanternHeight==10)', False),
        ('powerState=="on";lanternHeight>5;!missing', True),
    ],
)
def test_matches_streetlight(text: str, expected: bool) -> None:
    assert matches(parse_q(text).resolve(expand), STREETLIGHT) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("intensity==300", True),  # any instance, whatever its datasetId
        ("intensity>1000", True),
        ("intensity==1..299", False),
        ("intensity.datasetId==urn:ngsi-ld:dataset:lane2", True),
        ("intensity.observedAt==2024-05-01T09:00:00Z", True),
        ("intensity.reliability>0.8", True),
        ("intensity.reliability.observedAt", False),
        ("intensity.reliability.unitCode", False),
        ('averageVehicleSpeed==87.5;averageVehicleSpeed.unitCode=="KMH"', True),
        ("congested==false", True),
        ("congested==true", False),
        ("congested==0", False),  # booleans are not numbers
        ("refRoadSegment==urn:ngsi-ld:RoadSegment:A59-2", True),
        ("refRoadSegment!=urn:ngsi-ld:RoadSegment:A59-2", False),
        ('vehicleTypes=="lorry"', True),
        ('vehicleTypes=="bus"', False),
        ('vehicleTypes!="bus"', True),
        ("observedBy==urn:ngsi-ld:Device:loop2", True),
        ("rawCounts==2", True),
        ("rawCounts>3", False),
        ("dateObserved==2024-05-01T10:00:00+02:00", True),  # plain ISO string compared as an instant
        ('dateObserved=="2024-05-01T08:00:00Z"', True),  # quoted: compared as a string
        ("dateObserved==2024-05-01T08:00:00Z..2024-05-01T09:00:00Z", True),
        ("dateObserved>2024-05-01", False),  # a Date literal only compares with Dates
        ("inspectionDate==2024-04-30", True),
        ("inspectionDate<2024-05-01", True),
        ("openingTime<07:00:00", True),
        ("openingTime>07:00", False),
        ("openingTime==06:30:00Z", True),
    ],
)
def test_matches_traffic_flow(text: str, expected: bool) -> None:
    assert matches(parse_q(text).resolve(expand), TRAFFIC) is expected


def test_datasetid_any_false_sees_only_default_instances() -> None:
    q = parse_q("intensity==300").resolve(expand)
    assert matches(q, TRAFFIC)
    assert not matches(q, TRAFFIC, datasetid_any=False)
    assert matches(parse_q("intensity==1200").resolve(expand), TRAFFIC, datasetid_any=False)


def test_odd_data_never_raises() -> None:
    odd = {
        "id": "urn:x:1",
        "type": ["T"],
        SDM + "a": [{"type": "Property", "value": {"nested": [1, [2, {"@value": "x"}]]}}],
        SDM + "b": {"type": "Property", "value": 7},  # a single instance instead of a list
        SDM + "c": ["not an instance", None, {"type": "LanguageProperty", "languageMap": "oops"}],
        SDM + "d": [{"type": 5, "value": "2024-99-99T00:00:00Z"}],
    }
    for text in ("a>1", "a[nested]==2", "a~=x", "b==7", "c", "c==1", "d>2024-01-01T00:00:00Z", "d<12:00"):
        matches(parse_q(text).resolve(expand), odd)
    assert matches(parse_q("b==7").resolve(expand), odd)
    assert matches(
        parse_q("a[nested]==2").resolve(expand), {**odd, SDM + "a": [prop({SDM + "nested": [1, 2]})]}
    )


# -- scopeQ --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/Duisburg/Zoo", ScopePattern(("Duisburg", "Zoo"))),
        ("/Duisburg/#", ScopePattern(("Duisburg",), descendants=True)),
        ("/#", ScopePattern((), descendants=True)),
        ("/Duisburg/+/North", ScopePattern(("Duisburg", "+", "North"))),
        ("/a;/b|/c", ScopeOr((ScopeAnd((ScopePattern(("a",)), ScopePattern(("b",)))), ScopePattern(("c",))))),
        ("/a,/b", ScopeOr((ScopePattern(("a",)), ScopePattern(("b",))))),
        (
            "(/a|/b);/c",
            ScopeAnd((ScopeOr((ScopePattern(("a",)), ScopePattern(("b",)))), ScopePattern(("c",)))),
        ),
    ],
)
def test_parse_scope_q(text: str, expected: Any) -> None:
    assert parse_scope_q(text) == expected


@pytest.mark.parametrize(
    ("text", "entity", "expected"),
    [
        ("/Duisburg/Zoo", STREETLIGHT, True),
        ("/Duisburg", STREETLIGHT, False),
        ("/Duisburg/#", STREETLIGHT, True),
        ("/Duisburg/Zoo/#", STREETLIGHT, True),  # a scope is its own descendant
        ("/Duisburg/Zoo/Gate/#", STREETLIGHT, False),
        ("/#", STREETLIGHT, True),
        ("/+/Zoo", STREETLIGHT, True),
        ("/+", STREETLIGHT, False),
        ("/Duisburg/+", STREETLIGHT, True),
        ("/Duisburg/Zoo/+", STREETLIGHT, False),
        ("/Essen/#", STREETLIGHT, False),
        ("/Duisburg/Center;/Duisburg/A59/#", TRAFFIC, True),  # each term may match another scope
        ("/Duisburg/Center;/Essen/#", TRAFFIC, False),
        ("/Essen,/Duisburg/Center", TRAFFIC, True),
        ("/Duisburg/+/North", TRAFFIC, True),
        ("/#", {"id": "urn:x:1", "type": ["T"]}, False),  # no scope at all
    ],
)
def test_scope_q_matches(text: str, entity: dict[str, Any], expected: bool) -> None:
    assert parse_scope_q(text).matches(entity) is expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "position 0: expected '/' starting a scope"),
        ("Duisburg", "position 0: expected '/' starting a scope"),
        ("/Duisburg/", "position 10: expected a scope level, '+' or '#'"),
        ("/a//b", "position 3: expected a scope level"),
        ("/a/#/b", "position 4: expected ';' or '|' or ',' or end of input"),
        ("/a#", "position 2: expected ';' or '|' or ','"),
        ("(/a", "position 3: expected ')'"),
    ],
)
def test_scope_q_errors(text: str, fragment: str) -> None:
    with pytest.raises(BadRequestData) as excinfo:
        parse_scope_q(text)
    assert fragment in detail_of(excinfo)


# -- entity type selection -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "simple"),
    [
        ("A", TypeName("A"), ["A"]),
        ("A,B,A", TypeOr((TypeName("A"), TypeName("B"), TypeName("A"))), ["A", "B"]),
        ("A|B", TypeOr((TypeName("A"), TypeName("B"))), ["A", "B"]),
        ("(A,B)|C", TypeOr((TypeOr((TypeName("A"), TypeName("B"))), TypeName("C"))), ["A", "B", "C"]),
        ("A;B", TypeAnd((TypeName("A"), TypeName("B"))), None),
        ("A;B|C", TypeOr((TypeAnd((TypeName("A"), TypeName("B"))), TypeName("C"))), None),
        ("(A;B)|C", TypeOr((TypeAnd((TypeName("A"), TypeName("B"))), TypeName("C"))), None),
        (
            "https://example.org/A,urn:t:B",
            TypeOr((TypeName("https://example.org/A"), TypeName("urn:t:B"))),
            ["https://example.org/A", "urn:t:B"],
        ),
    ],
)
def test_parse_type_expr(text: str, expected: Any, simple: list[str] | None) -> None:
    expr = parse_type_expr(text)
    assert expr == expected
    assert expr.as_simple_list() == simple


@pytest.mark.parametrize(
    ("text", "entity", "expected"),
    [
        ("Streetlight", STREETLIGHT, True),
        ("Streetlight,TrafficFlowObserved", TRAFFIC, True),
        ("TrafficFlowObserved;Observation", TRAFFIC, True),
        ("TrafficFlowObserved;Streetlight", TRAFFIC, False),
        ("(TrafficFlowObserved;Streetlight)|Observation", TRAFFIC, True),
        ("Vehicle", STREETLIGHT, False),
    ],
)
def test_type_expr_matches(text: str, entity: dict[str, Any], expected: bool) -> None:
    assert parse_type_expr(text).resolve(expand).matches(entity["type"]) is expected


def test_type_expr_names() -> None:
    expr = parse_type_expr("(A;B)|C")
    assert expr.names() == {"A", "B", "C"}
    assert expr.resolve(expand).names() == {SDM + "A", SDM + "B", SDM + "C"}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "position 0: expected an entity type name"),
        ("A,", "position 2: expected an entity type name"),
        (",A", "position 0: expected an entity type name"),
        ("A;;B", "position 2"),
        ("(A", "position 2: expected ')'"),
        ("A B", "position 2: expected ';' or '|' or ',' or end of input"),
        ("A)", "unbalanced ')'"),
    ],
)
def test_type_expr_errors(text: str, fragment: str) -> None:
    with pytest.raises(BadRequestData) as excinfo:
        parse_type_expr(text)
    assert fragment in detail_of(excinfo)


# -- attribute lists -----------------------------------------------------------------------------


def test_parse_attrs_list() -> None:
    assert parse_attrs_list("powerState,lanternHeight, powerState") == ["powerState", "lanternHeight"]
    assert parse_attrs_list("https://example.org/a") == ["https://example.org/a"]
    for bad in ("", "a,,b", "a,", ",a", " "):
        with pytest.raises(BadRequestData, match="empty item"):
            parse_attrs_list(bad)


# -- geoQ ----------------------------------------------------------------------------------------

# 0.0027 degrees of latitude is 300.2 m; 0.0043 degrees of longitude at 51.43 N is 298.1 m.
NORTH_300M = {"type": "Point", "coordinates": [6.76, 51.4327]}
EAST_298M_LINE = {"type": "LineString", "coordinates": [[6.7643, 51.42], [6.7643, 51.44]]}
ZOO_SQUARE = [[[6.75, 51.42], [6.77, 51.42], [6.77, 51.44], [6.75, 51.44], [6.75, 51.42]]]
EAST_SQUARE = [[[6.78, 51.42], [6.80, 51.42], [6.80, 51.44], [6.78, 51.44], [6.78, 51.42]]]


def square(lon: float, lat: float, half: float) -> dict[str, Any]:
    ring = [
        [lon - half, lat - half],
        [lon + half, lat - half],
        [lon + half, lat + half],
        [lon - half, lat + half],
    ]
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}


def point(lon: float, lat: float) -> dict[str, Any]:
    return {"type": "Point", "coordinates": [lon, lat]}


def test_parse_geoq_ast() -> None:
    near = parse_geoq("near;maxDistance==300", "Point", "[6.76,51.43]", None)
    assert near == GeoQuery("near", shapely.Point(6.76, 51.43), "location", 300.0, None)
    within = parse_geoq("within", "Polygon", ZOO_SQUARE, "observationSpace")
    assert within == GeoQuery("within", shapely.Polygon(ZOO_SQUARE[0]), "observationSpace")
    both = parse_geoq("near;minDistance==10;maxDistance==20.5", "Point", "[6.76,51.43,30]", None)
    assert (both.min_distance, both.max_distance) == (10.0, 20.5)


def test_near_points_use_the_haversine_distance() -> None:
    query = parse_geoq("near;maxDistance==1", "Point", orjson.dumps(ZOO).decode(), None)
    assert query.distance_to(shapely.Point(NORTH_300M["coordinates"])) == pytest.approx(300.2, abs=0.1)
    assert parse_geoq("near;maxDistance==301", "Point", "[6.76,51.43]", None).matches(NORTH_300M)
    assert not parse_geoq("near;maxDistance==299", "Point", "[6.76,51.43]", None).matches(NORTH_300M)
    assert parse_geoq("near;minDistance==299", "Point", "[6.76,51.43]", None).matches(NORTH_300M)
    assert not parse_geoq("near;minDistance==301", "Point", "[6.76,51.43]", None).matches(NORTH_300M)
    assert not parse_geoq("near;minDistance==10;maxDistance==200", "Point", "[6.76,51.43]", None).matches(
        NORTH_300M
    )


def test_near_other_geometries_use_the_local_plane() -> None:
    query = parse_geoq("near;maxDistance==1", "Point", "[6.76,51.43]", None)
    line = shapely.geometry.shape(EAST_298M_LINE)
    assert query.distance_to(line) == pytest.approx(298.1, rel=0.005)
    assert parse_geoq("near;maxDistance==305", "Point", "[6.76,51.43]", None).matches(EAST_298M_LINE)
    assert not parse_geoq("near;maxDistance==290", "Point", "[6.76,51.43]", None).matches(EAST_298M_LINE)
    assert query.matches({"type": "Polygon", "coordinates": ZOO_SQUARE})  # it contains the point: 0 m
    assert not parse_geoq("near;minDistance==1", "Point", "[6.76,51.43]", None).matches(
        {"type": "Polygon", "coordinates": ZOO_SQUARE}
    )


@pytest.mark.parametrize(
    ("georel", "geometry", "coordinates", "candidate", "expected"),
    [
        ("within", "Polygon", ZOO_SQUARE, point(*ZOO), True),
        ("within", "Polygon", ZOO_SQUARE, point(6.79, 51.43), False),
        ("within", "MultiPolygon", [ZOO_SQUARE, EAST_SQUARE], point(6.79, 51.43), True),
        ("contains", "Point", ZOO, {"type": "Polygon", "coordinates": ZOO_SQUARE}, True),
        ("contains", "Point", [6.79, 51.43], {"type": "Polygon", "coordinates": ZOO_SQUARE}, False),
        ("contains", "LineString", [[6.755, 51.43], [6.765, 51.43]], square(6.76, 51.43, 0.01), True),
        ("intersects", "Polygon", ZOO_SQUARE, EAST_298M_LINE, True),
        ("intersects", "Polygon", EAST_SQUARE, EAST_298M_LINE, False),
        ("intersects", "MultiPoint", [ZOO, [6.9, 51.5]], square(6.76, 51.43, 0.001), True),
        ("intersects", "MultiLineString", [[[6.70, 51.43], [6.79, 51.43]]], EAST_298M_LINE, True),
        ("intersects", "LineString", [[6.70, 51.45], [6.79, 51.45]], EAST_298M_LINE, False),
        ("disjoint", "Polygon", EAST_SQUARE, point(*ZOO), True),
        ("disjoint", "Polygon", ZOO_SQUARE, point(*ZOO), False),
        ("equals", "Point", ZOO, point(*ZOO), True),
        ("equals", "Point", ZOO, NORTH_300M, False),
        ("equals", "Polygon", ZOO_SQUARE, {"type": "Polygon", "coordinates": ZOO_SQUARE}, True),
        ("overlaps", "Polygon", ZOO_SQUARE, square(6.77, 51.43, 0.005), True),
        ("overlaps", "Polygon", ZOO_SQUARE, square(6.76, 51.43, 0.001), False),  # inside, not overlapping
        ("overlaps", "Polygon", ZOO_SQUARE, square(6.79, 51.43, 0.005), False),
    ],
)
def test_geo_relations(
    georel: str, geometry: str, coordinates: Any, candidate: dict[str, Any], expected: bool
) -> None:
    query = parse_geoq(georel, geometry, orjson.dumps(coordinates).decode(), None)
    assert query.matches(candidate) is expected


@pytest.mark.parametrize(
    "candidate",
    [{}, {"type": "Point"}, {"type": "Polygon", "coordinates": [[1, 2]]}, {"type": "Circle"}, {"type": 5}],
)
def test_geo_matches_rejects_malformed_entity_geometries_quietly(candidate: dict[str, Any]) -> None:
    assert parse_geoq("intersects", "Polygon", ZOO_SQUARE, None).matches(candidate) is False
    assert parse_geoq("near;maxDistance==10", "Point", ZOO, None).matches(candidate) is False


def destination(lon: float, lat: float, metres: float, bearing_deg: float) -> tuple[float, float]:
    phi, lam, delta, theta = (
        math.radians(lat),
        math.radians(lon),
        metres / 6_371_008.8,
        math.radians(bearing_deg),
    )
    phi2 = math.asin(math.sin(phi) * math.cos(delta) + math.cos(phi) * math.sin(delta) * math.cos(theta))
    lam2 = lam + math.atan2(
        math.sin(theta) * math.sin(delta) * math.cos(phi), math.cos(delta) - math.sin(phi) * math.sin(phi2)
    )
    return math.degrees(lam2), math.degrees(phi2)


def test_bbox() -> None:
    assert parse_geoq("within", "Polygon", ZOO_SQUARE, None).bbox() == (6.75, 51.42, 6.77, 51.44)
    assert parse_geoq("disjoint", "Polygon", ZOO_SQUARE, None).bbox() is None
    assert parse_geoq("near;minDistance==300", "Point", ZOO, None).bbox() is None
    minlon, minlat, maxlon, maxlat = parse_geoq("near;maxDistance==300", "Point", ZOO, None).bbox() or ()
    assert (maxlat - minlat) / 2 == pytest.approx(300 / 111_195, rel=1e-3)
    assert (maxlon - minlon) / 2 == pytest.approx(300 / 111_195 / math.cos(math.radians(51.43)), rel=1e-3)
    assert parse_geoq("near;maxDistance==100", "Point", "[0, 89.9999]", None).bbox() == (
        -180.0,
        pytest.approx(89.999, abs=1e-3),
        180.0,
        90.0,
    )
    assert parse_geoq("near;maxDistance==1000", "Point", "[179.999, 0]", None).bbox()[::2] == (-180.0, 180.0)


@pytest.mark.parametrize(("lon", "lat", "metres"), [(6.76, 51.43, 300), (25.0, 70.0, 50_000), (-70, -33, 5)])
def test_bbox_holds_every_point_in_range(lon: float, lat: float, metres: float) -> None:
    query = parse_geoq(f"near;maxDistance=={metres}", "Point", [lon, lat], None)
    minlon, minlat, maxlon, maxlat = query.bbox() or ()
    for bearing in range(0, 360, 5):
        x, y = destination(lon, lat, metres * 0.9999, bearing)
        assert query.matches(point(x, y))
        assert minlon <= x <= maxlon
        assert minlat <= y <= maxlat


@pytest.mark.parametrize(
    ("georel", "geometry", "coordinates", "fragment"),
    [
        ("near", "Point", "[6.76,51.43]", "near needs maxDistance"),
        ("near;maxDistance=100", "Point", "[6.76,51.43]", "found 'maxDistance=100'"),
        ("near;maxDistance==-5", "Point", "[6.76,51.43]", "expected maxDistance==<metres>"),
        ("near;maxDistance==5;maxDistance==6", "Point", "[6.76,51.43]", "given twice"),
        ("nearby", "Point", "[6.76,51.43]", "Invalid georel 'nearby'"),
        ("within;maxDistance==5", "Polygon", ZOO_SQUARE, "within takes no modifiers"),
        ("within", "Circle", "[6.76,51.43]", "Invalid geometry 'Circle'"),
        ("near;maxDistance==5", "Polygon", ZOO_SQUARE, "near needs a Point"),
        ("within", "Point", "6.76,51.43", "not a JSON array"),
        ("within", "Point", "[6.76]", "coordinates must be a position"),
        ("within", "Point", "[true, 1]", "coordinates must be a position"),
        ("within", "Point", "[200, 51]", "longitude 200 outside [-180, 180]"),
        ("within", "Point", "[6.76, 95]", "latitude 95 outside [-90, 90]"),
        ("within", "MultiPoint", "[]", "coordinates must be an array of at least 1 positions"),
        ("within", "LineString", "[[6.76, 51.43]]", "at least 2 positions"),
        ("within", "MultiLineString", "[[[6.76, 51.43], [6.77]]]", "coordinates[0][1] must be a position"),
        ("within", "Polygon", "[[[0,0],[1,0],[0,0]]]", "coordinates[0] must be an array of at least 4"),
        ("within", "Polygon", "[[[0,0],[1,0],[1,1],[0,1]]]", "coordinates[0] is not a closed ring"),
        ("within", "MultiPolygon", "[[[[0,0],[1,0],[1,1],[0,0]]], 5]", "coordinates[1] must be an array"),
    ],
)
def test_geoq_errors(georel: str, geometry: str, coordinates: Any, fragment: str) -> None:
    with pytest.raises(BadRequestData) as excinfo:
        parse_geoq(georel, geometry, coordinates, None)
    assert fragment in detail_of(excinfo)


def test_geoq_rejects_an_empty_geoproperty() -> None:
    with pytest.raises(BadRequestData, match="geoproperty"):
        parse_geoq("within", "Polygon", ZOO_SQUARE, " ")


# -- robustness ----------------------------------------------------------------------------------

GRAMMAR_TEXT = st.one_of(
    st.text(max_size=40),
    st.text(alphabet='ab.[]()"\\;|,=!<>~-+09:TZ/#e ', max_size=40),
)


def parsed_or_rejected(parse: Any, *args: Any) -> Any:
    try:
        return parse(*args)
    except (BadRequestData, InvalidRequest):
        return None


@settings(max_examples=300, deadline=None)
@given(GRAMMAR_TEXT)
def test_q_parser_never_crashes(text: str) -> None:
    q = parsed_or_rejected(parse_q, text)
    if q is not None:
        q.attribute_names()
        resolved = q.resolve(expand)
        matches(resolved, STREETLIGHT)
        matches(resolved, TRAFFIC, datasetid_any=False)


@settings(max_examples=300, deadline=None)
@given(st.one_of(GRAMMAR_TEXT, st.text(alphabet="/a#+;|,() ", max_size=30)))
def test_scope_q_parser_never_crashes(text: str) -> None:
    scope = parsed_or_rejected(parse_scope_q, text)
    if scope is not None:
        scope.matches(TRAFFIC)


@settings(max_examples=300, deadline=None)
@given(GRAMMAR_TEXT)
def test_type_parser_never_crashes(text: str) -> None:
    expr = parsed_or_rejected(parse_type_expr, text)
    if expr is not None:
        expr.as_simple_list()
        expr.resolve(expand).matches(TRAFFIC["type"])


NUMBERS = st.one_of(st.integers(-200, 200), st.floats(-200, 200, allow_nan=False), st.booleans())
JSON_COORDINATES = st.recursive(
    st.lists(NUMBERS, max_size=4), lambda inner: st.lists(inner, max_size=6), max_leaves=40
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.sampled_from(["near;maxDistance==500", "near;minDistance==5", "within", "intersects"]), st.text()
    ),
    st.one_of(st.sampled_from(GEOMETRIES), st.text(max_size=12)),
    st.one_of(
        st.text(max_size=40),
        st.sampled_from([orjson.dumps(c).decode() for c in (ZOO, [ZOO, ZOO], ZOO_SQUARE, [ZOO_SQUARE])]),
        JSON_COORDINATES.map(lambda c: orjson.dumps(c).decode()),
    ),
)
def test_geoq_parser_never_crashes(georel: str, geometry: str, coordinates: str) -> None:
    query = parsed_or_rejected(parse_geoq, georel, geometry, coordinates, None)
    if query is not None:
        query.bbox()
        query.matches(point(*ZOO))
        query.matches({"type": "Polygon", "coordinates": ZOO_SQUARE})
