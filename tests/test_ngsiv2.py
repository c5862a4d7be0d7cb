"""The read-only NGSI v2 subset (``/v2/entities``) over the node's NGSI-LD entities, both stores:
Orion's shapes and errors, paging and counts, attrs, tenants by Fiware-Service, and the same
permissions as NGSI-LD reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from access_helpers import bearer
from conftest import DATA
from kizuna.access.apikeys import ApiKeys
from kizuna.app import create_app
from kizuna.config import Settings
from kizuna.ngsiv2.translate import v2_entity

ENTITIES = "/ngsi-ld/v1/entities"
V2 = "/v2/entities"
SDM = "https://raw.githubusercontent.com/smart-data-models/dataModel.Streetlighting/master/context.jsonld"
LINK = f'<{SDM}>; rel="http://www.w3.org/ns/json-ld#context"'


def streetlight(n: int) -> dict[str, Any]:
    return {
        "id": f"urn:ngsi-ld:Streetlight:{n}",
        "type": "Streetlight",
        "powerState": {"type": "Property", "value": "on", "observedAt": "2026-11-22T18:00:00Z"},
        "illuminanceLevel": {"type": "Property", "value": 0.5 + n, "unitCode": "LUX"},
        "lanternHeight": {"type": "Property", "value": 10},
        "isFaulty": {"type": "Property", "value": False},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [6.76, 51.43]}},
        "refStreetlightGroup": {"type": "Relationship", "object": "urn:ngsi-ld:StreetlightGroup:1"},
        "lastRepair": {"type": "Property", "value": {"@type": "DateTime", "@value": "2026-01-05T08:00:00Z"}},
        "annotations": {
            "type": "Property",
            "value": {"colour": "amber", "notes": ["new lamp"]},
            "source": {"type": "Property", "value": "maintenance"},
        },
    }


def load(client: TestClient, count: int = 12, headers: dict[str, str] | None = None) -> None:
    for n in range(count):
        response = client.post(ENTITIES, json=streetlight(n), headers=headers or {})
        assert response.status_code == 201, response.text


def test_entities_in_orions_normalized_shape(client: TestClient) -> None:
    load(client, 12)
    response = client.get(V2, params={"type": "Streetlight", "limit": "10"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert "Fiware-Total-Count" not in response.headers
    found = response.json()
    assert len(found) == 10
    first = next(e for e in found if e["id"] == "urn:ngsi-ld:Streetlight:0")
    assert first == {
        "id": "urn:ngsi-ld:Streetlight:0",
        "type": "Streetlight",
        "powerState": {
            "type": "Text",
            "value": "on",
            "metadata": {"observedAt": {"type": "DateTime", "value": "2026-11-22T18:00:00Z"}},
        },
        "illuminanceLevel": {
            "type": "Number",
            "value": 0.5,
            "metadata": {"unitCode": {"type": "Text", "value": "LUX"}},
        },
        "lanternHeight": {"type": "Number", "value": 10, "metadata": {}},
        "isFaulty": {"type": "Boolean", "value": False, "metadata": {}},
        "location": {
            "type": "geo:json",
            "value": {"type": "Point", "coordinates": [6.76, 51.43]},
            "metadata": {},
        },
        "refStreetlightGroup": {
            "type": "Relationship",
            "value": "urn:ngsi-ld:StreetlightGroup:1",
            "metadata": {},
        },
        "lastRepair": {"type": "DateTime", "value": "2026-01-05T08:00:00Z", "metadata": {}},
        "annotations": {
            "type": "StructuredValue",
            "value": {"colour": "amber", "notes": ["new lamp"]},
            "metadata": {"source": {"type": "Text", "value": "maintenance"}},
        },
    }


def test_paging_counts_attrs_and_key_values(client: TestClient) -> None:
    load(client, 12)
    seen: list[str] = []
    for offset in (0, 5, 10):
        page = client.get(
            V2, params={"type": "Streetlight", "limit": "5", "offset": str(offset), "options": "count"}
        )
        assert page.headers["Fiware-Total-Count"] == "12"
        seen += [e["id"] for e in page.json()]
    assert len(seen) == len(set(seen)) == 12
    picked = client.get(
        V2,
        params={
            "idPattern": "Streetlight:1[01]$",
            "attrs": "illuminanceLevel,dateCreated",
            "options": "keyValues",
        },
    )
    rows = sorted(picked.json(), key=lambda e: e["id"])
    assert [r["id"] for r in rows] == ["urn:ngsi-ld:Streetlight:10", "urn:ngsi-ld:Streetlight:11"]
    assert set(rows[0]) == {"id", "type", "illuminanceLevel", "dateCreated"}
    assert rows[0]["illuminanceLevel"] == 10.5 and rows[0]["dateCreated"].startswith("20")
    ids = client.get(V2, params={"id": "urn:ngsi-ld:Streetlight:3,Streetlight4,urn:ngsi-ld:Streetlight:4"})
    assert sorted(e["id"] for e in ids.json()) == ["urn:ngsi-ld:Streetlight:3", "urn:ngsi-ld:Streetlight:4"]
    assert client.get(V2, params={"id": "not-a-uri"}).json() == []
    assert client.get(V2, params={"type": "Bench"}).json() == []


def test_one_entity_and_orions_errors(client: TestClient) -> None:
    load(client, 1)
    one = client.get(
        f"{V2}/urn:ngsi-ld:Streetlight:0", params={"options": "keyValues", "attrs": "powerState"}
    )
    assert one.json() == {"id": "urn:ngsi-ld:Streetlight:0", "type": "Streetlight", "powerState": "on"}
    assert client.get(f"{V2}/urn:ngsi-ld:Streetlight:0", params={"type": "Streetlight"}).status_code == 200
    missing = {
        "error": "NotFound",
        "description": "The requested entity has not been found. Check type and id",
    }
    for url, params in (
        (f"{V2}/urn:ngsi-ld:Streetlight:9", {}),
        (f"{V2}/urn:ngsi-ld:Streetlight:0", {"type": "Bench"}),
        (f"{V2}/Streetlight0", {}),
    ):
        response = client.get(url, params=params)
        assert (response.status_code, response.json()) == (404, missing)
    for params, headers in (
        ({"limit": "0"}, {}),
        ({"limit": "1001"}, {}),
        ({"q": "powerState==on"}, {}),  # a filter the node cannot apply is refused, not ignored
        ({"options": "values"}, {}),
        ({}, {"Fiware-ServicePath": "/Duisburg"}),
    ):
        response = client.get(V2, params=params, headers=headers)
        assert response.status_code == 400, (params, response.text)
        assert response.json()["error"] == "BadRequest"
    assert client.get(V2, headers={"Fiware-ServicePath": "/"}).status_code == 200
    refused = client.get(V2, headers={"Accept": "text/html"})
    assert (refused.status_code, refused.json()["error"]) == (406, "NotAcceptable")


def test_fiware_service_is_the_tenant(client: TestClient) -> None:
    load(client, 2, headers={"NGSILD-Tenant": "duisburg"})
    load(client, 1)
    in_tenant = client.get(
        V2, params={"type": "Streetlight", "options": "count"}, headers={"Fiware-Service": "duisburg"}
    )
    assert in_tenant.headers["Fiware-Total-Count"] == "2"
    assert len(client.get(V2, params={"type": "Streetlight"}).json()) == 1
    unknown = client.get(V2, params={"options": "count"}, headers={"Fiware-Service": "nowhere"})
    assert (unknown.status_code, unknown.json(), unknown.headers["Fiware-Total-Count"]) == (200, [], "0")
    elsewhere = client.get(f"{V2}/urn:ngsi-ld:Streetlight:1", headers={"Fiware-Service": "nowhere"})
    assert elsewhere.status_code == 404


def test_names_follow_the_link_headers_context(client: TestClient) -> None:
    """Entities written with a Smart Data Models @context: their names are IRIs of that
    vocabulary, which the core context does not compact; a Link header gives the short names."""
    body = {
        "id": "urn:ngsi-ld:Streetlight:sdm",
        "type": "Streetlight",
        "powerState": {"type": "Property", "value": "on"},
    }
    assert client.post(ENTITIES, json=body, headers={"Link": LINK}).status_code == 201
    linked = client.get(V2, params={"type": "Streetlight", "attrs": "powerState"}, headers={"Link": LINK})
    assert linked.json() == [
        {
            "id": "urn:ngsi-ld:Streetlight:sdm",
            "type": "Streetlight",
            "powerState": {"type": "Text", "value": "on", "metadata": {}},
        }
    ]
    assert client.get(V2, params={"type": "Streetlight"}).json() == []  # the default vocabulary's Streetlight
    (full,) = client.get(V2, params={"id": "urn:ngsi-ld:Streetlight:sdm"}).json()
    assert full["type"] == "https://smartdatamodels.org/dataModel.Streetlighting/Streetlight"
    assert client.get(V2, params={"type": full["type"]}).json()[0]["id"] == "urn:ngsi-ld:Streetlight:sdm"


def test_v2_reads_see_what_ngsi_ld_reads_see(secured: TestClient, idp_key: Any) -> None:
    alice = bearer(idp_key, "kizuna-creator", sub="alice")
    bob = bearer(idp_key, sub="bob")
    assert secured.post(ENTITIES, json=streetlight(1), headers=alice).status_code == 201
    assert [e["id"] for e in secured.get(V2, headers=alice).json()] == ["urn:ngsi-ld:Streetlight:1"]
    listed = secured.get(V2, params={"options": "count"}, headers=bob)
    assert (listed.json(), listed.headers["Fiware-Total-Count"]) == ([], "0")
    assert secured.get(f"{V2}/urn:ngsi-ld:Streetlight:1", headers=bob).status_code == 404
    assert secured.get(f"{V2}/urn:ngsi-ld:Streetlight:1", headers=alice).status_code == 200


def test_attributes_of_every_ngsi_ld_kind() -> None:
    rendered = {
        "id": "urn:x:1",
        "type": ["A", "B"],
        "name": [
            {"type": "Property", "value": "x", "datasetId": "urn:d:1"},
            {"type": "Property", "value": "y"},
        ],
        "label": {"type": "LanguageProperty", "languageMap": {"en": "lamp", "ja": "街灯"}},
        "category": {"type": "VocabProperty", "vocab": "street"},
        "raw": {"type": "JsonProperty", "json": {"a": [1]}},
        "readings": {"type": "ListProperty", "valueList": [1, 2]},
        "feeds": {"type": "ListRelationship", "objectList": [{"object": "urn:a"}, {"object": "urn:b"}]},
        "nothing": {"type": "Property", "value": None},
    }
    out = v2_entity(rendered, {"createdAt": "2026-01-01T00:00:00Z"}, ["dateCreated", "dateModified"], False)
    assert out["type"] == "A"
    assert out["name"] == {"type": "Text", "value": "y", "metadata": {}}
    assert out["label"]["type"] == "StructuredValue" and out["label"]["value"]["ja"] == "街灯"
    assert (out["category"]["type"], out["category"]["value"]) == ("Text", "street")
    assert (out["raw"]["type"], out["readings"]["value"]) == ("StructuredValue", [1, 2])
    assert (out["feeds"]["type"], out["feeds"]["value"]) == ("Relationship", ["urn:a", "urn:b"])
    assert out["nothing"] == {"type": "None", "value": None, "metadata": {}}
    assert out["dateCreated"] == {"type": "DateTime", "value": "2026-01-01T00:00:00Z", "metadata": {}}
    assert "dateModified" not in out


def test_credentials_are_checked_for_the_fiware_service_tenant(secured: TestClient, idp_key: Any) -> None:
    """A key bound to a tenant proves its subject there, named by Fiware-Service as NGSILD-Tenant
    names it on NGSI-LD; in any other tenant it proves nothing (401)."""
    keys = ApiKeys(secured.app.state.store)  # type: ignore[attr-defined]
    _, key = secured.portal.call(keys.create, "root", "gateway", ("kizuna-creator",), "duisburg", None)  # type: ignore[union-attr]
    admin = bearer(idp_key, "kizuna-admin", sub="root") | {"NGSILD-Tenant": "duisburg"}
    bench = {"id": "urn:ngsi-ld:Bench:1", "type": "Bench"}
    assert secured.post(ENTITIES, json=bench, headers=admin).status_code == 201  # makes the tenant
    mine = {"X-API-Key": key, "NGSILD-Tenant": "duisburg"}
    assert secured.post(ENTITIES, json=streetlight(1), headers=mine).status_code == 201
    found = secured.get(
        V2, params={"type": "Streetlight"}, headers={"X-API-Key": key, "Fiware-Service": "duisburg"}
    )
    assert [e["id"] for e in found.json()] == ["urn:ngsi-ld:Streetlight:1"]
    for elsewhere in ({"X-API-Key": key}, {"X-API-Key": key, "Fiware-Service": "berlin"}):
        assert secured.get(V2, headers=elsewhere).status_code == 401


def test_the_node_default_context_names_what_v2_clients_ask_without_a_link(tmp_path: Path) -> None:
    """``--ngsiv2-context``: v2 clients send no Link header; the node's own vocabulary gives
    their short names both ways."""
    settings = Settings(
        store=f"sqlite:///{tmp_path}/kizuna.db",
        context_map=str(DATA / "smart-data-models" / "context-map.json"),
        ngsiv2_context=SDM,
    )
    with TestClient(create_app(settings)) as client:
        body = {
            "id": "urn:ngsi-ld:Streetlight:sdm",
            "type": "Streetlight",
            "powerState": {"type": "Property", "value": "on"},
        }
        assert client.post(ENTITIES, json=body, headers={"Link": LINK}).status_code == 201
        found = client.get(V2, params={"type": "Streetlight", "attrs": "powerState", "options": "keyValues"})
        assert found.json() == [
            {"id": "urn:ngsi-ld:Streetlight:sdm", "type": "Streetlight", "powerState": "on"}
        ]
        core = '<https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld>; rel="http://www.w3.org/ns/json-ld#context"'
        assert client.get(V2, params={"type": "Streetlight"}, headers={"Link": core}).json() == []
