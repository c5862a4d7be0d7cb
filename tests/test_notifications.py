"""Notification delivery: a city's street lights notify a maintenance system over HTTP and MQTT."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from kizuna.app import create_app
from kizuna.config import Settings
from kizuna.jsonld.contexts import CORE_CONTEXT_URL
from notify_helpers import Mosquitto, Receiver, free_port, mqtt_listener, wait_until

API = "/ngsi-ld/v1"
SUBS = f"{API}/subscriptions"
CITY_URL = "https://example.org/city/context.jsonld"
CITY = "https://example.org/city#"
CITY_LINK = f'<{CITY_URL}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
LD = {"Content-Type": "application/ld+json"}
CITY_CONTEXT = {
    "@context": {
        "Streetlight": CITY + "Streetlight",
        "powerState": CITY + "powerState",
        "illuminanceLevel": CITY + "illuminanceLevel",
        "status": CITY + "status",
    }
}
ALL_TRIGGERS = [
    "entityCreated",
    "entityUpdated",
    "entityDeleted",
    "attributeCreated",
    "attributeUpdated",
    "attributeDeleted",
]


FAST_RETRIES = {"notify_backoff_base": 0.05, "notify_backoff_cap": 0.2, "notify_poll": 0.2}


def make_settings(tmp_path: Path, store: str | None = None, **extra: object) -> Settings:
    (tmp_path / "city.jsonld").write_text(json.dumps(CITY_CONTEXT))
    (tmp_path / "map.json").write_text(json.dumps({CITY_URL: "city.jsonld"}))
    return Settings(
        store=store or f"sqlite:///{tmp_path}/kizuna.db",
        context_map=str(tmp_path / "map.json"),
        **FAST_RETRIES,  # type: ignore[arg-type]
        **extra,
    )


@pytest.fixture
def client(tmp_path: Path, any_store_url: str) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, any_store_url)
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def subscribe(client: TestClient, uri: str, n: int = 1, **extra: Any) -> str:
    notification = {"endpoint": {"uri": uri, "accept": "application/json"}}
    notification.update(extra.pop("notification", {}))
    body: dict[str, Any] = {
        "id": f"urn:ngsi-ld:Subscription:ops-{n}",
        "type": "Subscription",
        "entities": [{"type": "Streetlight"}],
        "notification": notification,
        "@context": CITY_URL,
    }
    body.update(extra)
    response = client.post(SUBS, json=body, headers=LD)
    assert response.status_code == 201, response.text
    return body["id"]


def light(n: int = 1, **attrs: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": f"urn:ngsi-ld:Streetlight:{n}",
        "type": "Streetlight",
        "powerState": {"type": "Property", "value": "on"},
        "@context": CITY_URL,
    }
    body.update({k: {"type": "Property", "value": v} for k, v in attrs.items()})
    return body


def create_light(client: TestClient, n: int = 1, **attrs: Any) -> None:
    response = client.post(f"{API}/entities", json=light(n, **attrs), headers=LD)
    assert response.status_code == 201, response.text


def patch_attrs(client: TestClient, n: int, **attrs: Any) -> None:
    response = client.patch(
        f"{API}/entities/urn:ngsi-ld:Streetlight:{n}/attrs",
        json={k: {"type": "Property", "value": v} for k, v in attrs.items()},
        headers={"Link": CITY_LINK},
    )
    assert response.status_code == 204, response.text


def subscription(client: TestClient, sub_id: str) -> dict[str, Any]:
    return client.get(f"{SUBS}/{sub_id}", headers={"Link": CITY_LINK}).json()


# -- payloads ----------------------------------------------------------------------------------------


def test_every_trigger_yields_a_clause_5_3_1_notification(client: TestClient, receiver: Receiver) -> None:
    sub_id = subscribe(client, receiver.url, notificationTrigger=ALL_TRIGGERS)
    create_light(client, 1)
    headers, body = (receiver.wait_for(1), receiver.received[0])[1]
    assert set(body) == {"id", "type", "subscriptionId", "notifiedAt", "data"}
    assert body["id"].startswith("urn:ngsi-ld:Notification:")
    assert body["type"] == "Notification"
    assert body["subscriptionId"] == sub_id
    assert body["notifiedAt"].endswith("Z")
    assert body["data"] == [
        {
            "id": "urn:ngsi-ld:Streetlight:1",
            "type": "Streetlight",
            "powerState": {"type": "Property", "value": "on"},
        }
    ]
    assert headers["content-type"] == "application/json"
    assert f"<{CITY_URL}>" in headers["link"]

    patch_attrs(client, 1, powerState="off")
    assert receiver.wait_for(2)[1]["data"][0]["powerState"]["value"] == "off"
    response = client.delete(
        f"{API}/entities/urn:ngsi-ld:Streetlight:1/attrs/powerState", headers={"Link": CITY_LINK}
    )
    assert response.status_code == 204
    deleted_attr = receiver.wait_for(3)[2]["data"][0]["powerState"]
    # The NGSI-LD Null of the attribute's kind; its deletedAt is a system attribute (ETSI 046_22_04).
    assert deleted_attr == {"type": "Property", "value": "urn:ngsi-ld:null"}
    assert client.delete(f"{API}/entities/urn:ngsi-ld:Streetlight:1").status_code == 204
    gone = receiver.wait_for(4)[3]["data"][0]
    assert gone["id"] == "urn:ngsi-ld:Streetlight:1" and gone["type"] == "Streetlight"
    assert "deletedAt" in gone
    time.sleep(0.3)
    assert len(receiver.bodies) == 4


def test_default_triggers_skip_deletions_and_watched_attributes_narrow(
    client: TestClient, receiver: Receiver
) -> None:
    subscribe(client, receiver.url, watchedAttributes=["illuminanceLevel"])
    create_light(client, 1)  # no watched attribute: attributeCreated does not fire
    create_light(client, 2, illuminanceLevel=10)
    patch_attrs(client, 1, powerState="off")  # not watched
    patch_attrs(client, 2, illuminanceLevel=20)
    assert client.delete(f"{API}/entities/urn:ngsi-ld:Streetlight:2").status_code == 204
    receiver.wait_for_entities(2)
    time.sleep(0.3)
    values = [e["illuminanceLevel"]["value"] for e in receiver.entities()]
    assert values == [10, 20]


def test_key_values_attributes_filter_ld_json_and_receiver_info(
    client: TestClient, receiver: Receiver
) -> None:
    subscribe(
        client,
        receiver.url,
        notification={
            "attributes": ["illuminanceLevel"],
            "format": "keyValues",
            "endpoint": {
                "uri": receiver.url,
                "accept": "application/ld+json",
                "receiverInfo": [{"key": "X-Auth-Token", "value": "s3cret"}],
            },
        },
    )
    create_light(client, 1, illuminanceLevel=42)
    headers, body = (receiver.wait_for(1), receiver.received[0])[1]
    assert body["@context"] == CITY_URL
    # application/ld+json: each entity of the data carries the @context too (ETSI 046_14).
    assert body["data"] == [
        {
            "id": "urn:ngsi-ld:Streetlight:1",
            "type": "Streetlight",
            "illuminanceLevel": 42,
            "@context": CITY_URL,
        }
    ]
    assert headers["content-type"] == "application/ld+json"
    assert "link" not in headers
    assert headers["x-auth-token"] == "s3cret"


def test_concise_format_and_sys_attrs(client: TestClient, receiver: Receiver) -> None:
    subscribe(client, receiver.url, notification={"format": "concise", "sysAttrs": True})
    create_light(client, 1)
    item = receiver.wait_for(1)[0]["data"][0]
    assert item["powerState"]["value"] == "on"
    assert "createdAt" in item["powerState"] and "createdAt" in item


def test_q_filter(client: TestClient, receiver: Receiver) -> None:
    subscribe(client, receiver.url, q="illuminanceLevel>50")
    create_light(client, 1, illuminanceLevel=10)
    create_light(client, 2, illuminanceLevel=80)
    patch_attrs(client, 1, illuminanceLevel=90)
    receiver.wait_for_entities(2)
    time.sleep(0.3)
    assert [(e["id"], e["illuminanceLevel"]["value"]) for e in receiver.entities()] == [
        ("urn:ngsi-ld:Streetlight:2", 80),
        ("urn:ngsi-ld:Streetlight:1", 90),
    ]


def test_show_changes_carries_the_previous_value(client: TestClient, receiver: Receiver) -> None:
    subscribe(client, receiver.url, notification={"showChanges": True})
    create_light(client, 1)
    patch_attrs(client, 1, powerState="off")
    entities = receiver.wait_for_entities(2)
    assert entities[-1]["powerState"] == {"type": "Property", "value": "off", "previousValue": "on"}


def test_tenant_header(client: TestClient, receiver: Receiver) -> None:
    tenant = {"NGSILD-Tenant": "lyon"}
    body = {
        "type": "Subscription",
        "entities": [{"type": "Streetlight"}],
        "notification": {"endpoint": {"uri": receiver.url}},
        "@context": CITY_URL,
    }
    assert client.post(SUBS, json=body, headers={**LD, **tenant}).status_code == 201
    assert client.post(f"{API}/entities", json=light(1), headers={**LD, **tenant}).status_code == 201
    create_light(client, 2)  # default tenant: not notified
    receiver.wait_for(1)
    time.sleep(0.3)
    assert receiver.received[0][0]["ngsild-tenant"] == "lyon"
    assert [e["id"] for e in receiver.entities()] == ["urn:ngsi-ld:Streetlight:1"]


# -- throttling, periodic -----------------------------------------------------------------------------


def test_throttling_spaces_notifications_and_loses_nothing(client: TestClient, receiver: Receiver) -> None:
    subscribe(client, receiver.url, throttling=1)
    create_light(client, 1)
    started = time.monotonic()
    patch_attrs(client, 1, powerState="off")
    patch_attrs(client, 1, powerState="dim")
    receiver.wait_for(3, timeout=10)
    assert time.monotonic() - started >= 1.8  # three sends, at least a second apart
    assert [e["powerState"]["value"] for e in receiver.entities()] == ["on", "off", "dim"]


def test_time_interval_sends_the_current_state_periodically(client: TestClient, receiver: Receiver) -> None:
    create_light(client, 1)
    subscribe(client, receiver.url, timeInterval=1)
    bodies = receiver.wait_for(2, timeout=6)
    assert all(b["data"][0]["id"] == "urn:ngsi-ld:Streetlight:1" for b in bodies)
    patch_attrs(client, 1, powerState="off")
    wait_until(lambda: receiver.bodies[-1]["data"][0]["powerState"]["value"] == "off", 5)


def test_a_periodic_subscription_reads_through_the_type_index(client: TestClient, receiver: Receiver) -> None:
    """Was: every round scanned the whole tenant in Python, for each periodic subscription (six
    on a type that matched nothing saturated a core over 20,000 entities). Now the store is asked
    for the subscription's types, and finds nothing for a type nothing has."""
    for n in range(1, 4):
        create_light(client, n)
    store = client.app.state.store
    asked: list[Any] = []
    original = store.query_entities

    async def spy(tenant: str, query: Any) -> Any:
        result = await original(tenant, query)
        asked.append((query.types, len(result.entities)))
        return result

    store.query_entities = spy
    try:
        body = {
            "type": "Subscription",
            "entities": [{"type": "https://example.org/Nothing"}],
            "timeInterval": 1,
            "notification": {"endpoint": {"uri": receiver.url}},
        }
        assert client.post(SUBS, json=body).status_code == 201
        wait_until(lambda: asked, 6)
        assert asked[0] == (["https://example.org/Nothing"], 0)
        assert receiver.bodies == []
    finally:
        store.query_entities = original


