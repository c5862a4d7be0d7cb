"""Storage behind one protocol, so that SQLite and PostgreSQL pass the same contract tests.

The store keeps entities in canonical form (normalized NGSI-LD with every term expanded to its
IRI, as the NGSI-LD layer makes them) as documents, with the indexes the queries need beside
them. Services talk to it in two ways: reads straight on the store, and writes inside
:meth:`Store.write`, one transaction per request, so that a request either commits everything
it reports as done or nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from kizuna.query import GeoQuery, QExpr, ScopeExpr, geo_matches

Entity = dict[str, Any]
DEFAULT_TENANT = ""
NO_SCOPE = "@none"  # in a scope list of a target: entities without any scope

ChangeListener = Callable[[str, str], None]
"""Told ``(topic, key)`` after a commit, by any process on the same store, that changes what
processes keep in memory: ``subscriptions`` (key: the tenant), ``contexts`` (key: a hosted
@context's local id), ``outbox`` (notifications were queued; key empty), ``entities`` (the
tenant's change log grew: :meth:`ChangeLog.entity_changes`), and what services
:meth:`Store.announce` (``registrations``, key: the tenant). The topic ``*`` follows
a gap in the feed (a reconnect): anything may have changed. Listeners must be cheap and may be
told twice; they start any slow work as a task."""


@dataclass(frozen=True, slots=True)
class AccessFilter:
    """The entities a subject holds some action on, in terms every store compiles into its query,
    so that counts and pages are of what the subject may see (never a page filtered after).

    An entity passes when any part holds: it is owned by one of ``owners``; its id is in
    ``ids``; one of its types is in ``types``; for one of ``scoped`` (types, scopes) its types
    meet the types (empty: any type) and its scopes meet the scopes (``@none``: it has none);
    or one of the ``policy_attributes`` holds one of the ``policies`` values. Built by
    :mod:`kizuna.access.policy`; a store knows nothing of subjects."""

    owners: frozenset[str] = frozenset()
    ids: frozenset[str] = frozenset()
    types: frozenset[str] = frozenset()
    scoped: tuple[tuple[frozenset[str], frozenset[str]], ...] = ()
    policy_attributes: tuple[str, ...] = ()
    policies: frozenset[str] = frozenset()


@dataclass(slots=True)
class EntityQuery:
    """What to select: every filter given must hold.

    ``types``/``ids``/``id_pattern`` narrow through indexes. ``q`` (a resolved q AST, names as
    IRIs, evaluated with ``datasetid_any``), ``geo`` (a GeoQuery on the ``geoproperty`` IRI),
    ``scope`` (a scopeQ AST) and ``attrs`` (IRIs: the entity has at least one) are structured so
    that a store can compile them into its own indexes; whatever it does not compile it evaluates
    with :meth:`residual`. ``predicate`` is evaluated on the canonical entity for what no store
    can compile (e.g. a type expression with ``;``)."""

    types: Sequence[str] | None = None
    ids: Sequence[str] | None = None
    id_pattern: str | None = None
    predicate: Callable[[Entity], bool] | None = None
    limit: int | None = None
    offset: int = 0
    count: bool = False
    q: QExpr | None = None
    geo: GeoQuery | None = None
    geoproperty: str | None = None
    scope: ScopeExpr | None = None
    attrs: Sequence[str] | None = None
    access: AccessFilter | None = None  # None: every entity (no access control, or an admin)

    def residual(
        self, *, q: QExpr | bool | None = True, geo: bool = True, scope: bool = True, attrs: bool = True
    ) -> Callable[[Entity], bool] | None:
        """The Python predicate for what a store leaves uncompiled: ``predicate`` always, then
        ``q`` (True: the query's own; or the part of it left over; None/False: none), and
        ``geo``/``scope``/``attrs`` when True. None when nothing is left to check."""
        checks: list[Callable[[Entity], bool]] = []
        if self.predicate is not None:
            checks.append(self.predicate)
        left_q = self.q if q is True else (q or None)
        if left_q is not None:
            checks.append(lambda e, left_q=left_q: left_q.evaluate(e, True))
        if attrs and self.attrs is not None:
            checks.append(lambda e, wanted=self.attrs: any(a in e for a in wanted))
        if scope and self.scope is not None:
            checks.append(self.scope.matches)
        if geo and self.geo is not None:
            checks.append(lambda e, g=self.geo, prop=self.geoproperty or "location": geo_matches(g, prop, e))
        if not checks:
            return None
        if len(checks) == 1:
            return checks[0]
        return lambda e: all(check(e) for check in checks)


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
    first_n: int | None = None  # the N earliest instances of each attribute (when no last_n)
    dataset_ids: frozenset[str | None] | None = None  # None in the set: the default instance


@dataclass(slots=True)
class AggregateSeries:
    """The period buckets of one attribute instance series (entity, attribute, datasetId),
    aggregated by the store in SQL. ``buckets`` are the statement's rows as its driver returned
    them, in order, so that an answer of 750 buckets is not 750 Python objects more: each starts
    with the bucket's number k and the value of each method asked for, in order (None when it
    does not apply); whatever follows is the store's. Bucket k spans [origin + k*period, that
    + period); without a period the one bucket spans [origin, end)."""

    entity_id: str
    attribute: str
    dataset_id: str | None
    origin: float
    period: float | None
    end: float | None  # the end of the one bucket (no period), else None
    buckets: list[Sequence[Any]]
    kind: str | None = None  # the type of the attribute's newest instance selected (None: unknown)

    def bounds(self) -> list[tuple[float, float]]:
        """(start, end) of each bucket, in order."""
        if self.period is None:
            return [(self.origin, self.end if self.end is not None else self.origin)] * len(self.buckets)
        origin, period = self.origin, self.period
        return [(start := origin + row[0] * period, start + period) for row in self.buckets]


@dataclass(slots=True)
class OutboxRow:
    """One notification owed to a subscriber, written in the transaction of the change it reports.

    ``seq`` is the change's, shared by every subscription the change notifies. ``payload`` holds
    what the notification needs, in canonical form: ``entity`` (as it is after
    the change, or as it was before for a deletion), and for showChanges ``previous`` (attribute
    IRI -> the instances it had before)."""

    seq: int
    tenant: str
    subscription_id: str
    entity_id: str
    trigger: str
    payload: dict[str, Any]
    created_at: float


@dataclass(frozen=True, slots=True)
class EntityChange:
    """One committed entity write of a tenant's change log (:class:`ChangeLog`).

    ``seq`` grows in commit order within the tenant (not by one: a cursor, not a count), so
    that a reader that has seen ``seq`` has seen every change committed before it. ``types``
    are the entity's as the change left them (as it was, for a delete). ``entity`` and
    ``owner`` are what an access decision needs: for a create or update the entity as it is
    now (if it was deleted since, as it was then), for a delete as it was."""

    seq: int
    entity_id: str
    op: str  # "create" | "update" | "delete"
    at: float  # POSIX seconds of the write
    types: list[str]
    entity: Entity | None
    owner: str | None


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One line of the audit trail: who (``subject``, "" when anonymous) did or was refused
    (``outcome``: "denied" or "done") what (``operation``) on what (``target``), in which tenant,
    when (``at``, POSIX seconds); ``detail`` says why or what changed."""

    at: float
    subject: str
    tenant: str
    operation: str
    target: str
    outcome: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Vitals:
    """What a scrape of ``/metrics`` reads from the store, so that it holds whichever process
    answers: the outbox rows (changes) not yet delivered to all (``oldest_outbox``: when the oldest was
    committed, POSIX seconds; None when there is none) and how many documents of each asked
    kind are in each ``state`` (documents without one are not counted)."""

    outbox_rows: int
    oldest_outbox: float | None
    states: dict[tuple[str, str], int]  # (kind, state) -> documents


