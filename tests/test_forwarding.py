"""Distributed operations (clause 4.3.6): reads and writes forwarded to real context sources.

Each context source is a small HTTP server on a loopback port that answers what a test scripts
for a method and path (query string included) and records every request it gets.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlencode

import pytest
from starlette.testclient import TestClient

from notify_helpers import free_port

BASE = "/ngsi-ld/v1"
NODE_VIA = "1.1 127.0.0.1:1026"  # the test app's Settings: host 127.0.0.1, port 1026
DEFAULT = "https://uri.etsi.org/ngsi-ld/default-context/"
REG = "urn:ngsi-ld:ContextSourceRegistration:"


class Source:
    """A context source: ``answers[(method, path_and_query)] = (status, body)``; anything else 404."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], tuple[int, Any]] = {}
        self.raw: dict[tuple[str, str], bytes] = {}  # a body to answer as is, instead of JSON
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        source = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def _answer(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length)) if length else None
                source.requests.append((self.command, self.path, dict(self.headers), body))
                status, payload = source.answers.get((self.command, self.path), (404, None))
                raw = b"" if payload is None else json.dumps(payload).encode()
                raw = source.raw.get((self.command, self.path), raw)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def paths(self) -> list[str]:
        return [path for _, path, _, _ in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sources() -> Iterator[list[Source]]:
    made = [Source(), Source()]
    yield made
    for source in made:
        source.close()


def vehicle(entity_id: str, **attrs: Any) -> dict[str, Any]:
    properties = {name: {"type": "Property", "value": value} for name, value in attrs.items()}
    return {"id": entity_id, "type": "Vehicle", **properties}


def warnings(response: Any) -> set[tuple[str, ...]]:
    """NGSILD-Warning's warning-values as (code, registration[, text]); the text of an
    unreachable source names the library's error, so only its code and agent are compared."""
    found: set[tuple[str, ...]] = set()
    for value in response.headers.get("NGSILD-Warning", "").split(", "):
        if value:
            code, agent, text = value.split(" ", 2)
            found.add((code, agent) if code == "111" else (code, agent, text))
    return found


def register(client: TestClient, endpoint: str, *, entity_id: str | None = None, **extra: Any) -> None:
    info: dict[str, Any] = {"type": "Vehicle"}
    if entity_id is not None:
        info["id"] = entity_id
    body = {
        "type": "ContextSourceRegistration",
        "information": [{"entities": [info], **extra.pop("information", {})}],
        "endpoint": endpoint,
        **extra,
    }
    response = client.post(f"{BASE}/csourceRegistrations", json=body)
    assert response.status_code == 201, response.text


def test_inclusive_retrieve_comes_from_the_source_with_via(client: TestClient, sources: list[Source]) -> None:
    source = sources[0]
    source.answers["GET", f"{BASE}/entities/urn:v:1"] = (200, vehicle("urn:v:1", speed=50))
    register(client, source.url)

    response = client.get(f"{BASE}/entities/urn:v:1", params={"options": "keyValues"})
    assert response.status_code == 200, response.text
    assert response.json() == {"id": "urn:v:1", "type": "Vehicle", "speed": 50}
    method, path, headers, _ = source.requests[0]
    assert (method, path) == ("GET", f"{BASE}/entities/urn:v:1")  # options are not forwarded
    assert headers["Via"] == NODE_VIA

    # local=true: only this node's data, the source is not asked
    asked = len(source.requests)
    assert client.get(f"{BASE}/entities/urn:v:1", params={"local": "true"}).status_code == 404
    assert len(source.requests) == asked


def test_inclusive_query_merges_local_and_remote(client: TestClient, sources: list[Source]) -> None:
    source = sources[0]
    assert client.post(f"{BASE}/entities", json=vehicle("urn:v:1", brand="BMW")).status_code == 201
    source.answers["GET", f"{BASE}/entities?type=Vehicle"] = (
        200,
        [vehicle("urn:v:1", speed=56), vehicle("urn:v:2", speed=30)],
    )
    register(client, source.url)

    response = client.get(f"{BASE}/entities", params={"type": "Vehicle", "options": "keyValues"})
    assert response.status_code == 200, response.text
    assert sorted(response.json(), key=lambda e: e["id"]) == [
        {"id": "urn:v:1", "type": "Vehicle", "brand": "BMW", "speed": 56},
        {"id": "urn:v:2", "type": "Vehicle", "speed": 30},
    ]
    params = {"type": "Vehicle", "local": "true", "options": "keyValues"}
    local = client.get(f"{BASE}/entities", params=params)
    assert local.json() == [{"id": "urn:v:1", "type": "Vehicle", "brand": "BMW"}]
    assert source.paths() == [f"{BASE}/entities?type=Vehicle"]


def test_auxiliary_only_fills_gaps(client: TestClient, sources: list[Source]) -> None:
    source = sources[0]
    assert client.post(f"{BASE}/entities", json=vehicle("urn:v:1", brand="BMW")).status_code == 201
    source.answers["GET", f"{BASE}/entities/urn:v:1"] = (200, vehicle("urn:v:1", brand="Mercedes", speed=9))
    register(client, source.url, mode="auxiliary")

    response = client.get(f"{BASE}/entities/urn:v:1", params={"options": "keyValues"})
    assert response.json() == {"id": "urn:v:1", "type": "Vehicle", "brand": "BMW", "speed": 9}


def test_inclusive_keeps_the_most_recent_observation(client: TestClient, sources: list[Source]) -> None:
    source = sources[0]
    old = {"type": "Property", "value": 1, "observedAt": "2026-01-01T00:00:00Z"}
    new = {"type": "Property", "value": 2, "observedAt": "2026-06-01T00:00:00Z"}
    local = {"id": "urn:v:1", "type": "Vehicle", "speed": old, "rpm": new}
    assert client.post(f"{BASE}/entities", json=local).status_code == 201
    remote = {"id": "urn:v:1", "type": "Vehicle", "speed": new, "rpm": old}
    source.answers["GET", f"{BASE}/entities/urn:v:1"] = (200, remote)
    register(client, source.url)

    body = client.get(f"{BASE}/entities/urn:v:1", params={"options": "keyValues"}).json()
    assert (body["speed"], body["rpm"]) == (2, 2)


def test_exclusive_query_asks_for_the_registered_entity_and_attributes(
    client: TestClient, sources: list[Source]
) -> None:
    source = sources[0]
    assert client.post(f"{BASE}/entities", json=vehicle("urn:v:1", brand="BMW")).status_code == 201
    source.answers["GET", f"{BASE}/entities?type=Vehicle&id=urn:v:1&attrs=speed"] = (
        200,
        [vehicle("urn:v:1", speed=56, brand="ignored")],
    )
    register(
        client,
        source.url + "/",
        entity_id="urn:v:1",
        mode="exclusive",
        operations=["redirectionOps"],
        information={"propertyNames": ["speed"]},
    )

    response = client.get(f"{BASE}/entities", params={"type": "Vehicle", "options": "keyValues"})
    # the source is the authority for speed only: its brand is not taken
    assert response.json() == [{"id": "urn:v:1", "type": "Vehicle", "brand": "BMW", "speed": 56}]
    assert source.paths() == [f"{BASE}/entities?type=Vehicle&id=urn:v:1&attrs=speed"]


def test_redirect_retrieve_merges_every_source(client: TestClient, sources: list[Source]) -> None:
    for source, attrs in zip(sources, ({"speed": 1}, {"brand": "BMW"}), strict=True):
        source.answers["GET", f"{BASE}/entities/urn:v:1"] = (200, vehicle("urn:v:1", **attrs))
        register(client, source.url, entity_id="urn:v:1", mode="redirect", operations=["redirectionOps"])

    response = client.get(f"{BASE}/entities/urn:v:1", params={"options": "keyValues"})
    assert response.json() == {"id": "urn:v:1", "type": "Vehicle", "speed": 1, "brand": "BMW"}


def test_operations_decide_what_is_forwarded(client: TestClient, sources: list[Source]) -> None:
    source = sources[0]
    source.answers["POST", f"{BASE}/entityOperations/query"] = (200, [vehicle("urn:v:7", speed=7)])
    register(client, source.url, operations=["queryBatch"])

    # retrieveEntity and queryEntity are not registered: nothing goes to the source
    assert client.get(f"{BASE}/entities/urn:v:7").status_code == 404
    assert client.get(f"{BASE}/entities", params={"type": "Vehicle"}).json() == []
    assert source.requests == []

    query = {"type": "Query", "entities": [{"type": "Vehicle"}]}
    response = client.post(f"{BASE}/entityOperations/query", json=query, params={"options": "keyValues"})
    assert response.json() == [{"id": "urn:v:7", "type": "Vehicle", "speed": 7}]
    method, path, _, body = source.requests[0]
    assert (method, path, body) == ("POST", f"{BASE}/entityOperations/query", query)


def test_a_failing_source_does_not_fail_the_query(client: TestClient, sources: list[Source]) -> None:
    assert client.post(f"{BASE}/entities", json=vehicle("urn:v:1", speed=3)).status_code == 201
    sources[0].answers["GET", f"{BASE}/entities?type=Vehicle"] = (500, {"title": "broken"})
    register(client, sources[0].url, id=f"{REG}broken")
    register(client, f"http://127.0.0.1:{free_port()}", id=f"{REG}gone")  # nobody listens there

    response = client.get(f"{BASE}/entities", params={"type": "Vehicle", "options": "keyValues"})
    assert response.status_code == 200
    assert response.json() == [{"id": "urn:v:1", "type": "Vehicle", "speed": 3}]
    assert len(sources[0].requests) == 1
    assert warnings(response) == {
        ("199", f"{REG}broken", '"The context source answered 500"'),
        ("111", f"{REG}gone"),
    }


def test_a_source_that_answers_no_json_is_a_persistent_warning(
    client: TestClient, sources: list[Source]
) -> None:
    sources[0].answers["GET", f"{BASE}/entities/urn:v:1"] = (200, "not an entity")
    sources[0].raw["GET", f"{BASE}/entities/urn:v:1"] = b"<html>"
    register(client, sources[0].url, id=f"{REG}html")
    response = client.get(f"{BASE}/entities/urn:v:1")
    assert response.status_code == 404
    assert warnings(response) == {("299", f"{REG}html", '"The context source answered no JSON"')}

    # a source that answers well: no warning
    sources[0].raw.clear()
    sources[0].answers["GET", f"{BASE}/entities/urn:v:1"] = (200, vehicle("urn:v:1", speed=1))
    answered = client.get(f"{BASE}/entities/urn:v:1")
    assert answered.status_code == 200
    assert "NGSILD-Warning" not in answered.headers


def test_context_source_info_passes_the_callers_authorization_on(
    client: TestClient, sources: list[Source]
) -> None:
    """``urn:ngsi-ld:request`` carries the caller's own header to the source (its identity, for
    a source that checks who asks); a fixed value goes as registered; nothing is invented for
    a caller who sent none."""
    source = sources[0]
    source.answers["GET", f"{BASE}/entities?type=Vehicle"] = (200, [vehicle("urn:v:2", speed=30)])
    register(
        client,
        source.url,
        contextSourceInfo=[
            {"key": "Authorization", "value": "urn:ngsi-ld:request"},
            {"key": "X-Fleet", "value": "north"},
        ],
    )
    caller = {"Authorization": "Bearer caller-token"}
    response = client.get(f"{BASE}/entities", params={"type": "Vehicle"}, headers=caller)
    assert response.status_code == 200, response.text
    assert [e["id"] for e in response.json()] == ["urn:v:2"]
    headers = source.requests[-1][2]
    assert (headers["Authorization"], headers["X-Fleet"]) == ("Bearer caller-token", "north")

    assert client.get(f"{BASE}/entities", params={"type": "Vehicle"}).status_code == 200
    headers = source.requests[-1][2]
    assert "Authorization" not in headers
    assert headers["X-Fleet"] == "north"


def test_a_request_that_went_through_this_node_is_a_loop(client: TestClient, sources: list[Source]) -> None:
    register(client, sources[0].url)
    headers = {"Via": f"1.1 other.example:1026, {NODE_VIA}"}
    response = client.get(f"{BASE}/entities/urn:v:1", headers=headers)
    assert response.status_code == 508
    assert response.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/LoopDetected"
    assert client.get(f"{BASE}/entities", params={"type": "Vehicle"}, headers=headers).status_code == 508
    assert sources[0].requests == []

    # a request from another node is forwarded with the chain extended
    client.get(f"{BASE}/entities/urn:v:1", headers={"Via": "1.1 other.example:1026"})
    assert sources[0].requests[0][2]["Via"] == f"1.1 other.example:1026, {NODE_VIA}"


def test_registration_changes_take_effect_at_once(client: TestClient, sources: list[Source]) -> None:
    source = sources[0]
    source.answers["GET", f"{BASE}/entities/urn:v:1"] = (200, vehicle("urn:v:1", speed=5))
    assert client.get(f"{BASE}/entities/urn:v:1").status_code == 404  # caches "no registration"
    register(client, source.url)
    assert client.get(f"{BASE}/entities/urn:v:1").status_code == 200
    [reg] = client.get(f"{BASE}/csourceRegistrations", params={"type": "Vehicle"}).json()
    assert client.delete(f"{BASE}/csourceRegistrations/{reg['id']}").status_code == 204
    assert client.get(f"{BASE}/entities/urn:v:1").status_code == 404


# -- writes ----------------------------------------------------------------------------------------


def local_view(client: TestClient, entity_id: str) -> Any:
    response = client.get(f"{BASE}/entities/{entity_id}", params={"local": "true", "options": "keyValues"})
    return response.json() if response.status_code == 200 else response.status_code


def test_exclusive_create_sends_the_registered_attributes_to_the_source(
    client: TestClient, sources: list[Source]
) -> None:
    source = sources[0]
    source.answers["POST", f"{BASE}/entities"] = (201, None)
    register(
        client,
        source.url,
        entity_id="urn:v:1",
        mode="exclusive",
        operations=["redirectionOps"],
        information={"propertyNames": ["speed"]},
    )

    response = client.post(f"{BASE}/entities", json=vehicle("urn:v:1", speed=50, brand="BMW"))
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"{BASE}/entities/urn:v:1"
    [(method, path, headers, body)] = source.requests
    assert (method, path, body) == ("POST", f"{BASE}/entities", vehicle("urn:v:1", speed=50))
    assert headers["Via"] == NODE_VIA
    assert local_view(client, "urn:v:1") == {"id": "urn:v:1", "type": "Vehicle", "brand": "BMW"}

    # an append of the registered attribute only goes to the source: nothing changes here
    source.answers["POST", f"{BASE}/entities/urn:v:1/attrs/"] = (204, None)
    appended = client.post(f"{BASE}/entities/urn:v:1/attrs", json={"speed": {"type": "Property", "value": 7}})
    assert appended.status_code == 204, appended.text
    _, path, _, body = source.requests[-1]
    assert (path, body) == (f"{BASE}/entities/urn:v:1/attrs/", {"speed": {"type": "Property", "value": 7}})
    assert local_view(client, "urn:v:1") == {"id": "urn:v:1", "type": "Vehicle", "brand": "BMW"}


def test_redirect_writes_go_to_every_source_and_never_here(client: TestClient, sources: list[Source]) -> None:
    for source in sources:
        source.answers["POST", f"{BASE}/entities"] = (201, None)
        source.answers["DELETE", f"{BASE}/entities/urn:v:1/attrs/speed"] = (204, None)
        source.answers["DELETE", f"{BASE}/entities/urn:v:1"] = (204, None)
        register(client, source.url, entity_id="urn:v:1", mode="redirect", operations=["redirectionOps"])

    assert client.post(f"{BASE}/entities", json=vehicle("urn:v:1", speed=1)).status_code == 201
    assert local_view(client, "urn:v:1") == 404
    # deleteAll=false only states the default: the source gets a plain request
    deleted = client.delete(f"{BASE}/entities/urn:v:1/attrs/speed", params={"deleteAll": "false"})
    assert deleted.status_code == 204
    assert client.delete(f"{BASE}/entities/urn:v:1").status_code == 204
    for source in sources:
        assert [(m, p) for m, p, _, _ in source.requests] == [
            ("POST", f"{BASE}/entities"),
            ("DELETE", f"{BASE}/entities/urn:v:1/attrs/speed"),
            ("DELETE", f"{BASE}/entities/urn:v:1"),
        ]


def test_inclusive_writes_happen_here_and_there(client: TestClient, sources: list[Source]) -> None:
    source = sources[0]
    source.answers["POST", f"{BASE}/entities"] = (201, None)
    source.answers["PATCH", f"{BASE}/entities/urn:v:1/attrs/speed"] = (204, None)
    source.answers["DELETE", f"{BASE}/entities/urn:v:1"] = (404, {"type": "x", "title": "Not found"})
    register(client, source.url, entity_id="urn:v:1", operations=["redirectionOps"])

    assert client.post(f"{BASE}/entities", json=vehicle("urn:v:1", speed=1)).status_code == 201
    patched = client.patch(f"{BASE}/entities/urn:v:1/attrs/speed", json={"value": 2})
    assert patched.status_code == 204, patched.text
    assert local_view(client, "urn:v:1") == {"id": "urn:v:1", "type": "Vehicle", "speed": 2}
    assert source.requests[1][3] == {"value": 2}

    # the source fails its share: the node did its own, and says which registration failed
    response = client.delete(f"{BASE}/entities/urn:v:1")
    assert response.status_code == 207
    [reg] = client.get(f"{BASE}/csourceRegistrations", params={"type": "Vehicle"}).json()
    [error] = response.json()["errors"]
    assert response.json()["success"] == ["urn:v:1"]
    assert error["entityId"] == "urn:v:1"
    assert error["error"]["status"] == 404
    assert error["error"]["detail"] == "Not found"
    assert error["error"]["registrationId"] == reg["id"]
    assert local_view(client, "urn:v:1") == 404


def test_a_local_failure_still_goes_to_inclusive_sources_and_auxiliary_takes_no_writes(
    client: TestClient, sources: list[Source]
) -> None:
    register(client, sources[0].url, operations=["redirectionOps"])
    register(client, sources[1].url, mode="auxiliary", operations=["redirectionOps"])
    sources[0].answers["POST", f"{BASE}/entities"] = (201, None)
    sources[0].answers["DELETE", f"{BASE}/entities/urn:v:2"] = (204, None)
    sources[0].answers["PATCH", f"{BASE}/entities/urn:v:1/attrs/rpm"] = (204, None)
    assert client.post(f"{BASE}/entities", json=vehicle("urn:v:1", speed=1)).status_code == 201

    # the entity exists here already: the source still holds its own copy and gets the create
    again = client.post(f"{BASE}/entities", json=vehicle("urn:v:1", speed=1))
    assert again.status_code == 207, again.text
    assert again.json()["success"] == ["urn:v:1"]
    [error] = again.json()["errors"]
    assert error["error"]["status"] == 409
    assert "registrationId" not in error["error"]  # the node's own share failed
    # not held here: deleted at the source, the node's 404 listed
    deleted = client.delete(f"{BASE}/entities/urn:v:2")
    assert deleted.status_code == 207, deleted.text
    assert [e["error"]["status"] for e in deleted.json()["errors"]] == [404]
    # an attribute the node does not have: updated at the source, not here
    patched = client.patch(f"{BASE}/entities/urn:v:1/attrs/rpm", json={"value": 2})
    assert patched.status_code == 207, patched.text
    assert patched.json()["updated"] == [f"{DEFAULT}rpm"]
    assert [n["attributeName"] for n in patched.json()["notUpdated"]] == [f"{DEFAULT}rpm"]
    # a request that is wrong everywhere goes nowhere
    assert client.post(f"{BASE}/entities", json=vehicle("not a uri")).status_code == 400
    assert sources[0].paths() == [
        f"{BASE}/entities",
        f"{BASE}/entities",
        f"{BASE}/entities/urn:v:2",
        f"{BASE}/entities/urn:v:1/attrs/rpm",
    ]
    assert sources[1].requests == []


def test_writes_only_go_to_sources_registered_for_the_entity_type(
    client: TestClient, sources: list[Source]
) -> None:
    register(client, sources[0].url, mode="redirect", operations=["redirectionOps"])  # any Vehicle
    building = {"id": "urn:b:1", "type": "Building", "floors": {"type": "Property", "value": 3}}
    assert client.post(f"{BASE}/entities", json=building).status_code == 201
    appended = client.post(
        f"{BASE}/entities/urn:b:1/attrs", json={"roof": {"type": "Property", "value": "flat"}}
    )
    assert appended.status_code == 204
    assert client.delete(f"{BASE}/entities/urn:b:1").status_code == 204
    assert sources[0].requests == []


def test_a_failing_source_makes_an_attribute_update_multi_status(
    client: TestClient, sources: list[Source]
) -> None:
    created = client.post(f"{BASE}/entities", json=vehicle("urn:v:1", brand="BMW"), params={"local": "true"})
    assert created.status_code == 201
    register(
        client,
        f"http://127.0.0.1:{free_port()}",
        entity_id="urn:v:1",
        mode="exclusive",
        operations=["updateOps"],
        information={"propertyNames": ["speed"]},
    )
    fragment = {"brand": {"type": "Property", "value": "VW"}, "speed": {"type": "Property", "value": 3}}
    response = client.patch(f"{BASE}/entities/urn:v:1/attrs", json=fragment)
    assert response.status_code == 207
    body = response.json()
    assert body["updated"] == [f"{DEFAULT}brand"]
    assert [item["attributeName"] for item in body["notUpdated"]] == [f"{DEFAULT}speed"]
    assert local_view(client, "urn:v:1") == {"id": "urn:v:1", "type": "Vehicle", "brand": "VW"}
    assert client.delete(f"{BASE}/entities/urn:v:1", headers={"Via": NODE_VIA}).status_code == 508


# -- batch operations ------------------------------------------------------------------------------


def test_exclusive_batch_create_sends_each_source_its_share(
    client: TestClient, sources: list[Source]
) -> None:
    source = sources[0]
    source.answers["POST", f"{BASE}/entityOperations/create"] = (201, ["urn:v:1", "urn:v:2"])
    register(
        client,
        source.url,
        mode="exclusive",
        operations=["createBatch"],
        information={"propertyNames": ["speed"]},
    )
    batch = [vehicle("urn:v:1", speed=1, brand="BMW"), vehicle("urn:v:2", speed=2)]
    response = client.post(f"{BASE}/entityOperations/create", json=batch)
    assert response.status_code == 201, response.text
    assert sorted(response.json()) == ["urn:v:1", "urn:v:2"]
    [(_, path, headers, body)] = source.requests
    assert path == f"{BASE}/entityOperations/create"
    assert headers["Via"] == NODE_VIA
    assert body == [vehicle("urn:v:1", speed=1), vehicle("urn:v:2", speed=2)]
    assert local_view(client, "urn:v:1") == {"id": "urn:v:1", "type": "Vehicle", "brand": "BMW"}
    assert local_view(client, "urn:v:2") == 404  # nothing of it was left for this node


def test_batch_errors_of_a_source_name_the_entity_and_registration(
    client: TestClient, sources: list[Source]
) -> None:
    for entity_id in ("urn:v:1", "urn:local:1"):  # created here only
        created = client.post(f"{BASE}/entities", json=vehicle(entity_id, speed=1), params={"local": "true"})
        assert created.status_code == 201
    not_found = {"type": "https://uri.etsi.org/ngsi-ld/errors/ResourceNotFound", "title": "Not found"}
    source = sources[0]
    source.answers["POST", f"{BASE}/entityOperations/delete"] = (
        207,
        {"success": ["urn:v:1"], "errors": [{"entityId": "urn:v:2", "error": not_found}]},
    )
    register(client, source.url, mode="redirect", operations=["redirectionOps"])
    [reg] = client.get(f"{BASE}/csourceRegistrations", params={"type": "Vehicle"}).json()
    # the registration names no entity ids: every id goes to the source, none stays here
    response = client.post(f"{BASE}/entityOperations/delete", json=["urn:v:1", "urn:v:2"])
    assert response.status_code == 207
    body = response.json()
    assert body["success"] == ["urn:v:1"]
    [error] = body["errors"]
    assert error["entityId"] == "urn:v:2"
    assert error["error"]["type"] == not_found["type"]
    assert error["error"]["registrationId"] == reg["id"]
    assert source.requests[0][3] == ["urn:v:1", "urn:v:2"]
    assert local_view(client, "urn:v:1") != 404  # redirected: the node's copy is not touched

    # with local=true the batch stays here
    response = client.post(f"{BASE}/entityOperations/delete", json=["urn:local:1"], params={"local": "true"})
    assert response.status_code == 204
    assert local_view(client, "urn:local:1") == 404
    assert len(source.requests) == 1


def test_batch_upsert_goes_on_with_its_options(client: TestClient, sources: list[Source]) -> None:
    source = sources[0]
    source.answers["POST", f"{BASE}/entityOperations/upsert?options=update"] = (204, None)
    register(client, source.url, entity_id="urn:v:1", operations=["upsertBatch"])
    response = client.post(
        f"{BASE}/entityOperations/upsert", json=[vehicle("urn:v:1", speed=4)], params={"options": "update"}
    )
    assert response.status_code in (201, 204), response.text
    assert source.paths() == [f"{BASE}/entityOperations/upsert?options=update"]
    assert local_view(client, "urn:v:1") == {"id": "urn:v:1", "type": "Vehicle", "speed": 4}


def test_sources_answer_in_the_clients_context(client: TestClient, sources: list[Source]) -> None:
    """The request goes on with the client's @context, so a source's compact answer means what
    the client's terms mean; the client sees it in its own terms, stored nowhere."""
    context = "https://raw.githubusercontent.com/smart-data-models/dataModel.Parking/master/context.jsonld"
    link = {"Link": f'<{context}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'}
    parking = {
        "id": "urn:p:1",
        "type": "OffStreetParking",
        "availableSpotNumber": {"type": "Property", "value": 9},
    }
    source = sources[0]
    source.answers["GET", f"{BASE}/entities?type=OffStreetParking"] = (200, [parking])
    registration = {
        "type": "ContextSourceRegistration",
        "information": [{"entities": [{"type": "OffStreetParking"}]}],
        "endpoint": source.url,
    }
    assert client.post(f"{BASE}/csourceRegistrations", json=registration, headers=link).status_code == 201

    response = client.get(f"{BASE}/entities", params={"type": "OffStreetParking"}, headers=link)
    assert response.json() == [parking]
    assert source.requests[0][2]["Link"] == link["Link"]
    # without the client's context, the same entity shows its full names
    iri = "https://smartdatamodels.org/dataModel.Parking/"
    full = {
        "id": "urn:p:1",
        "type": f"{iri}OffStreetParking",
        f"{iri}availableSpotNumber": parking["availableSpotNumber"],
    }
    source.answers["GET", f"{BASE}/entities?" + urlencode({"type": f"{iri}OffStreetParking"}, safe=":")] = (
        200,
        [full],
    )
    expanded = client.get(f"{BASE}/entities", params={"type": f"{iri}OffStreetParking"})
    assert "Link" not in source.requests[1][2]
    assert expanded.json() == [full]


def test_a_purge_reaches_the_sources_registered_for_the_type(
    client: TestClient, sources: list[Source]
) -> None:
    exclusive, auxiliary = sources
    assert client.post(f"{BASE}/entities", json=vehicle("urn:v:1", speed=10)).status_code == 201
    exclusive.answers["DELETE", f"{BASE}/entities?type=Vehicle"] = (204, None)
    ops = ["redirectionOps"]  # the default, federationOps, is reads only
    register(
        client, exclusive.url, mode="exclusive", operations=ops, information={"propertyNames": ["speed"]}
    )
    register(client, auxiliary.url, mode="auxiliary", operations=ops)
    response = client.delete(f"{BASE}/entities", params={"type": "Vehicle"})
    assert response.status_code == 204, response.text
    assert [(m, p) for m, p, _, _ in exclusive.requests] == [("DELETE", f"{BASE}/entities?type=Vehicle")]
    assert exclusive.requests[0][2]["Via"] == NODE_VIA
    assert auxiliary.requests == []  # auxiliary sources never take writes
    assert client.get(f"{BASE}/entities/urn:v:1", params={"local": "true"}).status_code == 404
    # local=true purges here only
    created = client.post(f"{BASE}/entities", json=vehicle("urn:v:2"), params={"local": "true"})
    assert created.status_code == 201
    asked = len(exclusive.requests)
    assert client.delete(f"{BASE}/entities", params={"type": "Vehicle", "local": "true"}).status_code == 204
    assert len(exclusive.requests) == asked
    assert client.get(f"{BASE}/entities/urn:v:2", params={"local": "true"}).status_code == 404


def history(entity_id: str, name: str, *points: tuple[str, Any]) -> dict[str, Any]:
    """A temporal entity (normalized): ``name``'s instances at the given observedAt times."""
    instances = [{"type": "Property", "value": value, "observedAt": at} for at, value in points]
    return {"id": entity_id, "type": "Vehicle", name: instances}


def series(entity: dict[str, Any], name: str) -> list[tuple[str, Any]]:
    return [(i["observedAt"], i["value"]) for i in entity[name]]


def test_temporal_query_merges_local_and_remote_instances_in_time_order(
    client: TestClient, sources: list[Source]
) -> None:
    source = sources[0]
    local = history("urn:v:1", "speed", ("2026-01-01T10:00:00Z", 10), ("2026-01-01T12:00:00Z", 12))
    assert client.post(f"{BASE}/temporal/entities", json=local).status_code == 201
    source.answers["GET", f"{BASE}/temporal/entities?type=Vehicle"] = (
        200,
        [
            # the same observation as the node's (kept once), one between the node's two
            history("urn:v:1", "speed", ("2026-01-01T12:00:00Z", 12), ("2026-01-01T11:00:00.000Z", 11)),
            history("urn:v:2", "speed", ("2026-01-01T09:00:00Z", 9)),
        ],
    )
    register(client, source.url)

    response = client.get(f"{BASE}/temporal/entities", params={"type": "Vehicle", "count": "true"})
    assert response.status_code == 200, response.text
    assert response.headers["NGSILD-Results-Count"] == "2"
    by_id = {e["id"]: e for e in response.json()}
    assert series(by_id["urn:v:1"], "speed") == [
        ("2026-01-01T10:00:00Z", 10),
        ("2026-01-01T11:00:00.000Z", 11),
        ("2026-01-01T12:00:00Z", 12),
    ]
    assert series(by_id["urn:v:2"], "speed") == [("2026-01-01T09:00:00Z", 9)]
    method, path, headers, _ = source.requests[0]
    assert (method, path, headers["Via"]) == ("GET", f"{BASE}/temporal/entities?type=Vehicle", NODE_VIA)

    # lastN applies to the merged history; local=true asks no source
    last = client.get(f"{BASE}/temporal/entities", params={"type": "Vehicle", "lastN": "1"})
    assert series({e["id"]: e for e in last.json()}["urn:v:1"], "speed") == [("2026-01-01T12:00:00Z", 12)]
    asked = len(source.requests)
    only_here = client.get(f"{BASE}/temporal/entities", params={"type": "Vehicle", "local": "true"})
    assert [e["id"] for e in only_here.json()] == ["urn:v:1"]
    assert len(source.requests) == asked


def test_temporal_batch_query_goes_to_the_source_as_posted(client: TestClient, sources: list[Source]) -> None:
    source = sources[0]
    source.answers["POST", f"{BASE}/temporal/entityOperations/query"] = (
        200,
        [history("urn:v:2", "speed", ("2026-01-01T09:00:00Z", 9))],
    )
    register(client, source.url)
    query = {"type": "Query", "entities": [{"type": "Vehicle"}]}
    response = client.post(f"{BASE}/temporal/entityOperations/query", json=query)
    assert response.status_code == 200, response.text
    assert [(e["id"], series(e, "speed")) for e in response.json()] == [
        ("urn:v:2", [("2026-01-01T09:00:00Z", 9)])
    ]
    assert source.requests[0][0::3] == ("POST", query)


def test_temporal_retrieve_comes_from_the_source(client: TestClient, sources: list[Source]) -> None:
    source = sources[0]
    remote = history("urn:v:7", "speed", ("2026-01-01T09:00:00Z", 9), ("2026-01-01T10:00:00Z", 10))
    remote["speed"][0]["instanceId"] = "urn:ngsi-ld:attribute:instance:remote-1"
    source.answers["GET", f"{BASE}/temporal/entities/urn:v:7"] = (200, remote)
    register(client, source.url, entity_id="urn:v:7")

    response = client.get(f"{BASE}/temporal/entities/urn:v:7")
    assert response.status_code == 200, response.text
    body = response.json()
    assert series(body, "speed") == [("2026-01-01T09:00:00Z", 9), ("2026-01-01T10:00:00Z", 10)]
    assert body["speed"][0]["instanceId"] == "urn:ngsi-ld:attribute:instance:remote-1"
    values = client.get(f"{BASE}/temporal/entities/urn:v:7", params={"options": "temporalValues"})
    assert values.json()["speed"]["values"] == [[9, "2026-01-01T09:00:00Z"], [10, "2026-01-01T10:00:00Z"]]
    assert source.paths() == [f"{BASE}/temporal/entities/urn:v:7"] * 2  # options stay here
    assert client.get(f"{BASE}/temporal/entities/urn:v:8").status_code == 404  # nobody holds it


def test_exclusive_temporal_source_replaces_the_nodes_history(
    client: TestClient, sources: list[Source]
) -> None:
    source = sources[0]
    local = history("urn:v:1", "speed", ("2026-01-01T10:00:00Z", 10))
    assert client.post(f"{BASE}/temporal/entities", json=local).status_code == 201
    remote = history("urn:v:1", "speed", ("2026-01-01T11:00:00Z", 11))
    source.answers["GET", f"{BASE}/temporal/entities/urn:v:1"] = (200, remote)
    register(
        client, source.url, entity_id="urn:v:1", mode="exclusive", information={"propertyNames": ["speed"]}
    )

    response = client.get(f"{BASE}/temporal/entities/urn:v:1")
    assert series(response.json(), "speed") == [("2026-01-01T11:00:00Z", 11)]


def test_a_failing_source_does_not_fail_the_temporal_query(client: TestClient, sources: list[Source]) -> None:
    """As for entity queries, a failing source is left out of the answer (logged, named by its
    registration in the log), never fails it: the client asked the node."""
    local = history("urn:v:1", "speed", ("2026-01-01T10:00:00Z", 10))
    assert client.post(f"{BASE}/temporal/entities", json=local).status_code == 201
    sources[0].answers["GET", f"{BASE}/temporal/entities?type=Vehicle"] = (500, {"title": "broken"})
    register(client, sources[0].url, id=f"{REG}broken")
    register(client, f"http://127.0.0.1:{free_port()}", id=f"{REG}gone")  # nobody listens there

    response = client.get(f"{BASE}/temporal/entities", params={"type": "Vehicle"})
    assert response.status_code == 200
    assert [(e["id"], series(e, "speed")) for e in response.json()] == [
        ("urn:v:1", [("2026-01-01T10:00:00Z", 10)])
    ]
    assert len(sources[0].requests) == 1
    assert warnings(response) == {
        ("199", f"{REG}broken", '"The context source answered 500"'),
        ("111", f"{REG}gone"),
    }


def test_type_discovery_adds_what_the_sources_hold(client: TestClient, sources: list[Source]) -> None:
    """Clause 5.7.5-5.7.7 with a registered source (4.3.6): names joined, counts summed; a
    source not registered for the type is not asked about it, and local=true asks none."""
    fleet, other = sources
    assert client.post(f"{BASE}/entities", json=vehicle("urn:v:1", speed=5)).status_code == 201
    fleet.answers["GET", f"{BASE}/types"] = (
        200,
        {"id": "urn:ngsi-ld:EntityTypeList:x", "type": "EntityTypeList", "typeList": ["Vehicle", "Bus"]},
    )
    fleet.answers["GET", f"{BASE}/types?details=true"] = (
        200,
        [{"id": f"{DEFAULT}Bus", "type": "EntityType", "typeName": "Bus", "attributeNames": ["seats"]}],
    )
    fleet.answers["GET", f"{BASE}/types/Vehicle"] = (
        200,
        {
            "id": f"{DEFAULT}Vehicle",
            "type": "EntityTypeInfo",
            "typeName": "Vehicle",
            "entityCount": 2,
            "attributeDetails": [
                {
                    "id": f"{DEFAULT}fuel",
                    "type": "Attribute",
                    "attributeName": "fuel",
                    "attributeTypes": ["Property"],
                }
            ],
        },
    )
    register(client, fleet.url)
    other_body = {
        "type": "ContextSourceRegistration",
        "information": [{"entities": [{"type": "Bus"}]}],
        "endpoint": other.url,
        "operations": ["retrieveEntityTypeInfo"],
    }
    assert client.post(f"{BASE}/csourceRegistrations", json=other_body).status_code == 201

    assert client.get(f"{BASE}/types").json()["typeList"] == ["Vehicle", "Bus"]
    details = {t["typeName"]: t["attributeNames"] for t in client.get(f"{BASE}/types?details=true").json()}
    assert details == {"Vehicle": ["speed"], "Bus": ["seats"]}
    info = client.get(f"{BASE}/types/Vehicle").json()
    assert info["entityCount"] == 3
    assert {d["attributeName"]: d["attributeTypes"] for d in info["attributeDetails"]} == {
        "speed": ["Property"],
        "fuel": ["Property"],
    }
    # Only a registration for Bus that allows it would be asked about Bus; the fleet's answers 404.
    assert client.get(f"{BASE}/types/Bus").status_code == 404
    assert other.paths() == [f"{BASE}/types/Bus"]
    assert fleet.paths() == [f"{BASE}/types", f"{BASE}/types?details=true", f"{BASE}/types/Vehicle"]
    assert client.get(f"{BASE}/types", params={"local": "true"}).json()["typeList"] == ["Vehicle"]
    assert len(fleet.requests) == 3


def test_attribute_discovery_adds_what_the_sources_hold(client: TestClient, sources: list[Source]) -> None:
    """Clause 5.7.8-5.7.10 with a registered source; a failing one is left out with a warning."""
    fleet, broken = sources
    assert client.post(f"{BASE}/entities", json=vehicle("urn:v:1", speed=5)).status_code == 201
    fleet.answers["GET", f"{BASE}/attributes"] = (
        200,
        {"id": "urn:ngsi-ld:AttributeList:x", "type": "AttributeList", "attributeList": ["speed", "fuel"]},
    )
    fleet.answers["GET", f"{BASE}/attributes/speed"] = (
        200,
        {
            "id": f"{DEFAULT}speed",
            "type": "Attribute",
            "attributeName": "speed",
            "attributeCount": 4,
            "attributeTypes": ["Property"],
            "typeNames": ["Bus"],
        },
    )
    broken.answers["GET", f"{BASE}/attributes"] = (500, {"title": "down"})
    register(client, fleet.url)
    register(client, broken.url)

    listing = client.get(f"{BASE}/attributes")
    assert listing.json()["attributeList"] == ["speed", "fuel"]
    assert {code for code, *_ in warnings(listing)} == {"199"}
    info = client.get(f"{BASE}/attributes/speed").json()
    assert (info["attributeCount"], sorted(info["typeNames"])) == (5, ["Bus", "Vehicle"])
    # An attribute only a source holds is found there.
    fleet.answers["GET", f"{BASE}/attributes/fuel"] = (
        200,
        {"id": f"{DEFAULT}fuel", "type": "Attribute", "attributeName": "fuel", "attributeCount": 1},
    )
    assert client.get(f"{BASE}/attributes/fuel").json()["attributeCount"] == 1


def test_a_type_iri_is_forwarded_percent_encoded(client: TestClient, sources: list[Source]) -> None:
    source = sources[0]
    truck = "https://fleet.example/vocab#Truck"
    path = f"{BASE}/types/https://fleet.example/vocab%23Truck"
    source.answers["GET", path] = (
        200,
        {"id": truck, "type": "EntityTypeInfo", "typeName": truck, "entityCount": 1},
    )
    body = {
        "type": "ContextSourceRegistration",
        "information": [{"entities": [{"type": truck}]}],
        "endpoint": source.url,
    }
    assert client.post(f"{BASE}/csourceRegistrations", json=body).status_code == 201

    response = client.get(f"{BASE}/types/https%3A%2F%2Ffleet.example%2Fvocab%23Truck")
    assert response.status_code == 200, (response.text, source.paths())
    assert response.json()["entityCount"] == 1
    assert source.paths() == [path]
