"""Whatever a client writes, the node answers sensibly and never half-writes.

Hypothesis throws random JSON, non-JSON bytes, wrong media types and mutations of a valid entity
(wrong types for id, type, value, object, observedAt, datasetId, coordinates; attribute names with
forbidden characters) at every write endpoint. What a user can rely on, for every request:

* the status is below 500 (no remote @context is involved, so not even 503 is acceptable);
* every 4xx carries a ProblemDetails body: an NGSI-LD error ``type`` and a non-empty ``detail``;
* a rejected request (4xx) changes nothing: the entities read back (with ``options=sysAttrs``,
  so even a touched ``modifiedAt`` shows) exactly as before the request;
* whatever was accepted can be read back, in every representation.

Each example starts from the same two stored entities (TARGET and OTHER; FRESH does not exist).
Set KIZUNA_FUZZ_EXAMPLES to run more examples than the default 150 per test.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from conftest import STORE_KINDS, store_url
from kizuna.app import create_app
from kizuna.config import Settings

BASE = "/ngsi-ld/v1"
OPS = f"{BASE}/entityOperations"
ERR = "https://uri.etsi.org/ngsi-ld/errors/"
CORE_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
TARGET = "urn:ngsi-ld:Streetlight:fuzz-target"
OTHER = "urn:ngsi-ld:Streetlight:fuzz-other"
FRESH = "urn:ngsi-ld:Streetlight:fuzz-fresh"
WATCHED = (TARGET, OTHER, FRESH)
# KIZUNA_FUZZ_EXAMPLES=5000 for a longer hunt; the default keeps the module under a minute.
FUZZ = settings(
    max_examples=int(os.environ.get("KIZUNA_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def valid_entity(entity_id: str = TARGET) -> dict[str, Any]:
    return {
        "id": entity_id,
        "type": "Streetlight",
        "status": {
            "type": "Property",
            "value": "ok",
            "observedAt": "2026-11-01T20:00:00Z",
            "reason": {"type": "Property", "value": "scheduled"},
        },
        "powerState": {"type": "Property", "value": "on", "unitCode": "C62"},
        "illuminance": [
            {"type": "Property", "value": 10},
            {"type": "Property", "value": 12.5, "datasetId": "urn:ngsi-ld:Dataset:sensor-b"},
        ],
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [6.7623, 51.4344]}},
        "refStreetlightGroup": {"type": "Relationship", "object": "urn:ngsi-ld:StreetlightGroup:zoo"},
        "name": {"type": "LanguageProperty", "languageMap": {"de": "Zoo-Laterne", "en": "Zoo lamp"}},
    }


ATTRIBUTES = [name for name in valid_entity() if name not in ("id", "type")]

# -- strategies -------------------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
# Values that are almost right somewhere: the wrong type for one member is the interesting case.
tricky = st.sampled_from(
    [
        "",
        "not a uri",
        "urn:ngsi-ld:null",
        "urn:ngsi-ld:Dataset:other",
        "Property",
        "Relationship",
        "GeoProperty",
        "LanguageProperty",
        "2026-13-45T99:00:00Z",
        "2026-11-01T20:00:00Z",
        0,
        -1,
        1.5,
        True,
        [],
        {},
        [1],
        [1, 2, 3, 4],
        [[6.7, 51.4]],
        ["urn:a:b", 3],
        {"type": "Point"},
        {"type": "Point", "coordinates": "6.7,51.4"},
        {"type": "Polygon", "coordinates": [[1, 2]]},
        {"type": "GeometryCollection"},
        {"de": 3},
        {"value": None},
        {"type": "Property"},
        {"type": "Banana", "value": 1},
    ]
)
wrong_values = tricky | json_values
FORBIDDEN = list("<>\"'=;() \t\n\x00")
names = st.text(
    alphabet=st.characters(codec="utf-8") | st.sampled_from(FORBIDDEN), max_size=12
) | st.sampled_from(
    [
        "@context",
        "@id",
        "@type",
        "id",
        "type",
        "scope",
        "createdAt",
        "modifiedAt",
        "location",
        "status",
        "a:b",
    ]
)

# Where a mutation lands in the valid entity; a path into the middle of a member replaces it.
MUTABLE_PATHS = [
    ("id",),
    ("type",),
    ("scope",),
    ("status",),
    ("status", "type"),
    ("status", "value"),
    ("status", "observedAt"),
    ("status", "datasetId"),
    ("status", "reason"),
    ("status", "reason", "value"),
    ("status", "reason", "datasetId"),
    ("powerState", "unitCode"),
    ("illuminance",),
    ("illuminance", 0, "value"),
    ("illuminance", 1, "datasetId"),
    ("location", "type"),
    ("location", "value"),
    ("location", "value", "type"),
    ("location", "value", "coordinates"),
    ("refStreetlightGroup", "type"),
    ("refStreetlightGroup", "object"),
    ("refStreetlightGroup", "objectType"),
    ("name", "languageMap"),
    ("name", "languageMap", "de"),
]


@st.composite
def mutated_entities(draw: st.DrawFn, entity_id: str = TARGET) -> dict[str, Any]:
    """A valid entity with one to three things wrong (or, now and then, nothing wrong)."""
    entity = valid_entity(entity_id)
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2, 3]))):
        action = draw(st.sampled_from(["set", "set", "delete", "add"]))
        if action == "add":
            # deepcopy: sampled values are shared objects; a later mutation must not change them
            entity[draw(names)] = copy.deepcopy(draw(wrong_values | st.builds(valid_attribute)))
            continue
        path = draw(st.sampled_from(MUTABLE_PATHS))
        parent = reach(entity, path[:-1])
        if parent is None:
            continue  # an earlier mutation removed or replaced what this path goes through
        if action == "delete":
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = copy.deepcopy(draw(wrong_values))
    return entity


def reach(entity: dict[str, Any], path: tuple[str | int, ...]) -> dict[str, Any] | None:
    node: Any = entity
    for step in path:
        if (isinstance(node, dict) and isinstance(step, str) and step in node) or (
            isinstance(node, list) and isinstance(step, int) and step < len(node)
        ):
            node = node[step]
        else:
            return None
    return node if isinstance(node, dict) else None


def valid_attribute() -> dict[str, Any]:
    return {"type": "Property", "value": 1}


def fragment_of(entity: dict[str, Any]) -> dict[str, Any]:
    return {name: member for name, member in entity.items() if name not in ("id", "type")}


entity_ids = st.sampled_from([TARGET, TARGET, TARGET, OTHER, FRESH, ""]).flatmap(
    lambda chosen: st.just(chosen) if chosen else st.text(max_size=10)
)
entity_bodies = mutated_entities(FRESH) | mutated_entities(FRESH) | mutated_entities() | json_values
fragment_bodies = mutated_entities().map(fragment_of) | json_values
attribute_bodies = (
    mutated_entities().flatmap(lambda e: st.sampled_from([*fragment_of(e).values(), {}])) | json_values
)
batch_bodies = (
    st.lists(mutated_entities() | mutated_entities(OTHER) | mutated_entities(FRESH) | json_values, max_size=4)
    | json_values
)
delete_bodies = st.lists(entity_ids | json_values, max_size=4) | json_values


@st.composite
def encodings(draw: st.DrawFn, body: Any) -> tuple[bytes, str]:
    """How the body travels: mostly JSON; sometimes JSON-LD, the wrong media type, or not JSON at all."""
    kind = draw(st.sampled_from(["json", "json", "json", "ld", "bytes", "media"]))
    if kind == "bytes":
        return draw(st.binary(max_size=40)), "application/json"
    if kind == "media":
        return json.dumps(body).encode(), draw(st.sampled_from(["text/plain", "", "application/xml", "json"]))
    if kind == "ld" and isinstance(body, dict):
        context = draw(st.sampled_from([CORE_CONTEXT, [CORE_CONTEXT], {}]) | scalars)
        return json.dumps({**body, "@context": context}).encode(), "application/ld+json"
    return json.dumps(body).encode(), "application/json"


# -- the node and the checks ------------------------------------------------------------------------


@pytest.fixture(scope="module", params=STORE_KINDS)
def client(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One node per store kind for the whole module (a node per example would be far too slow)."""
    path: Path = tmp_path_factory.mktemp("fuzz")
    settings = Settings(store=store_url(request.param, path, request), max_body_bytes=256 * 1024)
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def entity_url(entity_id: str) -> str:
    return f"{BASE}/entities/{quote(entity_id, safe=':')}"


