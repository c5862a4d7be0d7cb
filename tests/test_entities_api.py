"""The entity API of clause 5.6, as a city IT team would use it: a street light's life."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from kizuna.errors import BadRequestData
from kizuna.ngsild.merging import NOT_OVERWRITTEN, UpdateResult, check_appended

BASE = "/ngsi-ld/v1"
LD = {"Content-Type": "application/ld+json"}
ERR = "https://uri.etsi.org/ngsi-ld/errors/"
DEFAULT = "https://uri.etsi.org/ngsi-ld/default-context/"


def streetlight(n: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"urn:ngsi-ld:Streetlight:duisburg-{n}",
        "type": "Streetlight",
        "status": {"type": "Property", "value": "ok", "observedAt": "2026-11-01T20:00:00Z"},
        "powerState": {"type": "Property", "value": "on", "unitCode": "C62"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [6.7623, 51.4344]}},
        "refStreetlightGroup": {"type": "Relationship", "object": "urn:ngsi-ld:StreetlightGroup:zoo"},
        **extra,
    }


def create(client: TestClient, entity: dict[str, Any], **headers: str) -> None:
    response = client.post(f"{BASE}/entities", json=entity, headers=headers)
    assert response.status_code == 201, response.text


def test_create_then_retrieve_round_trips_the_entity(client: TestClient) -> None:
    response = client.post(f"{BASE}/entities", json=streetlight())
    assert response.status_code == 201
    assert response.headers["location"] == f"{BASE}/entities/urn:ngsi-ld:Streetlight:duisburg-1"

    got = client.get(f"{BASE}/entities/urn:ngsi-ld:Streetlight:duisburg-1")
    assert got.status_code == 200
    assert got.headers["content-type"] == "application/json"
    assert "ngsi-ld-core-context" in got.headers["link"]
    assert got.json() == streetlight()


def test_create_twice_is_409_already_exists(client: TestClient) -> None:
    create(client, streetlight())
    again = client.post(f"{BASE}/entities", json=streetlight())
    assert again.status_code == 409
    assert again.json()["type"] == ERR + "AlreadyExists"


def test_representations_keyvalues_concise_and_sysattrs(client: TestClient) -> None:
    create(client, streetlight())
    url = f"{BASE}/entities/urn:ngsi-ld:Streetlight:duisburg-1"
    key_values = client.get(url, params={"options": "keyValues"}).json()
    assert key_values == {
        "id": "urn:ngsi-ld:Streetlight:duisburg-1",
        "type": "Streetlight",
        "status": "ok",
        "powerState": "on",
        "location": {"type": "Point", "coordinates": [6.7623, 51.4344]},
        "refStreetlightGroup": "urn:ngsi-ld:StreetlightGroup:zoo",
    }
    concise = client.get(url, params={"format": "concise"}).json()
    assert concise["status"] == {"value": "ok", "observedAt": "2026-11-01T20:00:00Z"}
    assert concise["refStreetlightGroup"] == {"object": "urn:ngsi-ld:StreetlightGroup:zoo"}
    assert concise["location"] == {"type": "Point", "coordinates": [6.7623, 51.4344]}
    with_sys = client.get(url, params={"options": "sysAttrs"}).json()
    assert with_sys["createdAt"].endswith("Z")
    assert with_sys["status"]["modifiedAt"] >= with_sys["status"]["createdAt"]


def test_json_ld_body_and_accept(client: TestClient) -> None:
    ctx = "https://raw.githubusercontent.com/smart-data-models/dataModel.Streetlighting/master/context.jsonld"
    entity = {**streetlight(), "@context": ctx}
    create(client, entity, **LD)
    got = client.get(
        f"{BASE}/entities/urn:ngsi-ld:Streetlight:duisburg-1",
        headers={
            "Accept": "application/ld+json",
            "Link": f'<{ctx}>; rel="http://www.w3.org/ns/json-ld#context"',
        },
    )
    assert got.headers["content-type"] == "application/ld+json"
    assert got.json() == entity
    # Without that context, the same attributes come back as full IRIs.
    plain = client.get(f"{BASE}/entities/urn:ngsi-ld:Streetlight:duisburg-1").json()
    assert plain["type"] == "https://smartdatamodels.org/dataModel.Streetlighting/Streetlight"


def test_media_type_errors(client: TestClient) -> None:
    bad_type = client.post(f"{BASE}/entities", content=b"{}", headers={"Content-Type": "text/plain"})
    assert bad_type.status_code == 415
    create(client, streetlight())
    not_acceptable = client.get(
        f"{BASE}/entities/urn:ngsi-ld:Streetlight:duisburg-1", headers={"Accept": "text/csv"}
    )
    assert not_acceptable.status_code == 406
    ld_without_context = client.post(f"{BASE}/entities", json=streetlight(2), headers=LD)
    assert ld_without_context.status_code == 400
    json_with_context = client.post(
        f"{BASE}/entities", json={**streetlight(3), "@context": "https://x.org/c"}
    )
    assert json_with_context.status_code == 400


def test_bad_input_is_a_problem_never_a_500(client: TestClient) -> None:
    cases = [
        (b"{not json", "InvalidRequest"),
        (b'{"id": "not a uri", "type": "T"}', "BadRequestData"),
        (b'{"id": "urn:a:b"}', "BadRequestData"),
        (b'{"id": "urn:a:b", "type": "T", "x": {"type": "Relationship", "object": 3}}', "BadRequestData"),
        (b'{"id": "urn:a:b", "type": "T", "location": {"type": "Property", "value": 1}}', "BadRequestData"),
        (b'{"id": "urn:a:b", "type": "T", "bad=name": 1}', "BadRequestData"),
    ]
    for body, error in cases:
        response = client.post(f"{BASE}/entities", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 400, body
        assert response.json()["type"] == ERR + error, body
        assert response.json()["detail"]
    too_big = client.post(
        f"{BASE}/entities",
        content=b'{"id":"urn:a:b","type":"T","x":"' + b"a" * 300_000 + b'"}',
        headers={"Content-Type": "application/json"},
    )
    assert too_big.status_code == 413
    assert client.get(f"{BASE}/entities/urn:a:b").status_code == 404


def test_attribute_operations(client: TestClient) -> None:
    create(client, streetlight())
    url = f"{BASE}/entities/urn:ngsi-ld:Streetlight:duisburg-1"
    # Append with noOverwrite leaves the existing attribute and reports it.
    appended = client.post(
        f"{url}/attrs",
        params={"options": "noOverwrite"},
        json={
            "status": {"type": "Property", "value": "faulty"},
            "lampType": {"type": "Property", "value": "LED"},
        },
    )
    assert appended.status_code == 207
    # Names come back expanded, as the ETSI suite expects of an UpdateResult.
    assert appended.json()["updated"] == [DEFAULT + "lampType"]
    assert appended.json()["notUpdated"][0]["attributeName"] == "https://uri.etsi.org/ngsi-ld/status"
    # With nothing left to append it is refused, as Orion-LD refuses it (FiLiP expects an error),
    # and the entity is not written.
    before = client.get(url, params={"options": "sysAttrs"}).json()
    refused = client.post(
        f"{url}/attrs", params={"options": "noOverwrite"}, json={"status": {"type": "Property", "value": "x"}}
    )
    assert refused.status_code == 400
    assert refused.json()["type"] == ERR + "BadRequestData"
    assert "https://uri.etsi.org/ngsi-ld/status" in refused.json()["detail"]
    assert client.get(url, params={"options": "sysAttrs"}).json() == before
    # Update touches only existing attributes.
    updated = client.patch(f"{url}/attrs", json={"status": {"type": "Property", "value": "faulty"}})
    assert updated.status_code == 204
    # Partial update of one attribute keeps what it does not mention.
    assert client.patch(f"{url}/attrs/powerState", json={"value": "off"}).status_code == 204
    entity = client.get(url).json()
    assert entity["status"]["value"] == "faulty"
    assert entity["powerState"] == {"type": "Property", "value": "off", "unitCode": "C62"}
    # Replace, then delete.
    assert (
        client.put(f"{url}/attrs/lampType", json={"type": "Property", "value": "sodium"}).status_code == 204
    )
    assert client.delete(f"{url}/attrs/lampType").status_code == 204
    missing = client.delete(f"{url}/attrs/lampType")
    assert missing.status_code == 404
    assert missing.json()["type"] == ERR + "ResourceNotFound"


def test_an_append_is_refused_only_when_nooverwrite_left_everything() -> None:
    """A context source's failure, or anything appended, keeps the 207 that says what happened."""
    with pytest.raises(BadRequestData):
        check_appended(UpdateResult(not_updated=[("urn:a", NOT_OVERWRITTEN)]))
    check_appended(UpdateResult(updated=["urn:b"], not_updated=[("urn:a", NOT_OVERWRITTEN)]))
    check_appended(UpdateResult(not_updated=[("urn:a", NOT_OVERWRITTEN), ("urn:b", "source failed")]))
    check_appended(UpdateResult(updated=["urn:a"]))


