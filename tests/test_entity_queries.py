"""Reading entities the v1.9 way: linked entity retrieval (join), pick/omit projections, orderBy.

A city's street lights belong to a group, the group to a district: enough links to join over.
"""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from kizuna.errors import BadRequestData
from kizuna.query import parse_order_by, parse_projection

BASE = "/ngsi-ld/v1"
ERR = "https://uri.etsi.org/ngsi-ld/errors/"
LIGHT = "urn:ngsi-ld:Streetlight:duisburg-1"
GROUP = "urn:ngsi-ld:StreetlightGroup:zoo"
DISTRICT = "urn:ngsi-ld:District:mitte"


def rel(target: str) -> dict[str, str]:
    return {"type": "Relationship", "object": target}


def prop(value: Any) -> dict[str, Any]:
    return {"type": "Property", "value": value}


@pytest.fixture
def city(client: TestClient) -> TestClient:
    for entity in (
        {"id": LIGHT, "type": "Streetlight", "status": prop("ok"), "refGroup": rel(GROUP)},
        {"id": GROUP, "type": "StreetlightGroup", "name": prop("Zoo"), "inDistrict": rel(DISTRICT)},
        {"id": DISTRICT, "type": "District", "name": prop("Mitte"), "population": prop(28000)},
    ):
        assert client.post(f"{BASE}/entities", json=entity).status_code == 201
    return client


def get(client: TestClient, path: str = f"/entities/{LIGHT}", **params: str) -> Any:
    return client.get(BASE + path, params=params)


# -- join ----------------------------------------------------------------------------------------


def test_inline_join_puts_the_linked_entity_beside_the_object(city: TestClient) -> None:
    body = get(city, join="inline").json()
    assert body["refGroup"] == {
        "type": "Relationship",
        "object": GROUP,
        "entity": {"id": GROUP, "type": "StreetlightGroup", "name": prop("Zoo"), "inDistrict": rel(DISTRICT)},
    }


def test_inline_join_in_keyvalues_replaces_the_object(city: TestClient) -> None:
    body = get(city, join="inline", joinLevel="2", options="keyValues").json()
    assert body["refGroup"] == {
        "id": GROUP,
        "type": "StreetlightGroup",
        "name": "Zoo",
        "inDistrict": {"id": DISTRICT, "type": "District", "name": "Mitte", "population": 28000},
    }


def test_flat_join_appends_linked_entities_once_per_level(city: TestClient) -> None:
    one = get(city, join="flat").json()
    assert [e["id"] for e in one] == [LIGHT, GROUP]
    two = get(city, join="flat", joinLevel="2", options="sysAttrs").json()
    assert [e["id"] for e in two] == [LIGHT, GROUP, DISTRICT]
    assert all("createdAt" in e for e in two)


def test_flat_join_without_a_linked_entity_answers_the_entity_alone(city: TestClient) -> None:
    body = get(city, f"/entities/{DISTRICT}", join="flat").json()
    assert body["id"] == DISTRICT


def test_pick_and_omit_in_braces_apply_to_linked_entities(city: TestClient) -> None:
    picked = get(city, join="inline", joinLevel="2", pick="id,refGroup{name,inDistrict{population}}").json()
    assert picked == {
        "id": LIGHT,
        "refGroup": {
            "type": "Relationship",
            "object": GROUP,
            "entity": {
                "name": prop("Zoo"),
                "inDistrict": {**rel(DISTRICT), "entity": {"population": prop(28000)}},
            },
        },
    }
    omitted = get(city, join="flat", joinLevel="2", omit="type,refGroup{inDistrict}").json()
    # The group's inDistrict is omitted, so the join stops there.
    assert omitted == [
        {"id": LIGHT, "status": prop("ok"), "refGroup": rel(GROUP)},
        {"id": GROUP, "type": "StreetlightGroup", "name": prop("Zoo")},
    ]


def test_query_joins_every_entity_and_post_query_takes_join_in_the_body(city: TestClient) -> None:
    got = get(city, "/entities", type="Streetlight", join="flat").json()
    assert [e["id"] for e in got] == [LIGHT, GROUP]
    posted = city.post(
        f"{BASE}/entityOperations/query",
        json={"type": "Query", "entities": [{"type": "Streetlight"}], "join": "inline", "joinLevel": 2},
    ).json()
    assert posted[0]["refGroup"]["entity"]["inDistrict"]["entity"]["id"] == DISTRICT


# -- pick / omit ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"pick": "status", "omit": "status"},
        {"pick": "status", "attrs": "status"},
        {"omit": "status", "attrs": "status"},
        {"pick": "id;status"},
        {"pick": "id,refGroup{name"},
        {"pick": "id,refGroup{{name}"},
        {"pick": "id,,status"},
        {"pick": "id,refGroup{,name}"},
        {"pick": "id,refGroup{}"},
        {"pick": "id}"},
        {"join": "sideways"},
        {"joinLevel": "0"},
    ],
)
def test_invalid_projections_and_joins_are_bad_request_data(city: TestClient, params: dict[str, str]) -> None:
    response = get(city, **params)
    assert response.status_code == 400
    assert response.json()["type"] == ERR + "BadRequestData"


@pytest.mark.parametrize(
    "params", [{"pick": "unknown"}, {"omit": "id,type,status,refGroup"}, {"attrs": "nope"}]
)
def test_retrieving_nothing_of_an_entity_is_404(city: TestClient, params: dict[str, str]) -> None:
    response = get(city, **params)
    assert response.status_code == 404
    assert response.json()["type"] == ERR + "ResourceNotFound"


def test_query_leaves_out_entities_a_pick_empties(city: TestClient) -> None:
    got = get(city, "/entities", type="Streetlight,District", pick="population").json()
    assert got == [{"population": prop(28000)}]


