"""The connector's management API: node administrators only, JSON only, never cross-origin."""

from __future__ import annotations

import asyncio
import time

import orjson
from joserfc.jwk import RSAKey
from starlette.testclient import TestClient

from access_helpers import bearer
from kizuna.access.apikeys import ApiKeys
from kizuna.store import open_store

DATASETS = "/management/v1/datasets"


def test_without_credentials_management_answers_401_with_a_challenge(secured: TestClient) -> None:
    got = secured.get(DATASETS)
    assert got.status_code == 401
    assert got.headers["www-authenticate"].startswith("Bearer")


def test_a_subject_that_is_not_admin_gets_403(secured: TestClient, idp_key: RSAKey) -> None:
    assert secured.get(DATASETS, headers=bearer(idp_key, "kizuna-creator")).status_code == 403
    assert secured.get(DATASETS, headers=bearer(idp_key, "duisburg:kizuna-admin")).status_code == 403


def test_a_node_admin_manages(secured: TestClient, idp_key: RSAKey) -> None:
    got = secured.get(DATASETS, headers=bearer(idp_key, "kizuna-admin"))
    assert got.status_code == 200, got.text


def test_an_admin_api_key_manages_and_stops_when_revoked(secured: TestClient) -> None:
    url = secured.app.state.settings.store  # type: ignore[attr-defined]

    async def keys(action: str, arg: str = "") -> str:
        store = open_store(url)
        await store.open()
        try:
            repo = ApiKeys(store)
            if action == "create":
                _, secret = await repo.create("test", "ops-robot", ("kizuna-admin",), None, None)
                return secret
            await repo.revoke("test", arg)
            return ""
        finally:
            await store.close()

    secret = asyncio.run(keys("create"))
    assert secured.get(DATASETS, headers={"X-API-Key": secret}).status_code == 200
    asyncio.run(keys("revoke", secret.split("_")[1]))
    deadline = time.monotonic() + 2.0
    while secured.get(DATASETS, headers={"X-API-Key": secret}).status_code == 200:
        assert time.monotonic() < deadline, "a revoked key must stop working within 2 seconds"
        time.sleep(0.1)
    assert secured.get(DATASETS, headers={"X-API-Key": secret}).status_code == 401


def test_health_and_version_discovery_stay_open(secured: TestClient) -> None:
    assert secured.get("/health").status_code == 200
    assert secured.get("/.well-known/dspace-version").status_code == 200


def test_cross_origin_browser_requests_are_refused(client: TestClient) -> None:
    dataset = {"id": "urn:x:ds", "entityTypes": ["T"]}
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        got = client.post(DATASETS, json=dataset, headers=headers)
        assert got.status_code == 403, headers
        assert "access-control-allow-origin" not in got.headers
    assert client.get(DATASETS, headers={"Origin": "http://testserver"}).status_code == 200


def test_management_bodies_must_be_json(client: TestClient) -> None:
    body = orjson.dumps({"id": "urn:x:ds", "entityTypes": ["T"]})
    got = client.post(DATASETS, content=body, headers={"Content-Type": "text/plain"})
    assert got.status_code == 415
    listed = client.get(DATASETS)
    assert listed.status_code == 200 and "urn:x:ds" not in listed.text, "the text/plain body was not taken"