def test_dataset_ids_and_delete_all(client: TestClient) -> None:
    create(
        client,
        streetlight(
            illuminance=[
                {"type": "Property", "value": 10},
                {"type": "Property", "value": 12, "datasetId": "urn:ngsi-ld:Dataset:sensor-b"},
            ]
        ),
    )
    url = f"{BASE}/entities/urn:ngsi-ld:Streetlight:duisburg-1"
    assert len(client.get(url).json()["illuminance"]) == 2
    assert (
        client.delete(
            f"{url}/attrs/illuminance", params={"datasetId": "urn:ngsi-ld:Dataset:sensor-b"}
        ).status_code
        == 204
    )
    assert client.get(url).json()["illuminance"] == {"type": "Property", "value": 10}
    assert (
        client.post(
            f"{url}/attrs", json={"illuminance": {"type": "Property", "value": 3, "datasetId": "urn:x:y"}}
        ).status_code
        == 204
    )
    assert client.delete(f"{url}/attrs/illuminance", params={"deleteAll": "true"}).status_code == 204
    assert "illuminance" not in client.get(url).json()


def test_merge_patch_with_ngsi_ld_null(client: TestClient) -> None:
    create(client, streetlight())
    url = f"{BASE}/entities/urn:ngsi-ld:Streetlight:duisburg-1"
    merged = client.patch(url, json={"status": "faulty", "powerState": "urn:ngsi-ld:null", "lampType": "LED"})
    assert merged.status_code == 204
    entity = client.get(url).json()
    assert entity["status"] == {"type": "Property", "value": "faulty", "observedAt": "2026-11-01T20:00:00Z"}
    assert "powerState" not in entity
    assert entity["lampType"] == {"type": "Property", "value": "LED"}


