"""Context source registrations (clauses 5.9/5.10) and their subscriptions (clause 5.11):
a city federating the parking sensors of an operator's broker."""

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

REGS = "/ngsi-ld/v1/csourceRegistrations"
SUBS = "/ngsi-ld/v1/csourceSubscriptions"
ERR = "https://uri.etsi.org/ngsi-ld/errors/"
CITY_URL = "https://example.org/city/context.jsonld"
CITY = "https://example.org/city#"
CITY_LINK = f'<{CITY_URL}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
DEFAULT = "https://uri.etsi.org/ngsi-ld/default-context/"
LD = {"Content-Type": "application/ld+json"}
CITY_CONTEXT = {
    "@context": {
        "OffStreetParking": CITY + "OffStreetParking",
        "Vehicle": CITY + "Vehicle",
        "availableSpotNumber": CITY + "availableSpotNumber",
        "isParked": CITY + "isParked",
        "operator": CITY + "operator",
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


def reg(n: int = 1, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": f"urn:ngsi-ld:ContextSourceRegistration:parking-{n}",
        "type": "ContextSourceRegistration",
        "information": [
            {
                "entities": [{"type": "OffStreetParking", "idPattern": "^urn:ngsi-ld:OffStreetParking:.*"}],
                "propertyNames": ["availableSpotNumber"],
                "relationshipNames": ["operator"],
            }
        ],
        "endpoint": "http://parking.example.org:1026",
        "@context": CITY_URL,
    }
    body.update(extra)
    return {k: v for k, v in body.items() if v is not None}


def csub(n: int = 1, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": f"urn:ngsi-ld:Subscription:csr-{n}",
        "type": "Subscription",
        "entities": [{"type": "OffStreetParking"}],
        "notification": {
            "format": "keyValues",
            "endpoint": {"uri": "http://ops.example.org/notify", "accept": "application/json"},
        },
        "@context": CITY_URL,
    }
    body.update(extra)
    return {k: v for k, v in body.items() if v is not None}


def create(client: TestClient, path: str, body: dict[str, Any], **headers: str) -> str:
    response = client.post(path, json=body, headers={**LD, **headers})
    assert response.status_code == 201, response.text
    assert response.text == ""
    return response.headers["location"].rsplit("/", 1)[1]


def error(response: Any, status: int, kind: str) -> None:
    assert response.status_code == status, response.text
    problem = response.json()
    assert problem["type"] == ERR + kind
    assert problem["title"]


def discover(client: TestClient, link: bool = True, **params: str) -> list[dict[str, Any]]:
    response = client.get(REGS, params=params, headers={"Link": CITY_LINK} if link else {})
    assert response.status_code == 200, response.text
    return response.json()


# -- registrations: create and retrieve ------------------------------------------------------------


def test_create_then_retrieve_compacts_with_the_link_context(client: TestClient) -> None:
    response = client.post(REGS, json=reg(), headers=LD)
    assert response.status_code == 201
    assert response.headers["location"] == f"{REGS}/urn:ngsi-ld:ContextSourceRegistration:parking-1"

    got = client.get(f"{REGS}/urn:ngsi-ld:ContextSourceRegistration:parking-1", headers={"Link": CITY_LINK})
    assert got.status_code == 200
    assert got.headers["content-type"] == "application/json"
    assert CITY_URL in got.headers["link"]
    assert got.json() == {
        "id": "urn:ngsi-ld:ContextSourceRegistration:parking-1",
        "type": "ContextSourceRegistration",
        "information": reg()["information"],
        "endpoint": "http://parking.example.org:1026",
        "mode": "inclusive",
        "operations": ["federationOps"],
    }


def test_retrieve_without_link_shows_expanded_names(client: TestClient) -> None:
    create(client, REGS, reg())
    info = client.get(f"{REGS}/urn:ngsi-ld:ContextSourceRegistration:parking-1").json()["information"][0]
    assert info["entities"][0]["type"] == CITY + "OffStreetParking"
    assert info["propertyNames"] == [CITY + "availableSpotNumber"]
    assert info["relationshipNames"] == [CITY + "operator"]


def test_json_with_link_header_and_default_context(client: TestClient) -> None:
    body = reg()
    del body["@context"]
    assert client.post(REGS, json=body, headers={"Link": CITY_LINK}).status_code == 201
    body2 = reg(2, information=[{"entities": [{"type": "Building"}]}])
    del body2["@context"]
    assert client.post(REGS, json=body2).status_code == 201
    got1 = client.get(f"{REGS}/urn:ngsi-ld:ContextSourceRegistration:parking-1").json()
    assert got1["information"][0]["entities"][0]["type"] == CITY + "OffStreetParking"
    got2 = client.get(f"{REGS}/urn:ngsi-ld:ContextSourceRegistration:parking-2", headers={"Link": CITY_LINK})
    assert got2.json()["information"][0]["entities"][0]["type"] == "Building"


def test_json_ld_retrieve_carries_the_context_and_sys_attrs(client: TestClient) -> None:
    reg_id = create(client, REGS, reg(id=None))
    assert reg_id.startswith("urn:ngsi-ld:ContextSourceRegistration:")
    got = client.get(
        f"{REGS}/{reg_id}",
        params={"options": "sysAttrs"},
        headers={"Link": CITY_LINK, "Accept": "application/ld+json"},
    )
    assert got.headers["content-type"] == "application/ld+json"
    body = got.json()
    assert body["@context"] == CITY_URL
    assert body["createdAt"].endswith("Z") and body["modifiedAt"].endswith("Z")
    assert "createdAt" not in client.get(f"{REGS}/{reg_id}").json()


def test_every_member_round_trips_and_registration_properties_are_kept(client: TestClient) -> None:
    body = reg(
        registrationName="Parking of ACME",
        description="Live occupancy",
        tenant="acme",
        observationInterval={"startAt": "2020-08-01T22:07:00Z", "endAt": "2021-08-01T21:07:00Z"},
        managementInterval={"startAt": "2020-08-01T22:07:00Z"},
        location={"type": "Point", "coordinates": [6.76, 51.43]},
        operationSpace={
            "type": "Polygon",
            "coordinates": [[[6.7, 51.4], [6.8, 51.4], [6.8, 51.5], [6.7, 51.4]]],
        },
        expiresAt="2999-01-01T00:00:00Z",
        contextSourceInfo=[{"key": "apiKey", "value": "123"}],
        scope=["/Duisburg/Parking"],
        mode="exclusive",
        operations=["queryEntity", "retrieveOps"],
        refreshRate="PT1M",
        management={"localOnly": True, "timeout": 5},
        operatorName="ACME",
        isParked={"nested": ["value"]},
    )
    create(client, REGS, body)
    got = client.get(f"{REGS}/{body['id']}", headers={"Link": CITY_LINK}).json()
    expected = {k: v for k, v in body.items() if k != "@context"}
    assert got == expected
    # names outside the data type are registration properties, expanded like attributes
    assert client.get(f"{REGS}/{body['id']}").json()["operatorName"] == "ACME"
    assert client.get(f"{REGS}/{body['id']}").json()[CITY + "isParked"] == {"nested": ["value"]}


@pytest.mark.parametrize(
    "change",
    [
        {"type": "Registration"},
        {"type": None},
        {"id": "not a uri"},
        {"information": None},
        {"information": []},
        {"information": [{}]},
        {"information": [{"entities": []}]},
        {"information": [{"entities": [{"id": "urn:a:b"}]}]},
        {"information": [{"entities": [{"type": "T", "idPattern": "(?=a)b"}]}]},
        {"information": [{"entities": [{"type": "T", "color": "red"}]}]},
        {"information": [{"propertyNames": []}]},
        {"information": [{"attributes": ["a"]}]},
        {"endpoint": None},
        {"endpoint": "not a uri"},
        {"expiresAt": "2018-11-29T14:53:15Z"},
        {"expiresAt": " 2018-11-29T14:53:15Z"},
        {"observationInterval": {"endAt": "2020-01-01T00:00:00Z"}},
        {"managementInterval": {"startAt": "2021-01-01T00:00:00Z", "endAt": "2020-01-01T00:00:00Z"}},
        {"location": {"type": "Point", "coordinates": "here"}},
        {"contextSourceInfo": [{"key": "a"}]},
        {"scope": "no-slash"},
        {"mode": "shared"},
        {"operations": ["teleport"]},
        {"operations": []},
        {"management": {"timeout": -1}},
        {"registrationName": ""},
    ],
)
def test_invalid_registrations_are_bad_request_data(client: TestClient, change: dict[str, Any]) -> None:
    body = {**reg(), **change}
    body = {k: v for k, v in body.items() if v is not None or k == "information"}
    error(client.post(REGS, json=body, headers=LD), 400, "BadRequestData")


def test_create_errors_of_the_edge(client: TestClient) -> None:
    create(client, REGS, reg())
    error(client.post(REGS, json=reg(), headers=LD), 409, "AlreadyExists")
    error(client.post(REGS, json=reg(2), headers={"Content-Type": "application/json"}), 400, "BadRequestData")
    no_context = reg(2)
    del no_context["@context"]
    error(client.post(REGS, json=no_context, headers=LD), 400, "BadRequestData")
    error(client.post(REGS, json=reg(2), headers={**LD, "Link": CITY_LINK}), 400, "BadRequestData")
    error(
        client.post(REGS, content=b"<x/>", headers={"Content-Type": "text/xml"}), 415, "UnsupportedMediaType"
    )
    error(client.post(REGS, content=b'{"a":,}', headers=LD), 400, "InvalidRequest")
    error(client.post(REGS, json=reg(2), params={"foo": "1"}, headers=LD), 400, "InvalidRequest")
    unreachable = reg(3, **{"@context": ["http://127.0.0.1:9/missing-context.jsonld"]})
    error(client.post(REGS, json=unreachable, headers=LD), 503, "LdContextNotAvailable")


def test_retrieve_and_delete_errors(client: TestClient) -> None:
    error(client.get(f"{REGS}/invalidURI"), 400, "BadRequestData")
    error(client.get(f"{REGS}/urn:ngsi-ld:ContextSourceRegistration:none"), 404, "ResourceNotFound")
    error(client.delete(f"{REGS}/invalidURI"), 400, "BadRequestData")
    error(client.delete(f"{REGS}/urn:ngsi-ld:ContextSourceRegistration:none"), 404, "ResourceNotFound")
    assert client.delete(REGS).status_code == 405
    error(client.get(f"{REGS}/urn:a:b", params={"attrs": "x"}), 400, "InvalidRequest")
    error(client.get(f"{REGS}/urn:a:b", headers={"Accept": "text/html"}), 406, "NotAcceptable")
    missing_tenant = client.get(f"{REGS}/urn:a:b", headers={"NGSILD-Tenant": "nobody"})
    error(missing_tenant, 404, "NonExistingTenant")


def test_delete(client: TestClient) -> None:
    reg_id = create(client, REGS, reg())
    response = client.delete(f"{REGS}/{reg_id}")
    assert response.status_code == 204 and response.text == ""
    error(client.get(f"{REGS}/{reg_id}"), 404, "ResourceNotFound")


# -- registrations: update -------------------------------------------------------------------------


def test_update_replaces_members_and_null_removes_them(client: TestClient) -> None:
    reg_id = create(client, REGS, reg(expiresAt="2999-01-01T00:00:00Z", mode="exclusive"))
    response = client.patch(
        f"{REGS}/{reg_id}",
        json={"endpoint": "http://my.new.csource.org:1026", "expiresAt": None, "mode": None, "note": "x"},
    )
    assert response.status_code == 204 and response.text == ""
    got = client.get(f"{REGS}/{reg_id}", params={"options": "sysAttrs"}).json()
    assert got["endpoint"] == "http://my.new.csource.org:1026"
    assert "expiresAt" not in got
    assert got["mode"] == "inclusive"
    assert got["note"] == "x"
    assert got["modifiedAt"] >= got["createdAt"]


def test_update_expands_with_the_fragment_context(client: TestClient) -> None:
    reg_id = create(client, REGS, reg())
    fragment = {"information": [{"entities": [{"type": "Vehicle"}]}], "@context": CITY_URL}
    assert client.patch(f"{REGS}/{reg_id}", json=fragment, headers=LD).status_code == 204
    got = client.get(f"{REGS}/{reg_id}").json()
    assert got["information"] == [{"entities": [{"type": CITY + "Vehicle"}]}]


def test_an_exclusive_registration_names_its_attributes(client: TestClient) -> None:
    """Clause 4.3.6.3: an exclusive registration relates to specific Attributes; a whole
    entity can only be registered inclusively or for redirection. Neither a create nor an update
    may leave an exclusive registration with a RegistrationInfo that names no attribute."""
    whole = [{"entities": [{"type": "Vehicle", "id": "urn:ngsi-ld:Vehicle:A1"}]}]
    named = [{**whole[0], "propertyNames": ["speed"]}]
    error(
        client.post(REGS, json=reg(2, mode="exclusive", information=[*named, *whole]), headers=LD),
        400,
        "BadRequestData",
    )
    assert client.get(f"{REGS}/{reg(2)['id']}").status_code == 404
    reg_id = create(client, REGS, reg(3, information=whole))
    error(client.patch(f"{REGS}/{reg_id}", json={"mode": "exclusive"}), 400, "BadRequestData")
    assert client.get(f"{REGS}/{reg_id}").json()["mode"] == "inclusive"
    create(client, REGS, reg(4, mode="redirect", information=whole))
    create(client, REGS, reg(5, mode="exclusive", information=named))


def test_update_errors(client: TestClient) -> None:
    reg_id = create(client, REGS, reg())
    url = f"{REGS}/{reg_id}"
    error(client.patch(url, json={"information": None}), 400, "BadRequestData")
    error(client.patch(url, json={"endpoint": None}), 400, "BadRequestData")
    error(client.patch(url, json={"type": "building"}), 400, "BadRequestData")
    error(client.patch(url, json={"id": "urn:other:1", "endpoint": "http://a.b"}), 400, "BadRequestData")
    error(client.patch(url, json={}), 400, "BadRequestData")
    error(
        client.patch(url, content=b'{"endpoint":,}', headers={"Content-Type": "application/json"}),
        400,
        "InvalidRequest",
    )
    error(
        client.patch(url, content=b"x", headers={"Content-Type": "text/plain"}), 415, "UnsupportedMediaType"
    )
    missing = f"{REGS}/urn:ngsi-ld:ContextSourceRegistration:none"
    error(
        client.patch(missing, content=b"x", headers={"Content-Type": "text/plain"}),
        415,
        "UnsupportedMediaType",
    )
    error(client.patch(missing, json={"endpoint": "http://a.b"}), 404, "ResourceNotFound")
    error(client.patch(f"{REGS}/invalidURI", json={"endpoint": "http://a.b"}), 400, "BadRequestData")
    assert client.get(url).json()["endpoint"] == "http://parking.example.org:1026"


# -- discovery -------------------------------------------------------------------------------------


@pytest.fixture
def city(client: TestClient) -> TestClient:
    create(client, REGS, reg(1))  # OffStreetParking by idPattern, availableSpotNumber + operator
    create(
        client,
        REGS,
        reg(
            2,
            information=[{"entities": [{"type": "Vehicle", "id": "urn:ngsi-ld:Vehicle:A456"}]}],
            location={"type": "Point", "coordinates": [-8.521, 41.2]},
            observationInterval={"startAt": "2020-08-01T22:07:00Z", "endAt": "2021-08-01T21:07:00Z"},
            csourceProperty1="aValue",
        ),
    )
    create(client, REGS, reg(3, information=[{"propertyNames": ["availableSpotNumber"]}]))
    return client


def ids(found: list[dict[str, Any]]) -> list[int]:
    return [int(r["id"].rsplit("-", 1)[1]) for r in found]


def test_discovery_by_type_id_pattern_and_attrs(city: TestClient) -> None:
    assert ids(discover(city, type="Vehicle")) == [2, 3]  # 3 registers an attribute of any type
    assert ids(discover(city, type="OffStreetParking")) == [1, 3]
    assert ids(discover(city, type="Vehicle,OffStreetParking")) == [1, 2, 3]
    assert ids(discover(city, type=CITY + "Vehicle", link=False)) == [2, 3]
    assert ids(discover(city, attrs="availableSpotNumber")) == [1, 2, 3]  # 2 names no attributes
    assert ids(discover(city, attrs="operator")) == [1, 2]
    assert ids(discover(city, type="OffStreetParking", attrs="operator")) == [1]
    assert ids(discover(city, type="OffStreetParking", idPattern=".*downtown$")) == [1, 3]


def test_discovery_by_entity_id_and_registration_id(city: TestClient) -> None:
    assert ids(discover(city, id="urn:ngsi-ld:Vehicle:A456")) == [2]
    assert ids(discover(city, id="urn:ngsi-ld:OffStreetParking:7")) == [1]  # by its idPattern
    both = "urn:ngsi-ld:ContextSourceRegistration:parking-1,urn:ngsi-ld:ContextSourceRegistration:parking-3"
    assert ids(discover(city, id=both)) == [1, 3]
    assert ids(discover(city, id=both, type="Vehicle")) == [3]


def test_discovery_by_q_geo_and_time(city: TestClient) -> None:
    assert ids(discover(city, q='csourceProperty1=="aValue"')) == [2]
    assert ids(discover(city, csf="csourceProperty1")) == [2]
    near = {"georel": "near;maxDistance==2000", "geometry": "Point", "coordinates": "[-8.503,41.202]"}
    assert ids(discover(city, type="Vehicle", **near)) == [2]
    polygon = "[[[-13.5,47.2],[6.5,52.9],[20.3,44.6],[9.4,32.5],[-15.2,21.3],[-13.5,47.2]]]"
    found = discover(city, georel="within", geometry="Polygon", coordinates=polygon, geoproperty="location")
    assert ids(found) == [2]
    assert found[0]["location"] == {"type": "Point", "coordinates": [-8.521, 41.2]}
    before = {"timerel": "before", "timeAt": "2021-08-01T22:00:00Z"}
    assert ids(discover(city, type="Vehicle", **before)) == [2, 3]
    assert ids(discover(city, type="Vehicle", timerel="before", timeAt="2019-01-01T00:00:00Z")) == [3]
    assert ids(discover(city, type="Vehicle", timerel="after", timeAt="2022-01-01T00:00:00Z")) == [3]


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"id": "invalidUri"},
        {"q": "(invalidQuery"},
        {"georel": "within"},
        {"type": "Vehicle", "geometry": "Point", "coordinates": "[1,2]"},
        {
            "type": "Vehicle",
            "georel": "near;maxDistance==1",
            "geometry": "Point",
            "coordinates": "[1,2]",
            "geoproperty": "x",
        },
        {"timerel": "before"},
        {"type": "Vehicle", "timerel": "between", "timeAt": "2020-01-01T00:00:00Z"},
        {
            "type": "Vehicle",
            "timeproperty": "deletedAt",
            "timerel": "after",
            "timeAt": "2020-01-01T00:00:00Z",
        },
        {"type": "(Vehicle"},
        {"type": "Vehicle", "idPattern": "(?=a)b"},
        {"type": "Vehicle", "limit": "0"},
        {"type": "Vehicle", "limit": "-1"},
    ],
)
def test_discovery_errors_are_bad_request_data(city: TestClient, params: dict[str, str]) -> None:
    error(city.get(REGS, params=params, headers={"Link": CITY_LINK}), 400, "BadRequestData")


