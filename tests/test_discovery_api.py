"""Discovery (clause 5.7.5-5.7.10): which types and attributes a city's node holds."""

from __future__ import annotations

from starlette.testclient import TestClient

BASE = "/ngsi-ld/v1"
DEFAULT = "https://uri.etsi.org/ngsi-ld/default-context/"


def load_city(client: TestClient) -> None:
    entities = [
        {"id": "urn:ngsi-ld:Streetlight:1", "type": "Streetlight", "status": "ok", "powerState": "on"},
        {"id": "urn:ngsi-ld:Streetlight:2", "type": "Streetlight", "status": "faulty"},
        {
            "id": "urn:ngsi-ld:AccessPoint:zoo",
            "type": "AccessPoint",
            "status": "ok",
            "refZone": {"type": "Relationship", "object": "urn:ngsi-ld:Zone:zoo"},
        },
    ]
    assert client.post(f"{BASE}/entityOperations/create", json=entities).status_code == 201


def test_types_lists_each_type_once(client: TestClient) -> None:
    load_city(client)
    body = client.get(f"{BASE}/types").json()
    assert body["type"] == "EntityTypeList"
    assert body["id"].startswith("urn:ngsi-ld:EntityTypeList:")
    assert body["typeList"] == ["Streetlight", "AccessPoint"]
    detailed = client.get(f"{BASE}/types", params={"details": "true"}).json()
    assert detailed[0] == {
        "id": DEFAULT + "Streetlight",
        "type": "EntityType",
        "typeName": "Streetlight",
        "attributeNames": ["status", "powerState"],
    }


def test_type_info_counts_entities_and_attribute_kinds(client: TestClient) -> None:
    load_city(client)
    info = client.get(f"{BASE}/types/AccessPoint").json()
    assert info["entityCount"] == 1
    assert {d["attributeName"]: d["attributeTypes"] for d in info["attributeDetails"]} == {
        "status": ["Property"],
        "refZone": ["Relationship"],
    }
    assert client.get(f"{BASE}/types/{DEFAULT}Streetlight").json()["entityCount"] == 2
    missing = client.get(f"{BASE}/types/Tram")
    assert missing.status_code == 404


def test_attributes_and_attribute_info(client: TestClient) -> None:
    load_city(client)
    listing = client.get(f"{BASE}/attributes").json()
    assert listing["attributeList"] == ["status", "powerState", "refZone"]
    info = client.get(f"{BASE}/attributes/powerState").json()
    assert info == {
        "id": DEFAULT + "powerState",
        "type": "Attribute",
        "attributeName": "powerState",
        "attributeCount": 1,
        "attributeTypes": ["Property"],
        "typeNames": ["Streetlight"],
    }
    assert client.get(f"{BASE}/attributes/brightness").status_code == 404


def test_discovery_errors(client: TestClient) -> None:
    unknown = client.get(f"{BASE}/types", params={"invalidParams": "x"})
    assert unknown.status_code == 400
    assert unknown.json()["type"].endswith("InvalidRequest")
    assert client.get(f"{BASE}/types", headers={"Accept": "application/xml"}).status_code == 406
    tenant = client.get(f"{BASE}/attributes", headers={"NGSILD-Tenant": "nowhere"})
    assert tenant.json()["type"].endswith("NonExistingTenant")
