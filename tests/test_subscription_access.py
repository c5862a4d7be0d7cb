"""Subscriptions under access control (``--auth oidc``, both stores): owned by their creator,
invisible to others, and notifying only what the owner may read when the entity changes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from access_helpers import bearer
from notify_helpers import Receiver

SUBSCRIPTIONS = "/ngsi-ld/v1/subscriptions"
ENTITIES = "/ngsi-ld/v1/entities"
PERMISSIONS = "/ngsi-ld/v1/auth/permissions"
CORE = {"Content-Type": "application/json"}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def subscription(n: int, uri: str) -> dict[str, Any]:
    return {
        "id": f"urn:ngsi-ld:Subscription:{n}",
        "type": "Subscription",
        "entities": [{"type": "Streetlight"}, {"type": "Bench"}],
        "notification": {"endpoint": {"uri": uri, "accept": "application/json"}},
    }


def test_a_subscription_is_its_owners(secured: TestClient, idp_key: Any, receiver: Receiver) -> None:
    alice = bearer(idp_key, "kizuna-creator", sub="alice")
    bob = bearer(idp_key, "kizuna-creator", sub="bob")
    admin = bearer(idp_key, "kizuna-admin", sub="root")
    assert secured.post(SUBSCRIPTIONS, json=subscription(1, receiver.url), headers=CORE).status_code == 401
    reader = bearer(idp_key, sub="reader")
    assert (
        secured.post(SUBSCRIPTIONS, json=subscription(1, receiver.url), headers=reader | CORE).status_code
        == 403
    )
    assert (
        secured.post(SUBSCRIPTIONS, json=subscription(1, receiver.url), headers=alice | CORE).status_code
        == 201
    )
    one = f"{SUBSCRIPTIONS}/urn:ngsi-ld:Subscription:1"
    assert secured.get(one, headers=alice).status_code == 200
    assert secured.get(one, headers=admin).status_code == 200
    for stranger in (bob, {}):
        assert secured.get(one, headers=stranger).status_code == 404
        moved = secured.patch(
            one, json={"notification": {"endpoint": {"uri": "http://127.0.0.1:9/x"}}}, headers=stranger | CORE
        )
        assert moved.status_code == 404
        assert secured.delete(one, headers=stranger).status_code == 404
    listed = secured.get(SUBSCRIPTIONS, params={"count": "true"}, headers=bob)
    assert listed.json() == [] and listed.headers["NGSILD-Results-Count"] == "0"
    assert [s["id"] for s in secured.get(SUBSCRIPTIONS, headers=alice).json()] == [
        "urn:ngsi-ld:Subscription:1"
    ]
    assert "_owner" not in secured.get(one, headers=alice).json()


def test_notifications_carry_only_what_the_owner_may_read(
    secured: TestClient, idp_key: Any, receiver: Receiver
) -> None:
    alice = bearer(idp_key, "kizuna-creator", sub="alice")
    bob = bearer(idp_key, "kizuna-creator", sub="bob")
    admin = bearer(idp_key, "kizuna-admin", sub="root")
    grant = {"type": "Permission", "target": {"types": "Bench"}, "assignee": "bob", "action": "read"}
    assert secured.post(PERMISSIONS, json=grant, headers=admin).status_code == 201
    assert (
        secured.post(SUBSCRIPTIONS, json=subscription(2, receiver.url), headers=bob | CORE).status_code == 201
    )
    lamp = {
        "id": "urn:ngsi-ld:Streetlight:1",
        "type": "Streetlight",
        "status": {"type": "Property", "value": "on"},
    }
    bench = {"id": "urn:ngsi-ld:Bench:1", "type": "Bench", "status": {"type": "Property", "value": "free"}}
    assert secured.post(ENTITIES, json=lamp, headers=alice | CORE).status_code == 201
    assert secured.post(ENTITIES, json=bench, headers=alice | CORE).status_code == 201
    notified = receiver.wait_for_entities(1)
    # The bench came after the lamp: once it is notified, the lamp would have been too.
    assert [e["id"] for e in notified] == ["urn:ngsi-ld:Bench:1"]


def test_periodic_notifications_carry_only_what_the_owner_may_read(
    secured: TestClient, idp_key: Any, receiver: Receiver
) -> None:
    """A periodic subscription reads the current state as its owner (it read as the node)."""
    alice = bearer(idp_key, "kizuna-creator", sub="alice")
    bob = bearer(idp_key, "kizuna-creator", sub="bob")
    admin = bearer(idp_key, "kizuna-admin", sub="root")
    grant = {"type": "Permission", "target": {"types": "Bench"}, "assignee": "bob", "action": "read"}
    assert secured.post(PERMISSIONS, json=grant, headers=admin).status_code == 201
    lamp = {"id": "urn:ngsi-ld:Streetlight:1", "type": "Streetlight"}
    bench = {"id": "urn:ngsi-ld:Bench:1", "type": "Bench"}
    assert secured.post(ENTITIES, json=lamp, headers=alice | CORE).status_code == 201
    assert secured.post(ENTITIES, json=bench, headers=alice | CORE).status_code == 201
    periodic = {**subscription(3, receiver.url), "timeInterval": 1}
    assert secured.post(SUBSCRIPTIONS, json=periodic, headers=bob | CORE).status_code == 201
    bodies = receiver.wait_for(2, timeout=8)
    assert all([e["id"] for e in body["data"]] == ["urn:ngsi-ld:Bench:1"] for body in bodies)
