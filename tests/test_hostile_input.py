"""Bad input answers the spec's 400 (or 401 for bad credentials), never 500, and is refused when
it is written rather than at every later use (issue: hostile input). Each case is one that
answered 500 or was accepted and then broke later reads."""

from __future__ import annotations

import time
from typing import Any

import pytest
from starlette.testclient import TestClient

NGSI = "/ngsi-ld/v1"
BAD_REQUEST = "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"


def refused(response: Any, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.text
    problem = response.json()
    assert problem["status"] == status and problem["type"].startswith("https://")
    return problem


@pytest.mark.parametrize(
    "body",
    [
        {"type": "Query", "entities": [{"type": 1}]},
        {"type": "Query", "entities": [1]},
        {"type": "Query", "entities": {"type": "Many"}},
        {"type": "Query", "entities": [{"type": "T"}], "attrs": [1]},
        {"type": "Query", "entities": [{"type": "T", "idPattern": 5}]},
        {"type": "Query", "entities": [{"type": "T", "id": 5}]},
        {"type": "Query", "idPattern": 5},
        {"type": "Query", "entities": [{"type": "T"}], "q": {"x": 1}},
    ],
)
def test_batch_queries_with_ill_typed_members(client: TestClient, body: dict[str, Any]) -> None:
    refused(client.post(f"{NGSI}/entityOperations/query", json=body))


def test_temporal_batch_query_with_ill_typed_attrs(client: TestClient) -> None:
    body = {"type": "Query", "entities": [{"type": "T"}], "attrs": [1]}
    refused(client.post(f"{NGSI}/temporal/entityOperations/query", json=body))


@pytest.mark.parametrize(
    "notification",
    [
        {"format": [], "endpoint": {"uri": "http://127.0.0.1:9/x"}},
        {"endpoint": {"uri": "http://127.0.0.1:9/x", "accept": []}},
        {"join": {}, "endpoint": {"uri": "http://127.0.0.1:9/x"}},
    ],
)
def test_subscriptions_with_unhashable_choices(client: TestClient, notification: dict[str, Any]) -> None:
    body = {"type": "Subscription", "entities": [{"type": "T"}], "notification": notification}
    assert refused(client.post(f"{NGSI}/subscriptions", json=body))["type"] == BAD_REQUEST
    assert client.get(f"{NGSI}/subscriptions").json() == []  # nothing stored


@pytest.mark.parametrize(
    "path",
    [
        "/entities?type=T&offset=9223372036854775808",
        "/subscriptions?offset=99999999999999999999",
        "/csourceSubscriptions?offset=99999999999999999999",
        "/csourceRegistrations?type=T&offset=99999999999999999999",
    ],
)
def test_offsets_past_any_integer_the_stores_hold(client: TestClient, path: str) -> None:
    assert refused(client.get(NGSI + path))["type"] == BAD_REQUEST


def test_deeply_nested_values_are_refused_before_anything_recurses(client: TestClient) -> None:
    value: Any = 1
    for _ in range(280):
        value = {"a": value}
    entity = {"id": "urn:ngsi-ld:T:deep", "type": "T", "p": {"type": "Property", "value": value}}
    assert "64 levels" in refused(client.post(f"{NGSI}/entities", json=entity))["detail"]
    assert client.get(f"{NGSI}/entities/urn:ngsi-ld:T:deep").status_code == 404
    shallow = {**entity, "p": {"type": "Property", "value": {"a": {"b": [{"c": 1}]}}}}
    assert client.post(f"{NGSI}/entities", json=shallow).status_code == 201


@pytest.mark.parametrize(
    "token",
    [
        "W10.e30.AA",  # header []
        "MQ.e30.AA",  # header 1
        "eyJhbGciOiJFZERTQSJ9.eyJpc3MiOltdfQ.AA",  # {"alg":"EdDSA"} {"iss":[]}
        "eyJhbGciOiJFZERTQSJ9.WzFd.AA",  # claims [1]
        "!!.e30.AA",
    ],
)
def test_dsp_tokens_with_bad_headers_or_claims_are_unauthenticated(client: TestClient, token: str) -> None:
    body = {"@context": ["https://w3id.org/dspace/2025/1/context.jsonld"], "@type": "CatalogRequestMessage"}
    response = client.post("/dsp/catalog/request", json=body, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, response.text


def _constraint(left: str, operator: str, right: Any) -> dict[str, Any]:
    return {
        "permission": [
            {
                "action": "use",
                "constraint": [{"leftOperand": left, "operator": operator, "rightOperand": right}],
            }
        ]
    }


@pytest.mark.parametrize(
    "policy",
    [
        {"permission": [{"action": "use", "constraint": 1}]},
        {"permission": [{"action": "use", "duty": 1}]},
        {"permission": [{"action": "use", "constraint": [{"and": 1}]}]},
        [],
        _constraint("count", "lteq", "abc"),
        _constraint("dateTime", "lt", "not a date"),
        _constraint("elapsedTime", "lteq", "two days"),
        _constraint("purpose", "lt", "research"),  # names are not ordered
        _constraint(["count"], "lteq", "3"),
        _constraint("count", {"x": 1}, "3"),
    ],
)
def test_datasets_with_policies_that_cannot_be_evaluated_are_refused_at_creation(
    client: TestClient, policy: Any
) -> None:
    dataset = {"id": "urn:x:cohort", "entityTypes": ["T"], "policy": policy}
    refused(client.post("/management/v1/datasets", json=dataset))
    assert client.get("/management/v1/datasets/urn:x:cohort").status_code == 404
    fine = {**dataset, "policy": _constraint("count", "lteq", "3")}
    assert client.post("/management/v1/datasets", json=fine).status_code == 201


@pytest.mark.parametrize("extra", [{"endpoint": 5}, {"endpoint": "ftp://x/"}, {"purpose": ["r"]}])
def test_transfer_requests_with_ill_typed_members(client: TestClient, extra: dict[str, Any]) -> None:
    body = {
        "counterPartyAddress": "http://127.0.0.1:9/dsp",
        "agreementId": "urn:x:agreement",
        "format": "HttpData-PUSH",
        "endpoint": "http://127.0.0.1:9/inbox",
        **extra,
    }
    refused(client.post("/management/v1/transfers", json=body))
    assert client.get("/management/v1/transfers").json() == []


EVIL = "a*a*a*a*a*a*a*a*a*a*a*a*b"  # exponential for a backtracking engine on "aaa...a"


def test_a_pathological_pattern_runs_in_linear_time(client: TestClient) -> None:
    """With Python's ``re`` each of these ids took seconds and grew exponentially with its
    length; RE2 answers the whole query at once (the bound is generous, the old cost was not)."""
    batch = [
        {"id": f"urn:{'a' * 40}:{n}", "type": "T", "name": {"type": "Property", "value": "a" * 40}}
        for n in range(200)
    ]
    assert client.post(f"{NGSI}/entityOperations/create", json=batch).status_code == 201
    for params in ({"type": "T", "idPattern": EVIL}, {"type": "T", "q": f"name~={EVIL}"}):
        started = time.monotonic()
        answer = client.get(f"{NGSI}/entities", params=params)
        assert answer.status_code == 200 and answer.json() == []
        assert time.monotonic() - started < 2.0
    sub = {
        "type": "Subscription",
        "entities": [{"type": "T", "idPattern": EVIL}],
        "notification": {"endpoint": {"uri": "http://127.0.0.1:9/n"}},
    }
    assert client.post(f"{NGSI}/subscriptions", json=sub).status_code == 201
    started = time.monotonic()
    fragment = {"name": {"type": "Property", "value": "b"}}
    assert client.patch(f"{NGSI}/entities/urn:{'a' * 40}:1/attrs", json=fragment).status_code == 204
    assert time.monotonic() - started < 2.0
