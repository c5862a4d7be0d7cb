"""Several ``kizuna serve`` processes on one PostgreSQL database, as a city runs them behind a load
balancer: what one process commits, every process serves; each notification goes out once;
what processes keep in memory (hosted @contexts, compiled subscriptions) follows changes made
through the others; and PostgreSQL restarting under load costs 503s while it is away, never a
write the node acknowledged."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from notify_helpers import Receiver, wait_until

ENTITIES = "/ngsi-ld/v1/entities"
SUBSCRIPTIONS = "/ngsi-ld/v1/subscriptions"


def streetlight(entity_id: str, status: str = "ok") -> dict[str, Any]:
    return {
        "id": entity_id,
        "type": "Streetlight",
        "status": {"type": "Property", "value": status},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [6.78, 51.43]}},
    }


def subscription(uri: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": "urn:ngsi-ld:Subscription:lights",
        "type": "Subscription",
        "entities": [{"type": "Streetlight"}],
        "notification": {"endpoint": {"uri": uri, "accept": "application/json"}},
        **extra,
    }


def notified(receiver: Receiver) -> list[tuple[str, str]]:
    return [(e["id"], e["status"]["value"]) for e in receiver.entities()]


def exactly_once(receiver: Receiver, expected: list[tuple[str, str]]) -> None:
    """All the expected notifications arrive, and nothing more does in the second after."""
    wait_until(lambda: len(notified(receiver)) >= len(expected), 20)
    time.sleep(1.5)  # a duplicate from the other process would be delivered within its poll (1 s)
    assert sorted(notified(receiver)) == sorted(expected)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_two_processes_on_one_database_are_one_node(
    serve: Callable[..., str], postgres_url: str, receiver: Receiver
) -> None:
    a, b = serve("--store", postgres_url), serve("--store", postgres_url)

    # A write through either is visible through both.
    assert httpx.post(a + ENTITIES, json=streetlight("urn:ngsi-ld:Streetlight:1")).status_code == 201
    assert httpx.post(b + ENTITIES, json=streetlight("urn:ngsi-ld:Streetlight:2")).status_code == 201
    for base in (a, b):
        listed = httpx.get(base + ENTITIES, params={"type": "Streetlight", "options": "keyValues"}).json()
        assert sorted(e["id"] for e in listed) == ["urn:ngsi-ld:Streetlight:1", "urn:ngsi-ld:Streetlight:2"]

    # A subscription made through b is matched by writes through a, and each change is notified
    # once although both processes run a dispatcher.
    sub = subscription(receiver.url, watchedAttributes=["status"])
    assert httpx.post(b + SUBSCRIPTIONS, json=sub).status_code == 201
    expected = []
    for n in range(10):
        entity_id = f"urn:ngsi-ld:Streetlight:{1 + n % 2}"
        patch = {"status": {"type": "Property", "value": f"s{n}"}}
        through = a if n % 2 == 0 else b
        assert httpx.patch(f"{through}{ENTITIES}/{entity_id}/attrs", json=patch).status_code == 204
        expected.append((entity_id, f"s{n}"))
    exactly_once(receiver, expected)

    # Deleted through a: writes through b stop notifying at once.
    assert httpx.delete(f"{a}{SUBSCRIPTIONS}/{sub['id']}").status_code == 204
    patch = {"status": {"type": "Property", "value": "after"}}
    assert httpx.patch(f"{b}{ENTITIES}/urn:ngsi-ld:Streetlight:1/attrs", json=patch).status_code == 204
    time.sleep(1.5)
    assert len(notified(receiver)) == 10

    # A context hosted through a is served by b; deleted through a, b forgets it.
    hosted = httpx.post(
        a + "/ngsi-ld/v1/jsonldContexts", json={"@context": {"lux": "https://example.org/lux"}}
    )
    assert hosted.status_code == 201
    path = hosted.headers["location"]
    wait_until(lambda: httpx.get(b + path).status_code == 200, 5)
    assert httpx.get(b + path).json() == {"@context": {"lux": "https://example.org/lux"}}
    assert httpx.delete(a + path).status_code == 204
    wait_until(lambda: httpx.get(b + path).status_code == 404, 5)


def test_workers_behind_one_port_notify_each_change_once(
    serve: Callable[..., str], postgres_url: str, receiver: Receiver
) -> None:
    base = serve("--store", postgres_url, "--workers", "2")
    assert httpx.post(base + SUBSCRIPTIONS, json=subscription(receiver.url)).status_code == 201
    with httpx.Client(base_url=base) as client:  # a fresh connection may land on either worker
        for n in range(20):
            entity = streetlight(f"urn:ngsi-ld:Streetlight:{n}")
            response = client.post(ENTITIES, json=entity, headers={"Connection": "close"})
            assert response.status_code == 201
    exactly_once(receiver, [(f"urn:ngsi-ld:Streetlight:{n}", "ok") for n in range(20)])


def test_a_delivery_process_notifies_what_the_workers_queue_once(
    serve: Callable[..., str], postgres_url: str, receiver: Receiver
) -> None:
    """``--notify-delivery process``: the workers only queue, one more process delivers."""
    base = serve("--store", postgres_url, "--workers", "2", "--notify-delivery", "process")
    assert httpx.post(base + SUBSCRIPTIONS, json=subscription(receiver.url)).status_code == 201
    with httpx.Client(base_url=base) as client:
        for n in range(20):
            entity = streetlight(f"urn:ngsi-ld:Streetlight:{n}")
            response = client.post(ENTITIES, json=entity, headers={"Connection": "close"})
            assert response.status_code == 201
    exactly_once(receiver, [(f"urn:ngsi-ld:Streetlight:{n}", "ok") for n in range(20)])


def test_postgresql_restarting_under_load_costs_503s_and_no_acknowledged_write(
    serve: Callable[..., str], postgres_cluster: Any, postgres_url: str
) -> None:
    base = serve("--store", postgres_url)
    outcomes: dict[str, int] = {}  # entity id -> status of its create
    problems: list[dict[str, Any]] = []
    failures: list[str] = []
    stop = threading.Event()

    def load(worker: int) -> None:
        with httpx.Client(base_url=base, timeout=30) as client:
            n = 0
            while not stop.is_set():
                entity_id = f"urn:ngsi-ld:Streetlight:w{worker}-{n}"
                n += 1
                try:
                    response = client.post(ENTITIES, json=streetlight(entity_id))
                except httpx.HTTPError as exc:  # the node itself must stay up and answer
                    outcomes[entity_id] = -1
                    failures.append(repr(exc))
                    continue
                outcomes[entity_id] = response.status_code
                if response.status_code == 503:
                    problems.append(response.json())

    def count(status: int) -> int:
        return sum(1 for s in list(outcomes.values()) if s == status)

    threads = [threading.Thread(target=load, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: count(201) >= 50, 30)
        postgres_cluster.stop_server()
        try:
            wait_until(lambda: count(503) >= 20, 30)
        finally:
            postgres_cluster.start_server()
        before = count(201)
        wait_until(lambda: count(201) >= before + 50, 30)  # reconnected by itself
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)

    assert set(outcomes.values()) <= {201, 503}, (sorted(set(outcomes.values())), failures[:3])
    assert all(p["type"].endswith("ServiceUnavailable") and "database" in p["detail"] for p in problems)
    acknowledged = {entity_id for entity_id, status in outcomes.items() if status == 201}
    stored: dict[str, Any] = {}
    with httpx.Client(base_url=base, timeout=30) as client:
        while True:
            page = client.get(
                ENTITIES,
                params={"type": "Streetlight", "options": "keyValues", "limit": 1000, "offset": len(stored)},
            ).json()
            stored.update((e["id"], e) for e in page)
            if len(page) < 1000:
                break
    assert acknowledged <= set(stored), f"lost: {sorted(acknowledged - set(stored))[:5]}"
    point = {"type": "Point", "coordinates": [6.78, 51.43]}
    whole = [
        stored[i] == {"id": i, "type": "Streetlight", "status": "ok", "location": point} for i in acknowledged
    ]
    assert all(whole), "an acknowledged write is there only in part"
