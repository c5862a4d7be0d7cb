"""Open datasets (``"open": true``): no constraints, whole entity types, and a permission of the
public that lasts as long as the dataset (anonymous reads through NGSI-LD, CADDE, CKAN and
DCAT-AP are in tests/test_cadde.py, between two live nodes)."""

from __future__ import annotations

from starlette.testclient import TestClient

OPEN = {
    "id": "urn:kanagawa:ds:air",
    "title": "Air quality",
    "entityTypes": ["AirQualityObserved"],
    "open": True,
}
COUNTED = {
    "permission": [
        {"action": "use", "constraint": [{"leftOperand": "count", "operator": "lteq", "rightOperand": "1"}]}
    ]
}


def test_an_open_dataset_takes_no_constraint_nor_narrowing(client: TestClient) -> None:
    assert (
        client.post("/management/v1/datasets", json={**OPEN, "id": "c", "policy": COUNTED}).status_code == 400
    )
    narrowed = {**OPEN, "id": "n", "attributes": ["no2"]}
    assert client.post("/management/v1/datasets", json=narrowed).status_code == 400
    created = client.post("/management/v1/datasets", json=OPEN)
    assert created.status_code == 201 and created.json()["offers"][0]["permission"] == [{"action": "use"}]


def test_an_open_dataset_grants_the_public_read_while_it_exists(client: TestClient) -> None:
    assert client.post("/management/v1/datasets", json=OPEN).status_code == 201
    (granted,) = [
        p for p in client.get("/ngsi-ld/v1/auth/permissions?action=read").json() if p.get("dataset")
    ]
    assert (granted["assignee"], granted["dataset"]) == ("urn:ngsi-ld:Subject:public", OPEN["id"])
    assert granted["target"] == {"types": "AirQualityObserved"}
    assert client.delete(f"/ngsi-ld/v1/auth/permissions/{granted['id']}").status_code == 403
    assert client.delete(f"/management/v1/datasets/{OPEN['id']}").status_code == 204
    left = client.get("/ngsi-ld/v1/auth/permissions?action=read").json()
    assert not [p for p in left if p.get("dataset")]
