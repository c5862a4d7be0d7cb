"""Context source notifications (clause 5.11.7) as the CsourceNotifier decides them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from kizuna.access.ownership import owned
from kizuna.access.subject import NODE
from kizuna.app import create_app
from kizuna.config import Settings
from kizuna.jsonld.contexts import ContextRegistry
from kizuna.notify.csource import CSOURCE, CsourceNotifier
from notify_helpers import Receiver, wait_until

VEHICLE = "https://uri.etsi.org/ngsi-ld/default-context/Vehicle"


def registration(name: str, modified_at: str) -> dict[str, Any]:
    return owned(
        {
            "id": f"urn:ngsi-ld:ContextSourceRegistration:{name}",
            "type": "ContextSourceRegistration",
            "information": [{"entities": [{"type": VEHICLE}]}],
            "endpoint": "http://source.example",
            "createdAt": modified_at,
            "modifiedAt": modified_at,
        },
        NODE,
    )


def subscribe_to_vehicle_sources(client: TestClient, sub_id: str, endpoint: str) -> str:
    """A csource subscription to registrations of Vehicles, notifying ``endpoint``; its id."""
    created = client.post(
        "/ngsi-ld/v1/csourceSubscriptions",
        json={
            "id": sub_id,
            "type": "Subscription",
            "entities": [{"type": "Vehicle"}],
            "notification": {"endpoint": {"uri": endpoint}},
        },
    )
    assert created.status_code == 201, created.text
    return sub_id


@pytest.fixture
def client(tmp_path: Path, any_store_url: str) -> Iterator[TestClient]:
    settings = Settings(
        store=any_store_url, notify_backoff_base=0.05, notify_backoff_cap=0.2, notify_poll=0.2
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def test_a_failing_receiver_gets_every_csource_notification_in_order(client: TestClient) -> None:
    """A receiver down for a while is retried through the outbox: no notification is lost,
    they arrive in the order of the changes, and each attempt counts in timesSent."""
    receiver = Receiver()
    try:
        receiver.script = ["500", "close", "500"]
        sub_id = subscribe_to_vehicle_sources(
            client, "urn:ngsi-ld:Subscription:vehicle-sources", receiver.url
        )
        first, second = (f"urn:ngsi-ld:ContextSourceRegistration:fleet-{n}" for n in (1, 2))
        for reg_id in (first, second):
            answer = client.post(
                "/ngsi-ld/v1/csourceRegistrations",
                json={
                    "id": reg_id,
                    "type": "ContextSourceRegistration",
                    "information": [{"entities": [{"type": "Vehicle"}]}],
                    "endpoint": "http://127.0.0.1:9/fleet",
                },
            )
            assert answer.status_code == 201, answer.text
        assert (
            client.patch(
                f"/ngsi-ld/v1/csourceRegistrations/{first}",
                json={"information": [{"entities": [{"type": "Bus"}]}]},
            ).status_code
            == 204
        )
        bodies = receiver.wait_for(3, timeout=15)
        assert [(b["triggerReason"], [r["id"] for r in b["data"]]) for b in bodies] == [
            ("newlyMatching", [first]),
            ("newlyMatching", [second]),
            ("noLongerMatching", [first]),
        ]
        assert all(b["type"] == "ContextSourceNotification" and b["subscriptionId"] == sub_id for b in bodies)
        assert receiver.attempts == 6
        notification = wait_until(
            lambda: (
                (n := client.get(f"/ngsi-ld/v1/csourceSubscriptions/{sub_id}").json()["notification"]).get(
                    "timesSent"
                )
                == 6
                and n
            ),
            5,
        )
        assert notification["timesFailed"] == 3
        assert notification["status"] == "ok"
    finally:
        receiver.close()


def test_a_registration_and_its_csource_notifications_commit_together(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure after the registration is written but before its notification is queued
    leaves neither: the write answers 500 and the subscription is never told of it (so a
    subscriber can trust that every registration it was not told of does not exist)."""
    receiver = Receiver()
    try:
        subscribe_to_vehicle_sources(client, "urn:ngsi-ld:Subscription:atomic-sources", receiver.url)

        def register(name: str, vehicle_type: str = "Vehicle") -> int:
            return client.post(
                "/ngsi-ld/v1/csourceRegistrations",
                json={
                    "id": f"urn:ngsi-ld:ContextSourceRegistration:{name}",
                    "type": "ContextSourceRegistration",
                    "information": [{"entities": [{"type": vehicle_type}]}],
                    "endpoint": "http://127.0.0.1:9/fleet",
                },
            ).status_code

        async def broken(*_: Any) -> tuple[str, str, str, bytes]:
            raise RuntimeError("injected: the notification could not be queued")

        assert register("kept") == 201
        with monkeypatch.context() as patched:
            patched.setattr(CsourceNotifier, "_notification", broken)
            assert register("lost") == 500
            kept = "/ngsi-ld/v1/csourceRegistrations/urn:ngsi-ld:ContextSourceRegistration:kept"
            assert (
                client.patch(kept, json={"information": [{"entities": [{"type": "Bus"}]}]}).status_code == 500
            )
            assert client.delete(kept).status_code == 500
        assert (
            client.get(
                "/ngsi-ld/v1/csourceRegistrations/urn:ngsi-ld:ContextSourceRegistration:lost"
            ).status_code
            == 404
        )
        assert client.get(kept).json()["information"] == [{"entities": [{"type": "Vehicle"}]}]
        assert register("after") == 201
        # In order per subscription: had anything of the failed writes been queued, it came first.
        bodies = receiver.wait_for(2, timeout=15)
        assert [(b["triggerReason"], [r["id"].rsplit(":", 1)[1] for r in b["data"]]) for b in bodies] == [
            ("newlyMatching", ["kept"]),
            ("newlyMatching", ["after"]),
        ]
    finally:
        receiver.close()


