"""A small node's worth of everything a store keeps, written through a node as clients write it.

Used by tools/make_store_fixtures.py, which runs it on the code of an earlier release to make the
stores in tests/data/, and by tests/test_migrate.py; so it uses only what that release had.
"""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

BASE = "/ngsi-ld/v1"
CORE = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"
TENANTS = ("", "duisburg")
LIGHTS = 3  # per tenant
UPDATES = 2  # per light, each a history instance of status
CONTEXT = {"@context": {"Streetlight": "https://smartdatamodels.org/dataModel.Streetlighting/Streetlight"}}
REGISTRATION = "urn:ngsi-ld:ContextSourceRegistration:fixture"
AGREEMENT = {"id": "urn:uuid:fixture-agreement", "assigner": "provider", "assignee": "consumer"}


def light_id(tenant: str, n: int) -> str:
    return f"urn:ngsi-ld:Streetlight:{tenant or 'default'}-{n}"


def light(tenant: str, n: int) -> dict[str, Any]:
    return {
        "id": light_id(tenant, n),
        "type": "Streetlight",
        "status": {"type": "Property", "value": "ok", "observedAt": "2026-11-22T18:00:00Z"},
        "location": {
            "type": "GeoProperty",
            "value": {"type": "Point", "coordinates": [6.76 + n / 100, 51.43]},
        },
    }


def status(n: int) -> str:
    return f"step-{n}"


def headers(tenant: str) -> dict[str, str]:
    return {"NGSILD-Tenant": tenant} if tenant else {}


def populate(client: TestClient) -> None:
    """Entities with history in two tenants, a subscription with notifications queued (its
    endpoint is a closed loopback port), a registration, a hosted @context, an API key (and its
    line in the audit trail) and a DSP agreement record."""
    from kizuna.access.apikeys import ApiKeys
    from kizuna.dataspace.core import AGREEMENT as AGREEMENTS
    from kizuna.dataspace.core import Records

    for tenant in TENANTS:
        subscription = {
            "id": f"urn:ngsi-ld:Subscription:{tenant or 'default'}",
            "type": "Subscription",
            "entities": [{"type": "Streetlight"}],
            "notification": {"endpoint": {"uri": "http://127.0.0.1:9/notify"}},
        }
        _ok(client.post(f"{BASE}/subscriptions", json=subscription, headers=headers(tenant)))
        for n in range(1, LIGHTS + 1):
            _ok(client.post(f"{BASE}/entities", json=light(tenant, n), headers=headers(tenant)))
            for step in range(1, UPDATES + 1):
                change = {"status": {"type": "Property", "value": status(step)}}
                url = f"{BASE}/entities/{light_id(tenant, n)}/attrs"
                _ok(client.patch(url, json=change, headers=headers(tenant)))
    registration = {
        "id": REGISTRATION,
        "type": "ContextSourceRegistration",
        "information": [{"entities": [{"type": "Bench"}]}],
        "endpoint": "http://127.0.0.1:9",
    }
    _ok(client.post(f"{BASE}/csourceRegistrations", json=registration))
    _ok(client.post(f"{BASE}/jsonldContexts", json=CONTEXT))
    store = client.app.state.store  # type: ignore[attr-defined]

    async def records() -> None:
        await ApiKeys(store).create("fixture", "alice", ("reader",), None, None)
        await Records(store).insert(AGREEMENTS, dict(AGREEMENT))

    client.portal.call(records)  # type: ignore[union-attr]


def _ok(answer: Any) -> None:
    assert answer.status_code < 300, answer.text