# -- failures and retries -----------------------------------------------------------------------------


def test_retries_after_500_connection_close_and_hang(client: TestClient, receiver: Receiver) -> None:
    receiver.script = ["500", "close", "hang"]
    receiver.hang_seconds = 1.0
    sub_id = subscribe(client, receiver.url, notification={"endpoint": {"uri": receiver.url, "timeout": 300}})
    create_light(client, 1)
    receiver.wait_for(1, timeout=10)
    assert receiver.attempts == 4
    assert [e["id"] for e in receiver.entities()] == ["urn:ngsi-ld:Streetlight:1"]
    notification = wait_until(
        lambda: (n := subscription(client, sub_id)["notification"]).get("timesSent") == 4 and n, 5
    )
    assert notification["timesFailed"] == 3
    assert notification["status"] == "ok"
    assert notification["lastSuccess"] >= notification["lastFailure"]


def test_a_subscriber_reading_its_subscription_on_receipt_sees_that_delivery(
    client: TestClient, receiver: Receiver
) -> None:
    # ETSI 046_11/046_12 read the subscription as soon as the notification arrives, racing the
    # write of its delivery state; the read waits for a delivery under way. "slow": the
    # subscriber takes the notification and answers only 0.3 s later.
    receiver.script = ["slow"]
    receiver.hang_seconds = 0.3
    sub_id = subscribe(client, receiver.url)
    create_light(client, 1)
    receiver.wait_for(1)
    notification = subscription(client, sub_id)["notification"]
    assert notification["timesSent"] == 1
    assert notification["status"] == "ok"
    assert "lastSuccess" in notification


