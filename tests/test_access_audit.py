"""The audit trail: refusals from every layer and changes of rights, readable by admins only."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.testclient import TestClient

from access_helpers import bearer
from kizuna.access.apikeys import ApiKeys
from kizuna.store import open_store

AUDIT = "/management/v1/audit"
ENTITIES = "/ngsi-ld/v1/entities"
PERMISSIONS = "/ngsi-ld/v1/auth/permissions"
DATASETS = "/management/v1/datasets"
CORE = {"Content-Type": "application/json"}


def trail(client: TestClient, admin: dict[str, str], **params: Any) -> list[dict[str, str]]:
    got = client.get(AUDIT, params=params, headers=admin)
    assert got.status_code == 200, got.text
    assert int(got.headers["kizuna-results-count"]) >= len(got.json())
    return got.json()


def test_refusals_from_every_layer_are_recorded_with_subject_and_reason(
    secured: TestClient, idp_key: Any
) -> None:
    admin = bearer(idp_key, "kizuna-admin", sub="root")
    alice = bearer(idp_key, "kizuna-creator", sub="alice")
    bob = bearer(idp_key, sub="bob")
    lamp = {
        "id": "urn:ngsi-ld:Streetlight:1",
        "type": "Streetlight",
        "status": {"type": "Property", "value": "ok"},
    }
    assert secured.post(ENTITIES, json=lamp, headers=alice | CORE).status_code == 201
    grant = {"type": "Permission", "target": {"id": lamp["id"]}, "assignee": "bob", "action": "read"}
    assert secured.post(PERMISSIONS, json=grant, headers=alice).status_code == 201

    assert secured.get(DATASETS).status_code == 401  # the authentication layer
    assert secured.get(DATASETS, headers={"Authorization": "Bearer forged"}).status_code == 401
    assert secured.get(DATASETS, headers=bob).status_code == 403  # admins-only middleware
    patch = {"status": {"type": "Property", "value": "off"}}
    assert secured.patch(f"{ENTITIES}/{lamp['id']}/attrs", json=patch, headers=bob | CORE).status_code == 403
    assert secured.post(ENTITIES, json={**lamp, "id": "urn:x:2"}, headers=bob | CORE).status_code == 403

    denied = trail(secured, admin, since="2000-01-01T00:00:00Z")
    denied = [e for e in denied if e["outcome"] == "denied"]
    assert [(e["subject"], e["operation"]) for e in denied] == [
        ("", f"GET {DATASETS}"),
        ("", f"GET {DATASETS}"),
        ("bob", f"GET {DATASETS}"),
        ("bob", f"PATCH {ENTITIES}/{lamp['id']}/attrs"),
        ("bob", f"POST {ENTITIES}"),
    ]
    assert denied[1]["detail"].startswith("401 ")
    assert "AccessDenied" in denied[3]["detail"] and "write" in denied[3]["detail"]
    assert all(e["at"].endswith("Z") for e in denied)


def test_hidden_entities_and_refusals_inside_a_batch_are_recorded_though_the_status_hides_them(
    secured: TestClient, idp_key: Any
) -> None:
    admin = bearer(idp_key, "kizuna-admin", sub="root")
    alice = bearer(idp_key, "kizuna-creator", sub="alice")
    carol = bearer(idp_key, "kizuna-creator", sub="carol")
    record = {"id": "urn:ngsi-ld:CohortRecord:7", "type": "CohortRecord"}
    assert secured.post(ENTITIES, json=record, headers=alice | CORE).status_code == 201
    absent = "urn:ngsi-ld:CohortRecord:absent"

    assert secured.get(f"{ENTITIES}/{record['id']}", headers=carol).status_code == 404
    assert secured.get(f"{ENTITIES}/{absent}", headers=carol).status_code == 404  # not a refusal
    batch_delete = "/ngsi-ld/v1/entityOperations/delete"
    batch = secured.post(batch_delete, json=[record["id"], absent], headers=carol)
    assert batch.status_code == 207
    assert [e["error"]["status"] for e in batch.json()["errors"]] == [404, 404]  # alike to carol

    denied = [e for e in trail(secured, admin, subject="carol") if e["outcome"] == "denied"]
    assert [(e["operation"], e["target"]) for e in denied] == [
        (f"GET {ENTITIES}/{record['id']}", f"{ENTITIES}/{record['id']}"),
        (f"POST {batch_delete}", record["id"]),
    ]
    assert all(e["detail"].startswith("404 hidden: ") for e in denied)
    assert secured.get(f"{ENTITIES}/{record['id']}", headers=alice).status_code == 200


def test_changes_of_permissions_and_datasets_are_recorded_and_filtered(
    secured: TestClient, idp_key: Any
) -> None:
    admin = bearer(idp_key, "kizuna-admin", sub="root")
    body = {"type": "Permission", "target": {"types": ["Streetlight"]}, "assignee": "bob", "action": "write"}
    created = secured.post(PERMISSIONS, json=body, headers=admin)
    assert created.status_code == 201, created.text
    pid = created.headers["location"].rsplit("/", 1)[-1]
    assert secured.patch(f"{PERMISSIONS}/{pid}", json={"action": "read"}, headers=admin).status_code == 204
    assert secured.delete(f"{PERMISSIONS}/{pid}", headers=admin).status_code == 204
    dataset = {
        "id": "urn:x:ds",
        "entityTypes": ["Streetlight"],
        "policy": {"permission": [{"action": "use"}]},
    }
    assert secured.post(DATASETS, json=dataset, headers=admin).status_code == 201
    assert secured.delete(f"{DATASETS}/urn:x:ds", headers=admin).status_code == 204

    events = trail(secured, admin, subject="root")
    assert [(e["operation"], e["target"], e["outcome"]) for e in events] == [
        ("permission.create", pid, "done"),
        ("permission.update", pid, "done"),
        ("permission.delete", pid, "done"),
        ("dataset.create", "urn:x:ds", "done"),
        ("dataset.delete", "urn:x:ds", "done"),
    ]
    assert "write on" in events[0]["detail"] and "for bob" in events[0]["detail"]
    assert "read on" in events[1]["detail"]
    assert trail(secured, admin, subject="nobody") == []
    assert trail(secured, admin, subject="root", since="2999-01-01T00:00:00Z") == []
    page = secured.get(AUDIT, params={"subject": "root", "limit": 2, "offset": 3}, headers=admin)
    assert [e["operation"] for e in page.json()] == ["dataset.create", "dataset.delete"]
    assert page.headers["kizuna-results-count"] == "5"


def test_api_keys_made_and_revoked_name_the_operator(secured: TestClient, idp_key: Any) -> None:
    url = secured.app.state.settings.store  # type: ignore[attr-defined]

    async def make_and_revoke() -> str:
        store = open_store(url)
        await store.open()
        try:
            keys = ApiKeys(store)
            record, _ = await keys.create("cli:ops", "gateway-zoo", ("kizuna-creator",), "duisburg", None)
            assert await keys.revoke("cli:ops", record.id)
            return record.id
        finally:
            await store.close()

    key_id = asyncio.run(make_and_revoke())
    events = trail(secured, bearer(idp_key, "kizuna-admin", sub="root"), subject="cli:ops")
    assert [(e["operation"], e["target"], e["tenant"]) for e in events] == [
        ("apikey.create", key_id, "duisburg"),
        ("apikey.revoke", key_id, "duisburg"),
    ]
    assert "gateway-zoo" in events[0]["detail"]


def test_only_node_admins_read_the_trail_and_bad_filters_answer_400(
    secured: TestClient, idp_key: Any
) -> None:
    admin = bearer(idp_key, "kizuna-admin", sub="root")
    assert secured.get(AUDIT).status_code == 401
    assert secured.get(AUDIT, headers=bearer(idp_key, "duisburg:kizuna-admin", sub="eve")).status_code == 403
    bad = secured.get(AUDIT, params={"since": "yesterday"}, headers=admin)
    assert bad.status_code == 400 and bad.json()["type"].endswith("BadRequestData")
    assert secured.get(AUDIT, params={"limit": "-1"}, headers=admin).status_code == 400
    assert [e["subject"] for e in trail(secured, admin, subject="eve")] == ["eve"]


def test_the_time_filter_is_inclusive(secured: TestClient, idp_key: Any) -> None:
    admin = bearer(idp_key, "kizuna-admin", sub="root")
    assert secured.get(DATASETS, headers=bearer(idp_key, sub="mallory")).status_code == 403
    (event,) = trail(secured, admin, subject="mallory")
    assert trail(secured, admin, subject="mallory", since=event["at"]) == [event]
