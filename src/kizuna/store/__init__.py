"""Storage behind one protocol, so that SQLite and PostgreSQL pass the same contract tests.

The store keeps canonical entities (see :mod:`kizuna.ngsild.model`) as documents, with the
indexes the queries need beside them. Services talk to it in two ways: reads straight on the
store, and writes inside :meth:`Store.write`, one transaction per request, so that a request
either commits everything it reports as done or nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

Entity = dict[str, Any]
DEFAULT_TENANT = ""


@dataclass(slots=True)
class EntityQuery:
    """What to select. ``types``/``ids`` narrow through indexes; ``predicate`` is evaluated on the
    canonical entity for what the store cannot (yet) evaluate itself."""

    types: Sequence[str] | None = None
    ids: Sequence[str] | None = None
    id_pattern: str | None = None
    predicate: Callable[[Entity], bool] | None = None
    limit: int | None = None
    offset: int = 0
    count: bool = False


@dataclass(slots=True)
class QueryResult:
    entities: list[Entity] = field(default_factory=list)
    total: int | None = None


class WriteTransaction(Protocol):
    async def get(self, entity_id: str) -> Entity | None: ...

    async def insert(self, entity: Entity) -> None:
        """Insert a new entity; the caller has checked that the id is free in this transaction."""

    async def replace(self, entity: Entity) -> None: ...

    async def delete(self, entity_id: str) -> bool: ...

    async def delete_matching(self, query: EntityQuery) -> list[str]:
        """Delete every entity the query selects; return their ids."""


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def has_tenant(self, tenant: str) -> bool: ...

    async def tenants(self) -> list[str]: ...

    def write(self, tenant: str) -> AbstractAsyncContextManager[WriteTransaction]:
        """A write transaction in ``tenant`` (created on first write); commits on clean exit."""

    async def get_entity(self, tenant: str, entity_id: str) -> Entity | None: ...

    async def query_entities(self, tenant: str, query: EntityQuery) -> QueryResult: ...

    def iter_entities(self, tenant: str) -> AsyncIterator[Entity]:
        """Every entity of a tenant (for discovery); large tenants stream."""

    async def hosted_contexts(self) -> list[tuple[str, dict[str, Any], float]]: ...

    async def save_hosted_context(
        self, local_id: str, document: dict[str, Any], created_at: float
    ) -> None: ...

    async def delete_hosted_context(self, local_id: str) -> None: ...

    # -- subscriptions (clause 5.8): canonical documents, one per (tenant, id) --------------------

    async def insert_subscription(self, tenant: str, sub: dict[str, Any]) -> bool:
        """Store a new subscription (creating the tenant); False if the id is taken."""

    async def replace_subscription(self, tenant: str, sub: dict[str, Any]) -> bool:
        """Overwrite an existing subscription; False if there is none with that id."""

    async def get_subscription(self, tenant: str, subscription_id: str) -> dict[str, Any] | None: ...

    async def list_subscriptions(
        self, tenant: str, limit: int | None, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of a tenant's subscriptions (in creation order) and their total number."""

    async def delete_subscription(self, tenant: str, subscription_id: str) -> bool: ...


def open_store(url: str) -> Store:
    """The store a ``--store`` URL names."""
    if url.startswith("sqlite:"):
        from kizuna.store.sqlite import SqliteStore

        return SqliteStore.from_url(url)
    raise SystemExit(f"kizuna: unsupported store URL {url!r} (use sqlite:///path/to/file.db)")
