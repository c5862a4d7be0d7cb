"""Subscription management of clause 5.8: a city operations team watching its street lights."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from kizuna.app import create_app
from kizuna.config import Settings

BASE = "/ngsi-ld/v1/subscriptions"
ERR = "https://uri.etsi.org/ngsi-ld/errors/"
CITY_URL = "https://example.org/city/context.jsonld"
CITY = "https://example.org/city#"
CITY_LINK = f'<{CITY_URL}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
LD = {"Content-Type": "application/ld+json"}
CITY_CONTEXT = {
    "@context": {
        "Streetlight": CITY + "Streetlight",
        "StreetlightGroup": CITY + "StreetlightGroup",
        "powerState": CITY + "powerState",
        "illuminanceLevel": CITY + "illuminanceLevel",
    }
}


@pytest.fixture
def client(tmp_path: Path, any_store_url: str) -> Iterator[TestClient]:
    (tmp_path / "city.jsonld").write_text(json.dumps(CITY_CONTEXT))
    (tmp_path / "map.json").write_text(json.dumps({CITY_URL: "city.jsonld"}))
    settings = Settings(
        store=any_store_url,
        context_map=str(tmp_path / "map.json"),
        max_body_bytes=64 * 1024,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def sub(n: int = 1, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": f"urn:ngsi-ld:Subscription:lights-{n}",
        "type": "Subscription",
        "entities": [{"type": "Streetlight"}],
        "watchedAttributes": ["powerState"],
        "notification": {
            "attributes": ["powerState"],
            "format": "keyValues",
            "endpoint": {"uri": "http://ops.example.org/notify", "accept": "application/json"},
        },
        "@context": CITY_URL,
    }
    body.update(extra)
    return {k: v for k, v in body.items() if v is not None}


def create(client: TestClient, body: dict[str, Any], **headers: str) -> str:
    response = client.post(BASE, json=body, headers={**LD, **headers})
    assert response.status_code == 201, response.text
    return response.headers["location"].rsplit("/", 1)[1]


def error(response: Any, status: int, kind: str) -> None:
    assert response.status_code == status, response.text
    problem = response.json()
    assert problem["type"] == ERR + kind
    assert problem["title"]


# -- create and retrieve ---------------------------------------------------------------------------


def test_create_then_retrieve_with_the_creators_context(client: TestClient) -> None:
    response = client.post(BASE, json=sub(), headers=LD)
    assert response.status_code == 201
    assert response.text == ""
    assert response.headers["location"] == f"{BASE}/urn:ngsi-ld:Subscription:lights-1"

    got = client.get(f"{BASE}/urn:ngsi-ld:Subscription:lights-1", headers={"Link": CITY_LINK})
    assert got.status_code == 200
    assert got.headers["content-type"] == "application/json"
    assert CITY_URL in got.headers["link"]
    assert got.json() == {
        "id": "urn:ngsi-ld:Subscription:lights-1",
        "type": "Subscription",
        "entities": [{"type": "Streetlight"}],
        "watchedAttributes": ["powerState"],
        "notification": {
            "attributes": ["powerState"],
            "format": "keyValues",
            "endpoint": {"uri": "http://ops.example.org/notify", "accept": "application/json"},
        },
        "notificationTrigger": ["attributeCreated", "attributeUpdated"],
        "status": "active",
    }


def test_retrieve_without_link_shows_expanded_names(client: TestClient) -> None:
    create(client, sub())
    got = client.get(f"{BASE}/urn:ngsi-ld:Subscription:lights-1").json()
    assert got["entities"] == [{"type": CITY + "Streetlight"}]
    assert got["watchedAttributes"] == [CITY + "powerState"]
    assert got["notification"]["attributes"] == [CITY + "powerState"]


def test_json_ld_retrieve_carries_the_context_in_the_body(client: TestClient) -> None:
    create(client, sub())
    got = client.get(
        f"{BASE}/urn:ngsi-ld:Subscription:lights-1",
        headers={"Link": CITY_LINK, "Accept": "application/ld+json"},
    )
    assert got.headers["content-type"] == "application/ld+json"
    assert got.json()["@context"] == CITY_URL
    assert "link" not in got.headers


def test_create_with_json_and_link_header(client: TestClient) -> None:
    body = sub()
    del body["@context"]
    response = client.post(BASE, json=body, headers={"Link": CITY_LINK})
    assert response.status_code == 201
    got = client.get(f"{BASE}/urn:ngsi-ld:Subscription:lights-1").json()
    assert got["entities"] == [{"type": CITY + "Streetlight"}]


def test_generated_id_and_sys_attrs(client: TestClient) -> None:
    sub_id = create(client, sub(id=None))
    assert sub_id.startswith("urn:ngsi-ld:Subscription:")
    got = client.get(f"{BASE}/{sub_id}", params={"options": "sysAttrs"}).json()
    assert got["createdAt"].endswith("Z") and got["modifiedAt"].endswith("Z")
    assert "createdAt" not in client.get(f"{BASE}/{sub_id}").json()


def test_type_selection_entity_selectors_and_query_members_round_trip(client: TestClient) -> None:
    body = sub(
        entities=[
            {"type": "(Streetlight|StreetlightGroup)", "idPattern": "^urn:ngsi-ld:Streetlight:.*"},
            {"type": "Streetlight", "id": "urn:ngsi-ld:Streetlight:1"},
        ],
        q='powerState=="on"',
        scopeQ="/Duisburg/#",
        geoQ={"geometry": "Point", "coordinates": [6.76, 51.43], "georel": "near;maxDistance==500"},
        expiresAt="2999-01-01T00:00:00Z",
        throttling=5,
        lang="de",
        notificationTrigger=["entityCreated", "attributeUpdated"],
        datasetId=["urn:ngsi-ld:Dataset:a"],
        subscriptionName="lights",
        description="all the lights",
    )
    body["notification"]["endpoint"]["receiverInfo"] = [{"key": "X-Team", "value": "ops"}]
    body["notification"]["showChanges"] = True
    body["notification"]["sysAttrs"] = False
    create(client, body)
    got = client.get(f"{BASE}/urn:ngsi-ld:Subscription:lights-1", headers={"Link": CITY_LINK}).json()
    assert got["entities"] == body["entities"]
    for name in (
        "q",
        "scopeQ",
        "geoQ",
        "expiresAt",
        "throttling",
        "lang",
        "notificationTrigger",
        "datasetId",
    ):
        assert got[name] == body[name], name
    assert got["notification"]["endpoint"]["receiverInfo"] == [{"key": "X-Team", "value": "ops"}]
    assert got["status"] == "active"


def test_time_interval_subscription(client: TestClient) -> None:
    create(client, sub(watchedAttributes=None, timeInterval=5))
    assert client.get(f"{BASE}/urn:ngsi-ld:Subscription:lights-1").json()["timeInterval"] == 5


def test_inactive_subscription_is_paused(client: TestClient) -> None:
    create(client, sub(isActive=False))
    got = client.get(f"{BASE}/urn:ngsi-ld:Subscription:lights-1").json()
    assert got["isActive"] is False
    assert got["status"] == "paused"


def test_duplicate_id_is_409(client: TestClient) -> None:
    create(client, sub())
    error(client.post(BASE, json=sub(), headers=LD), 409, "AlreadyExists")


# -- implicitly created contexts -------------------------------------------------------------------


def test_array_context_registers_an_implicit_context(client: TestClient) -> None:
    context = [CITY_URL, {"extra": "https://example.org/extra"}]
    create(client, sub(**{"@context": context}))
    got = client.get(f"{BASE}/urn:ngsi-ld:Subscription:lights-1").json()
    served = client.get(got["jsonldContext"])
    assert served.json() == {"@context": context}
    details = client.get(got["jsonldContext"], params={"details": "true"}).json()
    assert details["kind"] == "ImplicitlyCreated"
    # The URLs it names are cached, and it is no hosted context.
    cached = client.get("/ngsi-ld/v1/jsonldContexts", params={"kind": "Cached"}).json()
    assert CITY_URL in cached
    assert client.get("/ngsi-ld/v1/jsonldContexts", params={"kind": "Hosted"}).json() == []


def test_single_url_context_registers_nothing(client: TestClient) -> None:
    create(client, sub())
    assert client.get("/ngsi-ld/v1/jsonldContexts", params={"kind": "ImplicitlyCreated"}).json() == []
    assert "jsonldContext" not in client.get(f"{BASE}/urn:ngsi-ld:Subscription:lights-1").json()


def test_user_jsonld_context_is_checked_and_kept(client: TestClient) -> None:
    create(client, sub(jsonldContext=CITY_URL))
    assert client.get(f"{BASE}/urn:ngsi-ld:Subscription:lights-1").json()["jsonldContext"] == CITY_URL
    error(client.post(BASE, json=sub(2, jsonldContext="unknownContext"), headers=LD), 400, "BadRequestData")
    unavailable = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-non-existing.jsonld"
    response = client.post(BASE, json=sub(3, jsonldContext=unavailable), headers=LD)
    error(response, 503, "LdContextNotAvailable")


def test_unavailable_request_context_is_503(client: TestClient) -> None:
    body = sub(**{"@context": "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-non-existing.jsonld"})
    error(client.post(BASE, json=body, headers=LD), 503, "LdContextNotAvailable")


# -- validation ------------------------------------------------------------------------------------


def _without_notification_member(name: str) -> dict[str, Any]:
    body = sub()
    del body["notification"][name]
    return body


def _notification(**members: Any) -> dict[str, Any]:
    body = sub()
    body["notification"].update(members)
    return {k: v for k, v in body.items()}


def _endpoint(**members: Any) -> dict[str, Any]:
    body = sub()
    body["notification"]["endpoint"].update(members)
    return body


INVALID = {
    "empty": {"@context": CITY_URL},
    "wrong type": sub(type="Entity"),
    "missing type": {k: v for k, v in sub().items() if k != "type"},
    "id not a URI": sub(id="invalidId"),
    "empty id": sub(id=""),
    "no entities nor watchedAttributes": sub(entities=None, watchedAttributes=None),
    "entities not an array": sub(entities={"type": "Streetlight"}),
    "empty entities": sub(entities=[]),
    "selector without type": sub(entities=[{"id": "urn:ngsi-ld:Streetlight:1"}]),
    "selector id not a URI": sub(entities=[{"type": "Streetlight", "id": "lamp"}]),
    "selector bad idPattern": sub(entities=[{"type": "Streetlight", "idPattern": "(["}]),
    "selector bad type expression": sub(entities=[{"type": "(Streetlight|"}]),
    "empty watchedAttributes": sub(watchedAttributes=[]),
    "watchedAttributes not names": sub(watchedAttributes=[1]),
    "unknown trigger": sub(notificationTrigger=["entityRenamed"]),
    "bad q": sub(q="powerState==="),
    "bad scopeQ": sub(scopeQ="Duisburg"),
    "bad geoQ georel": sub(geoQ={"geometry": "Point", "coordinates": [1, 2], "georel": "nearby"}),
    "geoQ missing coordinates": sub(geoQ={"geometry": "Point", "georel": "intersects"}),
    "timeInterval with watchedAttributes": sub(timeInterval=5),
    "timeInterval with throttling": sub(watchedAttributes=None, timeInterval=10, throttling=30),
    "negative timeInterval": sub(watchedAttributes=None, timeInterval=-1),
    "negative throttling": sub(throttling=-30),
    "zero throttling": sub(throttling=0),
    "expiresAt not a date": sub(expiresAt="tomorrow"),
    "expiresAt in the past": sub(expiresAt="2020-08-01T22:07:00Z"),
    "isActive not boolean": sub(isActive="yes"),
    "unknown member": sub(colour="red"),
    "no notification": sub(notification=None),
    "notification not an object": sub(notification="http://ops.example.org"),
    "no endpoint": _without_notification_member("endpoint"),
    "unknown format": _notification(format="xml"),
    "showChanges not boolean": _notification(showChanges="yes"),
    "sysAttrs not boolean": _notification(sysAttrs=1),
    "empty attributes": _notification(attributes=[]),
    "pick and omit same member": _notification(attributes=None, pick=["id"], omit=["id"]),
    "pick and attributes": _notification(pick=["id"]),
    "omit and attributes": _notification(omit=["id"]),
    "endpoint without uri": _endpoint(uri=None),
    "endpoint uri relative": _endpoint(uri="/notify"),
    "endpoint uri ftp": _endpoint(uri="ftp://ops.example.org/notify"),
    "endpoint accept xml": _endpoint(accept="application/xml"),
    "receiverInfo not key/value": _endpoint(receiverInfo=[{"name": "X"}]),
    "notifierInfo not a list": _endpoint(notifierInfo={"key": "a", "value": "b"}),
    "datasetId not a URI": sub(datasetId=["french"]),
}


@pytest.mark.parametrize("body", INVALID.values(), ids=INVALID.keys())
def test_invalid_subscriptions_are_bad_request_data(client: TestClient, body: dict[str, Any]) -> None:
    if "notification" in body and isinstance(body["notification"], dict):
        body["notification"] = {k: v for k, v in body["notification"].items() if v is not None}
        endpoint = body["notification"].get("endpoint")
        if isinstance(endpoint, dict):
            body["notification"]["endpoint"] = {k: v for k, v in endpoint.items() if v is not None}
    error(client.post(BASE, json=body, headers=LD), 400, "BadRequestData")
    assert client.get(BASE).json() == []


def test_malformed_json_is_invalid_request(client: TestClient) -> None:
    response = client.post(BASE, content=b'{"id": "urn:x:1",, }', headers=LD)
    error(response, 400, "InvalidRequest")


def test_unknown_parameters_are_invalid_request(client: TestClient) -> None:
    params = {"invalidParams": "invalidValue"}
    error(client.post(BASE, params=params, content=b'"text"', headers=LD), 400, "InvalidRequest")
    error(client.get(BASE, params=params), 400, "InvalidRequest")
    create(client, sub())
    one = f"{BASE}/urn:ngsi-ld:Subscription:lights-1"
    error(client.get(one, params=params), 400, "InvalidRequest")
    error(client.patch(one, params=params, json={"isActive": False}), 400, "InvalidRequest")
    error(client.delete(one, params=params), 400, "InvalidRequest")


def test_media_types(client: TestClient) -> None:
    unknown = f"{BASE}/urn:ngsi-ld:Subscription:unknown"
    xml = {"Content-Type": "application/xml"}
    error(client.post(BASE, content=b"<sub/>", headers=xml), 415, "UnsupportedMediaType")
    error(client.patch(unknown, content=b"<sub/>", headers=xml), 415, "UnsupportedMediaType")
    assert client.get(unknown, headers={"Accept": "application/xml"}).status_code == 406
    assert client.get(unknown, headers={"Accept": "application/geo+json"}).status_code == 406
    assert client.get(BASE, headers={"Accept": "application/geo+json"}).status_code == 406
    # */* is JSON
    create(client, sub())
    got = client.get(f"{BASE}/urn:ngsi-ld:Subscription:lights-1", headers={"Accept": "*/*"})
    assert got.headers["content-type"] == "application/json"
    assert got.headers["link"]


def test_unknown_and_invalid_ids(client: TestClient) -> None:
    unknown = f"{BASE}/urn:ngsi-ld:Subscription:unknown"
    error(client.get(unknown), 404, "ResourceNotFound")
    error(client.delete(unknown), 404, "ResourceNotFound")
    error(client.patch(unknown, json={"type": "Subscription", "isActive": False}), 404, "ResourceNotFound")
    error(client.get(f"{BASE}/InvalidUri"), 400, "BadRequestData")
    error(client.delete(f"{BASE}/InvalidUri"), 400, "BadRequestData")
    error(client.patch(f"{BASE}/InvalidUri", json={"isActive": False}), 400, "BadRequestData")
    assert client.patch(f"{BASE}/", json={"isActive": False}).status_code == 405
    assert client.delete(f"{BASE}/").status_code == 405


# -- list ------------------------------------------------------------------------------------------


def test_list_with_pagination_and_count(client: TestClient) -> None:
    for n in range(1, 4):
        create(client, sub(n))
    everything = client.get(BASE, headers={"Link": CITY_LINK})
    assert everything.status_code == 200
    assert [s["id"] for s in everything.json()] == [f"urn:ngsi-ld:Subscription:lights-{n}" for n in (1, 2, 3)]
    assert everything.json()[0]["entities"] == [{"type": "Streetlight"}]

    page = client.get(
        BASE, params={"limit": 1, "offset": 1, "count": "true"}, headers={"Accept": "application/ld+json"}
    )
    assert [s["id"] for s in page.json()] == ["urn:ngsi-ld:Subscription:lights-2"]
    assert page.headers["ngsild-results-count"] == "3"
    assert sorted(page.headers["link"].replace(" ", "").split(",")) == [
        f'<{BASE}?count=true&limit=1&offset=0>;rel="prev";type="application/ld+json"',
        f'<{BASE}?count=true&limit=1&offset=2>;rel="next";type="application/ld+json"',
    ]
    last = client.get(BASE, params={"limit": 1, "offset": 2}, headers={"Accept": "application/ld+json"})
    assert last.headers["link"] == f'<{BASE}?limit=1&offset=1>;rel="prev";type="application/ld+json"'
    assert all(s["@context"] for s in last.json())

    only_count = client.get(BASE, params={"limit": 0, "count": "true"})
    assert only_count.json() == [] and only_count.headers["ngsild-results-count"] == "3"


def test_options_count_counts_as_count_true(client: TestClient) -> None:
    """FiLiP lists with ``options=count&count=true``, as Orion-LD accepts; options=count alone
    counts too."""
    for n in range(1, 3):
        create(client, sub(n))
    for params in ({"options": "count", "limit": 1000, "count": "true"}, {"options": "count"}):
        answer = client.get(BASE, params=params)
        assert answer.status_code == 200, answer.text
        assert answer.headers["ngsild-results-count"] == "2"
    error(client.get(BASE, params={"options": "counting"}), 400, "InvalidRequest")
    error(client.get(BASE, params={"limit": 0}), 400, "BadRequestData")
    error(client.get(BASE, params={"limit": "many"}), 400, "BadRequestData")
    error(client.get(BASE, params={"limit": 1001}), 400, "BadRequestData")


# -- update ----------------------------------------------------------------------------------------


def test_patch_replaces_members_and_expands_with_the_fragment_context(client: TestClient) -> None:
    create(client, sub())
    one = f"{BASE}/urn:ngsi-ld:Subscription:lights-1"
    fragment = {
        "type": "Subscription",
        "entities": [{"type": "StreetlightGroup"}],
        "notification": {"format": "normalized", "endpoint": {"uri": "https://other.example.org/n"}},
    }
    response = client.patch(one, json=fragment, headers={"Link": CITY_LINK})
    assert response.status_code == 204 and response.text == ""
    got = client.get(one, headers={"Link": CITY_LINK}).json()
    assert got["entities"] == [{"type": "StreetlightGroup"}]
    # application/json replaces the whole notification member (clause 5.8.2)
    assert got["notification"] == {"format": "normalized", "endpoint": {"uri": "https://other.example.org/n"}}
    assert got["watchedAttributes"] == ["powerState"]


def test_merge_patch_merges_the_notification(client: TestClient) -> None:
    create(client, sub())
    one = f"{BASE}/urn:ngsi-ld:Subscription:lights-1"
    fragment = {"type": "Subscription", "notification": {"format": "concise", "endpoint": {"accept": None}}}
    response = client.patch(
        one, json=fragment, headers={"Content-Type": "application/merge-patch+json", "Link": CITY_LINK}
    )
    assert response.status_code == 204, response.text
    got = client.get(one, headers={"Link": CITY_LINK}).json()
    assert got["notification"] == {
        "attributes": ["powerState"],
        "format": "concise",
        "endpoint": {"uri": "http://ops.example.org/notify"},
    }


def test_patch_pause_resume_and_expiry(client: TestClient) -> None:
    create(client, sub())
    one = f"{BASE}/urn:ngsi-ld:Subscription:lights-1"
    assert client.patch(one, json={"type": "Subscription", "isActive": False}).status_code == 204
    assert client.get(one).json()["status"] == "paused"
    assert client.patch(one, json={"isActive": True, "expiresAt": "2999-01-01T00:00:00Z"}).status_code == 204
    got = client.get(one).json()
    assert got["status"] == "active" and got["isActive"] is True
    assert client.patch(one, json={"expiresAt": None}).status_code == 204
    assert "expiresAt" not in client.get(one).json()


def test_expired_subscription_status(client: TestClient) -> None:
    create(client, sub())
    store = client.app.state.store  # type: ignore[attr-defined]
    doc = client.portal.call(store.get_subscription, "", "urn:ngsi-ld:Subscription:lights-1")  # type: ignore[union-attr]
    doc["expiresAt"] = "2020-01-01T00:00:00Z"
    client.portal.call(store.replace_subscription, "", doc)  # type: ignore[union-attr]
    one = f"{BASE}/urn:ngsi-ld:Subscription:lights-1"
    assert client.get(one).json()["status"] == "expired"
    assert (
        client.patch(one, json={"type": "Subscription", "expiresAt": "2999-08-01T22:07:00Z"}).status_code
        == 204
    )
    assert client.get(one).json()["status"] == "active"


INVALID_FRAGMENTS = {
    "notification without endpoint": {"notification": {"format": "keyValues"}},
    "null endpoint": {"type": "Subscription", "notification": {"format": "keyValues", "endpoint": None}},
    "null notification": {"notification": None},
    "expiresAt in the past": {"type": "Subscription", "expiresAt": "2020-08-01T22:07:00Z"},
    "timeInterval with watchedAttributes": {"timeInterval": 5},
    "wrong type": {"type": "Entity"},
    "other id": {"id": "urn:ngsi-ld:Subscription:other"},
    "removing entities and watchedAttributes": {"entities": None, "watchedAttributes": None},
    "bad q": {"q": "((("},
    "empty fragment": {},
    "unknown member": {"colour": "red"},
}


@pytest.mark.parametrize("fragment", INVALID_FRAGMENTS.values(), ids=INVALID_FRAGMENTS.keys())
def test_invalid_fragments_are_bad_request_data(client: TestClient, fragment: dict[str, Any]) -> None:
    create(client, sub())
    one = f"{BASE}/urn:ngsi-ld:Subscription:lights-1"
    before = client.get(one).json()
    error(client.patch(one, json=fragment), 400, "BadRequestData")
    assert client.get(one).json() == before


def test_merge_patch_with_null_endpoint_is_bad_request(client: TestClient) -> None:
    create(client, sub())
    one = f"{BASE}/urn:ngsi-ld:Subscription:lights-1"
    response = client.patch(
        one,
        json={"type": "Subscription", "notification": {"endpoint": None}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    error(response, 400, "BadRequestData")


# -- delete and tenants ----------------------------------------------------------------------------


def test_delete(client: TestClient) -> None:
    create(client, sub())
    one = f"{BASE}/urn:ngsi-ld:Subscription:lights-1"
    response = client.delete(one)
    assert response.status_code == 204 and response.text == ""
    error(client.get(one), 404, "ResourceNotFound")
    error(client.delete(one), 404, "ResourceNotFound")


def test_tenants_are_isolated(client: TestClient) -> None:
    north = {"NGSILD-Tenant": "north"}
    create(client, sub(), **north)
    one = f"{BASE}/urn:ngsi-ld:Subscription:lights-1"
    assert client.get(one, headers=north).status_code == 200
    error(client.get(one), 404, "ResourceNotFound")
    assert client.get(BASE).json() == []
    # the same id is free in another tenant
    create(client, sub())
    error(client.get(BASE, headers={"NGSILD-Tenant": "south"}), 404, "NonExistingTenant")
    error(client.get(one, headers={"NGSILD-Tenant": "south"}), 404, "NonExistingTenant")
    assert client.delete(one, headers=north).status_code == 204
    assert client.get(one).status_code == 200
