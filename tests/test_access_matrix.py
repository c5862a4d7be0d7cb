"""Roles by operations by every API root, as one table (``--auth oidc``, both stores).

Each row is one request and the status each kind of subject gets: anonymous (no credentials),
``reader`` (authenticated, no role, no permission), ``creator`` (``kizuna-creator``) and
``admin`` (``kizuna-admin``). ``SEED`` is an entity the admin made and nobody was granted.
"""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from access_helpers import bearer

V1 = "/ngsi-ld/v1"
SEED = "urn:ngsi-ld:Streetlight:seed"
ROLES = {"anonymous": None, "reader": (), "creator": ("kizuna-creator",), "admin": ("kizuna-admin",)}


def lamp(entity_id: str) -> dict[str, Any]:
    return {"id": entity_id, "type": "Streetlight", "status": {"type": "Property", "value": "ok"}}


def subscription(n: str) -> dict[str, Any]:
    return {
        "id": f"urn:ngsi-ld:Subscription:{n}",
        "type": "Subscription",
        "entities": [{"type": "Streetlight"}],
        "notification": {"endpoint": {"uri": "http://127.0.0.1:9/notify"}},
    }


# (root, method, path, body, {role: status}); "{r}" in a path or body is the role's name.
TABLE: list[tuple[str, str, str, Any, dict[str, int]]] = [
    (
        "entities",
        "POST",
        f"{V1}/entities",
        lamp("urn:ngsi-ld:Streetlight:{r}"),
        {"anonymous": 401, "reader": 403, "creator": 201, "admin": 201},
    ),
    (
        "entities",
        "GET",
        f"{V1}/entities/{SEED}",
        None,
        {"anonymous": 404, "reader": 404, "creator": 404, "admin": 200},
    ),
    (
        "entities",
        "PATCH",
        f"{V1}/entities/{SEED}/attrs",
        {"status": "off"},
        {"anonymous": 404, "reader": 404, "creator": 404, "admin": 204},
    ),
    (
        "entities",
        "POST",
        f"{V1}/entityOperations/query",
        {"type": "Query", "entities": [{"type": "Streetlight"}]},
        {"anonymous": 200, "reader": 200, "creator": 200, "admin": 200},
    ),
    (
        "discovery",
        "GET",
        f"{V1}/types",
        None,
        {"anonymous": 200, "reader": 200, "creator": 200, "admin": 200},
    ),
    (
        "temporal",
        "GET",
        f"{V1}/temporal/entities/{SEED}",
        None,
        {"anonymous": 404, "reader": 404, "creator": 404, "admin": 200},
    ),
    (
        "temporal",
        "POST",
        f"{V1}/temporal/entities",
        lamp("urn:ngsi-ld:Streetlight:t-{r}"),
        {"anonymous": 401, "reader": 403, "creator": 403, "admin": 201},
    ),
    (
        "subscriptions",
        "POST",
        f"{V1}/subscriptions",
        subscription("{r}"),
        {"anonymous": 401, "reader": 403, "creator": 201, "admin": 201},
    ),
    (
        "csource",
        "POST",
        f"{V1}/csourceRegistrations",
        {
            "id": "urn:ngsi-ld:ContextSourceRegistration:{r}",
            "type": "ContextSourceRegistration",
            "information": [{"entities": [{"type": "Streetlight"}]}],
            "endpoint": "http://127.0.0.1:9/src",
        },
        {"anonymous": 401, "reader": 403, "creator": 201, "admin": 201},
    ),
    (
        "csource",
        "POST",
        f"{V1}/csourceSubscriptions",
        subscription("cs-{r}"),
        {"anonymous": 401, "reader": 403, "creator": 201, "admin": 201},
    ),
    (
        "contexts",
        "POST",
        f"{V1}/jsonldContexts",
        {"@context": {"Lamp{r}": "https://example.org/Lamp"}},
        {"anonymous": 401, "reader": 403, "creator": 201, "admin": 201},
    ),
    (
        "auth",
        "GET",
        f"{V1}/auth/permissions",
        None,
        {"anonymous": 401, "reader": 200, "creator": 200, "admin": 200},
    ),
    (
        "auth",
        "POST",
        f"{V1}/auth/permissions",
        {"type": "Permission", "target": {"id": SEED}, "assignee": "someone", "action": "read"},
        {"anonymous": 401, "reader": 403, "creator": 403, "admin": 201},
    ),
    (
        "management",
        "GET",
        "/management/v1/datasets",
        None,
        {"anonymous": 401, "reader": 403, "creator": 403, "admin": 200},
    ),
    (
        "data plane",
        "GET",
        "/dsp/data/entities",
        None,
        {"anonymous": 401, "reader": 401, "creator": 401, "admin": 401},
    ),
    (
        "entities",
        "DELETE",
        f"{V1}/entities/{SEED}",
        None,
        {"anonymous": 404, "reader": 404, "creator": 404, "admin": 204},
    ),
]


def _named(value: Any, role: str) -> Any:
    if isinstance(value, str):
        return value.replace("{r}", role)
    if isinstance(value, dict):
        return {_named(k, role): _named(v, role) for k, v in value.items()}
    if isinstance(value, list):
        return [_named(v, role) for v in value]
    return value


@pytest.mark.parametrize("role", list(ROLES))
def test_every_root_answers_each_role_as_the_table_says(secured: TestClient, idp_key: Any, role: str) -> None:
    admin = bearer(idp_key, "kizuna-admin", sub="root")
    assert secured.post(f"{V1}/entities", json=lamp(SEED), headers=admin).status_code == 201
    roles = ROLES[role]
    headers = {} if roles is None else bearer(idp_key, *roles, sub=role)
    got = {}
    for root, method, path, body, expected in TABLE:
        response = secured.request(method, path, json=_named(body, role), headers=headers)
        got[(root, method, path)] = (response.status_code, expected[role])
    wrong = {k: v for k, v in got.items() if v[0] != v[1]}
    assert not wrong, wrong  # (answered, expected) per request
