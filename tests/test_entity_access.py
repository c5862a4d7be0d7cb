"""Entities under access control, through the API as clients use it (``--auth oidc``, both stores).

Owners, permissions, specificAccessPolicy and the public: each decides what a subject's
retrievals, queries, counts, writes, purges, batches and discovery see, with 404 for what it may
not read and 403 for what it may read but not change.
"""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from access_helpers import bearer

ENTITIES = "/ngsi-ld/v1/entities"
PERMISSIONS = "/ngsi-ld/v1/auth/permissions"
CORE = {"Content-Type": "application/json"}


def lamp(n: int, kind: str = "Streetlight", **attrs: Any) -> dict[str, Any]:
    return {
        "id": f"urn:ngsi-ld:{kind}:{n}",
        "type": kind,
        "status": {"type": "Property", "value": "ok"},
    } | attrs


def ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return sorted(e["id"] for e in response.json())


def grant(
    client: TestClient, admin: dict[str, str], target: dict[str, Any], assignee: str, action: str
) -> None:
    body = {"type": "Permission", "target": target, "assignee": assignee, "action": action}
    assert client.post(PERMISSIONS, json=body, headers=admin).status_code == 201


def setup(client: TestClient, key: Any) -> dict[str, dict[str, str]]:
    """alice creates two lamps and a bench; bob and carol hold nothing yet."""
    who = {
        "admin": bearer(key, "kizuna-admin", sub="root"),
        "alice": bearer(key, "kizuna-creator", sub="alice"),
        "bob": bearer(key, sub="bob", groups=("gardeners",)),
        "carol": bearer(key, "kizuna-creator", sub="carol"),
        "anonymous": {},
    }
    for body in (lamp(1), lamp(2), lamp(3, "Bench")):
        assert client.post(ENTITIES, json=body, headers=who["alice"] | CORE).status_code == 201
    return who


def test_what_nobody_granted_does_not_exist(secured: TestClient, idp_key: Any) -> None:
    who = setup(secured, idp_key)
    one = f"{ENTITIES}/urn:ngsi-ld:Streetlight:1"
    assert secured.get(one, headers=who["alice"]).status_code == 200
    assert secured.get(one, headers=who["admin"]).status_code == 200
    for name in ("bob", "anonymous"):
        got = secured.get(one, headers=who[name])
        assert got.status_code == 404, got.text
        assert got.json()["type"].endswith("ResourceNotFound")
        assert secured.patch(
            f"{one}/attrs", json={"status": "off"}, headers=who[name] | CORE
        ).status_code in (404,)
        assert secured.delete(one, headers=who[name]).status_code == 404
    listed = secured.get(ENTITIES, params={"type": "Streetlight,Bench", "count": "true"}, headers=who["bob"])
    assert ids(listed) == [] and listed.headers["NGSILD-Results-Count"] == "0"
    mine = secured.get(ENTITIES, params={"type": "Streetlight,Bench", "count": "true"}, headers=who["alice"])
    assert len(ids(mine)) == 3 and mine.headers["NGSILD-Results-Count"] == "3"


def test_a_read_permission_shows_and_a_write_permission_changes(secured: TestClient, idp_key: Any) -> None:
    who = setup(secured, idp_key)
    grant(secured, who["admin"], {"types": "Streetlight"}, "gardeners", "read")
    one = f"{ENTITIES}/urn:ngsi-ld:Streetlight:1"
    assert secured.get(one, headers=who["bob"]).status_code == 200
    page = secured.get(
        ENTITIES, params={"type": "Streetlight,Bench", "count": "true", "limit": "1"}, headers=who["bob"]
    )
    assert ids(page) == ["urn:ngsi-ld:Streetlight:1"] and page.headers["NGSILD-Results-Count"] == "2"
    refused = secured.patch(f"{one}/attrs", json={"status": "off"}, headers=who["bob"] | CORE)
    assert refused.status_code == 403 and refused.json()["type"].endswith("AccessDenied")
    assert secured.delete(one, headers=who["bob"]).status_code == 403
    grant(secured, who["admin"], {"id": "urn:ngsi-ld:Streetlight:1"}, "bob", "write")
    assert secured.patch(f"{one}/attrs", json={"status": "off"}, headers=who["bob"] | CORE).status_code == 204
    assert secured.get(one, headers=who["alice"]).json()["status"]["value"] == "off"
    # Whoever may write may not open the entity to others: that changes who may read it.
    policy = {"specificAccessPolicy": {"type": "Property", "value": "read"}}
    assert secured.post(f"{one}/attrs", json=policy, headers=who["bob"] | CORE).status_code == 403
    assert secured.post(f"{one}/attrs", json=policy, headers=who["alice"] | CORE).status_code == 204


