"""kizuna.ngsild.selection: query parameters and query bodies -> EntitySelection, View, Page.

The API tests check these rules through HTTP; here each rule is checked on plain mappings, the
accepted forms and the errors (type and status as the API answers them)."""

from __future__ import annotations

from typing import Any

import pytest

from kizuna.errors import BadRequestData, InvalidRequest, NgsiLdError
from kizuna.jsonld.contexts import ContextRegistry
from kizuna.jsonld.terms import TermMap
from kizuna.ngsild.selection import (
    ENTITY_QUERY_BODY,
    TEMPORAL_QUERY_BODY,
    EntitySelection,
    Page,
    bool_param,
    int_param,
    names,
    parse_member_names,
    parse_page,
    parse_purge,
    parse_selection,
    parse_types,
    parse_view,
    query_body_params,
)

DEFAULT = "https://uri.etsi.org/ngsi-ld/default-context/"
SHOP, CAFE, NAME, SIZE = DEFAULT + "Shop", DEFAULT + "Cafe", DEFAULT + "name", DEFAULT + "size"
LOCATION = "https://uri.etsi.org/ngsi-ld/location"


@pytest.fixture
async def terms() -> TermMap:
    return await ContextRegistry().term_map(None)


def refused(error: type[NgsiLdError], call: Any, *args: Any, **kwargs: Any) -> NgsiLdError:
    with pytest.raises(error) as caught:
        call(*args, **kwargs)
    assert caught.value.to_problem()["status"] == 400
    return caught.value


def shop(name: str, entity_type: str = SHOP) -> dict[str, Any]:
    return {
        "id": f"urn:ngsi-ld:Shop:{name}",
        "type": [entity_type],
        NAME: [{"type": "Property", "value": name}],
    }


# -- single parameters ---------------------------------------------------------------------------------


def test_names_trims_and_drops_duplicates() -> None:
    assert names({"attrs": "name, size,name"}, "attrs") == ["name", "size"]
    assert names({}, "attrs") is None


@pytest.mark.parametrize("raw", ["", "a,,b", "a,", " ,a"])
def test_names_refuse_an_empty_item(raw: str) -> None:
    error = refused(BadRequestData, names, {"datasetId": raw}, "datasetId")
    assert error.detail == "Parameter datasetId has an empty item"


def test_int_and_bool_params() -> None:
    assert int_param({}, "limit", 20) == 20
    assert int_param({"limit": "5"}, "limit", 20, maximum=10) == 5
    refused(BadRequestData, int_param, {"limit": "x"}, "limit", 20)
    refused(BadRequestData, int_param, {"limit": "11"}, "limit", 20, maximum=10)
    refused(BadRequestData, int_param, {"offset": "-1"}, "offset", 0)
    assert bool_param({"count": "true"}, "count") is True
    assert bool_param({}, "count") is False
    refused(BadRequestData, bool_param, {"count": "yes"}, "count")


def test_page() -> None:
    assert parse_page({}, 20, 100) == Page(20, 0, False)
    assert parse_page({"limit": "0", "count": "true", "offset": "3"}, 20, 100) == Page(0, 3, True)
    refused(BadRequestData, parse_page, {"limit": "0"}, 20, 100)
    refused(BadRequestData, parse_page, {"limit": "101"}, 20, 100)


# -- the selection --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [{}, {"id": "urn:a"}, {"idPattern": ""}, {"type": ""}, {"local": "false"}, {"orderBy": "id"}],
)
def test_a_query_needs_a_filter(terms: TermMap, params: dict[str, str]) -> None:
    error = refused(BadRequestData, parse_selection, params, terms)
    assert error.detail.startswith("A query needs at least one of type, idPattern, attrs, q, scopeQ, geoQ")
    error = refused(BadRequestData, parse_selection, params, terms, kind="temporal query")
    assert error.detail.startswith("A temporal query needs")


def test_an_id_pattern_alone_makes_a_query(terms: TermMap) -> None:
    """Orion-LD answers it, and FiLiP clears a broker with ``idPattern=.*&count=true``."""
    assert parse_selection({"idPattern": ".*"}, terms).id_pattern == ".*"
    assert parse_selection({"idPattern": ".*", "id": "urn:a"}, terms, kind="temporal query").ids == ["urn:a"]


@pytest.mark.parametrize(
    "params",
    [
        {"type": "Shop"},
        {"attrs": "name"},
        {"q": "size>1"},
        {"scopeQ": "/Madrid"},
        {"georel": "near;maxDistance==10", "geometry": "Point", "coordinates": "[1,2]"},
        {"local": "true"},
    ],
)
def test_each_filter_makes_a_query(terms: TermMap, params: dict[str, str]) -> None:
    assert isinstance(parse_selection(params, terms), EntitySelection)