def test_dead_subscriber_is_marked_failed_and_slows_neither_writes_nor_others(
    client: TestClient, receiver: Receiver
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/notify"
    hanging = Receiver(hang_seconds=5)
    hanging.script = ["hang"] * 100
    try:
        dead_id = subscribe(client, dead, n=1)
        subscribe(client, hanging.url, n=2, notification={"endpoint": {"uri": hanging.url, "timeout": 4000}})
        subscribe(client, receiver.url, n=3)
        started = time.monotonic()
        for n in range(20):
            create_light(client, n)
        assert time.monotonic() - started < 3
        receiver.wait_for(1, timeout=3)
        wait_until(lambda: len(receiver.entities()) == 20, 5)
        notification = wait_until(
            lambda: (n := subscription(client, dead_id)["notification"]).get("timesFailed", 0) >= 2 and n, 5
        )
        assert notification["status"] == "failed"
        assert "lastFailure" in notification and "lastSuccess" not in notification
    finally:
        hanging.close()


def test_undelivered_rows_survive_a_restart(tmp_path: Path, any_store_url: str) -> None:
    port = free_port()
    uri = f"http://127.0.0.1:{port}/notify"
    settings = make_settings(tmp_path, any_store_url)
    with TestClient(create_app(settings)) as first:
        subscribe(first, uri)
        for n in range(5):
            create_light(first, n)
    receiver = Receiver(port)
    try:
        with TestClient(create_app(settings)):
            wait_until(lambda: len(receiver.entities()) >= 5, 10)
        assert sorted(e["id"] for e in receiver.entities()) == [
            f"urn:ngsi-ld:Streetlight:{n}" for n in range(5)
        ]
    finally:
        receiver.close()


def test_deleting_a_subscription_drops_what_it_still_owed(client: TestClient) -> None:
    dead = f"http://127.0.0.1:{free_port()}/notify"
    sub_id = subscribe(client, dead)
    create_light(client, 1)
    store = client.app.state.store  # type: ignore[attr-defined]
    assert client.delete(f"{SUBS}/{sub_id}").status_code == 204
    assert client.portal.call(store.outbox_subscriptions) == []  # type: ignore[union-attr]


def test_notifications_are_ordered_per_subscription(client: TestClient, receiver: Receiver) -> None:
    subscribe(client, receiver.url)
    create_light(client, 1, illuminanceLevel=0)
    for value in range(1, 30):
        patch_attrs(client, 1, illuminanceLevel=value)
    wait_until(lambda: len(receiver.entities()) == 30, 10)
    assert [e["illuminanceLevel"]["value"] for e in receiver.entities()] == list(range(30))


# -- MQTT -----------------------------------------------------------------------------------------------


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path)  # fails, never skips, when mosquitto is missing
    yield broker
    broker.close()