WriteObserver = Callable[[float], None]
"""Told the seconds each write transaction took, from asking for it to its end."""


# -- the protocols: one per concern, so that a service can say (and a test double implement) only
# the part of the store it uses; Store and WriteTransaction are their unions.


class EntityTransaction(Protocol):
    """The entity writes of a transaction: read-modify-write of canonical entities. Each insert,
    replace and delete also goes into the tenant's change log (:class:`ChangeLog`), committed
    or rolled back with it."""

    async def get(self, entity_id: str) -> Entity | None: ...

    async def owner(self, entity_id: str) -> str | None:
        """The subject that created the entity (None: created before access control, or absent)."""

    async def insert(self, entity: Entity, owner: str | None = None) -> None:
        """Insert a new entity owned by ``owner``; the caller has checked that the id is free in
        this transaction. Replacing an entity keeps its owner."""

    async def replace(self, entity: Entity) -> None: ...

    async def delete(self, entity_id: str) -> bool: ...

    async def delete_matching(self, query: EntityQuery) -> list[Entity]:
        """Delete every entity the query selects; return them as they were."""


class OutboxTransaction(Protocol):
    """Subscriptions as of this transaction, and the outbox rows committed with the change."""

    async def subscription_version(self) -> int:
        """A number that changes whenever a subscription of the tenant is created, changed or
        deleted (by any process): matching caches compare it inside the write transaction."""

    async def subscriptions(self) -> list[dict[str, Any]]:
        """Every subscription of the tenant, read on this transaction's own connection (a store
        with a pool must not take a second connection while a write holds one)."""

    async def add_outbox(self, rows: Sequence[tuple[str, str, str, bytes]]) -> None:
        """Queue notifications, committed or rolled back with the change: (subscription id,
        entity id, trigger, orjson-encoded payload) each."""