def test_a_list_of_types_narrows_in_the_store(terms: TermMap) -> None:
    selection = parse_selection({"type": "Shop,Cafe"}, terms)
    assert selection.types == [SHOP, CAFE] and selection.type_expr is None
    assert selection.entity_query().predicate is None


def test_a_type_expression_is_checked_on_each_entity(terms: TermMap) -> None:
    selection = parse_selection({"type": "(Shop;Cafe)|Bar"}, terms)
    assert selection.types == sorted([SHOP, CAFE, DEFAULT + "Bar"])
    query = selection.entity_query()
    assert query.predicate is not None
    assert query.predicate({"type": [SHOP, CAFE]})
    assert not query.predicate({"type": [SHOP]})


def test_ids_and_id_pattern(terms: TermMap) -> None:
    selection = parse_selection({"type": "Shop", "id": "urn:a, urn:b", "idPattern": "^urn:.*"}, terms)
    assert selection.ids == ["urn:a", "urn:b"]
    assert selection.id_pattern == "^urn:.*"
    error = refused(BadRequestData, parse_selection, {"type": "Shop", "id": "urn:a,shop"}, terms)
    assert error.detail == "id 'shop' is not a URI"
    refused(BadRequestData, parse_selection, {"type": "Shop", "id": "urn:a,"}, terms)
    refused(BadRequestData, parse_selection, {"type": "Shop", "idPattern": "(["}, terms)


def test_attrs_name_attributes_only(terms: TermMap) -> None:
    assert parse_selection({"attrs": "name,size"}, terms).attrs == [NAME, SIZE]
    error = refused(BadRequestData, parse_selection, {"attrs": "name,id,createdAt"}, terms)
    assert error.detail == "attrs names attributes; id, createdAt is not an attribute"


def test_q_scope_geo_and_order_are_parsed_once(terms: TermMap) -> None:
    selection = parse_selection(
        {
            "q": 'name=="a"',
            "scopeQ": "/Madrid",
            "georel": "near;maxDistance==10",
            "geometry": "Point",
            "coordinates": "[1,2]",
            "orderBy": "name;desc",
        },
        terms,
    )
    assert selection.q is not None and selection.q.attribute_names() == {NAME}
    assert selection.scope is not None and selection.geo is not None
    assert selection.geoproperty == LOCATION
    assert selection.order is not None
    assert [e["id"] for e in selection.order.sort([shop("a"), shop("b")])] == [
        "urn:ngsi-ld:Shop:b",
        "urn:ngsi-ld:Shop:a",
    ]
    query = selection.entity_query(limit=5, offset=10, count=True)
    assert (query.limit, query.offset, query.count) == (5, 10, True)
    assert (query.q, query.scope, query.geo, query.geoproperty) == (
        selection.q,
        selection.scope,
        selection.geo,
        LOCATION,
    )


@pytest.mark.parametrize(
    "params",
    [
        {"q": "name=="},
        {"scopeQ": "Madrid"},
        {"georel": "near", "geometry": "Point", "coordinates": "[1,2]"},
        {"georel": "within", "geometry": "Point", "coordinates": "nope"},
        {"orderBy": "name;sideways"},
        {"orderBy": ""},
    ],
)
def test_bad_expressions_are_refused(terms: TermMap, params: dict[str, str]) -> None:
    refused(BadRequestData, parse_selection, {"type": "Shop", **params}, terms)


def test_the_temporal_filter_checks_the_rest_on_each_entity(terms: TermMap) -> None:
    selection = parse_selection({"type": "Shop", "id": "urn:ngsi-ld:Shop:a", "q": 'name=="a"'}, terms)
    selection.order = None
    narrowed = selection.temporal_filter(require_attributes=True)
    assert (narrowed.types, narrowed.ids, narrowed.require_attributes) == (
        [SHOP],
        ["urn:ngsi-ld:Shop:a"],
        True,
    )
    assert narrowed.predicate is not None
    assert narrowed.predicate(shop("a")) and not narrowed.predicate(shop("b"))
    # attrs says what is read of the history: it selects no entities.
    plain = parse_selection({"attrs": "size"}, terms).temporal_filter(require_attributes=False)
    assert plain.predicate is None


def test_types_of_one_entity(terms: TermMap) -> None:
    assert parse_types({}, terms) is None
    assert parse_types({"type": "Shop,Cafe"}, terms) == [SHOP, CAFE]
    refused(BadRequestData, parse_types, {"type": "Shop;Cafe"}, terms)


def test_purge(terms: TermMap) -> None:
    purge = parse_purge({"id": "urn:a", "keep": "name"}, terms)  # ids alone are enough here
    assert purge.selection.ids == ["urn:a"] and purge.keep == {NAME} and purge.drop is None
    refused(BadRequestData, parse_purge, {"type": "Shop", "keep": "a", "drop": "b"}, terms)
    error = refused(BadRequestData, parse_purge, {"attrs": "name"}, terms)
    assert error.detail.startswith("Purging entities needs at least one of")


