"""/ngsi-ld/v1/auth/permissions: Stellio's permission API, its rules, on both stores."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from access_helpers import bearer

PERMISSIONS = "/ngsi-ld/v1/auth/permissions"
CORE = "https://uri.etsi.org/ngsi-ld/default-context/"


def permission(**members: Any) -> dict[str, Any]:
    return {"type": "Permission", "action": "read", "assignee": "bob"} | members


def test_an_admin_grants_reads_changes_and_revokes(secured: TestClient, idp_key: Any) -> None:
    admin = bearer(idp_key, "kizuna-admin", sub="ops")
    body = permission(id="urn:ngsi-ld:Permission:lamps", target={"types": "Streetlight"}, assignee="city-it")
    created = secured.post(PERMISSIONS, json=body, headers=admin)
    assert created.status_code == 201, created.text
    assert created.headers["location"] == f"{PERMISSIONS}/urn:ngsi-ld:Permission:lamps"

    got = secured.get(f"{PERMISSIONS}/urn:ngsi-ld:Permission:lamps", headers=admin)
    assert got.json() == {
        "id": "urn:ngsi-ld:Permission:lamps",
        "type": "Permission",
        "target": {"types": "Streetlight"},
        "assignee": "city-it",
        "assigner": "ops",
        "action": "read",
    }
    patched = secured.patch(
        f"{PERMISSIONS}/urn:ngsi-ld:Permission:lamps", json={"action": "write"}, headers=admin
    )
    assert patched.status_code == 204, patched.text
    listed = secured.get(PERMISSIONS, params={"action": "write", "count": "true"}, headers=admin)
    assert [p["action"] for p in listed.json()] == ["write"] and listed.headers["ngsild-results-count"] == "1"
    assert secured.get(PERMISSIONS, params={"action": "admin"}, headers=admin).json() == []

    member = bearer(idp_key, sub="carol", groups=("city-it",))
    assert [
        p["id"]
        for p in secured.get(f"{PERMISSIONS}/assigned", params={"action": "read"}, headers=member).json()
    ] == ["urn:ngsi-ld:Permission:lamps"]
    assert secured.delete(f"{PERMISSIONS}/urn:ngsi-ld:Permission:lamps", headers=admin).status_code == 204
    assert secured.get(f"{PERMISSIONS}/urn:ngsi-ld:Permission:lamps", headers=admin).status_code == 404


def test_target_types_are_expanded_with_the_request_context(secured: TestClient, idp_key: Any) -> None:
    admin = bearer(idp_key, "kizuna-admin")
    context = (
        "https://raw.githubusercontent.com/smart-data-models/dataModel.Streetlighting/master/context.jsonld"
    )
    link = f'<{context}>; rel="http://www.w3.org/ns/json-ld#context"'
    body = permission(target={"types": ["Streetlight", "StreetlightGroup"]})
    assert secured.post(PERMISSIONS, json=body, headers=admin | {"Link": link}).status_code == 201
    plain = secured.get(PERMISSIONS, params={"action": "read"}, headers=admin).json()
    assert plain[0]["target"]["types"] != ["Streetlight", "StreetlightGroup"], (
        "expanded, then compacted by the core context"
    )
    linked = secured.get(PERMISSIONS, params={"action": "read"}, headers=admin | {"Link": link}).json()
    assert linked[0]["target"]["types"] == ["Streetlight", "StreetlightGroup"]
    by_type = secured.get(
        PERMISSIONS,
        params={"action": "read", "targetType": "StreetlightGroup"},
        headers=admin | {"Link": link},
    )
    assert len(by_type.json()) == 1
    assert (
        secured.get(
            PERMISSIONS, params={"action": "read", "targetType": "StreetlightGroup"}, headers=admin
        ).json()
        == []
    )


def test_refused_permissions(secured: TestClient, idp_key: Any) -> None:
    admin = bearer(idp_key, "kizuna-admin")
    refused = [
        permission(target={"types": "T"}, action="own"),
        permission(target={"types": "T"}, action="admin", assignee="urn:ngsi-ld:Subject:public"),
        permission(target={"types": "T"}, action="admin", assignee="urn:ngsi-ld:Subject:authenticated"),
        permission(target={"types": "T"}, action="write", assignee="urn:ngsi-ld:Subject:public"),
        permission(target={"id": "urn:x:1", "types": "T"}),
        permission(target={}),
        permission(target={"types": "T"}, action="delete"),
        permission(target={"types": "T"}, assigner="someone-else"),
        {"type": "Entity", "target": {"types": "T"}, "assignee": "bob", "action": "read"},
    ]
    for body in refused:
        got = secured.post(PERMISSIONS, json=body, headers=admin)
        assert got.status_code == 400, (body, got.text)
        assert got.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"


def test_the_same_assignee_and_target_twice_is_a_conflict(secured: TestClient, idp_key: Any) -> None:
    admin = bearer(idp_key, "kizuna-admin")
    assert secured.post(PERMISSIONS, json=permission(target={"types": "T"}), headers=admin).status_code == 201
    again = secured.post(PERMISSIONS, json=permission(target={"types": "T"}, action="write"), headers=admin)
    assert again.status_code == 409


def test_only_an_administrator_of_the_target_grants(secured: TestClient, idp_key: Any) -> None:
    admin = bearer(idp_key, "kizuna-admin")
    lamp_admin = bearer(idp_key, sub="lamp-admin")
    grant = permission(target={"types": "Streetlight"}, assignee="lamp-admin", action="admin")
    assert secured.post(PERMISSIONS, json=grant, headers=admin).status_code == 201

    delegated = permission(target={"types": "Streetlight", "scopes": "/Duisburg"}, assignee="dave")
    assert secured.post(PERMISSIONS, json=delegated, headers=lamp_admin).status_code == 201
    wider = permission(target={"types": ["Streetlight", "Building"]}, assignee="dave")
    assert secured.post(PERMISSIONS, json=wider, headers=lamp_admin).status_code == 403
    nobody = bearer(idp_key, sub="erin")
    assert (
        secured.post(PERMISSIONS, json=permission(target={"types": "T"}), headers=nobody).status_code == 403
    )
    # What one administers is what one sees; the others' permissions stay hidden.
    seen = {
        p["assignee"] for p in secured.get(PERMISSIONS, params={"action": "read"}, headers=lamp_admin).json()
    }
    assert seen == {"lamp-admin", "dave"}
    assert secured.get(PERMISSIONS, params={"action": "read"}, headers=nobody).json() == []


def test_the_permission_api_needs_credentials(secured: TestClient) -> None:
    got = secured.get(PERMISSIONS)
    assert got.status_code == 401 and got.headers["www-authenticate"].startswith("Bearer")
    assert secured.post(PERMISSIONS, json=permission(target={"types": "T"})).status_code == 401
