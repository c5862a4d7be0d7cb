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


@dataclass(slots=True)
class HistoryQuery:
    """Which attribute instances of one entity's history to read (clause 5.7.3/5.7.4).

    Times are POSIX seconds (UTC). ``timeproperty`` picks the column the range, the ordering and
    lastN apply to; ``deletedAt`` selects the deletion records only, the other properties skip
    them. ``start`` is inclusive unless ``start_exclusive``; ``end`` is exclusive."""

    attributes: Sequence[str] | None = None
    timeproperty: str = "observedAt"  # observedAt | createdAt | modifiedAt | deletedAt
    start: float | None = None
    start_exclusive: bool = False
    end: float | None = None
    last_n: int | None = None
    dataset_ids: frozenset[str | None] | None = None  # None in the set: the default instance


@dataclass(slots=True)
class AggregateRow:
    """One period bucket of one attribute instance series, computed by the store (in SQL)."""

    attribute: str
    dataset_id: str | None
    start: float
    end: float
    values: dict[str, Any]  # method name -> aggregate (None when it does not apply)


class WriteTransaction(Protocol):
    async def get(self, entity_id: str) -> Entity | None: ...

    async def insert(self, entity: Entity) -> None:
        """Insert a new entity; the caller has checked that the id is free in this transaction."""

    async def replace(self, entity: Entity) -> None: ...

    async def delete(self, entity_id: str) -> bool: ...

    async def delete_matching(self, query: EntityQuery) -> list[Entity]:
        """Delete every entity the query selects; return them as they were."""

    # -- temporal history (clause 5.6.11-5.6.16): attribute instances, one row each ------------

    async def append_history(
        self,
        entity_id: str,
        types: list[str],
        attribute: str,
        instance: dict[str, Any],
        *,
        scope: list[str] | None = None,
    ) -> str:
        """Record one canonical attribute instance of ``entity_id`` (creating or extending its
        temporal entity with ``types``/``scope``); return the instanceId assigned
        (``urn:ngsi-ld:attribute:instance:<uuid>``)."""

    async def delete_history(
        self,
        entity_id: str,
        attribute: str | None = None,
        dataset_id: str | None = None,
        *,
        all_datasets: bool = True,
    ) -> int:
        """Forget history: all of the entity (``attribute`` None, the temporal entity goes too),
        all instances of one attribute (``all_datasets``), or of one datasetId (None: default)."""

    async def temporal_entity(self, entity_id: str) -> Entity | None:
        """The temporal entity's core members (id, type, scope?, createdAt, modifiedAt)."""

    async def touch_temporal_entity(
        self, entity_id: str, types: list[str], scope: list[str] | None, now: str
    ) -> bool:
        """Create the temporal entity or add ``types`` / set ``scope``; True if it was created."""

    async def update_history_instance(
        self, entity_id: str, attribute: str, instance_id: str, instance: dict[str, Any]
    ) -> bool:
        """Replace one recorded instance (keeping its instanceId); False if there is none."""

    async def delete_history_instance(self, entity_id: str, attribute: str, instance_id: str) -> bool: ...


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

    # -- temporal history reads ----------------------------------------------------------------

    async def get_temporal_entity(self, tenant: str, entity_id: str) -> Entity | None: ...

    async def query_temporal_entities(
        self,
        tenant: str,
        types: Sequence[str] | None,
        ids: Sequence[str] | None,
        id_pattern: str | None,
    ) -> list[Entity]:
        """Core members of the temporal entities matching, in creation order."""

    async def history_attributes(self, tenant: str, entity_id: str) -> list[str]:
        """The attribute IRIs an entity has any history of."""

    async def read_history(
        self, tenant: str, entity_id: str, query: HistoryQuery
    ) -> list[tuple[str, dict[str, Any]]]:
        """(attribute IRI, canonical instance with instanceId) pairs in time order."""

    async def aggregate_history(
        self,
        tenant: str,
        entity_id: str,
        query: HistoryQuery,
        methods: Sequence[str],
        period: float | None,
        origin: float | None,
    ) -> list[AggregateRow]:
        """Aggregates per attribute, datasetId and period bucket of ``period`` seconds starting
        at ``origin`` (default: the first instance of each series); ``period`` None is one bucket
        for the whole range."""

    # -- documents: registrations, csource subscriptions (clauses 5.9, 5.11) -----------------------
    # Canonical JSON documents of one ``kind`` ("csourceRegistration", "csourceSubscription"),
    # one per (kind, tenant, id), listed in creation order.

    async def insert_document(self, kind: str, tenant: str, doc: dict[str, Any]) -> bool:
        """Store a new document (creating the tenant); False if its id is taken for that kind."""

    async def replace_document(self, kind: str, tenant: str, doc: dict[str, Any]) -> bool:
        """Overwrite an existing document; False if there is none with that id."""

    async def get_document(self, kind: str, tenant: str, doc_id: str) -> dict[str, Any] | None: ...

    async def list_documents(
        self, kind: str, tenant: str, limit: int | None = None, offset: int = 0
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of a tenant's documents of one kind (creation order) and their total number."""

    async def delete_document(self, kind: str, tenant: str, doc_id: str) -> bool: ...


def open_store(url: str) -> Store:
    """The store a ``--store`` URL names."""
    if url.startswith("sqlite:"):
        from kizuna.store.sqlite import SqliteStore

        return SqliteStore.from_url(url)
    raise SystemExit(f"kizuna: unsupported store URL {url!r} (use sqlite:///path/to/file.db)")
