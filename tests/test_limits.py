"""Input limits (kizuna.limits): what one request may make the node parse and hold. Each
limit is refused with 400 before anything is stored, on every root that reads JSON."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from kizuna.app import create_app
from kizuna.config import Settings
from kizuna.errors import BadRequestData, InvalidRequest
from kizuna.limits import InputLimits

NGSI = "/ngsi-ld/v1"
SMALL = InputLimits(json_depth=4, array_items=5, object_members=3, batch_entities=2, geometry_positions=4)


@pytest.mark.parametrize(
    ("value", "limit"),
    [
        ([[[[[]]]]], "levels deep"),
        ([1, 2, 3, 4, 5, 6], "items"),
        ({"a": 1, "b": 2, "c": 3, "d": 4}, "members"),
        ({"type": "LineString", "coordinates": [[0, 0], [1, 1], [2, 2], [3, 3], [4, 4]]}, "positions"),
        (
            {"g": {"type": "MultiPolygon", "coordinates": [[[[0, 0], [1, 1], [2, 2]]], [[[0, 0], [1, 1]]]]}},
            "positions",
        ),
    ],
)
def test_each_limit_is_refused_by_name(value: Any, limit: str) -> None:
    with pytest.raises(BadRequestData, match=limit):
        SMALL.check(value)


def test_values_within_the_limits_pass() -> None:
    SMALL.check({"a": [1, 2, 3, 4, 5], "b": {"c": {"d": 1}}, "coordinates": [[0, 0], [1, 1], [2, 2], [3, 3]]})
    SMALL.check_batch([1, 2])
    with pytest.raises(BadRequestData, match="batch"):
        SMALL.check_batch([1, 2, 3])


def test_malformed_json_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequest):
        InputLimits().parse(b"{")


@pytest.fixture
def node(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        store=f"sqlite:///{tmp_path}/limits.db",
        max_array_items=1000,
        max_attributes=50,
        max_batch_entities=10,
        max_geometry_positions=100,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def bad_request(response: Any, words: str) -> None:
    assert response.status_code == 400, response.text
    assert words in response.json()["detail"], response.text


def streetlight(n: int = 1, **attrs: Any) -> dict[str, Any]:
    return {"id": f"urn:ngsi-ld:Streetlight:{n}", "type": "Streetlight", **attrs}


def test_an_entity_with_a_huge_array_is_refused_and_not_stored(node: TestClient) -> None:
    """Was: a 200,000-element array, 3.9 s on the event loop and 200,008 index rows."""
    entity = streetlight(readings={"type": "Property", "value": list(range(200_000))})
    bad_request(
        node.post(f"{NGSI}/entities", content=orjson.dumps(entity), headers=JSON), "--max-array-items"
    )
    assert node.get(f"{NGSI}/entities/urn:ngsi-ld:Streetlight:1").status_code == 404


def test_an_entity_with_too_many_attributes_is_refused(node: TestClient) -> None:
    entity = streetlight(**{f"a{i}": {"type": "Property", "value": i} for i in range(60)})
    bad_request(node.post(f"{NGSI}/entities", json=entity), "--max-attributes")
    assert node.get(f"{NGSI}/entities", params={"type": "Streetlight"}).json() == []


def test_a_geometry_with_too_many_positions_is_refused(node: TestClient) -> None:
    ring = [[i * 0.001, 0.0] for i in range(200)] + [[0.0, 0.0]]
    entity = streetlight(
        location={"type": "GeoProperty", "value": {"type": "Polygon", "coordinates": [ring]}}
    )
    bad_request(node.post(f"{NGSI}/entities", json=entity), "--max-geometry-positions")


@pytest.mark.parametrize("operation", ["create", "upsert", "update", "merge", "delete"])
def test_a_batch_past_the_limit_is_refused_whole(node: TestClient, operation: str) -> None:
    batch: list[Any] = [streetlight(n) for n in range(11)]
    if operation == "delete":
        batch = [entity["id"] for entity in batch]
    bad_request(node.post(f"{NGSI}/entityOperations/{operation}", json=batch), "--max-batch-entities")
    assert node.get(f"{NGSI}/entities", params={"type": "Streetlight"}).json() == []
    assert (
        node.post(
            f"{NGSI}/entityOperations/create",
            json=batch[:10] if operation != "delete" else [streetlight(n) for n in range(10)],
        ).status_code
        == 201
    )


def test_management_and_dsp_bodies_are_held_to_the_same_limits(node: TestClient) -> None:
    deep: Any = "x"
    for _ in range(100):
        deep = [deep]
    dataset = {"id": "d", "entityTypes": ["Streetlight"], "title": deep}
    bad_request(node.post("/management/v1/datasets", json=dataset), "--max-json-depth")
    assert node.get("/management/v1/datasets").json() == []


JSON = {"Content-Type": "application/json"}
