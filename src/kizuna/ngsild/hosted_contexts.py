"""Hosted and cached @contexts (clause 5.13) as a service: who may list, read, delete and reload
which, and keeping the registry in line with the store. No HTTP here.

Hosted contexts belong to the tenant they were hosted in: listed and deleted there only. Each is
served to anyone by its URL (JSON-LD processors dereference it with no tenant and no
credentials; its local id is a random 128-bit name). Cached copies of remote contexts are the
node's: listed and served to node administrators only.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kizuna.access import ownership
from kizuna.access.ownership import require_node_admin
from kizuna.access.subject import Subject
from kizuna.errors import BadRequestData, NgsiLdError, ResourceNotFound
from kizuna.jsonld.contexts import CORE_CONTEXT_URLS, ContextRecord, ContextRegistry, ContextValue
from kizuna.store import Store

KINDS = ("Hosted", "Cached", "ImplicitlyCreated")
STORED_KINDS = ("Hosted", "ImplicitlyCreated")
log = logging.getLogger("kizuna.contexts")


class HostedContexts:
    def __init__(self, registry: ContextRegistry, store: Store) -> None:
        self.registry = registry
        self.store = store
        self._syncing: set[asyncio.Task[None]] = set()

    async def add(self, tenant: str, subject: Subject, document: Any) -> ContextRecord:
        ownership.require_creator(subject, tenant, "@contexts")
        record = await self.registry.add_hosted(document, owner=subject.id, tenant=tenant)
        await self.store.save_hosted_context(
            record.local_id, record.document, record.created_at, record.owner, tenant
        )
        return record

    def listed(self, tenant: str, subject: Subject, kind: str | None) -> list[ContextRecord]:
        if kind is not None and kind not in KINDS:
            raise BadRequestData(f"Unknown kind {kind!r}; use one of {', '.join(KINDS)}")
        return [r for r in self.registry.records(kind) if _listed_for(subject, tenant, r)]

    def get(self, subject: Subject, context_id: str) -> ContextRecord:
        record = self.registry.record(context_id)
        if record is None or (record.kind == "Cached" and not _node_admin(subject)):
            raise ResourceNotFound(f"No @context {context_id} on this node")
        return record

    async def delete(self, tenant: str, subject: Subject, context_id: str, *, reload: bool = False) -> None:
        """Deletes the context, or with ``reload`` fetches a cached one again."""
        record = self.registry.record(context_id)
        if record is not None and record.kind != "Cached" and record.tenant != tenant:
            record = None  # another tenant's: as if it did not exist
        if reload or not _hosted_by(subject, record):
            # Contexts are node-wide (others' entities are read through them).
            require_node_admin(subject, "Deleting or reloading an @context you did not host")
        if record is None:
            if reload:
                raise BadRequestData(f"No @context {context_id} to reload")
            raise ResourceNotFound(f"No @context {context_id} on this node")
        if record.url in CORE_CONTEXT_URLS and not reload:
            raise BadRequestData("The core @context cannot be deleted")
        if reload:
            if record.kind != "Cached":
                raise BadRequestData(f"Only cached contexts can be reloaded; this one is {record.kind}")
            await self.registry.reload(record)
            return
        self.registry.forget(record)
        if record.kind in STORED_KINDS:
            await self.store.delete_hosted_context(record.local_id)

    async def add_implicit(self, context: ContextValue) -> str:
        """The hook the subscription service calls; returns the new context's local id."""
        record = await self.registry.add_implicit(context)
        await self.store.save_hosted_context(record.local_id, record.document, record.created_at)
        return record.local_id

    async def sync(self, local_id: str | None = None) -> None:
        """Make the registry hold what the store holds: at start, and when another process hosted
        or deleted a context (``local_id``; None: any may have changed)."""
        stored = {
            lid: (doc, created, owner, tenant)
            for lid, doc, created, owner, tenant in await self.store.hosted_contexts()
        }
        known = {r.local_id: r for r in self.registry.records() if r.kind in STORED_KINDS}
        for lid in [local_id] if local_id is not None else {*stored, *known}:
            record, entry = known.get(lid), stored.get(lid)
            if entry is None:
                if record is not None:
                    self.registry.forget(record)
            elif record is None or record.document != entry[0]:
                try:
                    added = await self.registry.add_hosted(entry[0], lid, owner=entry[2], tenant=entry[3])
                    added.created_at = entry[1]
                except NgsiLdError as error:  # e.g. a context it names cannot be fetched now
                    log.warning("hosted @context %s cannot be loaded: %s", lid, error)

    def follow(self, local_id: str | None) -> None:
        """The change-feed listener's side (see :data:`kizuna.store.ChangeListener`)."""
        task = asyncio.create_task(self.sync(local_id))
        self._syncing.add(task)
        task.add_done_callback(self._synced)

    def _synced(self, task: asyncio.Task[None]) -> None:
        self._syncing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("hosted @contexts not brought in line with the store: %r", task.exception())


def _node_admin(subject: Subject) -> bool:
    return subject.authenticated and subject.administers_node


def _listed_for(subject: Subject, tenant: str, record: ContextRecord) -> bool:
    """Hosted contexts in their tenant; cached ones to node administrators."""
    return _node_admin(subject) if record.kind == "Cached" else record.tenant == tenant


def _hosted_by(subject: Subject, record: ContextRecord | None) -> bool:
    """Whether ``subject`` hosted ``record`` (its creator may delete it)."""
    return (
        record is not None
        and record.kind == "Hosted"
        and subject.authenticated
        and record.owner == subject.id
    )