# -- batch query bodies ---------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [[], {"type": "Subscription"}, {"entities": []}])
def test_a_query_body_is_of_type_query(body: Any) -> None:
    refused(BadRequestData, query_body_params, body, {}, ENTITY_QUERY_BODY)


def test_an_entity_query_body() -> None:
    body = {
        "type": "Query",
        "entities": [
            {"type": "Shop", "id": "urn:a"},
            {"type": "Cafe", "idPattern": "^urn:c"},
            {"id": "urn:b"},
        ],
        "attrs": ["name", "size"],
        "q": "size>1",
        "pick": ["id", "name"],
        "joinLevel": 2,
        "geoQ": {"georel": "near;maxDistance==1", "geometry": "Point", "coordinates": [1, 2]},
    }
    params = query_body_params(body, {"limit": "5", "q": "ignored"}, ENTITY_QUERY_BODY)
    assert params == {
        "limit": "5",
        "type": "Shop,Cafe",
        "id": "urn:a,urn:b",
        "idPattern": "^urn:c",
        "attrs": "name,size",
        "q": "size>1",
        "pick": "id,name",
        "joinLevel": "2",
    }


def test_a_temporal_query_body() -> None:
    body = {
        "type": "Query",
        "entities": [{"type": "Shop"}],
        "temporalQ": {"timerel": "after", "timeAt": "2024-01-01T00:00:00Z", "lastN": 3},
        "geoQ": {"georel": "near;maxDistance==1", "geometry": "Point", "coordinates": [1, 2]},
        "orderBy": "name",
    }
    params = query_body_params(body, {}, TEMPORAL_QUERY_BODY)
    assert params == {
        "type": "Shop",
        "timerel": "after",
        "timeAt": "2024-01-01T00:00:00Z",
        "lastN": "3",
        "georel": "near;maxDistance==1",
        "geometry": "Point",
        "coordinates": "[1,2]",
    }


@pytest.mark.parametrize(
    "body",
    [
        {"type": "Query", "entities": "Shop"},
        {"type": "Query", "entities": ["Shop"]},
        {"type": "Query", "temporalQ": "after"},
    ],
)
def test_bad_query_bodies(body: Any) -> None:
    refused(BadRequestData, query_body_params, body, {}, TEMPORAL_QUERY_BODY)


# -- the view -------------------------------------------------------------------------------------------


def test_view_forms_and_members(terms: TermMap) -> None:
    view = parse_view({}, terms, set())
    assert (view.form, view.attrs, view.pick, view.join, view.join_level) == (
        "normalized",
        None,
        None,
        None,
        1,
    )
    assert parse_view({}, terms, {"simplified"}).form == "keyValues"
    assert parse_view({"format": "concise"}, terms, {"keyValues"}).form == "concise"
    view = parse_view(
        {"attrs": "id,name", "datasetId": "@none,urn:d", "join": "flat", "joinLevel": "2"}, terms, set()
    )
    assert view.attrs == {"id", NAME}
    assert view.dataset_ids == {None, "urn:d"}
    assert (view.join, view.join_level) == ("flat", 2)
    assert parse_view({"join": "@none"}, terms, set()).join is None
    view = parse_view({"pick": "id,name", "omit": "size"}, terms, set())
    assert view.pick == {"id", NAME} and view.omit == {SIZE}


def test_view_errors(terms: TermMap) -> None:
    refused(InvalidRequest, parse_view, {"format": "compact"}, terms, set())
    refused(BadRequestData, parse_view, {"attrs": "name", "pick": "id"}, terms, set())
    error = refused(BadRequestData, parse_view, {"pick": "name", "omit": "name"}, terms, set())
    assert error.detail.endswith("is both picked and omitted")
    refused(BadRequestData, parse_view, {"join": "deep"}, terms, set())
    for level in ("0", "-1", "x"):
        refused(BadRequestData, parse_view, {"join": "inline", "joinLevel": level}, terms, set())
    refused(BadRequestData, parse_view, {"attrs": "name,"}, terms, set())


def test_member_names_of_a_temporal_read(terms: TermMap) -> None:
    assert parse_member_names({}, terms) == (None, frozenset())
    assert parse_member_names({"pick": "id,name", "omit": "size"}, terms) == ({"id", NAME}, {SIZE})
    refused(BadRequestData, parse_member_names, {"pick": "name", "attrs": "name"}, terms)
    refused(BadRequestData, parse_member_names, {"pick": "name", "omit": "name"}, terms)


def test_a_read_that_asks_for_nothing_gets_the_view_every_parameter_defaults_to(terms: TermMap) -> None:
    spelled_out = parse_view({"format": "normalized", "joinLevel": "1"}, terms, set())
    assert parse_view({}, terms, set()) == spelled_out
    assert parse_view({}, terms, {"sysAttrs"}).sys_attrs
