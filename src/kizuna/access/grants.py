"""The permission API's service: who may grant, see and change which permissions (Stellio's rules).

Permissions are the store's documents of kind ``permission``, one set per tenant, with entity
types expanded. To create, change or delete a permission one must administer its target; one
sees the permissions one administers (``query``) or that are assigned to one (``assigned``).
A permission with the same assignee and target as an existing one is a conflict, not a second
grant. Two permissions are never combined: admin on type A and on type B is not admin on [A, B].
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kizuna.access.audit import AuditTrail
from kizuna.access.permissions import KIND, Action, Permission, Target, from_doc, grantable, to_doc
from kizuna.access.policy import AccessPolicy
from kizuna.access.subject import AUTHENTICATED, NODE, PUBLIC, Subject
from kizuna.errors import (
    AccessDenied,
    AlreadyExists,
    BadRequestData,
    HiddenResource,
    NotAuthenticated,
    ResourceNotFound,
)
from kizuna.store import EntityQuery, Store
from kizuna.times import now_iso

ID_PREFIX = "urn:ngsi-ld:Permission:"
MEMBERS = frozenset({"id", "type", "target", "assignee", "assigner", "action", "@context"})

Expand = Callable[[str], str]


@dataclass(frozen=True)
class PermissionFilter:
    """``GET /auth/permissions`` parameters; ``action`` also matches the actions above it."""

    target_ids: frozenset[str] | None = None
    target_types: Callable[[list[str]], bool] | None = None  # an entity type selection (4.17)
    assignee: str | None = None
    assigner: str | None = None
    action: Action = Action.ADMIN

    def matches(self, p: Permission) -> bool:
        if self.target_ids is not None and p.target.id not in self.target_ids:
            return False
        if self.target_types is not None and not self.target_types(list(p.target.types)):
            return False
        if self.assignee is not None and p.assignee != self.assignee:
            return False
        if self.assigner is not None and p.assigner != self.assigner:
            return False
        return p.action >= self.action


def _within(inner: Target, outer: Target) -> bool:
    """Every entity ``inner`` covers is covered by ``outer`` (both type/scope targets)."""
    types_ok = not outer.types or (bool(inner.types) and set(inner.types) <= set(outer.types))
    scopes_ok = not outer.scopes or (bool(inner.scopes) and set(inner.scopes) <= set(outer.scopes))
    return types_ok and scopes_ok


def _strings(value: Any, name: str) -> tuple[str, ...]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
        raise BadRequestData(f"target.{name} must be a non-empty string or list of strings")
    return tuple(values)


def parse_target(body: Any, expand: Expand) -> Target:
    if not isinstance(body, dict) or not body or set(body) - {"id", "types", "scopes"}:
        raise BadRequestData("target must be an object with 'id', or 'types' and/or 'scopes'")
    if "id" in body:
        if not isinstance(body["id"], str) or ":" not in body["id"]:
            raise BadRequestData("target.id must be an entity id (a URI)")
        if len(body) > 1:
            raise BadRequestData("A target has either an 'id' or 'types'/'scopes', not both")
        return Target(id=body["id"])
    types = tuple(expand(t) for t in _strings(body["types"], "types")) if "types" in body else ()
    scopes = _strings(body["scopes"], "scopes") if "scopes" in body else ()
    return Target(types=types, scopes=scopes)


def parse_permission(
    body: Any, expand: Expand, subject: Subject, *, base: Permission | None = None
) -> Permission:
    """A permission from a POST body, or from a PATCH body applied to ``base``."""
    if not isinstance(body, dict):
        raise BadRequestData("A permission is a JSON object")
    unknown = set(body) - MEMBERS
    if unknown:
        raise BadRequestData(f"Unknown members of a permission: {', '.join(sorted(unknown))}")
    if base is None and body.get("type") != "Permission":
        raise BadRequestData("A permission's type must be 'Permission'")
    if base is not None and body.get("type", "Permission") != "Permission":
        raise BadRequestData("A permission's type must be 'Permission'")
    if "assigner" in body and body["assigner"] != subject.id:
        raise BadRequestData("The assigner is the subject making the change; it cannot be set")
    if base is not None and "id" in body and body["id"] != base.id:
        raise BadRequestData("A permission's id cannot change")
    pid = body.get("id", base.id if base else f"{ID_PREFIX}{uuid.uuid4()}")
    if not isinstance(pid, str) or ":" not in pid:
        raise BadRequestData("A permission's id must be a URI")
    target = parse_target(body["target"], expand) if "target" in body else base.target if base else None
    if target is None:
        raise BadRequestData("A permission needs a target")
    assignee = body.get("assignee", base.assignee if base else None)
    if not isinstance(assignee, str) or not assignee:
        raise BadRequestData(f"assignee must be a subject, a group, {PUBLIC} or {AUTHENTICATED}")
    action_name = body.get("action", base.action.label if base else None)
    action = Action.named(action_name) if isinstance(action_name, str) else None
    if action is None:
        raise BadRequestData("action must be 'read', 'write' or 'admin'")
    permission = Permission(pid, target, assignee, action, subject.id)
    refusal = grantable(permission)
    if refusal is not None:
        raise BadRequestData(refusal)
    return permission


def render(doc: dict[str, Any], compact: Callable[[str], str], *, sys_attrs: bool) -> dict[str, Any]:
    """The API form: Stellio's shape, entity types compacted with the request's @context."""
    target = dict(doc["target"])
    if "types" in target:
        types = [compact(t) for t in target["types"]]
        target["types"] = types[0] if len(types) == 1 else types
    if "scopes" in target and len(target["scopes"]) == 1:
        target["scopes"] = target["scopes"][0]
    body: dict[str, Any] = {"id": doc["id"], "type": "Permission", "target": target}
    shown = ("assignee", "assigner", "action", "agreement", "dataset")
    body |= {k: doc[k] for k in shown if doc.get(k) is not None}
    if sys_attrs:
        body |= {"createdAt": doc["createdAt"], "modifiedAt": doc["modifiedAt"]}
    return body


def agreement_permission_id(agreement_id: str) -> str:
    return _connector_permission_id("agreement", agreement_id)


def dataset_permission_id(dataset_id: str) -> str:
    return _connector_permission_id("dataset", dataset_id)


def _connector_permission_id(kind: str, key: str) -> str:
    return f"{ID_PREFIX}{kind}:{hashlib.sha256(key.encode()).hexdigest()[:32]}"


def _require_local(p: Permission) -> None:
    if p.agreement is not None:
        raise AccessDenied(
            f"{p.id} is the connector's, for agreement {p.agreement}: it ends when the agreement does"
        )
    if p.dataset is not None:
        raise AccessDenied(f"{p.id} is the connector's, for open dataset {p.dataset}: it ends when it does")


class Grants:
    """Create, read, change and delete permissions, as the subject asking may."""

    def __init__(self, store: Store, policy: AccessPolicy, audit: AuditTrail) -> None:
        self.store = store
        self.policy = policy
        self.audit = audit

    async def all(self, tenant: str) -> list[dict[str, Any]]:
        docs, _ = await self.store.list_documents(KIND, tenant)
        return docs

    async def _changed(self, tenant: str, subject: Subject, operation: str, p: Permission) -> None:
        self.policy.changed(tenant)  # this process at once; the others when the store tells them
        await self.store.announce("permissions", tenant)
        target = p.target.id or f"types={','.join(p.target.types)} scopes={','.join(p.target.scopes)}"
        await self.audit.record(
            subject, tenant, operation, p.id, detail=f"{p.action.label} on {target} for {p.assignee}"
        )

    async def _administers(self, tenant: str, subject: Subject, target: Target) -> bool:
        if subject.is_admin(tenant):
            return True
        if not subject.authenticated:
            return False
        guard = await self.policy.guard(tenant, subject)
        if target.id is not None:
            # The same decision as for any other use of the entity, its owner included.
            found = await self.store.query_entities(
                tenant, EntityQuery(ids=[target.id], access=guard.filter(Action.ADMIN), limit=1)
            )
            return bool(found.entities)
        # A type/scope target: one permission of the subject must cover it all (never combined).
        return any(
            p.action >= Action.ADMIN and p.target.id is None and _within(target, p.target)
            for p in guard.permissions
        )

    def _require_subject(self, subject: Subject) -> None:
        if not subject.authenticated:
            raise NotAuthenticated("Managing permissions needs credentials")

    async def create(self, tenant: str, subject: Subject, body: Any, expand: Expand) -> str:
        self._require_subject(subject)
        permission = parse_permission(body, expand, subject)
        if not await self._administers(tenant, subject, permission.target):
            raise AccessDenied("Only an administrator of the target may grant permissions on it")
        for other in map(from_doc, await self.all(tenant)):
            same = (other.assignee, other.target) == (permission.assignee, permission.target)
            if same and other.connector is None:
                raise AlreadyExists(f"{other.id} already grants {other.assignee} on this target")
        now = now_iso()
        if not await self.store.insert_document(KIND, tenant, to_doc(permission, now, now)):
            raise AlreadyExists(f"Permission {permission.id} already exists")
        await self._changed(tenant, subject, "permission.create", permission)
        return permission.id

    async def _visible(self, tenant: str, subject: Subject, pid: str) -> dict[str, Any]:
        doc = await self.store.get_document(KIND, tenant, pid)
        if doc is None:
            raise ResourceNotFound(f"No permission {pid}")
        p = from_doc(doc)
        if p.assignee in subject.assignees or await self._administers(tenant, subject, p.target):
            return doc
        raise HiddenResource(f"No permission {pid}")

    async def get(self, tenant: str, subject: Subject, pid: str) -> dict[str, Any]:
        self._require_subject(subject)
        return await self._visible(tenant, subject, pid)

    async def update(self, tenant: str, subject: Subject, pid: str, body: Any, expand: Expand) -> None:
        self._require_subject(subject)
        doc = await self._visible(tenant, subject, pid)
        base = from_doc(doc)
        if not await self._administers(tenant, subject, base.target):
            raise AccessDenied("Only an administrator of the target may change its permissions")
        _require_local(base)
        changed = parse_permission(body, expand, subject, base=base)
        if not await self._administers(tenant, subject, changed.target):
            raise AccessDenied("Only an administrator of the new target may grant permissions on it")
        await self.store.replace_document(KIND, tenant, to_doc(changed, doc["createdAt"], now_iso()))
        await self._changed(tenant, subject, "permission.update", changed)

    async def delete(self, tenant: str, subject: Subject, pid: str) -> None:
        self._require_subject(subject)
        gone = from_doc(await self._visible(tenant, subject, pid))
        if not await self._administers(tenant, subject, gone.target):
            raise AccessDenied("Only an administrator of the target may revoke its permissions")
        _require_local(gone)
        await self.store.delete_document(KIND, tenant, pid)
        await self._changed(tenant, subject, "permission.delete", gone)

    # -- data-space agreements --------------------------------------------------------------------

    async def grant_agreement(
        self, tenant: str, agreement_id: str, participant_id: str, types: Iterable[str]
    ) -> None:
        """What a finalized agreement grants its consumer: reading the agreed entity types under
        that agreement only (the data plane narrows to the dataset and applies its policy).
        Idempotent: the permission's id is the agreement's."""
        target = Target(types=tuple(sorted(set(types))))
        pid = agreement_permission_id(agreement_id)
        await self._grant(tenant, Permission(pid, target, participant_id, Action.READ, NODE.id, agreement_id))

    async def revoke_agreement(self, tenant: str, agreement_id: str) -> None:
        await self._revoke(tenant, agreement_permission_id(agreement_id))

    async def grant_open_dataset(self, tenant: str, dataset_id: str, types: Iterable[str]) -> None:
        """What an open dataset grants: the public's read of its entity types, so that anyone
        reads it through NGSI-LD under the one policy decision, as every other read."""
        target = Target(types=tuple(sorted(set(types))))
        pid = dataset_permission_id(dataset_id)
        await self._grant(tenant, Permission(pid, target, PUBLIC, Action.READ, NODE.id, dataset=dataset_id))

    async def revoke_open_dataset(self, tenant: str, dataset_id: str) -> None:
        await self._revoke(tenant, dataset_permission_id(dataset_id))

    async def _grant(self, tenant: str, permission: Permission) -> None:
        """Idempotent: the permission's id is that of what made it."""
        if any(p.id == permission.id for p in await self.policy.permissions(tenant)):
            return
        now = now_iso()
        if await self.store.insert_document(KIND, tenant, to_doc(permission, now, now)):
            await self._changed(tenant, NODE, "permission.create", permission)

    async def _revoke(self, tenant: str, pid: str) -> None:
        doc = await self.store.get_document(KIND, tenant, pid)
        if doc is not None and await self.store.delete_document(KIND, tenant, pid):
            await self._changed(tenant, NODE, "permission.delete", from_doc(doc))

    async def query(
        self, tenant: str, subject: Subject, wanted: PermissionFilter, *, assigned: bool
    ) -> list[dict[str, Any]]:
        """Those the subject administers (or, ``assigned``, those assigned to it) that match."""
        self._require_subject(subject)
        found = []
        for doc in await self.all(tenant):
            p = from_doc(doc)
            if not wanted.matches(p):
                continue
            if assigned:
                if p.assignee in subject.assignees:
                    found.append(doc)
            elif await self._administers(tenant, subject, p.target):
                found.append(doc)
        return found
