"""The one check that a request names a tenant the node holds (clause 4.14)."""

from __future__ import annotations

from kizuna.access.subject import Subject
from kizuna.errors import NonExistingTenant, ResourceNotFound
from kizuna.store import Store


async def require_tenant(store: Store, tenant: str, subject: Subject, *, writing: bool = False) -> None:
    """An unknown tenant is NonExistingTenant (writes that create tenants do not come here).

    Only to node administrators (and to everyone with ``--auth none``), though: anyone else
    would learn which tenants exist by asking. They get what an existing tenant they hold no
    rights in answers: an empty result for a read (the stores read an unknown tenant as
    empty), a missing target for a write (which must not reach the store: it would create the
    tenant)."""
    if await store.has_tenant(tenant):
        return
    if subject.administers_node:
        raise NonExistingTenant(f"Tenant {tenant!r} does not exist")
    if writing:
        raise ResourceNotFound(f"No such target in tenant {tenant!r}")