async def test_a_csource_subscription_and_its_initial_notification_commit_together(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure after a new or updated subscription is written but before its initial
    notification (every registration it matches, clause 5.11.7) is queued leaves neither: the
    request answers 500, and a subscription the node keeps was told of what it matched."""
    receiver = Receiver()
    try:
        kept = {
            "id": "urn:ngsi-ld:ContextSourceRegistration:kept",
            "type": "ContextSourceRegistration",
            "information": [{"entities": [{"type": "Vehicle"}]}],
            "endpoint": "http://127.0.0.1:9/fleet",
        }
        assert client.post("/ngsi-ld/v1/csourceRegistrations", json=kept).status_code == 201
        sub_id = "urn:ngsi-ld:Subscription:atomic-initial"
        path = f"/ngsi-ld/v1/csourceSubscriptions/{sub_id}"

        async def broken(*_: Any) -> tuple[str, str, str, bytes]:
            raise RuntimeError("injected: the initial notification could not be queued")

        with monkeypatch.context() as patched:
            patched.setattr(CsourceNotifier, "_notification", broken)
            created = client.post(
                "/ngsi-ld/v1/csourceSubscriptions",
                json={
                    "id": sub_id,
                    "type": "Subscription",
                    "entities": [{"type": "Vehicle"}],
                    "notification": {"endpoint": {"uri": receiver.url}},
                },
            )
            assert created.status_code == 500
            assert client.get(path).status_code == 404
        subscribe_to_vehicle_sources(client, sub_id, receiver.url)
        with monkeypatch.context() as patched:
            patched.setattr(CsourceNotifier, "_notification", broken)
            assert client.patch(path, json={"description": "renamed"}).status_code == 500
        assert "description" not in client.get(path).json()
        later = {**kept, "id": "urn:ngsi-ld:ContextSourceRegistration:later"}
        assert client.post("/ngsi-ld/v1/csourceRegistrations", json=later).status_code == 201
        # In order per subscription: had the failed update queued anything, it came second.
        bodies = receiver.wait_for(2, timeout=15)
        assert [(b["triggerReason"], [r["id"].rsplit(":", 1)[1] for r in b["data"]]) for b in bodies] == [
            ("newlyMatching", ["kept"]),
            ("newlyMatching", ["later"]),
        ]
    finally:
        receiver.close()


async def test_a_notified_registration_carries_only_the_information_the_subscription_selects() -> None:
    """Clause 5.11.7 (ETSI 047_03): the RegistrationInfo elements about other entity types are
    left out of the notified registration; the stored registration keeps them."""
    fleet = registration("fleet", "2026-12-07T10:00:00.000Z")
    bus = "https://uri.etsi.org/ngsi-ld/default-context/Bus"
    fleet["information"] = [{"entities": [{"type": bus}]}, *fleet["information"]]
    notifier = CsourceNotifier(None, ContextRegistry(), lambda: None)  # type: ignore[arg-type]
    subscription = owned(
        {
            "id": "urn:ngsi-ld:Subscription:vehicles",
            "type": "Subscription",
            "entities": [{"type": VEHICLE}],
            "notification": {"endpoint": {"uri": "http://receiver.example"}},
        },
        NODE,
    )
    _, _, _, payload = await notifier._notification(subscription, [fleet], "newlyMatching")
    [notified] = orjson.loads(payload)[CSOURCE]["data"]
    assert notified["information"] == [{"entities": [{"type": ["Vehicle"]}]}]
    assert len(fleet["information"]) == 2