_baseline: dict[str, Any] = {}


def reset(client: TestClient) -> dict[str, Any]:
    """Back to the two stored entities every example starts from; returns their snapshot.

    After a rejected request the store is known to be unchanged, so the reset is skipped."""
    if _baseline:
        return _baseline
    client.post(f"{OPS}/delete", json=list(WATCHED))
    created = client.post(f"{OPS}/create", json=[valid_entity(TARGET), valid_entity(OTHER)])
    assert created.status_code == 201, created.text
    _baseline.update(snapshot(client))
    return _baseline


def snapshot(client: TestClient) -> dict[str, Any]:
    out = {}
    for entity_id in WATCHED:
        response = client.get(entity_url(entity_id), params={"options": "sysAttrs"})
        out[entity_id] = (response.status_code, response.json())
    return out


def assert_problem(body: Any, status: int) -> None:
    assert isinstance(body, dict), body
    assert isinstance(body.get("type"), str) and body["type"].startswith(ERR), body
    assert isinstance(body.get("detail"), str) and body["detail"], body
    if "status" in body:
        assert body["status"] == status, body


def write(client: TestClient, method: str, path: str, content: bytes, media: str) -> None:
    """One write, with every promise of this module checked around it."""
    before = reset(client)
    headers = {"Content-Type": media} if media else {}
    response = client.request(method, path, content=content, headers=headers)
    event(f"HTTP {response.status_code}")  # pytest --hypothesis-show-statistics shows the mix
    assert response.status_code < 500, (method, path, content, response.text)
    if 400 <= response.status_code < 500:
        assert_problem(response.json(), response.status_code)
        after = snapshot(client)
        if after != before:
            _baseline.clear()  # the store is no longer in the known state
        assert after == before, (method, path, content, response.text)
        return
    _baseline.clear()
    if "location" in response.headers:
        assert client.get(response.headers["location"]).status_code == 200, response.headers["location"]
    if response.status_code == 207:
        report = response.json()
        for error in report.get("errors", []):
            assert_problem(error["error"], error["error"].get("status", 0))
        for skipped in report.get("notUpdated", []):
            assert skipped["attributeName"] and skipped["reason"], report
    for entity_id in WATCHED:
        for params in ({"options": "sysAttrs"}, {"options": "keyValues"}, {"format": "concise"}):
            readable = client.get(entity_url(entity_id), params=params)
            assert readable.status_code in (200, 404), (method, path, content, params, readable.text)