def test_discovery_edge_checks(city: TestClient) -> None:
    error(city.get(REGS, params={"type": "Vehicle", "foo": "1"}), 400, "InvalidRequest")
    error(
        city.get(REGS, params={"type": "Vehicle"}, headers={"Accept": "application/geo+json"}),
        406,
        "NotAcceptable",
    )
    any_type = city.get(REGS, params={"type": "Vehicle"}, headers={"Accept": "*/*"})
    assert any_type.headers["content-type"] == "application/json" and any_type.headers["link"]
    error(city.get(REGS, params={"type": "V"}, headers={"NGSILD-Tenant": "nobody"}), 404, "NonExistingTenant")


def test_discovery_pages_and_counts(city: TestClient) -> None:
    response = city.get(
        REGS,
        params={"type": "OffStreetParking,Vehicle", "limit": "1", "offset": "1", "count": "true"},
        headers={"Link": CITY_LINK},
    )
    assert ids(response.json()) == [2]
    assert response.headers["NGSILD-Results-Count"] == "3"
    links = response.headers["link"].split(",")
    assert (
        f'<{REGS}?type=OffStreetParking%2CVehicle&count=true&limit=1&offset=0>;rel="prev";type="application/ld+json"'
        in links
    )
    assert (
        f'<{REGS}?type=OffStreetParking%2CVehicle&count=true&limit=1&offset=2>;rel="next";type="application/ld+json"'
        in links
    )
    counted = city.get(
        REGS, params={"type": "Vehicle", "limit": "0", "count": "true"}, headers={"Link": CITY_LINK}
    )
    assert counted.json() == [] and counted.headers["NGSILD-Results-Count"] == "2"


