"""The one check that a request names a tenant the node holds (clause 4.14)."""

from __future__ import annotations

from kizuna.errors import NonExistingTenant
from kizuna.store import Store


async def require_tenant(store: Store, tenant: str) -> None:
    """Reads of an unknown tenant are NonExistingTenant; writes create tenants instead."""
    if not await store.has_tenant(tenant):
        raise NonExistingTenant(f"Tenant {tenant!r} does not exist")
