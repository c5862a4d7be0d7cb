"""HTTP push transfers end to end: two nodes on loopback plus a loopback HTTP receiver standing
for RIKEN's endpoint. Tübingen's node subscribes the receiver to the dataset (delivered by the
notification dispatcher); only the agreed data arrives, each notification counts against the
agreement's access count, a used-up agreement ends the transfer with a reason, and after the
transfer ends nothing more arrives."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from dsp_helpers import free_port, serve, start_negotiation, wait_for
from test_dsp_e2e import TwoNodes, two_nodes  # noqa: F401  (the fixture)

PUSH_PREFIX = "urn:kizuna:dsp-push:"


def policy(count: int) -> dict[str, Any]:
    return {
        "permission": [
            {
                "action": "use",
                "constraint": [
                    {"leftOperand": "purpose", "operator": "eq", "rightOperand": "research"},
                    {"leftOperand": "spatial", "operator": "isAnyOf", "rightOperand": ["EU", "JP"]},
                    {"leftOperand": "count", "operator": "lteq", "rightOperand": str(count)},
                ],
            }
        ]
    }


class Receiver:
    """RIKEN's endpoint for pushed data: records every notification it is sent."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.app = Starlette(routes=[Route("/notify", self.receive, methods=["POST"])])

    async def receive(self, request: Request) -> Response:
        body = await request.json()
        with self.lock:
            self.notifications.append(body)
        return Response(status_code=204)

    def entities(self) -> list[dict[str, Any]]:
        with self.lock:
            return [e for n in self.notifications for e in n["data"]]

    def count(self) -> int:
        with self.lock:
            return len(self.notifications)


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    r = Receiver()
    with serve(r.app, free_port()) as url:
        yield r, f"{url}/notify"


def cohort(i: int, biomarker: float) -> dict[str, Any]:
    return {
        "id": f"urn:ngsi-ld:CohortRecord:{i}",
        "type": "CohortRecord",
        "ageBand": {"type": "Property", "value": "40-49"},
        "biomarker": {"type": "Property", "value": biomarker},
        "pseudonym": {"type": "Property", "value": f"P-{i}"},
    }


def set_biomarker(nodes: TwoNodes, i: int, value: float) -> None:
    provider, http = nodes.provider, nodes.http
    r = http.patch(
        f"{provider}/ngsi-ld/v1/entities/urn:ngsi-ld:CohortRecord:{i}/attrs",
        json={"biomarker": {"type": "Property", "value": value}},
    )
    assert r.status_code == 204, r.text


def agreement_for(nodes: TwoNodes, dataset: dict[str, Any]) -> str:
    provider, consumer, http, get_json = nodes.provider, nodes.consumer, nodes.http, nodes.get_json
    r = http.post(f"{provider}/management/v1/datasets", json=dataset)
    assert r.status_code == 201, r.text
    offer = {**r.json()["offers"][0], "target": dataset["id"]}
    pid = start_negotiation(http, consumer, provider, offer, "did:web:tuebingen.example")
    state = wait_for(
        lambda: get_json(f"{consumer}/management/v1/negotiations/{pid}"),
        lambda n: n["state"] in ("FINALIZED", "TERMINATED"),
    )
    assert state["state"] == "FINALIZED", state
    return state["agreementId"]


def push(nodes: TwoNodes, agreement_id: str, endpoint: str, **extra: Any) -> str:
    provider, consumer, http = nodes.provider, nodes.consumer, nodes.http
    r = http.post(
        f"{consumer}/management/v1/transfers",
        json={
            "counterPartyAddress": f"{provider}/dsp",
            "agreementId": agreement_id,
            "format": "HttpData-PUSH",
            "endpoint": endpoint,
            **extra,
        },
    )
    assert r.status_code == 201, r.text
    return r.json()["id"]


def provider_transfer(nodes: TwoNodes) -> dict[str, Any]:
    provider, get_json = nodes.provider, nodes.get_json
    (record,) = get_json(f"{provider}/management/v1/transfers")
    return record


def push_subscriptions(nodes: TwoNodes) -> list[str]:
    provider, get_json = nodes.provider, nodes.get_json
    subs = get_json(f"{provider}/ngsi-ld/v1/subscriptions")
    return [s["id"] for s in subs if s["id"].startswith(PUSH_PREFIX)]


def quiet(receiver: Receiver, seen: int, seconds: float = 2.5) -> None:
    """Nothing more arrives for a while (the dispatcher polls every second)."""
    time.sleep(seconds)
    assert receiver.count() == seen, receiver.notifications[seen:]


