"""Permissions in Stellio's shape, and the one decision of what a subject may do to an entity.

A permission grants an ``action`` on a ``target`` (one entity id, or entity types and scopes) to
an ``assignee`` (a subject, a group, or one of the pseudo-subjects). Actions are ordered,
``own`` ⊃ ``admin`` ⊃ ``write`` ⊃ ``read``: holding one holds those below. ``own`` is made by the
node when an entity is created and cannot be granted. Data-space agreements become permissions of
this same shape, assigned to the consumer's participant id, so one decision serves both.

Types are expanded IRIs here, like everything inside the node; compaction is the edge's work.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from kizuna.access.subject import AUTHENTICATED, PUBLIC, Subject
from kizuna.store import NO_SCOPE

KIND = "permission"  # the store documents that hold permissions, one set per tenant


class Action(IntEnum):
    READ = 1
    WRITE = 2
    ADMIN = 3
    OWN = 4

    @classmethod
    def named(cls, name: str) -> Action | None:
        return _ACTIONS.get(name)

    @property
    def label(self) -> str:
        return self.name.lower()


_ACTIONS = {a.name.lower(): a for a in Action}

# specificAccessPolicy values (and Stellio's legacy spellings) -> the action they open to
# every authenticated subject.
SPECIFIC_ACCESS_POLICIES = {
    "read": Action.READ,
    "write": Action.WRITE,
    "AUTH_READ": Action.READ,
    "AUTH_WRITE": Action.WRITE,
}


# The attribute, as the core @context's default vocabulary and Stellio's context expand it.
SPECIFIC_ACCESS_POLICY_IRIS = (
    "https://uri.etsi.org/ngsi-ld/default-context/specificAccessPolicy",
    "https://ontology.eglobalmark.com/authorization#specificAccessPolicy",
)


@dataclass(frozen=True)
class Target:
    """Either ``id``, or ``types`` and/or ``scopes`` (empty means any)."""

    id: str | None = None
    types: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()

    def covers(self, entity_id: str, types: Iterable[str], scopes: Iterable[str]) -> bool:
        if self.id is not None:
            return entity_id == self.id
        if self.types and not set(self.types).intersection(types):
            return False
        if self.scopes:
            held = set(scopes)
            if not (set(self.scopes) & held or (NO_SCOPE in self.scopes and not held)):
                return False
        return True


@dataclass(frozen=True)
class Permission:
    """``agreement`` marks a permission the connector made for a data-space agreement: it
    holds only for reads under that agreement (:attr:`Subject.agreement`), which the data plane
    checks against the agreement's ODRL policy and counts. ``dataset`` marks the public's read
    of an open dataset's entity types, the connector's too: it lasts as long as the dataset."""

    id: str
    target: Target
    assignee: str
    action: Action
    assigner: str | None = None
    agreement: str | None = None
    dataset: str | None = None

    @property
    def connector(self) -> str | None:
        """What in the connector made this permission (an agreement, a dataset), if it did."""
        return self.agreement or self.dataset


@dataclass(frozen=True)
class EntityFacts:
    """What the decision needs to know of an entity, and nothing more."""

    id: str
    types: tuple[str, ...]
    scopes: tuple[str, ...] = ()
    specific_access_policy: str | None = None


def facts_of(entity: dict[str, Any]) -> EntityFacts:
    """The facts of an entity in canonical form."""
    policy = None
    for iri in SPECIFIC_ACCESS_POLICY_IRIS:
        for instance in entity.get(iri, ()):
            value = instance.get("value", instance.get("vocab"))
            if isinstance(value, str):
                policy = value
    return EntityFacts(entity["id"], tuple(entity.get("type", ())), tuple(entity.get("scope", ())), policy)


def granted(
    subject: Subject, tenant: str, entity: EntityFacts, permissions: Iterable[Permission]
) -> Action | None:
    """The highest action ``subject`` holds on ``entity``, or None.

    ``permissions`` may hold others' permissions too: only those assigned to one of the
    subject's names count. Admins hold ``admin`` on everything of their tenant (``own`` stays
    the creator's)."""
    best: Action | None = Action.ADMIN if subject.is_admin(tenant) else None
    if subject.local:
        opened = SPECIFIC_ACCESS_POLICIES.get(entity.specific_access_policy or "")
        if opened is not None and (best is None or opened > best):
            best = opened
    names = subject.assignees
    for permission in permissions:
        if permission.assignee not in names or (best is not None and permission.action <= best):
            continue
        if permission.target.covers(entity.id, entity.types, entity.scopes):
            best = permission.action
    if best is not None and best > Action.READ and not subject.authenticated:
        return Action.READ  # the public may only ever read
    return best


def grantable(permission: Permission) -> str | None:
    """Why ``permission`` may not be created or changed through the API, or None."""
    if permission.action is Action.OWN:
        return "The 'own' permission is made by the node when an entity is created"
    if permission.action >= Action.ADMIN and permission.assignee in (PUBLIC, AUTHENTICATED):
        return "'admin' cannot be granted to everyone"
    if permission.assignee == PUBLIC and permission.action > Action.READ:
        return "Anonymous subjects may only be granted 'read'"
    if permission.target.id is not None and (permission.target.types or permission.target.scopes):
        return "A target has either an 'id' or 'types'/'scopes', not both"
    return None


# -- the stored form -----------------------------------------------------------------------------


def to_doc(p: Permission, created: str, modified: str) -> dict[str, Any]:
    target: dict[str, Any] = {"id": p.target.id} if p.target.id else {}
    if p.target.types:
        target["types"] = list(p.target.types)
    if p.target.scopes:
        target["scopes"] = list(p.target.scopes)
    return (
        {
            "id": p.id,
            "target": target,
            "assignee": p.assignee,
            "assigner": p.assigner,
            "action": p.action.label,
            "createdAt": created,
            "modifiedAt": modified,
        }
        | ({"agreement": p.agreement} if p.agreement else {})
        | ({"dataset": p.dataset} if p.dataset else {})
    )


def from_doc(doc: dict[str, Any]) -> Permission:
    t = doc["target"]
    target = Target(id=t.get("id"), types=tuple(t.get("types", ())), scopes=tuple(t.get("scopes", ())))
    action = Action[doc["action"].upper()]
    made_by = {"agreement": doc.get("agreement"), "dataset": doc.get("dataset")}
    return Permission(doc["id"], target, doc["assignee"], action, doc.get("assigner"), **made_by)