def test_replace_entity_keeps_id_and_created_at(client: TestClient) -> None:
    create(client, streetlight())
    url = f"{BASE}/entities/urn:ngsi-ld:Streetlight:duisburg-1"
    before = client.get(url, params={"options": "sysAttrs"}).json()
    replaced = client.put(url, json={"type": "Streetlight", "status": {"type": "Property", "value": "new"}})
    assert replaced.status_code == 204
    after = client.get(url, params={"options": "sysAttrs"}).json()
    assert after["createdAt"] == before["createdAt"]
    assert set(after) == {"id", "type", "status", "createdAt", "modifiedAt"}


def test_batch_operations_report_per_entity(client: TestClient) -> None:
    ops = f"{BASE}/entityOperations"
    created = client.post(f"{ops}/create", json=[streetlight(1), streetlight(2)])
    assert created.status_code == 201
    assert created.json() == ["urn:ngsi-ld:Streetlight:duisburg-1", "urn:ngsi-ld:Streetlight:duisburg-2"]
    partly = client.post(f"{ops}/create", json=[streetlight(2), streetlight(3), {"id": "bad", "type": "T"}])
    assert partly.status_code == 207
    body = partly.json()
    assert body["success"] == ["urn:ngsi-ld:Streetlight:duisburg-3"]
    assert {e["entityId"] for e in body["errors"]} == {"urn:ngsi-ld:Streetlight:duisburg-2", "bad"}
    assert body["errors"][0]["error"]["type"].startswith(ERR)
    upserted = client.post(f"{ops}/upsert", json=[streetlight(3), streetlight(4)])
    assert upserted.status_code == 201
    assert upserted.json() == ["urn:ngsi-ld:Streetlight:duisburg-4"]
    assert client.post(f"{ops}/upsert", json=[streetlight(4)]).status_code == 204
    updated = client.post(f"{ops}/update", json=[{"id": "urn:ngsi-ld:Streetlight:duisburg-9", "status": "x"}])
    assert updated.status_code == 207
    deleted = client.post(
        f"{ops}/delete", json=["urn:ngsi-ld:Streetlight:duisburg-1", "urn:ngsi-ld:Streetlight:duisburg-1x"]
    )
    assert deleted.status_code == 207
    assert deleted.json()["success"] == ["urn:ngsi-ld:Streetlight:duisburg-1"]