class HistoryTransaction(Protocol):
    """Temporal history writes (clause 5.6.11-5.6.16): attribute instances, one row each."""

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

    async def append_histories(
        self,
        entity_id: str,
        types: list[str],
        instances: Sequence[tuple[str, dict[str, Any]]],
        *,
        scope: list[str] | None = None,
    ) -> list[str]:
        """:meth:`append_history` for several (attribute, instance) pairs of one entity, in one
        statement: an entity write records every instance it changed, and one round trip for
        all of them is what lets a batch of a thousand entities load at speed."""

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


class DocumentTransaction(Protocol):
    """Registrations and csource subscriptions written in the transaction that queues the
    csource notifications of the change (clause 5.11.7), so that neither is stored without the
    other. The same documents as :class:`DocumentStore`'s, of this transaction's tenant."""

    async def insert_document(self, kind: str, doc: dict[str, Any]) -> bool:
        """Store a new document; False if its id is taken for that kind."""

    async def replace_document(self, kind: str, doc: dict[str, Any]) -> bool:
        """Overwrite an existing document; False if there is none with that id."""

    async def delete_document(self, kind: str, doc_id: str) -> bool: ...

    async def documents(self, kind: str) -> list[dict[str, Any]]:
        """Every document of the kind (creation order), read on this transaction's connection,
        after every other write transaction of the tenant that read documents has committed:
        of two that each store a document and then read the other's kind, one sees the other's."""


class WriteTransaction(
    EntityTransaction, OutboxTransaction, HistoryTransaction, DocumentTransaction, Protocol
):
    """One write transaction of :meth:`Store.write`: everything in it commits or nothing does."""


class SchemaTooNew(SystemExit):
    """Raised by :meth:`ChangeFeed.open` on a store that a newer release migrated further than
    this code knows: writing to it could corrupt what that release keeps."""


class ChangeFeed(Protocol):
    """The store's life cycle and the change feed that keeps every process's caches true."""

    async def open(self) -> None:
        """Connect, and apply the schema migrations the store lacks (:class:`SchemaTooNew` if
        it is ahead of this code)."""

    async def schema_mismatch(self) -> str | None:
        """Why the store's schema is not the one this code writes, None when it is: a process
        that opened the store before a newer release migrated it is then no longer ready."""

    async def close(self) -> None: ...

    def listen(self, listener: ChangeListener) -> None:
        """Follow the change feed (see :data:`ChangeListener`) from :meth:`open` on."""

    async def announce(self, topic: str, key: str) -> None:
        """Put a change on the feed that the store's own writes do not announce (a service's
        documents, such as context source registrations), for every process on the store."""


class TenantStore(Protocol):
    """Tenants: the default one ("") always exists, the others from their first write."""

    async def has_tenant(self, tenant: str) -> bool: ...

    async def tenants(self) -> list[str]: ...