@pytest.mark.parametrize(("version", "protocol"), [("mqtt3.1.1", 4), ("mqtt5.0", 5)])
def test_mqtt_delivery(client: TestClient, mosquitto: Mosquitto, version: str, protocol: int) -> None:
    topic = "city/lights"
    uri = f"mqtt://127.0.0.1:{mosquitto.port}/{topic}"
    with mqtt_listener(mosquitto.port, topic, protocol) as messages:
        subscribe(
            client,
            uri,
            notification={
                "format": "keyValues",
                "endpoint": {
                    "uri": uri,
                    "accept": "application/json",
                    "notifierInfo": [
                        {"key": "MQTT-Version", "value": version},
                        {"key": "MQTT-QoS", "value": "1"},
                    ],
                    "receiverInfo": [{"key": "X-Team", "value": "maintenance"}],
                },
            },
        )
        create_light(client, 7)
        wait_until(lambda: messages, 10)
    message = messages[0]
    assert message["metadata"]["Content-Type"] == "application/json"
    assert message["metadata"]["X-Team"] == "maintenance"
    assert CITY_URL in message["metadata"]["Link"]
    body = message["body"]
    assert body["type"] == "Notification"
    assert body["data"] == [{"id": "urn:ngsi-ld:Streetlight:7", "type": "Streetlight", "powerState": "on"}]