def test_push_delivers_only_agreed_data_counts_each_notification_and_stops_when_used_up(
    two_nodes: TwoNodes,  # noqa: F811
    receiver,
) -> None:
    provider, consumer = two_nodes.provider, two_nodes.consumer
    http, get_json = two_nodes.http, two_nodes.get_json
    rec, endpoint = receiver
    for i, value in ((1, 1.5), (2, 0.2)):
        assert http.post(f"{provider}/ngsi-ld/v1/entities", json=cohort(i, value)).status_code == 201
    staff = {"id": "urn:ngsi-ld:Staff:1", "type": "Staff", "biomarker": {"type": "Property", "value": 9}}
    assert http.post(f"{provider}/ngsi-ld/v1/entities", json=staff).status_code == 201
    agreement_id = agreement_for(
        two_nodes,
        {
            "id": "urn:tuebingen:dataset:elevated",
            "entityTypes": ["CohortRecord"],
            "attributes": ["ageBand", "biomarker"],
            "q": "biomarker>1",
            "policy": policy(3),
        },
    )
    tid = push(two_nodes, agreement_id, endpoint, purpose="research")
    wait_for(lambda: get_json(f"{consumer}/management/v1/transfers/{tid}"), lambda t: t["state"] == "STARTED")
    (push_id,) = push_subscriptions(two_nodes)
    # The push subscription is the connector's: nobody points it elsewhere or deletes it.
    hijack = {"notification": {"endpoint": {"uri": "http://127.0.0.1:9/elsewhere"}}}
    assert http.patch(f"{provider}/ngsi-ld/v1/subscriptions/{push_id}", json=hijack).status_code == 403
    assert http.delete(f"{provider}/ngsi-ld/v1/subscriptions/{push_id}").status_code == 403

    # Agreed data arrives: a matching record, with the agreed attributes only.
    set_biomarker(two_nodes, 1, 2.5)
    wait_for(rec.count, lambda n: n == 1)
    (first,) = rec.entities()
    assert first["id"] == "urn:ngsi-ld:CohortRecord:1"
    assert first["biomarker"]["value"] == 2.5
    assert "pseudonym" not in first
    # Outside the dataset: another entity type, a record the dataset's q excludes, a withheld
    # attribute alone. None of it arrives (and none of it is counted).
    http.patch(
        f"{provider}/ngsi-ld/v1/entities/urn:ngsi-ld:Staff:1/attrs",
        json={"biomarker": {"type": "Property", "value": 10}},
    )
    set_biomarker(two_nodes, 2, 0.3)
    quiet(rec, 1)
    agreement = get_json(f"{provider}/management/v1/agreements/{agreement_id}")
    assert agreement["accessCount"] == 1

    # Each delivered notification is one access: the third uses the agreement up.
    set_biomarker(two_nodes, 1, 3.5)
    wait_for(rec.count, lambda n: n == 2)
    set_biomarker(two_nodes, 2, 4.5)  # now matches the dataset's q
    wait_for(rec.count, lambda n: n == 3)
    assert [e["id"] for e in rec.entities()][-1] == "urn:ngsi-ld:CohortRecord:2"
    assert all(set(e) <= {"id", "type", "ageBand", "biomarker"} for e in rec.entities())
    ended = wait_for(lambda: provider_transfer(two_nodes), lambda t: t["state"] == "TERMINATED")
    assert "used up after 3 accesses" in ended["reason"][0]
    assert "count" in ended["reason"][0]
    consumer_side = wait_for(
        lambda: get_json(f"{consumer}/management/v1/transfers/{tid}"), lambda t: t["state"] == "TERMINATED"
    )
    assert "used up" in consumer_side["reason"][0]
    assert get_json(f"{provider}/management/v1/agreements/{agreement_id}")["accessCount"] == 3
    assert push_subscriptions(two_nodes) == []

    # After termination nothing more arrives.
    set_biomarker(two_nodes, 1, 5.5)
    quiet(rec, 3)
    # A new push under the used-up agreement is refused with the reason.
    tid2 = push(two_nodes, agreement_id, endpoint, purpose="research")
    refused = wait_for(
        lambda: get_json(f"{consumer}/management/v1/transfers/{tid2}"), lambda t: t["state"] == "TERMINATED"
    )
    assert "count" in refused["reason"][0]
    quiet(rec, 3, 1.5)


def test_push_stops_when_the_consumer_terminates_and_needs_a_declared_purpose(
    two_nodes: TwoNodes,  # noqa: F811
    receiver,
) -> None:
    provider, consumer = two_nodes.provider, two_nodes.consumer
    http, get_json = two_nodes.http, two_nodes.get_json
    rec, endpoint = receiver
    assert http.post(f"{provider}/ngsi-ld/v1/entities", json=cohort(1, 1.5)).status_code == 201
    agreement_id = agreement_for(
        two_nodes,
        {
            "id": "urn:ds:cohort",
            "entityTypes": ["CohortRecord"],
            "attributes": ["biomarker"],
            "policy": policy(100),
        },
    )
    # Without a declared purpose the research-only policy does not allow the push.
    tid = push(two_nodes, agreement_id, endpoint)
    refused = wait_for(
        lambda: get_json(f"{consumer}/management/v1/transfers/{tid}"), lambda t: t["state"] == "TERMINATED"
    )
    assert "purpose" in refused["reason"][0]
    assert push_subscriptions(two_nodes) == []

    tid = push(two_nodes, agreement_id, endpoint, purpose="research")
    wait_for(lambda: get_json(f"{consumer}/management/v1/transfers/{tid}"), lambda t: t["state"] == "STARTED")
    set_biomarker(two_nodes, 1, 2.0)
    wait_for(rec.count, lambda n: n == 1)
    assert rec.entities()[0]["biomarker"]["value"] == 2.0

    # Suspension withdraws the subscription; resumption brings it back.
    r = http.post(f"{consumer}/management/v1/transfers/{tid}/suspend")
    assert r.status_code == 200, r.text
    wait_for(lambda: push_subscriptions(two_nodes), lambda subs: subs == [])
    set_biomarker(two_nodes, 1, 2.5)
    quiet(rec, 1, 2.0)
    r = http.post(f"{consumer}/management/v1/transfers/{tid}/resume")
    assert r.status_code == 200, r.text
    wait_for(lambda: push_subscriptions(two_nodes), lambda subs: len(subs) == 1)
    set_biomarker(two_nodes, 1, 3.0)
    wait_for(rec.count, lambda n: n == 2)

    # The consumer terminates: the subscription goes, nothing more arrives.
    r = http.post(f"{consumer}/management/v1/transfers/{tid}/terminate")
    assert r.status_code == 200, r.text
    assert push_subscriptions(two_nodes) == []
    set_biomarker(two_nodes, 1, 4.0)
    quiet(rec, 2)
    assert get_json(f"{provider}/management/v1/agreements/{agreement_id}")["accessCount"] == 2
