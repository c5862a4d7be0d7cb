"""The one policy decision: what a subject may do to entities, for single entities and for queries.

Two forms of the same rules (:func:`kizuna.access.permissions.granted`): :meth:`AccessPolicy.guard`
decides on one entity the services hold, and :meth:`Guard.filter` gives the
:class:`~kizuna.store.AccessFilter` a store compiles into a query, so that what a query returns
(its pages and its counts) is exactly what the single-entity decision would let the subject read.
The permissions of a tenant are read once and kept until they change.
"""

from __future__ import annotations

from dataclasses import dataclass

from kizuna.access.permissions import (
    KIND,
    SPECIFIC_ACCESS_POLICIES,
    SPECIFIC_ACCESS_POLICY_IRIS,
    Action,
    Permission,
    facts_of,
    from_doc,
    granted,
)
from kizuna.access.subject import Subject
from kizuna.store import AccessFilter, Entity, EntityQuery, Store

_IDS_PER_QUERY = 5000  # well under SQLite's bound on a statement's parameters


@dataclass(frozen=True, slots=True)
class Guard:
    """What one subject may do in one tenant, for the length of one operation."""

    subject: Subject
    tenant: str
    permissions: tuple[Permission, ...]  # those assigned to the subject

    @property
    def unrestricted(self) -> bool:
        return self.subject.is_admin(self.tenant)

    def held(self, entity: Entity, owner: str | None) -> Action | None:
        """The highest action the subject holds on ``entity`` (created by ``owner``)."""
        if self.subject.local and owner is not None and owner == self.subject.id:
            return Action.OWN
        return granted(self.subject, self.tenant, facts_of(entity), self.permissions)

    def may_create(self) -> bool:
        return self.subject.may_create(self.tenant)

    def filter(self, action: Action) -> AccessFilter | None:
        """The entities on which the subject holds ``action`` or more, for a store query (None:
        all of them)."""
        if self.unrestricted:
            return None
        if action > Action.READ and not self.subject.authenticated:
            return AccessFilter()  # the public only ever reads
        ids: set[str] = set()
        types: set[str] = set()
        scoped: list[tuple[frozenset[str], frozenset[str]]] = []
        for p in self.permissions:
            if p.action < action:
                continue
            target = p.target
            if target.id is not None:
                ids.add(target.id)
            elif target.scopes:
                scoped.append((frozenset(target.types), frozenset(target.scopes)))
            elif target.types:
                types.update(target.types)
            else:
                return None  # a target without types or scopes covers every entity
        policies: frozenset[str] = frozenset()
        if self.subject.local:
            policies = frozenset(v for v, opened in SPECIFIC_ACCESS_POLICIES.items() if opened >= action)
        return AccessFilter(
            owners=frozenset({self.subject.id}) if self.subject.local and self.subject.id else frozenset(),
            ids=frozenset(ids),
            types=frozenset(types),
            scoped=tuple(sorted(scoped, key=lambda pair: (sorted(pair[0]), sorted(pair[1])))),
            policy_attributes=SPECIFIC_ACCESS_POLICY_IRIS,
            policies=policies,
        )


class AccessPolicy:
    """Guards for subjects, from the permissions in the store (cached per tenant)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._permissions: dict[str, tuple[Permission, ...]] = {}

    def changed(self, tenant: str | None = None) -> None:
        """Permissions of ``tenant`` (None: of any) changed, here or in another process."""
        if tenant is None:
            self._permissions.clear()
        else:
            self._permissions.pop(tenant, None)

    async def permissions(self, tenant: str) -> tuple[Permission, ...]:
        found = self._permissions.get(tenant)
        if found is None:
            docs, _ = await self.store.list_documents(KIND, tenant)
            found = self._permissions[tenant] = tuple(from_doc(doc) for doc in docs)
        return found

    async def guard(self, tenant: str, subject: Subject) -> Guard:
        if subject.is_admin(tenant):
            return Guard(subject, tenant, ())
        names = subject.assignees
        # An agreement's permission serves reads under that agreement and nothing else, so that
        # no other credential of the participant bypasses the agreement's policy and counting.
        # An open dataset's (the public's read of its types) serves every read outside one.
        mine = tuple(
            p
            for p in await self.permissions(tenant)
            if p.assignee in names and p.agreement == subject.agreement
        )
        return Guard(subject, tenant, mine)

    async def readable_ids(self, guard: Guard, ids: list[str]) -> set[str]:
        """Which of the entities ``ids`` the guard's subject may read now (temporal queries
        select histories by the entity's current state; a deleted entity's is admins' only)."""
        if guard.unrestricted:
            return set(ids)
        access = guard.filter(Action.READ)
        found: set[str] = set()
        for start in range(0, len(ids), _IDS_PER_QUERY):
            query = EntityQuery(ids=ids[start : start + _IDS_PER_QUERY], access=access)
            found.update(e["id"] for e in (await self.store.query_entities(guard.tenant, query)).entities)
        return found