def test_projection_parser() -> None:
    projection = parse_projection("id,a{b,c{d}},e")
    assert projection.names() == {"id", "a", "e"}
    assert projection.plain_names() == {"id", "e"}
    nested = projection.linked("a")
    assert nested is not None and nested.names() == {"b", "c"}
    with pytest.raises(BadRequestData, match="position 2"):
        parse_projection("a{}")


# -- orderBy -------------------------------------------------------------------------------------


def test_order_by_attribute_sub_attribute_and_direction(client: TestClient) -> None:
    for n, name, rank in ((1, "B", 3), (2, "A", 2), (3, "C", 1)):
        entity = {"id": f"urn:ngsi-ld:Shop:{n}", "type": "Shop", "name": {**prop(name), "rank": prop(rank)}}
        assert client.post(f"{BASE}/entities", json=entity).status_code == 201

    def order(spec: str, **params: str) -> list[str]:
        got = get(client, "/entities", type="Shop", orderBy=spec, **params).json()
        return [e["id"].rsplit(":", 1)[1] for e in got]

    assert order("name") == ["2", "1", "3"]
    assert order("name;desc") == ["3", "1", "2"]
    assert order("name.rank") == ["3", "2", "1"]
    assert order("id;desc") == ["3", "2", "1"]
    assert order("type,name;asc", limit="1", offset="1") == ["1"]
    response = get(client, "/entities", type="Shop", orderBy="name;sideways")
    assert response.status_code == 400


def test_order_by_parser_keeps_entity_members_unexpanded() -> None:
    order = parse_order_by("type;desc,name.observedAt").resolve(lambda n: "urn:x:" + n)
    assert order.keys[0].path.attribute == "type" and order.keys[0].descending
    assert order.keys[1].path.attribute == "urn:x:name" and order.keys[1].path.metadata == "observedAt"


# -- parameters, errors and GeoJSON --------------------------------------------------------------


@pytest.mark.parametrize("params", [{"format": "pretty"}, {"options": "keyValues,bogus"}, {"fmt": "x"}])
def test_unknown_format_options_or_parameters_are_invalid_requests(
    city: TestClient, params: dict[str, str]
) -> None:
    response = get(city, **params)
    assert response.status_code == 400
    assert response.json()["type"] == ERR + "InvalidRequest"


def test_options_simplified_is_keyvalues(city: TestClient) -> None:
    assert get(city, options="simplified").json()["status"] == "ok"


def test_what_makes_a_query(city: TestClient) -> None:
    assert get(city, "/entities", local="true").status_code == 200
    assert get(city, "/entities", id=LIGHT).status_code == 400
    response = get(city, "/entities", attrs="id,type")
    assert response.status_code == 400
    assert response.json()["type"] == ERR + "BadRequestData"


def test_geojson_carries_its_context_in_the_body(client: TestClient) -> None:
    entity = {
        "id": "urn:ngsi-ld:Park:1",
        "type": "Park",
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [6.76, 51.43]}},
    }
    assert client.post(f"{BASE}/entities", json=entity).status_code == 201
    accept = {"Accept": "application/geo+json"}
    feature = client.get(f"{BASE}/entities/urn:ngsi-ld:Park:1", headers=accept).json()
    assert feature["type"] == "Feature" and "@context" in feature
    collection = client.get(f"{BASE}/entities", params={"type": "Park"}, headers=accept).json()
    assert collection["type"] == "FeatureCollection" and "@context" in collection


def test_a_self_intersecting_polygon_is_a_valid_query_geometry(client: TestClient) -> None:
    bowtie = [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]
    entity = {
        "id": "urn:ngsi-ld:Park:bowtie",
        "type": "Park",
        "location": {"type": "GeoProperty", "value": {"type": "Polygon", "coordinates": bowtie}},
    }
    assert client.post(f"{BASE}/entities", json=entity).status_code == 201
    params = {"type": "Park", "georel": "equals", "geometry": "Polygon", "coordinates": str(bowtie)}
    got = get(client, "/entities", **params)
    assert got.status_code == 200
    assert [e["id"] for e in got.json()] == ["urn:ngsi-ld:Park:bowtie"]


def test_id_pattern_combines_with_type_and_geo_filters(client: TestClient) -> None:
    """An unanchored idPattern together with a type (or a geoQuery) selects on the entities
    themselves, whichever index drives the query (a regression: it once answered 500)."""
    lights = [
        {
            "id": f"urn:ngsi-ld:Streetlight:zoo-{n}",
            "type": "Streetlight",
            "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [6.776, 51.438]}},
        }
        for n in range(3)
    ]
    other = {"id": "urn:ngsi-ld:Streetlight:harbour-1", "type": "Streetlight"}
    assert client.post("/ngsi-ld/v1/entityOperations/create", json=[*lights, other]).status_code == 201
    by_type = client.get("/ngsi-ld/v1/entities", params={"type": "Streetlight", "idPattern": "zoo-[12]$"})
    assert by_type.status_code == 200
    assert sorted(e["id"] for e in by_type.json()) == [
        "urn:ngsi-ld:Streetlight:zoo-1",
        "urn:ngsi-ld:Streetlight:zoo-2",
    ]
    by_geo = client.get(
        "/ngsi-ld/v1/entities",
        params={
            "idPattern": "zoo-0",
            "georel": "near;maxDistance==100",
            "geometry": "Point",
            "coordinates": "[6.776,51.438]",
        },
    )
    assert by_geo.status_code == 200
    assert [e["id"] for e in by_geo.json()] == ["urn:ngsi-ld:Streetlight:zoo-0"]
