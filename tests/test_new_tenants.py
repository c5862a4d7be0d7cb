"""Who may create a tenant, and how many there may be (kizuna.middleware.new_tenants)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from access_helpers import bearer
from kizuna.app import create_app
from kizuna.config import Settings

NGSI = "/ngsi-ld/v1"
SUBSCRIPTION = {
    "type": "Subscription",
    "entities": [{"type": "Streetlight"}],
    "notification": {"endpoint": {"uri": "http://127.0.0.1:9/n"}},
}


def streetlight(n: int = 1) -> dict[str, Any]:
    return {"id": f"urn:ngsi-ld:Streetlight:{n}", "type": "Streetlight"}


@pytest.fixture
def small(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(store=f"sqlite:///{tmp_path}/tenants.db", max_tenants=2)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def test_writes_create_tenants_up_to_the_limit(small: TestClient) -> None:
    """Was: 3,000 subscription POSTs with distinct tenants made 3,000 tenants for good."""
    for tenant in ("duisburg", "kanagawa"):
        answer = small.post(f"{NGSI}/subscriptions", json=SUBSCRIPTION, headers={"NGSILD-Tenant": tenant})
        assert answer.status_code == 201, answer.text
    refused = small.post(f"{NGSI}/subscriptions", json=SUBSCRIPTION, headers={"NGSILD-Tenant": "third"})
    assert refused.status_code == 403, refused.text
    assert refused.json()["type"].endswith("/TooManyTenants")
    assert (
        small.get(f"{NGSI}/entities", params={"type": "T"}, headers={"NGSILD-Tenant": "third"}).status_code
        == 404
    )
    # the tenants that exist keep taking writes, and the default tenant is not counted against them
    again = small.post(f"{NGSI}/entities", json=streetlight(), headers={"NGSILD-Tenant": "duisburg"})
    assert again.status_code == 201, again.text
    assert small.post(f"{NGSI}/entities", json=streetlight()).status_code == 201


def test_only_administrators_create_tenants(secured: TestClient, idp_key: Any) -> None:
    creator = bearer(idp_key, "kizuna-creator", sub="bob")
    refused = secured.post(
        f"{NGSI}/entities", json=streetlight(), headers={**creator, "NGSILD-Tenant": "bobs"}
    )
    assert refused.status_code == 403, refused.text
    admin = bearer(idp_key, "kizuna-admin", sub="root")
    assert (
        secured.get(
            f"{NGSI}/entities", params={"type": "Streetlight"}, headers={**admin, "NGSILD-Tenant": "bobs"}
        ).status_code
        == 404
    )
    created = secured.post(f"{NGSI}/entities", json=streetlight(), headers={**admin, "NGSILD-Tenant": "bobs"})
    assert created.status_code == 201, created.text
    # once it exists, the creator writes to it under the usual rules
    mine = secured.post(f"{NGSI}/entities", json=streetlight(2), headers={**creator, "NGSILD-Tenant": "bobs"})
    assert mine.status_code == 201, mine.text


def test_an_unknown_tenant_answers_a_non_administrator_as_an_empty_one(
    secured: TestClient, idp_key: Any
) -> None:
    """Was: 404 NonExistingTenant for an unknown tenant, 200 for an existing one: anyone could
    enumerate the tenants. Administrators still get the spec's NonExistingTenant."""
    admin = bearer(idp_key, "kizuna-admin", sub="root")
    reader = bearer(idp_key, sub="reader")
    created = secured.post(f"{NGSI}/entities", json=streetlight(), headers={**admin, "NGSILD-Tenant": "real"})
    assert created.status_code == 201
    answers = {}
    for tenant in ("real", "imagined"):
        headers = {**reader, "NGSILD-Tenant": tenant}
        query = secured.get(
            f"{NGSI}/entities", params={"type": "Streetlight", "count": "true"}, headers=headers
        )
        one = secured.get(f"{NGSI}/entities/urn:ngsi-ld:Streetlight:1", headers=headers)
        subscriptions = secured.get(f"{NGSI}/subscriptions", headers=headers)
        deleted = secured.delete(f"{NGSI}/entities/urn:ngsi-ld:Streetlight:1", headers=headers)
        answers[tenant] = [
            (query.status_code, query.json(), query.headers.get("NGSILD-Results-Count")),
            (one.status_code, one.json()["type"]),
            (subscriptions.status_code, subscriptions.json()),
            deleted.status_code,
        ]
    assert answers["real"] == answers["imagined"]
    assert answers["real"][0] == (200, [], "0")
    unknown = secured.get(
        f"{NGSI}/entities", params={"type": "Streetlight"}, headers={**admin, "NGSILD-Tenant": "imagined"}
    )
    assert unknown.status_code == 404 and unknown.json()["type"].endswith("/NonExistingTenant")