def test_batch_update_without_overwrite_lists_a_partly_updated_entity_as_a_success(
    client: TestClient,
) -> None:
    """FiLiP takes a batch with no success as failed, and Orion-LD lists an entity that got its
    new attributes as a success; ETSI 005_02 still needs the 207 with what was not overwritten."""
    ops = f"{BASE}/entityOperations"
    assert client.post(f"{ops}/create", json=[streetlight(1), streetlight(2)]).status_code == 201
    fragment = {
        "type": "Streetlight",
        "status": {"type": "Property", "value": "faulty"},
        "lampType": {"type": "Property", "value": "LED"},
    }
    unchanged = {"type": "Streetlight", "status": {"type": "Property", "value": "faulty"}}
    updated = client.post(
        f"{ops}/update",
        params={"options": "noOverwrite"},
        json=[
            {"id": "urn:ngsi-ld:Streetlight:duisburg-1", **fragment},
            {"id": "urn:ngsi-ld:Streetlight:duisburg-2", **unchanged},
        ],
    )
    assert updated.status_code == 207
    body = updated.json()
    assert body["success"] == ["urn:ngsi-ld:Streetlight:duisburg-1"]
    errors = {e["entityId"]: e["error"] for e in body["errors"]}
    assert set(errors) == {"urn:ngsi-ld:Streetlight:duisburg-1", "urn:ngsi-ld:Streetlight:duisburg-2"}
    assert errors["urn:ngsi-ld:Streetlight:duisburg-1"]["type"] == ERR + "BadRequestData"
    assert "status" in errors["urn:ngsi-ld:Streetlight:duisburg-1"]["detail"]
    first = client.get(f"{BASE}/entities/urn:ngsi-ld:Streetlight:duisburg-1").json()
    assert first["status"]["value"] == "ok"
    assert first["lampType"]["value"] == "LED"


def test_purge_by_type(client: TestClient) -> None:
    client.post(
        f"{BASE}/entityOperations/create",
        json=[streetlight(1), streetlight(2), {"id": "urn:x:1", "type": "Other"}],
    )
    assert client.delete(f"{BASE}/entities", params={"type": "Streetlight"}).status_code == 204
    assert client.get(f"{BASE}/entities/urn:ngsi-ld:Streetlight:duisburg-1").status_code == 404
    assert client.get(f"{BASE}/entities/urn:x:1").status_code == 200


def test_tenants_are_isolated(client: TestClient) -> None:
    create(client, streetlight(), **{"NGSILD-Tenant": "duisburg"})
    url = f"{BASE}/entities/urn:ngsi-ld:Streetlight:duisburg-1"
    assert client.get(url, headers={"NGSILD-Tenant": "duisburg"}).status_code == 200
    assert client.get(url).status_code == 404
    unknown = client.get(url, headers={"NGSILD-Tenant": "kanagawa"})
    assert unknown.status_code == 404
    assert unknown.json()["type"] == ERR + "NonExistingTenant"


def test_health(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/health/live").json() == {"status": "ok"}
    assert client.get("/health/ready").json() == {"status": "ready"}


def test_a_node_whose_store_does_not_answer_is_alive_but_not_ready(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def gone() -> str | None:
        raise ConnectionError("connection refused")

    monkeypatch.setattr(client.app.state.store, "schema_mismatch", gone)  # type: ignore[attr-defined]
    assert client.get("/health/live").status_code == 200
    answer = client.get("/health/ready")
    assert answer.status_code == 503 and answer.json()["type"] == ERR + "ServiceUnavailable"
    assert "refused" not in answer.text  # the cause goes to the log, not to whoever probes


def test_an_id_pattern_alone_queries_every_entity_it_matches(client: TestClient) -> None:
    """FiLiP's clean-up query (``idPattern=.*&count=true``), as Orion-LD answers it; ids alone
    still make no query (ETSI 019_03_05)."""
    for n in (1, 2):
        create(client, {"id": f"urn:ngsi-ld:Streetlight:p{n}", "type": "Streetlight"})
    create(client, {"id": "urn:ngsi-ld:Bench:p1", "type": "Bench"})
    answer = client.get(f"{BASE}/entities", params={"idPattern": ".*", "count": "true", "limit": 100})
    assert answer.status_code == 200, answer.text
    assert answer.headers["NGSILD-Results-Count"] == "3"
    lights = client.get(f"{BASE}/entities", params={"idPattern": "Streetlight"})
    assert sorted(e["id"] for e in lights.json()) == [f"urn:ngsi-ld:Streetlight:p{n}" for n in (1, 2)]
    only_ids = client.get(f"{BASE}/entities", params={"id": "urn:ngsi-ld:Bench:p1"})
    assert only_ids.status_code == 400