def test_mqtt_broker_down_then_up_is_retried(client: TestClient, tmp_path: Path) -> None:
    # A durable session (QoS 1) on a persistent broker: what is published while the subscriber
    # is away reaches it on reconnection, so the test does not race the dispatcher's retries.
    broker = Mosquitto(tmp_path)
    port = broker.port
    with mqtt_listener(port, "city/lights", 4, durable="maintenance"):
        pass
    broker.close()
    uri = f"mqtt://127.0.0.1:{port}/city/lights"
    subscribe(
        client,
        uri,
        notification={"endpoint": {"uri": uri, "notifierInfo": [{"key": "MQTT-QoS", "value": "1"}]}},
    )
    create_light(client, 1)
    time.sleep(0.5)  # a few refused attempts
    broker = Mosquitto(tmp_path, port)
    try:
        time.sleep(1.0)
        with mqtt_listener(port, "city/lights", 4, durable="maintenance") as messages:
            wait_until(lambda: messages, 10)
        assert messages[0]["body"]["data"][0]["id"] == "urn:ngsi-ld:Streetlight:1"
    finally:
        broker.close()


def test_implicit_context_link_uses_the_public_url(tmp_path: Path, receiver: Receiver) -> None:
    """Regression: a node bound to 0.0.0.0 behind --public-url linked the implicit @context of its
    notifications to http://0.0.0.0:port, which subscribers cannot reach."""
    settings = make_settings(
        tmp_path,
        host="0.0.0.0",
        auth="none",
        public_url="http://node.example:1026",
        outbound_allow="127.0.0.1/32",
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as node:
        subscribe(node, receiver.url, **{"@context": [CITY_URL, CORE_CONTEXT_URL]})
        create_light(node, 1)
        receiver.wait_for(1)
    headers = receiver.received[0][0]
    assert headers["link"].startswith("<http://node.example:1026/ngsi-ld/v1/jsonldContexts/"), headers
    assert "0.0.0.0" not in headers["link"]