def test_tenants_are_separate(client: TestClient) -> None:
    create(client, REGS, reg(), **{"NGSILD-Tenant": "acme"})
    error(client.get(f"{REGS}/{reg()['id']}"), 404, "ResourceNotFound")
    found = client.get(
        REGS, params={"type": "OffStreetParking"}, headers={"NGSILD-Tenant": "acme", "Link": CITY_LINK}
    )
    assert ids(found.json()) == [1]


# -- csource subscriptions -------------------------------------------------------------------------


def test_csource_subscription_round_trip(client: TestClient) -> None:
    response = client.post(SUBS, json=csub(), headers=LD)
    assert response.status_code == 201 and response.text == ""
    assert response.headers["location"] == f"{SUBS}/urn:ngsi-ld:Subscription:csr-1"
    got = client.get(f"{SUBS}/urn:ngsi-ld:Subscription:csr-1", headers={"Link": CITY_LINK})
    assert got.status_code == 200
    expected = {k: v for k, v in csub().items() if k != "@context"}
    assert got.json() == {**expected, "status": "active"}  # no notificationTrigger default
    expanded = client.get(f"{SUBS}/urn:ngsi-ld:Subscription:csr-1").json()
    assert expanded["entities"] == [{"type": CITY + "OffStreetParking"}]