def test_specific_access_policy_opens_an_entity_to_authenticated_subjects(
    secured: TestClient, idp_key: Any
) -> None:
    who = setup(secured, idp_key)
    body = lamp(9, specificAccessPolicy={"type": "Property", "value": "AUTH_WRITE"})
    assert secured.post(ENTITIES, json=body, headers=who["alice"] | CORE).status_code == 201
    nine = f"{ENTITIES}/urn:ngsi-ld:Streetlight:9"
    assert ids(secured.get(ENTITIES, params={"type": "Streetlight"}, headers=who["bob"])) == [
        "urn:ngsi-ld:Streetlight:9"
    ]
    assert (
        secured.patch(f"{nine}/attrs", json={"status": "off"}, headers=who["bob"] | CORE).status_code == 204
    )
    assert secured.get(nine).status_code == 404  # not to the anonymous public


def test_the_public_reads_open_data_and_writes_nothing(secured: TestClient, idp_key: Any) -> None:
    who = setup(secured, idp_key)
    grant(secured, who["admin"], {"types": "Bench"}, "urn:ngsi-ld:Subject:public", "read")
    assert ids(secured.get(ENTITIES, params={"type": "Streetlight,Bench"})) == ["urn:ngsi-ld:Bench:3"]
    bench = f"{ENTITIES}/urn:ngsi-ld:Bench:3"
    assert secured.get(bench).status_code == 200
    denied = secured.patch(f"{bench}/attrs", json={"status": "off"}, headers=CORE)
    assert denied.status_code == 401 and denied.headers["WWW-Authenticate"].startswith("Bearer")
    created = secured.post(ENTITIES, json=lamp(7), headers=CORE)
    assert created.status_code == 401
    assert secured.post(ENTITIES, json=lamp(7), headers=who["bob"] | CORE).status_code == 403  # no role


def test_purge_and_batches_touch_only_what_the_subject_may_write(secured: TestClient, idp_key: Any) -> None:
    who = setup(secured, idp_key)
    assert secured.post(ENTITIES, json=lamp(4), headers=who["carol"] | CORE).status_code == 201
    assert secured.delete(ENTITIES, params={"type": "Streetlight"}, headers=who["carol"]).status_code == 204
    assert ids(secured.get(ENTITIES, params={"type": "Streetlight"}, headers=who["admin"])) == [
        "urn:ngsi-ld:Streetlight:1",
        "urn:ngsi-ld:Streetlight:2",
    ]
    grant(secured, who["admin"], {"types": "Streetlight"}, "carol", "read")
    batch = secured.post(
        "/ngsi-ld/v1/entityOperations/delete",
        json=["urn:ngsi-ld:Streetlight:1", "urn:ngsi-ld:Bench:3"],
        headers=who["carol"] | CORE,
    )
    assert batch.status_code == 207, batch.text
    errors = {e["entityId"]: e["error"]["status"] for e in batch.json()["errors"]}
    assert errors == {"urn:ngsi-ld:Streetlight:1": 403, "urn:ngsi-ld:Bench:3": 404}
    # An id taken by an entity the subject cannot see is still taken.
    taken = secured.post(ENTITIES, json=lamp(3, "Bench"), headers=who["carol"] | CORE)
    assert taken.status_code == 409
    upsert = secured.post(
        "/ngsi-ld/v1/entityOperations/upsert", json=[lamp(3, "Bench")], headers=who["carol"] | CORE
    )
    assert upsert.status_code == 207 and upsert.json()["errors"][0]["entityId"] == "urn:ngsi-ld:Bench:3"
    assert secured.get(f"{ENTITIES}/urn:ngsi-ld:Bench:3", headers=who["alice"]).status_code == 200


def test_discovery_lists_only_readable_types(secured: TestClient, idp_key: Any) -> None:
    who = setup(secured, idp_key)
    grant(secured, who["admin"], {"types": "Bench"}, "bob", "read")
    types = secured.get("/ngsi-ld/v1/types", headers=who["bob"]).json()
    assert types["typeList"] == ["Bench"]
    everything = secured.get("/ngsi-ld/v1/types", headers=who["alice"]).json()
    assert sorted(everything["typeList"]) == ["Bench", "Streetlight"]
