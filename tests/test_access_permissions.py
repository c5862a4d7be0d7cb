"""The one decision: which action a subject holds on an entity, and which permissions may exist."""

from __future__ import annotations

import pytest

from kizuna.access.permissions import Action, EntityFacts, Permission, Target, grantable, granted
from kizuna.access.subject import ANONYMOUS, AUTHENTICATED, PUBLIC, Subject

BUILDING = "https://uri.fiware.org/ns/dataModels#Building"
STREETLIGHT = "https://smartdatamodels.org/dataModel.Streetlighting/Streetlight"
LAMP = EntityFacts("urn:ngsi-ld:Streetlight:1", (STREETLIGHT,), ("Duisburg/Mitte",))
ALICE = Subject("alice", groups=frozenset({"city-it"}))


def grant(action: Action, assignee: str, **target: object) -> Permission:
    return Permission(f"urn:p:{assignee}:{action.label}", Target(**target), assignee, action)  # type: ignore[arg-type]


def test_actions_are_ordered_and_named() -> None:
    assert Action.OWN > Action.ADMIN > Action.WRITE > Action.READ
    assert Action.named("write") is Action.WRITE and Action.named("delete") is None


@pytest.mark.parametrize(
    ("permission", "expected"),
    [
        (grant(Action.WRITE, "alice", id=LAMP.id), Action.WRITE),
        (grant(Action.READ, "alice", id="urn:ngsi-ld:Streetlight:2"), None),
        (grant(Action.READ, "city-it", types=(STREETLIGHT,)), Action.READ),
        (grant(Action.READ, "city-it", types=(BUILDING,)), None),
        (grant(Action.ADMIN, "alice", scopes=("Duisburg/Mitte",)), Action.ADMIN),
        (grant(Action.READ, "alice", types=(STREETLIGHT,), scopes=("Duisburg/Nord",)), None),
        (grant(Action.READ, AUTHENTICATED, types=(STREETLIGHT,)), Action.READ),
        (grant(Action.READ, "bob", id=LAMP.id), None),
    ],
)
def test_a_permission_counts_for_its_assignee_and_target(
    permission: Permission, expected: Action | None
) -> None:
    assert granted(ALICE, "", LAMP, [permission]) == expected


def test_the_highest_action_wins() -> None:
    permissions = [grant(Action.READ, "alice", id=LAMP.id), grant(Action.OWN, "alice", id=LAMP.id)]
    assert granted(ALICE, "", LAMP, permissions) is Action.OWN


def test_no_scope_targets_entities_without_scope() -> None:
    unscoped = EntityFacts("urn:x:1", (BUILDING,))
    permission = grant(Action.READ, "alice", scopes=("@none",))
    assert granted(ALICE, "", unscoped, [permission]) is Action.READ
    assert granted(ALICE, "", LAMP, [permission]) is None


def test_admins_administer_their_tenant_only() -> None:
    admin = Subject("ops", roles=frozenset({"duisburg:kizuna-admin"}))
    assert granted(admin, "duisburg", LAMP, []) is Action.ADMIN
    assert granted(admin, "kanagawa", LAMP, []) is None
    assert granted(Subject("root", roles=frozenset({"kizuna-admin"})), "kanagawa", LAMP, []) is Action.ADMIN


def test_the_public_reads_open_data_and_nothing_more() -> None:
    opened = [grant(Action.READ, PUBLIC, types=(STREETLIGHT,))]
    assert granted(ANONYMOUS, "", LAMP, opened) is Action.READ
    assert granted(ANONYMOUS, "", LAMP, []) is None
    assert granted(ANONYMOUS, "", LAMP, [grant(Action.WRITE, PUBLIC, id=LAMP.id)]) is Action.READ


@pytest.mark.parametrize(
    ("policy", "expected"), [("read", Action.READ), ("AUTH_WRITE", Action.WRITE), (None, None)]
)
def test_specific_access_policy_opens_to_authenticated_subjects(
    policy: str | None, expected: Action | None
) -> None:
    entity = EntityFacts(LAMP.id, LAMP.types, specific_access_policy=policy)
    assert granted(ALICE, "", entity, []) == expected
    assert granted(ANONYMOUS, "", entity, []) is None


@pytest.mark.parametrize(
    "permission",
    [
        grant(Action.OWN, "alice", id=LAMP.id),
        grant(Action.ADMIN, PUBLIC, types=(STREETLIGHT,)),
        grant(Action.ADMIN, AUTHENTICATED, types=(STREETLIGHT,)),
        grant(Action.WRITE, PUBLIC, types=(STREETLIGHT,)),
        grant(Action.READ, "alice", id=LAMP.id, types=(STREETLIGHT,)),
    ],
)
def test_permissions_the_api_refuses(permission: Permission) -> None:
    assert grantable(permission) is not None


def test_an_ordinary_permission_may_be_granted() -> None:
    assert grantable(grant(Action.ADMIN, "city-it", types=(STREETLIGHT,))) is None