def test_csource_subscription_status_and_generated_id(client: TestClient) -> None:
    sub_id = create(client, SUBS, csub(id=None, isActive=False))
    assert sub_id.startswith("urn:ngsi-ld:Subscription:")
    got = client.get(f"{SUBS}/{sub_id}").json()
    assert got["isActive"] is False and got["status"] == "paused"


@pytest.mark.parametrize(
    "change",
    [
        {"notification": None},
        {"type": "RandomType"},
        {"watchedAttributes": []},
        {"q": "(broken"},
        {"csf": "(broken"},
        {"expiresAt": "2018-08-01T22:07:00Z"},
        {"entities": None},
    ],
)
def test_invalid_csource_subscriptions(client: TestClient, change: dict[str, Any]) -> None:
    body = {k: v for k, v in {**csub(), **change}.items() if v is not None}
    error(client.post(SUBS, json=body, headers=LD), 400, "BadRequestData")


def test_csource_subscription_update_query_delete(client: TestClient) -> None:
    create(client, SUBS, csub(1))
    create(client, SUBS, csub(2, watchedAttributes=["availableSpotNumber"]))
    create(client, SUBS, csub(3))
    error(client.post(SUBS, json=csub(1), headers=LD), 409, "AlreadyExists")
    url = f"{SUBS}/urn:ngsi-ld:Subscription:csr-1"
    new_endpoint = {"uri": "http://my.second.endpoint.org/notify", "accept": "application/json"}
    patched = client.patch(url, json={"notification": {"format": "keyValues", "endpoint": new_endpoint}})
    assert patched.status_code == 204
    assert client.get(url).json()["notification"]["endpoint"] == new_endpoint
    merge = client.patch(
        url,
        json={"notification": {"format": "normalized"}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert merge.status_code == 204
    assert client.get(url).json()["notification"] == {"format": "normalized", "endpoint": new_endpoint}
    error(client.patch(url, json={"notification": {"format": "keyValues"}}), 400, "BadRequestData")
    error(client.patch(url, json={"type": None, "isActive": False}), 400, "BadRequestData")
    error(client.patch(f"{SUBS}/invalidUri", json={"isActive": False}), 400, "BadRequestData")
    error(
        client.patch(f"{SUBS}/urn:ngsi-ld:Subscription:none", json={"isActive": False}),
        404,
        "ResourceNotFound",
    )
    error(
        client.patch(url, content=b'{"a":,}', headers={"Content-Type": "application/json"}),
        400,
        "InvalidRequest",
    )

    page = client.get(SUBS, params={"limit": "1", "offset": "1"}, headers={"Link": CITY_LINK})
    assert [s["id"] for s in page.json()] == ["urn:ngsi-ld:Subscription:csr-2"]
    assert page.json()[0]["watchedAttributes"] == ["availableSpotNumber"]
    links = page.headers["link"].split(",")
    assert f'<{SUBS}?limit=1&offset=0>;rel="prev";type="application/ld+json"' in links
    assert f'<{SUBS}?limit=1&offset=2>;rel="next";type="application/ld+json"' in links
    error(client.get(SUBS, headers={"Accept": "application/geo+json"}), 406, "NotAcceptable")
    error(client.get(SUBS, params={"type": "x"}), 400, "InvalidRequest")

    assert client.delete(url).status_code == 204
    error(client.get(url), 404, "ResourceNotFound")
    error(client.delete(url), 404, "ResourceNotFound")
    error(client.delete(f"{SUBS}/invalidUri"), 400, "BadRequestData")
    # entity subscriptions and csource subscriptions are different resources
    assert client.get("/ngsi-ld/v1/subscriptions/urn:ngsi-ld:Subscription:csr-2").status_code == 404


# -- the filter as csource subscriptions will use it -----------------------------------------------


async def test_filter_from_a_csource_subscription() -> None:
    from kizuna.jsonld.contexts import ContextRegistry
    from kizuna.ngsild.csource_matching import RegistrationFilter

    terms = await ContextRegistry().term_map(None)
    registration = {
        "id": "urn:ngsi-ld:ContextSourceRegistration:1",
        "information": [{"entities": [{"type": CITY + "Vehicle"}], "propertyNames": [CITY + "speed"]}],
        DEFAULT + "owner": "acme",
    }
    sub = {
        "entities": [{"type": CITY + "Vehicle"}],
        "watchedAttributes": [CITY + "speed"],
        "q": 'owner=="acme"',
    }
    assert RegistrationFilter.from_subscription(sub, terms).matches(registration)
    assert not RegistrationFilter.from_subscription({**sub, "q": 'owner=="other"'}, terms).matches(
        registration
    )
    other_type = {**sub, "entities": [{"type": CITY + "Bus"}]}
    assert not RegistrationFilter.from_subscription(other_type, terms).matches(registration)


def test_a_csource_subscription_with_a_geo_query_is_notified_of_registrations_inside_it(
    client: TestClient,
) -> None:
    from notify_helpers import Receiver, wait_until

    receiver = Receiver()
    try:
        duisburg = [[[6.70, 51.40], [6.85, 51.40], [6.85, 51.50], [6.70, 51.50], [6.70, 51.40]]]
        geo_q = {"georel": "within", "geometry": "Polygon", "coordinates": duisburg}
        endpoint = {"uri": receiver.url, "accept": "application/json"}
        notification = {"format": "keyValues", "endpoint": endpoint}
        create(client, SUBS, csub(1, geoQ={**geo_q, "geoproperty": "location"}, notification=notification))
        unknown = client.post(SUBS, json=csub(2, geoQ={**geo_q, "geoproperty": "myGeo"}), headers=LD)
        error(unknown, 400, "BadRequestData")
        inside = {"type": "Point", "coordinates": [6.77, 51.43]}
        outside = {"type": "Point", "coordinates": [139.64, 35.44]}  # Kanagawa
        create(client, REGS, reg(1, location=inside))
        create(client, REGS, reg(2, location=outside))
        wait_until(lambda: receiver.bodies, 10)
        time.sleep(0.5)
        notified = [item["id"] for body in receiver.bodies for item in body["data"]]
        assert notified == ["urn:ngsi-ld:ContextSourceRegistration:parking-1"]
    finally:
        receiver.close()