class EntityStore(Protocol):
    """Canonical entities: reads straight on the store, writes in a transaction."""

    def write(self, tenant: str) -> AbstractAsyncContextManager[WriteTransaction]:
        """A write transaction in ``tenant`` (created on first write); commits on clean exit."""

    async def get_entity(self, tenant: str, entity_id: str) -> Entity | None: ...

    async def get_owned_entity(self, tenant: str, entity_id: str) -> tuple[Entity, str | None] | None:
        """The entity and who created it (None: written before access control existed), for a
        retrieval that decides access on the one entity instead of in a query."""

    async def query_entities(self, tenant: str, query: EntityQuery) -> QueryResult: ...

    def iter_entities(self, tenant: str) -> AsyncIterator[Entity]:
        """Every entity of a tenant (for discovery); large tenants stream."""


class DocumentStore(Protocol):
    """Documents kept whole: hosted @contexts (node-wide), registrations and csource
    subscriptions (per tenant and kind)."""

    async def hosted_contexts(self) -> list[tuple[str, dict[str, Any], float, str | None, str]]:
        """(local id, document, created at, owner, tenant) of every hosted @context, oldest first."""
        ...

    async def save_hosted_context(
        self,
        local_id: str,
        document: dict[str, Any],
        created_at: float,
        owner: str | None = None,
        tenant: str = "",
    ) -> None: ...

    async def delete_hosted_context(self, local_id: str) -> None: ...

    # -- documents: registrations, csource subscriptions (clauses 5.9, 5.11) -----------------------
    # Canonical JSON documents of one ``kind`` ("csourceRegistration", "csourceSubscription"),
    # one per (kind, tenant, id), listed in creation order.

    async def insert_document(self, kind: str, tenant: str, doc: dict[str, Any]) -> bool:
        """Store a new document (creating the tenant); False if its id is taken for that kind."""

    async def replace_document(self, kind: str, tenant: str, doc: dict[str, Any]) -> bool:
        """Overwrite an existing document; False if there is none with that id."""

    async def swap_document(self, kind: str, tenant: str, doc: dict[str, Any], expected: int) -> bool:
        """Compare-and-set: overwrite the document only if the stored one's ``version`` member
        (0 when absent) equals ``expected``, atomically (also across processes sharing the
        store); False if it changed meanwhile or does not exist. The caller bumps the version."""

    async def get_document(self, kind: str, tenant: str, doc_id: str) -> dict[str, Any] | None: ...

    async def list_documents(
        self, kind: str, tenant: str, limit: int | None = None, offset: int = 0
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of a tenant's documents of one kind (creation order) and their total number."""

    async def delete_document(self, kind: str, tenant: str, doc_id: str) -> bool: ...


class OutboxStore(Protocol):
    """Subscriptions and the notification outbox they are owed (at-least-once delivery)."""

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

    async def delete_subscription(self, tenant: str, subscription_id: str) -> bool:
        """Delete a subscription with its pending notifications and delivery state."""

    async def subscription_version(self, tenant: str) -> int: ...

    # -- the notification outbox (at-least-once delivery) -----------------------------------------
    # One row per change names the subscriptions it notifies; each subscription has a cursor, the
    # newest change delivered to it, moved only once delivered (or past everything, with the
    # subscription). A row goes once every subscription it names has passed it. A dispatcher
    # takes a per-subscription lease before reading a subscription's rows, so that with several
    # processes on one store exactly one delivers each subscription, in order.

    async def outbox_subscriptions(self) -> list[tuple[str, str]]:
        """(tenant, subscription id) of every subscription with notifications pending."""

    async def lease_subscriptions(
        self, owner: str, keys: Sequence[tuple[str, str]], now: float, until: float
    ) -> list[tuple[str, str]]:
        """Take or extend the lease on each key that is free, expired or already ``owner``'s."""

    async def lease_owners(self) -> list[str]: ...

    async def renew_leases(self, owner: str, until: float) -> None: ...

    async def release_leases(self, owner: str) -> None: ...

    async def outbox_head(self, tenant: str, subscription_id: str, limit: int) -> list[OutboxRow]:
        """The oldest pending rows of one subscription, in commit order."""

    async def ack_outbox(
        self, tenant: str, subscription_id: str, seq: int, status: dict[str, Any] | None = None
    ) -> None:
        """The subscription's rows up to ``seq`` are delivered: move its cursor there (never back)
        and, with ``status``, save it as the delivery state in the same transaction (one commit
        per notification delivered, not two, as :meth:`save_notification_status` does)."""

    async def drop_outbox(self, tenant: str, subscription_id: str) -> None:
        """Give up a subscription's pending rows, lease and delivery state."""

    async def notification_status(self, tenant: str, subscription_id: str) -> dict[str, Any] | None:
        """Delivery state kept apart from the subscription (timesSent, lastSuccess, ...)."""

    async def save_notification_status(
        self, tenant: str, subscription_id: str, status: dict[str, Any]
    ) -> None: ...


class HistoryStore(Protocol):
    """Temporal history reads, aggregation and pruning (the writes are in the transaction)."""

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

    async def read_histories(
        self, tenant: str, entity_ids: Sequence[str], query: HistoryQuery
    ) -> dict[str, list[tuple[str, dict[str, Any]]]]:
        """:meth:`read_history` of several entities at once (a page of a temporal query), by
        entity id; entities with nothing selected are left out."""

    async def aggregate_histories(
        self,
        tenant: str,
        entity_ids: Sequence[str],
        query: HistoryQuery,
        methods: Sequence[str],
        period: float | None,
        origin: float | None,
    ) -> list[AggregateSeries]:
        """Aggregates of several entities at once (one statement) per attribute, datasetId and
        period bucket of ``period`` seconds starting at ``origin`` (default: the first instance of
        each series; ``period`` None is one bucket for the whole range), a series each, ordered
        by entity id, attribute and datasetId (the default first); each says its ``kind``: the
        type of the newest instance of its attribute (all datasetIds) that ``query`` selects."""

    async def prune_history(self, before: float) -> int:
        """Forget, in every tenant, the attribute instances whose time (observedAt, else
        createdAt) is before ``before`` (POSIX seconds), and the temporal entities left without
        any history; return how many instances went."""


class ChangeLog(Protocol):
    """Every entity write, in the write's own transaction, kept for ``--change-retention``: what
    a live view of the entities follows, and resumes from after a disconnect without a gap."""

    async def entity_changes(self, tenant: str, after: int, limit: int) -> list[EntityChange]:
        """The tenant's changes committed with a ``seq`` above ``after``, oldest first, at most
        ``limit``. A change committed later never gets a ``seq`` at or below one returned."""

    async def change_bounds(self, tenant: str) -> tuple[int, int]:
        """(pruned, last): changes up to ``pruned`` were forgotten, ``last`` is the newest
        ``seq`` given (both 0 for a tenant without changes)."""

    async def prune_changes(self, before: float) -> int:
        """Forget, in every tenant, the changes written before ``before`` (POSIX seconds);
        return how many went."""


class AuditStore(Protocol):
    """The audit trail: denied decisions and changes of rights, node-wide, never pruned."""

    async def append_audit(self, event: AuditEvent) -> None:
        """Keep ``event`` for good: :meth:`prune_history` never removes audit events."""

    async def read_audit(
        self,
        *,
        subject: str | None = None,
        tenant: str | None = None,
        since: float | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[AuditEvent], int]:
        """A page of the events that match (``since``: at or after), oldest first, and how many
        match in all."""


class VitalsStore(Protocol):
    """Read-only figures for the metrics; nothing here changes what the store holds."""

    async def vitals(self, tenant: str, kinds: Sequence[str]) -> Vitals:
        """The outbox (all tenants) and the states of ``tenant``'s documents of ``kinds``."""

    def pool_usage(self) -> tuple[int, int] | None:
        """(connections held, connections lent out) of this process's pool; None: no pool."""

    def time_writes(self, observer: WriteObserver) -> None:
        """Tell ``observer`` the duration of every write transaction from now on."""


class Store(
    ChangeFeed,
    TenantStore,
    EntityStore,
    OutboxStore,
    HistoryStore,
    ChangeLog,
    AuditStore,
    DocumentStore,
    VitalsStore,
    Protocol,
):
    """Everything a store implements (SQLite and PostgreSQL both, proven by the contract tests)."""


def open_store(url: str) -> Store:
    """The store a ``--store`` URL names."""
    if url.startswith("sqlite:"):
        from kizuna.store.sqlite import SqliteStore

        return SqliteStore.from_url(url)
    if url.startswith(("postgresql:", "postgres:")):
        from kizuna.store.postgres import PostgresStore

        return PostgresStore.from_url(url)
    raise SystemExit(
        f"kizuna: unsupported store URL {url!r}"
        " (use sqlite:///path/to/file.db or postgresql://user@host:port/db)"
    )
