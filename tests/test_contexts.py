"""@contexts: where they come from, how fast a bad one fails, and the /jsonldContexts API."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from starlette.testclient import TestClient

from kizuna.app import create_app

BASE = "/ngsi-ld/v1"
ERR = "https://uri.etsi.org/ngsi-ld/errors/"
CONTEXT = {"@context": {"brightness": "https://duisburg.example/ns#brightness"}}


class ContextServer(BaseHTTPRequestHandler):
    """A remote context server with one good route and the failures a broker meets in the field."""

    def do_GET(self) -> None:
        if self.path == "/good.jsonld":
            self._send(200, json.dumps(CONTEXT).encode())
        elif self.path == "/slow.jsonld":
            time.sleep(10)
            self._send(200, json.dumps(CONTEXT).encode())
        elif self.path == "/huge.jsonld":
            self._send(200, b'{"@context": {"x": "' + b"y" * 2_000_000 + b'"}}')
        elif self.path == "/redirect-to-file":
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.end_headers()
        elif self.path == "/not-json":
            self._send(200, b"<html>")
        else:
            self._send(404, b"{}")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def remote() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ContextServer)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def entity_with(context: str, n: int = 1) -> dict:
    return {
        "id": f"urn:ngsi-ld:Streetlight:{n}",
        "type": "Streetlight",
        "brightness": {"type": "Property", "value": 80},
        "@context": context,
    }


def post_ld(client: TestClient, body: object) -> object:
    return client.post(f"{BASE}/entities", json=body, headers={"Content-Type": "application/ld+json"})


def test_a_remote_context_is_fetched_once_and_cached(client: TestClient, remote: str) -> None:
    assert post_ld(client, entity_with(f"{remote}/good.jsonld")).status_code == 201
    plain = client.get(f"{BASE}/entities/urn:ngsi-ld:Streetlight:1").json()
    assert "https://duisburg.example/ns#brightness" in plain
    listed = client.get(f"{BASE}/jsonldContexts", params={"kind": "Cached", "details": "true"}).json()
    assert [c["URL"] for c in listed] == [f"{remote}/good.jsonld"]
    assert listed[0]["kind"] == "Cached"


@pytest.mark.parametrize(
    "path", ["/slow.jsonld", "/huge.jsonld", "/redirect-to-file", "/not-json", "/missing"]
)
def test_an_unusable_context_fails_fast_with_503(client: TestClient, remote: str, path: str) -> None:
    started = time.monotonic()
    response = post_ld(client, entity_with(remote + path))
    assert response.status_code == 503
    assert response.json()["type"] == ERR + "LdContextNotAvailable"
    assert time.monotonic() - started < 5  # the fetch timeout is 3 s
    assert client.get(f"{BASE}/entities/urn:ngsi-ld:Streetlight:1").status_code == 404


def test_every_core_context_url_resolves_offline(client: TestClient) -> None:
    for version in ("", "-v1.6", "-v1.8", "-v1.9"):
        url = f"https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context{version}.jsonld"
        response = post_ld(client, {"id": f"urn:x:{version or 'plain'}", "type": "T", "@context": url})
        assert response.status_code == 201, url
    unknown = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-non-existing.jsonld"
    assert post_ld(client, {"id": "urn:x:n", "type": "T", "@context": unknown}).status_code == 503


def test_hosting_serving_and_deleting_a_user_context(client: TestClient) -> None:
    added = client.post(f"{BASE}/jsonldContexts", json=CONTEXT)
    assert added.status_code == 201
    assert added.text == ""
    location = added.headers["location"]
    assert location.startswith(f"{BASE}/jsonldContexts/")
    local_id = location.rsplit("/", 1)[1]

    served = client.get(location)
    assert served.headers["content-type"] == "application/json"
    assert served.json() == CONTEXT
    details = client.get(location, params={"details": "true"}).json()
    assert details["kind"] == "Hosted"
    assert details["localId"] == local_id
    assert details["URL"].endswith(location)
    assert client.get(f"{BASE}/jsonldContexts", params={"kind": "Hosted"}).json() == [details["URL"]]

    # Entities can name the hosted context by its URL; it resolves locally.
    assert post_ld(client, entity_with(details["URL"])).status_code == 201
    got = client.get(
        f"{BASE}/entities/urn:ngsi-ld:Streetlight:1",
        headers={"Link": f'<{details["URL"]}>; rel="http://www.w3.org/ns/json-ld#context"'},
    ).json()
    assert got["brightness"] == {"type": "Property", "value": 80}

    assert client.delete(location, params={"reload": "true"}).status_code == 400  # hosted: no reload
    assert client.delete(location).status_code == 204
    assert client.get(location).status_code == 404


def test_context_api_errors(client: TestClient) -> None:
    no_context = client.post(f"{BASE}/jsonldContexts", json={"brightness": "urn:x"})
    assert no_context.status_code == 400
    assert no_context.json()["type"] == ERR + "InvalidRequest"
    assert client.get(f"{BASE}/jsonldContexts", params={"kind": "Other"}).status_code == 400
    assert client.get(f"{BASE}/jsonldContexts", params={"details": "maybe"}).status_code == 400
    assert client.delete(f"{BASE}/jsonldContexts/1234567890123456").status_code == 404
    assert (
        client.delete(f"{BASE}/jsonldContexts/1234567890123456", params={"reload": "true"}).status_code == 400
    )
    core = "https%3A%2F%2Furi.etsi.org%2Fngsi-ld%2Fv1%2Fngsi-ld-core-context-v1.6.jsonld"
    assert client.delete(f"{BASE}/jsonldContexts/{core}").status_code == 400
    assert client.delete(f"{BASE}/jsonldContexts/{core}", params={"reload": "true"}).status_code == 204
    assert client.get(f"{BASE}/jsonldContexts/{core}").status_code == 200


def test_hosted_contexts_survive_a_restart(client: TestClient) -> None:
    location = client.post(f"{BASE}/jsonldContexts", json=CONTEXT).headers["location"]
    fresh_node = create_app(client.app.state.settings)  # new registry, same store file
    with TestClient(fresh_node) as restarted:
        assert restarted.get(location).json() == CONTEXT


def test_a_relative_context_url_is_bad_request_data(client: TestClient) -> None:
    hosted = client.post("/ngsi-ld/v1/jsonldContexts", json={"@context": {"lux": "https://example.org/lux"}})
    assert hosted.status_code == 201
    response = post_ld(client, entity_with(hosted.headers["location"]))  # a path, not a URL
    assert response.status_code == 400, response.text
    assert response.json()["type"].endswith("BadRequestData")
    assert "relative" in response.json()["detail"]


async def test_a_hosted_contexts_owner_comes_back_from_the_store(tmp_path) -> None:
    """What another process (or this one before a restart) hosted keeps its creator, who may
    delete it."""
    from kizuna.jsonld.contexts import ContextRegistry
    from kizuna.ngsild.hosted_contexts import HostedContexts
    from kizuna.store import open_store

    store = open_store(f"sqlite:///{tmp_path}/k.db")
    await store.open()
    try:
        await store.save_hosted_context("c1", {"@context": {"A": "urn:a"}}, 12.5, "alice")
        registry = ContextRegistry()
        await HostedContexts(registry, store).sync()
        record = registry.record("c1")
        assert record is not None and (record.owner, record.created_at) == ("alice", 12.5)
    finally:
        await store.close()


async def test_contexts_hosted_before_owners_were_kept_stay_the_admins(tmp_path) -> None:
    import sqlite3

    from kizuna.store import open_store

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # the table as the previous version wrote it
        db.execute(
            "CREATE TABLE hosted_contexts (local_id TEXT PRIMARY KEY, document BLOB NOT NULL,"
            " created_at REAL NOT NULL)"
        )
        db.execute("INSERT INTO hosted_contexts VALUES ('old', ?, 1.0)", (b'{"@context": {}}',))
    store = open_store(f"sqlite:///{path}")
    await store.open()
    try:
        assert await store.hosted_contexts() == [("old", {"@context": {}}, 1.0, None, "")]
    finally:
        await store.close()


# -- tenants, Host headers and cached copies ---------------------------------------------------------

PARKING = "https://raw.githubusercontent.com/smart-data-models/dataModel.Parking/master/context.jsonld"


def test_a_hosted_context_is_listed_and_deleted_in_its_tenant_only(client: TestClient) -> None:
    """Was: hosted contexts were shared by all tenants (tenant B deleted tenant A's)."""
    kanagawa, duisburg = {"NGSILD-Tenant": "kanagawa"}, {"NGSILD-Tenant": "duisburg"}
    hosted = client.post(
        "/ngsi-ld/v1/jsonldContexts", json={"@context": {"Tram": "urn:tram"}}, headers=kanagawa
    )
    assert hosted.status_code == 201, hosted.text
    path = hosted.headers["location"]
    local_id = path.rsplit("/", 1)[1]
    listed = client.get("/ngsi-ld/v1/jsonldContexts", params={"kind": "Hosted"}, headers=kanagawa).json()
    assert [url.rsplit("/", 1)[1] for url in listed] == [local_id]
    assert client.get("/ngsi-ld/v1/jsonldContexts", params={"kind": "Hosted"}, headers=duisburg).json() == []
    assert client.get("/ngsi-ld/v1/jsonldContexts", params={"kind": "Hosted"}).json() == []
    assert client.delete(path, headers=duisburg).status_code == 404
    # served by its URL to anyone: JSON-LD processors dereference it without a tenant
    assert client.get(path).json() == {"@context": {"Tram": "urn:tram"}}
    assert client.delete(path, headers=kanagawa).status_code == 204
    assert client.get(path).status_code == 404


def test_listings_name_the_node_by_its_public_url_not_the_host_header(client: TestClient) -> None:
    """Was: ``Host: evil.example`` came back in every hosted context's URL."""
    hosted = client.post("/ngsi-ld/v1/jsonldContexts", json={"@context": {"A": "urn:a"}})
    assert hosted.status_code == 201
    listed = client.get("/ngsi-ld/v1/jsonldContexts", headers={"Host": "evil.example"}).json()
    assert listed and all("evil.example" not in url for url in listed)
    assert "http://127.0.0.1:1026" + hosted.headers["location"] in listed


def test_cached_copies_are_listed_and_served_to_node_administrators_only(
    secured: TestClient, idp_key: Any
) -> None:
    from access_helpers import bearer

    admin = bearer(idp_key, "kizuna-admin", sub="root")
    reader = bearer(idp_key, sub="reader")
    link = {"Link": f'<{PARKING}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'}
    assert (
        secured.get(
            "/ngsi-ld/v1/entities", params={"type": "OffStreetParking"}, headers=admin | link
        ).status_code
        == 200
    )
    cached = secured.get(
        "/ngsi-ld/v1/jsonldContexts", params={"kind": "Cached", "details": "true"}, headers=admin
    )
    assert PARKING in [c["URL"] for c in cached.json()]
    local_id = next(c["localId"] for c in cached.json() if c["URL"] == PARKING)
    assert secured.get("/ngsi-ld/v1/jsonldContexts", params={"kind": "Cached"}, headers=reader).json() == []
    assert secured.get(f"/ngsi-ld/v1/jsonldContexts/{local_id}", headers=reader).status_code == 404
    assert secured.get(f"/ngsi-ld/v1/jsonldContexts/{local_id}", headers=admin).status_code == 200