# -- the endpoints ----------------------------------------------------------------------------------


@FUZZ
@given(data=st.data(), body=entity_bodies)
def test_create_entity_never_fails_or_half_writes(client: TestClient, data: st.DataObject, body: Any) -> None:
    """POST /entities"""
    write(client, "POST", f"{BASE}/entities", *data.draw(encodings(body)))


@FUZZ
@given(data=st.data(), body=entity_bodies, method=st.sampled_from(["PUT", "PATCH"]))
def test_replace_and_merge_entity_never_fail_or_half_write(
    client: TestClient, data: st.DataObject, body: Any, method: str
) -> None:
    """PUT and PATCH /entities/{id}"""
    content, media = data.draw(encodings(body))
    if method == "PATCH" and media == "application/json":
        media = data.draw(st.sampled_from(["application/json", "application/merge-patch+json"]))
    write(client, method, entity_url(data.draw(entity_ids)), content, media)


@FUZZ
@given(data=st.data(), body=fragment_bodies, method=st.sampled_from(["POST", "PATCH"]))
def test_append_and_update_attributes_never_fail_or_half_write(
    client: TestClient, data: st.DataObject, body: Any, method: str
) -> None:
    """POST and PATCH /entities/{id}/attrs (append also with options=noOverwrite)"""
    query = (
        data.draw(st.sampled_from(["", "?options=noOverwrite", "?options=bogus"])) if method == "POST" else ""
    )
    write(client, method, entity_url(data.draw(entity_ids)) + "/attrs" + query, *data.draw(encodings(body)))


@FUZZ
@given(
    data=st.data(),
    body=attribute_bodies,
    method=st.sampled_from(["PATCH", "PUT"]),
    attribute=st.sampled_from(ATTRIBUTES) | names,
)
def test_update_one_attribute_never_fails_or_half_writes(
    client: TestClient, data: st.DataObject, body: Any, method: str, attribute: str
) -> None:
    """PATCH (partial update) and PUT (replace) /entities/{id}/attrs/{attrId}"""
    path = entity_url(data.draw(entity_ids)) + "/attrs/" + quote(attribute, safe="")
    write(client, method, path, *data.draw(encodings(body)))


@FUZZ
@given(data=st.data(), operation=st.sampled_from(["create", "upsert", "update", "merge", "delete"]))
def test_batch_operations_never_fail_or_half_write(
    client: TestClient, data: st.DataObject, operation: str
) -> None:
    """POST /entityOperations/{create,upsert,update,merge,delete}"""
    body = data.draw(delete_bodies if operation == "delete" else batch_bodies)
    options = ""
    if operation in ("upsert", "update"):
        options = data.draw(
            st.sampled_from(["", "?options=replace", "?options=update", "?options=noOverwrite"])
        )
    write(client, "POST", f"{OPS}/{operation}{options}", *data.draw(encodings(body)))


def test_the_unmutated_entity_is_accepted(client: TestClient) -> None:
    """The generators start from an entity the node takes as it is, so a 4xx above is the mutation's."""
    reset(client)
    stored = client.get(entity_url(TARGET))
    assert stored.status_code == 200
    assert stored.json() == valid_entity()
