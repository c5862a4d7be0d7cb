"""The shared store: PostgreSQL with PostGIS, through an asyncpg connection pool.

Several ``kizuna serve`` processes may share one database: every write is one PostgreSQL
transaction (READ COMMITTED; :meth:`PgWrite.get` locks the row it reads with ``FOR UPDATE`` so a
read-modify-write of one entity never loses a concurrent update), and nothing is cached in the
process that another process could change, except the tenant -> schema names (tenants are never
dropped).

Tenants: one PostgreSQL schema per tenant (``tenant_default`` for the default tenant,
``tenant_<sha256 of the name, 24 hex>`` for the others), listed in ``kizuna.tenants``. Chosen over
a ``tenant`` column because every tenant-scoped statement names its schema, so no statement can
forget a tenant filter and read another tenant's rows; each tenant's indexes cover only its own
rows (a tenant of 46,000 street lights does not slow a tenant of ten); and a tenant can be backed
up, moved or dropped with ordinary schema tools. The cost, a set of tables per tenant, is fine for
the tens to hundreds of tenants a node serves. A schema is created, with its tables, in the
transaction of the tenant's first write, so a failed first write leaves no tenant behind.
Cross-tenant machinery (hosted @contexts, the notification outbox, leases and delivery state)
lives in the ``kizuna`` schema with a ``tenant`` column; it is never read by tenant queries.

Migrations: ``kizuna.schema_migrations`` records each global migration applied, and
``kizuna.tenants.version`` each tenant schema's; :meth:`PostgresStore.open` applies what is
missing under an advisory lock, so processes starting together migrate once.

Per tenant schema:

- ``entities``: the canonical entity as ``jsonb`` (``doc``). JSON text containing ``\\u0000``
  cannot be ``jsonb``; such a (rare) document is kept as orjson bytes in ``raw`` instead.
  ``jsonb`` keeps values but not the order of object members (they come back sorted, shorter keys
  first), which JSON leaves open: responses may list attributes in another order than SQLite's.
- ``entity_types``: the type index.
- ``attr_values``: the q index, the same rows as in the SQLite store
  (:func:`kizuna.store.common.attribute_rows`), with numbers and booleans in ``num numeric``
  (exact: integers and binary floats compare as Python compares them) and strings in
  ``str bytea`` (UTF-8; byte order is code point order, as in Python; NUL is allowed), each with a
  B-tree index led by ``(attribute, kind, ...)`` so that a comparison is one range scan.
- ``geo_index``: one PostGIS ``geometry`` (SRID 4326) per (entity, property holding GeoJSON): the
  box around its instances, under a GiST index. A geoQuery selects candidates with ``&&`` against
  :meth:`GeoQuery.bbox`; the exact georel is checked with shapely on those, on the GeoJSON kept
  beside the box (``shapes``, so that only the documents of the page are read), as the SQLite
  store does, so that both stores answer alike for every geometry the model accepts (PostGIS would
  refuse some GeoJSON that shapely takes, and near/equals have NGSI-LD specific meanings).
- ``attribute_history`` (one row per attribute instance, times as POSIX seconds, with
  ``(entity_id, attribute, observed_at)`` and ``(entity_id, attribute, created_at)`` B-tree
  indexes for range scans) and ``temporal_entities``; aggregation is one SQL statement binning
  each instance to ``floor((t - origin) / period)``, the epoch form of ``date_bin``.
- ``subscriptions``, ``documents`` (registrations, csource subscriptions), ``subscription_version``.

q compiles to SQL as in the SQLite store (:class:`kizuna.store.common.QCompiler`; same coverage, except
``~=``, left to Python because PostgreSQL regular expressions are not Python's); the rest, scopeQ
and the exact geometry check run in Python on the rows SQL selects.

Notifications: the outbox rows are written in the transaction of the change they report; a
dispatcher claims a subscription's rows by leasing it (:meth:`PostgresStore.lease_subscriptions`:
one statement that inserts free leases and takes over expired ones ``FOR UPDATE SKIP LOCKED``, so
processes racing for a subscription never wait on each other and exactly one wins it).

Processes keep little in memory (compiled subscriptions, hosted @contexts); the transactions that
change those also ``pg_notify`` the change on the ``kizuna_changes`` channel, as does every
transaction that queues notifications. Each store holds one LISTEN connection
(:meth:`PostgresStore.listen`): PostgreSQL delivers a notification only once its transaction
commits, to every listening process, so other processes drop their copies and wake their
dispatchers as soon as the change is visible to them.

A lost connection makes the request fail with 503 ServiceUnavailable; the pool replaces dead
connections on the next acquire, so the node recovers by itself once PostgreSQL is back. The
LISTEN connection reconnects too, and then tells its listeners that anything may have changed
while it was away.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg
import orjson

from kizuna import query as ql
from kizuna.errors import AlreadyExists, ServiceUnavailable
from kizuna.patterns import compile_pattern
from kizuna.store import (
    NO_SCOPE,
    AccessFilter,
    AggregateRow,
    AuditEvent,
    ChangeListener,
    Entity,
    EntityQuery,
    HistoryQuery,
    OutboxRow,
    QueryResult,
)
from kizuna.store.common import (
    BOOLEAN,
    CORE,
    NUMBER,
    STRING,
    TIME_COLUMN,
    QCompiler,
    Sql,
    attribute_rows,
    audit_conditions,
    extended_temporal_entity,
    geometry_boxes,
    history_columns,
    literal_prefix,
    new_history_instance,
    tell,
)

_PAGE = 500
_LOCK_KEY = 0x6B697A756E61  # "kizuna": the advisory lock migrations run under

# -- migrations ------------------------------------------------------------------------------------

GLOBAL_MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "tenants, hosted contexts, notification outbox",
        """
        CREATE EXTENSION IF NOT EXISTS postgis;
        CREATE TABLE kizuna.tenants (
            name text PRIMARY KEY,
            schema_name text NOT NULL UNIQUE,
            version integer NOT NULL
        );
        CREATE TABLE kizuna.hosted_contexts (
            local_id text PRIMARY KEY,
            document bytea NOT NULL,
            created_at double precision NOT NULL
        );
        CREATE TABLE kizuna.notification_outbox (
            seq bigserial PRIMARY KEY,
            tenant text NOT NULL,
            subscription_id text NOT NULL,
            entity_id text NOT NULL,
            trigger text NOT NULL,
            payload bytea NOT NULL,
            created_at double precision NOT NULL
        );
        CREATE INDEX notification_outbox_by_subscription
            ON kizuna.notification_outbox (tenant, subscription_id, seq);
        CREATE TABLE kizuna.notification_leases (
            tenant text NOT NULL,
            subscription_id text NOT NULL,
            owner text NOT NULL,
            until double precision NOT NULL,
            PRIMARY KEY (tenant, subscription_id)
        );
        CREATE INDEX notification_leases_by_owner ON kizuna.notification_leases (owner);
        CREATE TABLE kizuna.notification_status (
            tenant text NOT NULL,
            subscription_id text NOT NULL,
            doc bytea NOT NULL,
            PRIMARY KEY (tenant, subscription_id)
        );
        """,
    ),
    (
        2,
        "audit trail",
        """
        CREATE TABLE kizuna.audit_trail (
            seq bigserial PRIMARY KEY,
            at double precision NOT NULL,
            subject text NOT NULL,
            tenant text NOT NULL,
            operation text NOT NULL,
            target text NOT NULL,
            outcome text NOT NULL,
            detail text NOT NULL
        );
        CREATE INDEX audit_trail_by_subject ON kizuna.audit_trail (subject, at);
        CREATE INDEX audit_trail_by_time ON kizuna.audit_trail (at);
        """,
    ),
    (3, "owners of hosted contexts", "ALTER TABLE kizuna.hosted_contexts ADD COLUMN owner text;"),
    (
        4,
        "tenants of hosted contexts",
        "ALTER TABLE kizuna.hosted_contexts ADD COLUMN tenant text NOT NULL DEFAULT '';",
    ),
]

# Applied to each tenant schema, in order; ``{s}`` is the quoted schema name.
TENANT_MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE {s}.entities (
            pk bigserial PRIMARY KEY,
            id text COLLATE "C" NOT NULL UNIQUE,
            doc jsonb,
            raw bytea
        );
        CREATE TABLE {s}.entity_types (
            type text NOT NULL,
            pk bigint NOT NULL REFERENCES {s}.entities ON DELETE CASCADE
        );
        CREATE INDEX entity_types_by_type ON {s}.entity_types (type, pk);
        CREATE INDEX entity_types_by_pk ON {s}.entity_types (pk);
        CREATE TABLE {s}.attr_values (
            attribute text NOT NULL,
            kind smallint NOT NULL,
            num numeric,
            str bytea,
            pk bigint NOT NULL REFERENCES {s}.entities ON DELETE CASCADE,
            inst integer NOT NULL
        );
        CREATE INDEX attr_values_num ON {s}.attr_values (attribute, kind, num, pk);
        CREATE INDEX attr_values_str ON {s}.attr_values (attribute, kind, str, pk);
        CREATE INDEX attr_values_by_pk ON {s}.attr_values (pk, attribute, inst);
        CREATE TABLE {s}.geo_index (
            pk bigint NOT NULL REFERENCES {s}.entities ON DELETE CASCADE,
            geoproperty text NOT NULL,
            box geometry NOT NULL
        );
        CREATE INDEX geo_index_box ON {s}.geo_index USING gist (box);
        CREATE INDEX geo_index_by_pk ON {s}.geo_index (pk);
        CREATE TABLE {s}.subscriptions (
            seq bigserial,
            id text PRIMARY KEY,
            doc bytea NOT NULL
        );
        CREATE TABLE {s}.subscription_version (
            one boolean PRIMARY KEY DEFAULT true CHECK (one),
            version bigint NOT NULL
        );
        INSERT INTO {s}.subscription_version (version) VALUES (0);
        CREATE TABLE {s}.documents (
            seq bigserial,
            kind text NOT NULL,
            id text NOT NULL,
            doc bytea NOT NULL,
            PRIMARY KEY (kind, id)
        );
        CREATE TABLE {s}.temporal_entities (
            seq bigserial,
            id text COLLATE "C" PRIMARY KEY,
            types text[] NOT NULL,
            scope text,
            created_at text NOT NULL,
            modified_at text NOT NULL
        );
        CREATE TABLE {s}.attribute_history (
            pk bigserial PRIMARY KEY,
            entity_id text COLLATE "C" NOT NULL,
            attribute text COLLATE "C" NOT NULL,
            instance_id text NOT NULL UNIQUE,
            dataset_id text COLLATE "C",
            observed_at double precision,
            created_at double precision NOT NULL,
            modified_at double precision NOT NULL,
            deleted_at double precision,
            value_number double precision,
            value_key text,
            doc jsonb,
            raw bytea
        );
        CREATE INDEX attribute_history_observed ON {s}.attribute_history (entity_id, attribute, observed_at);
        CREATE INDEX attribute_history_created ON {s}.attribute_history (entity_id, attribute, created_at);
        CREATE INDEX attribute_history_time ON {s}.attribute_history ((COALESCE(observed_at, created_at)));
        """,
    ),
    (
        2,
        # lastN walks this index backwards per attribute and stops after N rows (read_history).
        """
        CREATE INDEX attribute_history_when ON {s}.attribute_history
            (entity_id, attribute, (COALESCE(observed_at, created_at)), pk);
        """,
    ),
    (
        3,
        # The GeoJSON values of the box's instances: a geoQuery checks these, not the documents.
        # NULL in rows written before; such a query reads the documents (query_entities).
        """
        ALTER TABLE {s}.geo_index ADD COLUMN shapes jsonb;
        """,
    ),
    (
        4,
        # Who created the entity (access control); NULL for entities written before.
        """
        ALTER TABLE {s}.entities ADD COLUMN owner text;
        """,
    ),
]
TENANT_VERSION = TENANT_MIGRATIONS[-1][0]

CHANNEL = "kizuna_changes"  # payload: topic "\n" key (see kizuna.store.ChangeListener)
RECONNECT_DELAY, RECONNECT_DELAY_MAX = 0.2, 5.0
ACQUIRE_TIMEOUT = 30.0  # seconds a write waits for a pooled connection before answering 503
log = logging.getLogger("kizuna.store")

# -- errors: a lost database is 503 ------------------------------------------------------------------

_LOST = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    # What asyncpg raises when it resets a connection that broke in the middle of a statement
    # (seen when PostgreSQL stops under load: "cannot switch to state ...").
    asyncpg.InternalClientError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
)


def _unavailable(exc: BaseException) -> ServiceUnavailable:
    return ServiceUnavailable(f"the database is not reachable ({type(exc).__name__}: {exc}); retry later")


_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])


def _guarded(fn: _F) -> _F:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except _LOST as exc:
            raise _unavailable(exc) from exc

    return wrapper  # type: ignore[return-value]


# -- documents ---------------------------------------------------------------------------------------


def _pack(obj: Any) -> tuple[str | None, bytes | None]:
    """(jsonb text, raw bytes): jsonb unless the JSON holds a NUL character, which jsonb refuses."""
    data = orjson.dumps(obj)
    if b"\\u0000" in data:
        return None, data
    return data.decode(), None


def _unpack(doc: Any, raw: bytes | None) -> Any:
    return orjson.loads(raw) if doc is None else doc


def schema_for(tenant: str) -> str:
    if tenant == "":
        return "tenant_default"
    return "tenant_" + hashlib.sha256(tenant.encode()).hexdigest()[:24]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _numbered(sql: str) -> str:
    """``?`` placeholders as asyncpg's ``$1``, ``$2``, ... (the SQL here never holds a literal ?)."""
    counter = iter(range(1, 10_000))
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=lambda v: v, decoder=orjson.loads, format="text"
    )


class PostgresStore:
    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 10) -> None:
        self.dsn = dsn
        self.min_size = min_size
        self.max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._schemas: dict[str, str] = {"": _quote(schema_for(""))}
        self._listeners: list[ChangeListener] = []
        self._follower: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str) -> PostgresStore:
        """postgresql://user:password@host:port/db, optionally ?pool_min=N&pool_max=N (the other
        query parameters, sslmode for instance, go to the driver)."""
        parts = urlsplit(url)
        options = [p.split("=", 1) for p in parts.query.split("&") if "=" in p]
        sizes = {f"{k[5:]}_size": int(v) for k, v in options if k in ("pool_min", "pool_max")}
        query = "&".join(f"{k}={v}" for k, v in options if k not in ("pool_min", "pool_max"))
        return cls(parts._replace(scheme="postgresql", query=query).geturl(), **sizes)

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("store is not open")
        return self._pool

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=self.min_size,
                max_size=self.max_size,
                init=_init_connection,
                command_timeout=60,
            )
        except _LOST as exc:
            raise SystemExit(f"kizuna: cannot connect to PostgreSQL at {self.dsn}: {exc}") from exc
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
            await _migrate(conn)
        # Listening before open() returns: nothing committed after the caller's first reads
        # (hosted contexts, subscriptions) can go unheard.
        listening = await self._listening()
        self._follower = asyncio.create_task(self._follow(listening), name="kizuna-pg-changes")

    def listen(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    async def announce(self, topic: str, key: str) -> None:
        async with self._transaction() as (conn, _):
            await _announce(conn, topic, key)

    def _heard(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        topic, _, key = payload.partition("\n")
        tell(self._listeners, topic, key)

    async def _listening(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(self.dsn, timeout=10)
        await conn.add_listener(CHANNEL, self._heard)
        return conn

    async def _follow(self, conn: asyncpg.Connection | None) -> None:
        """Keep the LISTEN connection for the store's life. A ping each second notices a lost
        server; the reconnect (with backoff) is followed by ``*``, for what was missed meanwhile."""
        delay = RECONNECT_DELAY
        try:
            while True:
                if conn is None:
                    try:
                        conn = await self._listening()
                    except _LOST:
                        await asyncio.sleep(delay)
                        delay = min(2 * delay, RECONNECT_DELAY_MAX)
                        continue
                    delay = RECONNECT_DELAY
                    log.info("listening to PostgreSQL again")
                    tell(self._listeners, "*", "")
                await asyncio.sleep(1.0)
                try:
                    await conn.fetchval("SELECT 1", timeout=5)
                except _LOST:
                    log.warning("lost the PostgreSQL LISTEN connection; reconnecting")
                    conn.terminate()
                    conn = None
        finally:
            if conn is not None:
                conn.terminate()

    async def close(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
            self._follower = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), 10)
            except (TimeoutError, *_LOST):
                pool.terminate()

    # -- tenants ---------------------------------------------------------------------------------

    async def _schema(self, tenant: str) -> str | None:
        """The quoted schema of an existing tenant, None if the tenant does not exist."""
        schema = self._schemas.get(tenant)
        if schema is None:
            name = await self.pool.fetchval("SELECT schema_name FROM kizuna.tenants WHERE name = $1", tenant)
            if name is None:
                return None
            schema = self._schemas[tenant] = _quote(name)
        return schema

    async def _ensure_tenant(self, conn: asyncpg.Connection, tenant: str) -> str:
        """The tenant's quoted schema, created (with its tables) in ``conn``'s transaction if new."""
        schema = self._schemas.get(tenant)
        if schema is not None:
            return schema
        name = schema_for(tenant)
        created = await conn.fetchval(
            "INSERT INTO kizuna.tenants (name, schema_name, version) VALUES ($1, $2, $3)"
            " ON CONFLICT (name) DO NOTHING RETURNING 1",
            tenant,
            name,
            TENANT_VERSION,
        )
        if created:
            await conn.execute(f"CREATE SCHEMA {_quote(name)}")
            for _, ddl in TENANT_MIGRATIONS:
                await conn.execute(ddl.format(s=_quote(name)))
            # Cached only once committed: see :meth:`_remember`.
            return _quote(name)
        stored = await conn.fetchval("SELECT schema_name FROM kizuna.tenants WHERE name = $1", tenant)
        return _quote(stored)

    @_guarded
    async def has_tenant(self, tenant: str) -> bool:
        return await self._schema(tenant) is not None

    @_guarded
    async def tenants(self) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT name FROM kizuna.tenants WHERE name <> '' ORDER BY name COLLATE \"C\""
        )
        return [row[0] for row in rows]

    # -- writes ----------------------------------------------------------------------------------

    @asynccontextmanager
    async def _transaction(self, tenant: str | None = None) -> AsyncIterator[tuple[asyncpg.Connection, str]]:
        """A connection in a transaction (and the tenant's schema, created if new); commits on a
        clean exit. A lost connection becomes ServiceUnavailable."""
        try:
            async with self.pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
                async with conn.transaction():
                    schema = "" if tenant is None else await self._ensure_tenant(conn, tenant)
                    yield conn, schema
                if tenant is not None:
                    self._schemas.setdefault(tenant, schema)
        except _LOST as exc:
            raise _unavailable(exc) from exc

    @asynccontextmanager
    async def write(self, tenant: str) -> AsyncIterator[PgWrite]:
        async with self._transaction(tenant) as (conn, schema):
            yield PgWrite(conn, schema, tenant)

    # -- reads -----------------------------------------------------------------------------------

    @_guarded
    async def get_entity(self, tenant: str, entity_id: str) -> Entity | None:
        schema = await self._schema(tenant)
        if schema is None:
            return None
        row = await self.pool.fetchrow(f"SELECT doc, raw FROM {schema}.entities WHERE id = $1", entity_id)
        return _unpack(row[0], row[1]) if row else None

    @_guarded
    async def get_owned_entity(self, tenant: str, entity_id: str) -> tuple[Entity, str | None] | None:
        schema = await self._schema(tenant)
        if schema is None:
            return None
        row = await self.pool.fetchrow(
            f"SELECT doc, raw, owner FROM {schema}.entities WHERE id = $1", entity_id
        )
        return (_unpack(row[0], row[1]), row[2]) if row else None

    @_guarded
    async def query_entities(self, tenant: str, query: EntityQuery) -> QueryResult:
        result = QueryResult(total=0 if query.count else None)
        schema = await self._schema(tenant)
        if schema is None:
            return result
        where, params, residual = _plan(schema, query)
        if residual is None and query.geo is not None:
            shaped = await self._query_by_shapes(schema, query, where, params)
            if shaped is not None:
                return shaped
        if residual is None and query.geo is None:
            if _by_types_only(query):
                # A type listing pages and counts on the type index alone; only the documents
                # of the page are read.
                assert query.types is not None
                distinct = "DISTINCT " if len(query.types) > 1 else ""
                pks = f"SELECT {distinct}pk FROM {schema}.entity_types WHERE type = ANY($1::text[])"
                page_sql = (
                    f"SELECT e.doc, e.raw FROM {schema}.entities e"
                    f" WHERE e.pk IN ({pks} ORDER BY pk LIMIT $2 OFFSET $3) ORDER BY e.pk"
                )
                count_sql = (
                    f"SELECT count({distinct}pk) FROM {schema}.entity_types WHERE type = ANY($1::text[])"
                )
                params = [list(query.types)]
            else:
                # The page's keys first, then only its documents: PostgreSQL would otherwise
                # read the document of every candidate before sorting and cutting the page.
                page_sql = _numbered(
                    f"SELECT doc, raw FROM {schema}.entities WHERE pk IN (SELECT e.pk FROM"
                    f" {schema}.entities e WHERE {where} ORDER BY e.pk LIMIT ? OFFSET ?) ORDER BY pk"
                )
                count_sql = _numbered(f"SELECT count(*) FROM {schema}.entities e WHERE {where}")
            if query.limit != 0:
                rows = await self.pool.fetch(page_sql, *params, query.limit, query.offset)
                result.entities = [_unpack(doc, raw) for doc, raw in rows]
            if query.count:
                result.total = await self.pool.fetchval(count_sql, *params)
            return result
        matched = 0
        wanted_end = None if query.limit is None else query.offset + query.limit
        sql = _numbered(f"SELECT e.doc, e.raw FROM {schema}.entities e WHERE {where} ORDER BY e.pk")
        async with self.pool.acquire() as conn, conn.transaction(readonly=True):
            cursor = await conn.cursor(sql, *params)
            size = 64
            while batch := await cursor.fetch(size):
                size = min(2 * size, _PAGE)
                # Candidates in growing batches; the exact geo check runs on a whole batch at once
                # (vectorised for points), after the rest of the residual.
                entities = [_unpack(doc, raw) for doc, raw in batch]
                if residual is not None:
                    entities = [entity for entity in entities if residual(entity)]
                if query.geo is not None:
                    keep = ql.geo_matches_many(query.geo, query.geoproperty or "location", entities)
                    entities = [entity for entity, ok in zip(entities, keep, strict=True) if ok]
                for entity in entities:
                    if matched >= query.offset and (wanted_end is None or matched < wanted_end):
                        result.entities.append(entity)
                    matched += 1
                if not query.count and wanted_end is not None and matched >= wanted_end:
                    break
        if query.count:
            result.total = matched
        return result

    async def _query_by_shapes(
        self, schema: str, query: EntityQuery, where: str, params: list[Any]
    ) -> QueryResult | None:
        """A query where only the exact geo check is left to Python: it runs on the shapes kept
        in the geo index, and only the documents of the page are read. None if some candidate
        was indexed before shapes were kept (then the documents must be read)."""
        assert query.geo is not None
        rows = await self.pool.fetch(
            _numbered(
                f"SELECT e.pk, g.shapes FROM {schema}.entities e JOIN {schema}.geo_index g"
                f" ON g.pk = e.pk AND g.geoproperty = ? WHERE {where} ORDER BY e.pk"
            ),
            query.geoproperty or "location",
            *params,
        )
        if any(found is None for _, found in rows):
            return None
        keep = ql.geo_matches_values(query.geo, [found for _, found in rows])
        matched = [pk for (pk, _), ok in zip(rows, keep, strict=True) if ok]
        result = QueryResult(total=len(matched) if query.count else None)
        end = None if query.limit is None else query.offset + query.limit
        page = matched[query.offset : end]
        if page:
            docs = await self.pool.fetch(
                f"SELECT doc, raw FROM {schema}.entities WHERE pk = ANY($1::bigint[]) ORDER BY pk", page
            )
            result.entities = [_unpack(doc, raw) for doc, raw in docs]
        return result

    async def iter_entities(self, tenant: str) -> AsyncIterator[Entity]:
        try:
            schema = await self._schema(tenant)
            if schema is None:
                return
            last = 0
            while True:
                rows = await self.pool.fetch(
                    f"SELECT pk, doc, raw FROM {schema}.entities WHERE pk > $1 ORDER BY pk LIMIT $2",
                    last,
                    _PAGE,
                )
                for pk, doc, raw in rows:
                    last = pk
                    yield _unpack(doc, raw)
                if len(rows) < _PAGE:
                    return
        except _LOST as exc:
            raise _unavailable(exc) from exc

    # -- hosted @contexts ------------------------------------------------------------------------

    @_guarded
    async def hosted_contexts(self) -> list[tuple[str, dict[str, Any], float, str | None, str]]:
        rows = await self.pool.fetch(
            "SELECT local_id, document, created_at, owner, tenant FROM kizuna.hosted_contexts"
            " ORDER BY created_at"
        )
        return [(lid, orjson.loads(doc), created, owner, tenant) for lid, doc, created, owner, tenant in rows]

    async def save_hosted_context(
        self,
        local_id: str,
        document: dict[str, Any],
        created_at: float,
        owner: str | None = None,
        tenant: str = "",
    ) -> None:
        async with self._transaction() as (conn, _):
            await conn.execute(
                "INSERT INTO kizuna.hosted_contexts (local_id, document, created_at, owner, tenant)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (local_id) DO UPDATE SET"
                " document = excluded.document, created_at = excluded.created_at,"
                " owner = excluded.owner, tenant = excluded.tenant",
                local_id,
                orjson.dumps(document),
                created_at,
                owner,
                tenant,
            )
            await _announce(conn, "contexts", local_id)

    async def delete_hosted_context(self, local_id: str) -> None:
        async with self._transaction() as (conn, _):
            await conn.execute("DELETE FROM kizuna.hosted_contexts WHERE local_id = $1", local_id)
            await _announce(conn, "contexts", local_id)

    # -- subscriptions ---------------------------------------------------------------------------

    async def insert_subscription(self, tenant: str, sub: dict[str, Any]) -> bool:
        async with self._transaction(tenant) as (conn, schema):
            done = await conn.fetchval(
                f"INSERT INTO {schema}.subscriptions (id, doc) VALUES ($1, $2)"
                " ON CONFLICT (id) DO NOTHING RETURNING true",
                sub["id"],
                orjson.dumps(sub),
            )
            if done:
                await _bump_subscription_version(conn, schema, tenant)
            return bool(done)

    @_guarded
    async def replace_subscription(self, tenant: str, sub: dict[str, Any]) -> bool:
        schema = await self._schema(tenant)
        if schema is None:
            return False
        async with self._transaction() as (conn, _):
            status = await conn.execute(
                f"UPDATE {schema}.subscriptions SET doc = $1 WHERE id = $2", orjson.dumps(sub), sub["id"]
            )
            if status == "UPDATE 1":
                await _bump_subscription_version(conn, schema, tenant)
            return status == "UPDATE 1"

    @_guarded
    async def get_subscription(self, tenant: str, subscription_id: str) -> dict[str, Any] | None:
        schema = await self._schema(tenant)
        if schema is None:
            return None
        doc = await self.pool.fetchval(
            f"SELECT doc FROM {schema}.subscriptions WHERE id = $1", subscription_id
        )
        return None if doc is None else orjson.loads(doc)

    @_guarded
    async def list_subscriptions(
        self, tenant: str, limit: int | None, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        schema = await self._schema(tenant)
        if schema is None:
            return [], 0
        total = await self.pool.fetchval(f"SELECT count(*) FROM {schema}.subscriptions")
        rows = await self.pool.fetch(
            f"SELECT doc FROM {schema}.subscriptions ORDER BY seq LIMIT $1 OFFSET $2", limit, offset
        )
        return [orjson.loads(doc) for (doc,) in rows], total

    @_guarded
    async def delete_subscription(self, tenant: str, subscription_id: str) -> bool:
        schema = await self._schema(tenant)
        async with self._transaction() as (conn, _):
            deleted = False
            if schema is not None:
                status = await conn.execute(
                    f"DELETE FROM {schema}.subscriptions WHERE id = $1", subscription_id
                )
                deleted = status == "DELETE 1"
                if deleted:
                    await _bump_subscription_version(conn, schema, tenant)
            await _forget_notifications(conn, tenant, subscription_id)
            return deleted

    @_guarded
    async def subscription_version(self, tenant: str) -> int:
        schema = await self._schema(tenant)
        if schema is None:
            return 0
        return await self.pool.fetchval(f"SELECT version FROM {schema}.subscription_version")

    # -- the notification outbox -----------------------------------------------------------------

    @_guarded
    async def outbox_subscriptions(self) -> list[tuple[str, str]]:
        rows = await self.pool.fetch(
            "SELECT DISTINCT tenant, subscription_id FROM kizuna.notification_outbox"
        )
        return [(tenant, sub_id) for tenant, sub_id in rows]

    @_guarded
    async def lease_subscriptions(
        self, owner: str, keys: Sequence[tuple[str, str]], now: float, until: float
    ) -> list[tuple[str, str]]:
        """One statement: new leases are inserted; existing ones that are ``owner``'s or expired
        are taken, skipping (``FOR UPDATE SKIP LOCKED``) those another process is taking now."""
        if not keys:
            return []
        rows = await self.pool.fetch(
            """
            WITH wanted AS (
                SELECT * FROM unnest($1::text[], $2::text[]) AS w(tenant, subscription_id)
            ), taken AS (
                INSERT INTO kizuna.notification_leases (tenant, subscription_id, owner, until)
                SELECT tenant, subscription_id, $3::text, $4::float8 FROM wanted
                ON CONFLICT (tenant, subscription_id) DO NOTHING
                RETURNING tenant, subscription_id
            ), free AS (
                SELECT l.tenant, l.subscription_id FROM kizuna.notification_leases l
                JOIN wanted w ON w.tenant = l.tenant AND w.subscription_id = l.subscription_id
                WHERE l.owner = $3 OR l.until < $5
                FOR UPDATE OF l SKIP LOCKED
            ), renewed AS (
                UPDATE kizuna.notification_leases l SET owner = $3, until = $4
                FROM free f WHERE l.tenant = f.tenant AND l.subscription_id = f.subscription_id
                RETURNING l.tenant, l.subscription_id
            )
            SELECT tenant, subscription_id FROM taken UNION ALL SELECT tenant, subscription_id FROM renewed
            """,
            [k[0] for k in keys],
            [k[1] for k in keys],
            owner,
            until,
            now,
        )
        got = {(t, s) for t, s in rows}
        return [key for key in keys if key in got]

    @_guarded
    async def lease_owners(self) -> list[str]:
        return [
            row[0] for row in await self.pool.fetch("SELECT DISTINCT owner FROM kizuna.notification_leases")
        ]

    @_guarded
    async def renew_leases(self, owner: str, until: float) -> None:
        await self.pool.execute(
            "UPDATE kizuna.notification_leases SET until = $1 WHERE owner = $2", until, owner
        )

    @_guarded
    async def release_leases(self, owner: str) -> None:
        await self.pool.execute("DELETE FROM kizuna.notification_leases WHERE owner = $1", owner)

    @_guarded
    async def outbox_head(self, tenant: str, subscription_id: str, limit: int) -> list[OutboxRow]:
        rows = await self.pool.fetch(
            "SELECT seq, entity_id, trigger, payload, created_at FROM kizuna.notification_outbox"
            " WHERE tenant = $1 AND subscription_id = $2 ORDER BY seq LIMIT $3",
            tenant,
            subscription_id,
            limit,
        )
        return [
            OutboxRow(seq, tenant, subscription_id, entity_id, trigger, orjson.loads(payload), created)
            for seq, entity_id, trigger, payload, created in rows
        ]

    @_guarded
    async def delete_outbox(self, seqs: Sequence[int]) -> None:
        if seqs:
            await self.pool.execute(
                "DELETE FROM kizuna.notification_outbox WHERE seq = ANY($1::bigint[])", list(seqs)
            )

    @_guarded
    async def drop_outbox(self, tenant: str, subscription_id: str) -> None:
        async with self._transaction() as (conn, _):
            await _forget_notifications(conn, tenant, subscription_id)

    @_guarded
    async def outbox_size(self) -> int:
        return await self.pool.fetchval("SELECT count(*) FROM kizuna.notification_outbox")

    @_guarded
    async def notification_status(self, tenant: str, subscription_id: str) -> dict[str, Any] | None:
        doc = await self.pool.fetchval(
            "SELECT doc FROM kizuna.notification_status WHERE tenant = $1 AND subscription_id = $2",
            tenant,
            subscription_id,
        )
        return None if doc is None else orjson.loads(doc)

    @_guarded
    async def save_notification_status(
        self, tenant: str, subscription_id: str, status: dict[str, Any]
    ) -> None:
        schema = await self._schema(tenant)
        if schema is None:
            return
        await self.pool.execute(
            "INSERT INTO kizuna.notification_status (tenant, subscription_id, doc)"
            " SELECT $1::text, $2::text, $3::bytea"
            f" WHERE EXISTS (SELECT 1 FROM {schema}.subscriptions WHERE id = $2)"
            f" OR EXISTS (SELECT 1 FROM {schema}.documents WHERE kind = 'csourceSubscription' AND id = $2)"
            " ON CONFLICT (tenant, subscription_id) DO UPDATE SET doc = excluded.doc",
            tenant,
            subscription_id,
            orjson.dumps(status),
        )

    # -- temporal history ------------------------------------------------------------------------

    @_guarded
    async def get_temporal_entity(self, tenant: str, entity_id: str) -> Entity | None:
        schema = await self._schema(tenant)
        if schema is None:
            return None
        return await _temporal_entity(self.pool, schema, entity_id)

    @_guarded
    async def query_temporal_entities(
        self,
        tenant: str,
        types: Sequence[str] | None,
        ids: Sequence[str] | None,
        id_pattern: str | None,
    ) -> list[Entity]:
        schema = await self._schema(tenant)
        if schema is None:
            return []
        where = ["TRUE"]
        params: list[Any] = []
        if types is not None:
            where.append("types && ?::text[]")
            params.append(list(types))
        if ids is not None:
            where.append("id = ANY(?::text[])")
            params.append(list(ids))
        prefix = "" if id_pattern is None else literal_prefix(id_pattern)
        if prefix:
            where.append("id >= ? AND id < ?")
            params += [prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)]
        rows = await self.pool.fetch(
            _numbered(
                f"SELECT {_TEMPORAL_COLUMNS} FROM {schema}.temporal_entities"
                f" WHERE {' AND '.join(where)} ORDER BY seq"
            ),
            *params,
        )
        matcher = None if id_pattern is None else compile_pattern(id_pattern)
        return [_temporal_row(row) for row in rows if matcher is None or matcher.search(row[0]) is not None]

    @_guarded
    async def history_attributes(self, tenant: str, entity_id: str) -> list[str]:
        schema = await self._schema(tenant)
        if schema is None:
            return []
        rows = await self.pool.fetch(
            f"SELECT DISTINCT attribute FROM {schema}.attribute_history WHERE entity_id = $1", entity_id
        )
        return [attribute for (attribute,) in rows]

    async def read_history(
        self, tenant: str, entity_id: str, query: HistoryQuery
    ) -> list[tuple[str, dict[str, Any]]]:
        return (await self.read_histories(tenant, [entity_id], query)).get(entity_id, [])

    @_guarded
    async def read_histories(
        self, tenant: str, entity_ids: Sequence[str], query: HistoryQuery
    ) -> dict[str, list[tuple[str, dict[str, Any]]]]:
        schema = await self._schema(tenant)
        if schema is None or not entity_ids:
            return {}
        limit = query.last_n if query.last_n is not None else query.first_n
        if limit is None:
            where, params, when = _history_where(None, query, entity_ids=entity_ids)
            sql = (
                f"SELECT entity_id, attribute, instance_id, doc, raw FROM {schema}.attribute_history"
                f" WHERE {where} ORDER BY entity_id, attribute, {when}, pk"
            )
        else:
            # Per (entity, attribute), the first ``limit`` rows of an index walk
            # (attribute_history_when), instead of ranking each whole series.
            where, params, when = _history_where(None, query, entity_sql="p.e", attribute_sql="p.a")
            direction = "DESC" if query.last_n is not None else "ASC"
            sql = (
                "SELECT p.e, p.a, h.instance_id, h.doc, h.raw FROM (SELECT DISTINCT entity_id AS e,"
                f" attribute AS a FROM {schema}.attribute_history WHERE entity_id = ANY(?::text[])) p"
                " CROSS JOIN LATERAL (SELECT instance_id, doc, raw, pk, "
                f"{when} AS t FROM {schema}.attribute_history WHERE {where}"
                f" ORDER BY {when} {direction}, pk {direction} LIMIT ?) h ORDER BY p.e, p.a, h.t, h.pk"
            )
            params = [list(entity_ids), *params, limit]
        out: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for entity_id, attribute, instance_id, doc, raw in await self.pool.fetch(_numbered(sql), *params):
            instance = _unpack(doc, raw)
            instance["instanceId"] = instance_id
            out.setdefault(entity_id, []).append((attribute, instance))
        return out

    @_guarded
    async def prune_history(self, before: float) -> int:
        pruned = 0
        async with self._transaction() as (conn, _):
            for (name,) in await conn.fetch("SELECT schema_name FROM kizuna.tenants"):
                schema = _quote(name)
                status = await conn.execute(
                    f"DELETE FROM {schema}.attribute_history WHERE COALESCE(observed_at, created_at) < $1",
                    before,
                )
                pruned += int(status.split()[-1])
                await conn.execute(
                    f"DELETE FROM {schema}.temporal_entities t WHERE NOT EXISTS (SELECT 1 FROM"
                    f" {schema}.attribute_history h WHERE h.entity_id = t.id) AND t.modified_at <"
                    " to_char(to_timestamp($1) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
                    before,
                )
        return pruned

    @_guarded
    async def aggregate_histories(
        self,
        tenant: str,
        entity_ids: Sequence[str],
        query: HistoryQuery,
        methods: Sequence[str],
        period: float | None,
        origin: float | None,
    ) -> list[AggregateRow]:
        schema = await self._schema(tenant)
        if schema is None or not entity_ids:
            return []
        where, params, when = _history_where(None, query, entity_ids=entity_ids)
        # One statement over all the entities. Buckets are [origin + k*period, origin + (k+1)*period)
        # (date_bin on epoch seconds); each series starts at ``origin`` or at its first instance.
        if origin is not None or period is None:
            # The origin is known (or a series is one bucket): one pass, no series to join back.
            head: list[Any] = []
            start_sql = "?::float8" if origin is not None else f"min({when})"
            if origin is not None:
                head.append(origin)
            bucket = "0"
            if period is not None:
                bucket = f"floor(({when} - ?::float8) / ?::float8)::bigint"
                head += [origin, period]
            columns = ", ".join(_aggregate_columns(methods, "value_number", "value_key"))
            since = f" AND {when} >= ?::float8" if origin is not None else ""
            sql = (
                f"SELECT entity_id, attribute, dataset_id, {start_sql}, max({when}), {bucket} AS bucket,"
                f" {columns} FROM {schema}.attribute_history WHERE {where}{since}"
                " GROUP BY entity_id, attribute, dataset_id, bucket"
                " ORDER BY entity_id, attribute, dataset_id NULLS FIRST, bucket"
            )
            rows = await self.pool.fetch(
                _numbered(sql), *head, *params, *([origin] if origin is not None else [])
            )
        else:
            rows = await self._aggregate_from_first(schema, where, params, when, methods, period)
        if not rows:
            return []
        kinds = await self._history_kinds(schema, query, {(row[0], row[1]) for row in rows})
        out: list[AggregateRow] = []
        for entity_id, attribute, dataset_id, start, last, bucket, *values in rows:
            if period is None:
                begin, end = start, query.end if query.end is not None else last
            else:
                begin = start + bucket * period
                end = begin + period
            row = AggregateRow(attribute, dataset_id, begin, end, dict(zip(methods, values, strict=True)))
            row.entity_id = entity_id
            row.kind = kinds.get((entity_id, attribute))
            out.append(row)
        return out

    async def _aggregate_from_first(
        self,
        schema: str,
        where: str,
        params: list[Any],
        when: str,
        methods: Sequence[str],
        period: float,
    ) -> list[asyncpg.Record]:
        """Buckets from each series' own first instance: the series must be known first."""
        columns = ", ".join(_aggregate_columns(methods, "s.v", "s.k"))
        sql = f"""
        WITH sel AS (
            SELECT entity_id AS e, attribute AS a, dataset_id AS d, {when} AS t,
                   value_number AS v, value_key AS k
            FROM {schema}.attribute_history WHERE {where}
        ), series AS (
            SELECT e, a, d, min(t) AS o FROM sel GROUP BY e, a, d
        )
        SELECT s.e, s.a, s.d, r.o, max(s.t), floor((s.t - r.o) / ?::float8)::bigint AS bucket, {columns}
        FROM sel s JOIN series r ON s.e = r.e AND s.a = r.a AND s.d IS NOT DISTINCT FROM r.d
        GROUP BY s.e, s.a, s.d, r.o, bucket
        ORDER BY s.e, s.a, s.d NULLS FIRST, bucket
        """
        return await self.pool.fetch(_numbered(sql), *params, period)

    async def _history_kinds(
        self, schema: str, query: HistoryQuery, pairs: set[tuple[str, str]]
    ) -> dict[tuple[str, str], str]:
        """The kind (type) of the newest instance ``query`` selects of each (entity, attribute):
        per pair, an index walk that stops at the first row (attribute_history_when)."""
        where, params, when = _history_where(None, query, entity_sql="p.e", attribute_sql="p.a")
        ordered = sorted(pairs)
        sql = (
            "SELECT p.e, p.a, h.kind, h.raw FROM unnest(?::text[], ?::text[]) AS p(e, a) CROSS JOIN LATERAL"
            " (SELECT doc ->> 'type' AS kind, CASE WHEN doc IS NULL THEN raw END AS raw"
            f" FROM {schema}.attribute_history WHERE {where} ORDER BY {when} DESC, pk DESC LIMIT 1) h"
        )
        rows = await self.pool.fetch(
            _numbered(sql), [e for e, _ in ordered], [a for _, a in ordered], *params
        )
        return {(e, a): kind if kind is not None else orjson.loads(raw)["type"] for e, a, kind, raw in rows}

    # -- audit trail ---------------------------------------------------------------------------

    @_guarded
    async def append_audit(self, event: AuditEvent) -> None:
        await self.pool.execute(
            "INSERT INTO kizuna.audit_trail (at, subject, tenant, operation, target, outcome, detail)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)",
            event.at,
            event.subject,
            event.tenant,
            event.operation,
            event.target,
            event.outcome,
            event.detail,
        )

    @_guarded
    async def read_audit(
        self,
        *,
        subject: str | None = None,
        tenant: str | None = None,
        since: float | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[AuditEvent], int]:
        conditions = audit_conditions(subject, tenant, since)
        where = " AND ".join(f"{test} ${n}" for n, (test, _) in enumerate(conditions, 1)) or "true"
        params = [value for _, value in conditions]
        total = await self.pool.fetchval(f"SELECT count(*) FROM kizuna.audit_trail WHERE {where}", *params)
        n = len(params)
        rows = await self.pool.fetch(
            "SELECT at, subject, tenant, operation, target, outcome, detail FROM kizuna.audit_trail"
            f" WHERE {where} ORDER BY seq LIMIT ${n + 1} OFFSET ${n + 2}",
            *params,
            limit,
            offset,
        )
        return [AuditEvent(*row) for row in rows], total

    # -- documents (registrations, csource subscriptions) -----------------------------------------

    async def insert_document(self, kind: str, tenant: str, doc: dict[str, Any]) -> bool:
        async with self._transaction(tenant) as (conn, schema):
            done = await conn.fetchval(
                f"INSERT INTO {schema}.documents (kind, id, doc) VALUES ($1, $2, $3)"
                " ON CONFLICT (kind, id) DO NOTHING RETURNING true",
                kind,
                doc["id"],
                orjson.dumps(doc),
            )
            return bool(done)

    @_guarded
    async def replace_document(self, kind: str, tenant: str, doc: dict[str, Any]) -> bool:
        schema = await self._schema(tenant)
        if schema is None:
            return False
        status = await self.pool.execute(
            f"UPDATE {schema}.documents SET doc = $1 WHERE kind = $2 AND id = $3",
            orjson.dumps(doc),
            kind,
            doc["id"],
        )
        return status == "UPDATE 1"

    @_guarded
    async def swap_document(self, kind: str, tenant: str, doc: dict[str, Any], expected: int) -> bool:
        schema = await self._schema(tenant)
        if schema is None:
            return False
        status = await self.pool.execute(
            f"UPDATE {schema}.documents SET doc = $1 WHERE kind = $2 AND id = $3"
            " AND coalesce((convert_from(doc, 'UTF8')::jsonb ->> 'version')::bigint, 0) = $4",
            orjson.dumps(doc),
            kind,
            doc["id"],
            expected,
        )
        return status == "UPDATE 1"

    @_guarded
    async def get_document(self, kind: str, tenant: str, doc_id: str) -> dict[str, Any] | None:
        schema = await self._schema(tenant)
        if schema is None:
            return None
        doc = await self.pool.fetchval(
            f"SELECT doc FROM {schema}.documents WHERE kind = $1 AND id = $2", kind, doc_id
        )
        return None if doc is None else orjson.loads(doc)

    @_guarded
    async def list_documents(
        self, kind: str, tenant: str, limit: int | None = None, offset: int = 0
    ) -> tuple[list[dict[str, Any]], int]:
        schema = await self._schema(tenant)
        if schema is None:
            return [], 0
        total = await self.pool.fetchval(f"SELECT count(*) FROM {schema}.documents WHERE kind = $1", kind)
        rows = await self.pool.fetch(
            f"SELECT doc FROM {schema}.documents WHERE kind = $1 ORDER BY seq LIMIT $2 OFFSET $3",
            kind,
            limit,
            offset,
        )
        return [orjson.loads(doc) for (doc,) in rows], total

    @_guarded
    async def delete_document(self, kind: str, tenant: str, doc_id: str) -> bool:
        schema = await self._schema(tenant)
        if schema is None:
            return False
        status = await self.pool.execute(
            f"DELETE FROM {schema}.documents WHERE kind = $1 AND id = $2", kind, doc_id
        )
        return status == "DELETE 1"


# -- migrations ------------------------------------------------------------------------------------


async def _migrate(conn: asyncpg.Connection) -> None:
    """Apply the global migrations, then bring every tenant schema to TENANT_VERSION (called under
    the advisory lock, in one transaction)."""
    await conn.execute(
        "CREATE SCHEMA IF NOT EXISTS kizuna;"
        " CREATE TABLE IF NOT EXISTS kizuna.schema_migrations ("
        " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    done = {row[0] for row in await conn.fetch("SELECT version FROM kizuna.schema_migrations")}
    for version, name, ddl in GLOBAL_MIGRATIONS:
        if version not in done:
            await conn.execute(ddl)
            await conn.execute(
                "INSERT INTO kizuna.schema_migrations (version, name) VALUES ($1, $2)", version, name
            )
    default = schema_for("")
    if await conn.fetchval("SELECT 1 FROM kizuna.tenants WHERE name = ''") is None:
        await conn.execute(f"CREATE SCHEMA {_quote(default)}")
        await conn.execute(
            "INSERT INTO kizuna.tenants (name, schema_name, version) VALUES ('', $1, 0)", default
        )
    for name, schema, version in await conn.fetch(
        "SELECT name, schema_name, version FROM kizuna.tenants WHERE version < $1", TENANT_VERSION
    ):
        for step, ddl in TENANT_MIGRATIONS:
            if step > version:
                await conn.execute(ddl.format(s=_quote(schema)))
        await conn.execute("UPDATE kizuna.tenants SET version = $1 WHERE name = $2", TENANT_VERSION, name)


# -- subscription and outbox helpers ---------------------------------------------------------------


async def _bump_subscription_version(conn: asyncpg.Connection, schema: str, tenant: str) -> None:
    await conn.execute(f"UPDATE {schema}.subscription_version SET version = version + 1")
    await _announce(conn, "subscriptions", tenant)


async def _announce(conn: asyncpg.Connection, topic: str, key: str) -> None:
    """Tell every listening process, once the caller's transaction commits (see :data:`CHANNEL`)."""
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"{topic}\n{key}")


async def _forget_notifications(conn: asyncpg.Connection, tenant: str, subscription_id: str) -> None:
    for table in ("notification_outbox", "notification_leases", "notification_status"):
        await conn.execute(
            f"DELETE FROM kizuna.{table} WHERE tenant = $1 AND subscription_id = $2", tenant, subscription_id
        )


# -- temporal helpers ------------------------------------------------------------------------------

_TEMPORAL_COLUMNS = "id, types, scope, created_at, modified_at"


def _temporal_row(row: Sequence[Any]) -> Entity:
    entity_id, types, scope, created_at, modified_at = row
    entity: Entity = {"id": entity_id, "type": list(types)}
    if scope is not None:
        entity["scope"] = orjson.loads(scope)
    entity["createdAt"] = created_at
    entity["modifiedAt"] = modified_at
    return entity


async def _temporal_entity(
    conn: asyncpg.Connection | asyncpg.Pool, schema: str, entity_id: str
) -> Entity | None:
    row = await conn.fetchrow(
        f"SELECT {_TEMPORAL_COLUMNS} FROM {schema}.temporal_entities WHERE id = $1", entity_id
    )
    return _temporal_row(row) if row else None


def _history_where(
    entity_id: str | None,
    query: HistoryQuery,
    *,
    entity_ids: Sequence[str] | None = None,
    entity_sql: str | None = None,
    attribute_sql: str | None = None,
) -> tuple[str, list[Any], str]:
    """The WHERE clause (``?`` placeholders) of a history read of one entity (or of each of
    ``entity_ids``, or of the entity and attribute SQL expressions given), its parameters and the
    time expression it orders by."""
    column = TIME_COLUMN[query.timeproperty]
    params: list[Any] = []
    if entity_sql is not None:
        where = [f"entity_id = {entity_sql}"]
    elif entity_ids is not None:
        where = ["entity_id = ANY(?::text[])"]
        params.append(list(entity_ids))
    else:
        where = ["entity_id = ?"]
        params.append(entity_id)
    if attribute_sql is not None:
        where.append(f"attribute = {attribute_sql}")
    where.append("deleted_at IS NOT NULL" if query.timeproperty == "deletedAt" else "deleted_at IS NULL")
    if query.attributes is not None:
        where.append("attribute = ANY(?::text[])")
        params.append(list(query.attributes))
    if query.start is not None:
        where.append(f"{column} {'>' if query.start_exclusive else '>='} ?::float8")
        params.append(query.start)
    if query.end is not None:
        where.append(f"{column} < ?::float8")
        params.append(query.end)
    if query.dataset_ids is not None:
        named = [d for d in query.dataset_ids if d is not None]
        alternatives = []
        if named:
            alternatives.append("dataset_id = ANY(?::text[])")
            params.append(named)
        if None in query.dataset_ids:
            alternatives.append("dataset_id IS NULL")
        where.append(f"({' OR '.join(alternatives)})")
    return " AND ".join(where), params, f"COALESCE({column}, created_at)"


def _aggregate_columns(methods: Sequence[str], v: str = "v", k: str = "k") -> list[str]:
    """SQL of each aggregation method over numeric values ``v`` and value keys ``k`` (as the
    SQLite store computes them): numeric aggregates skip non-numeric values (NULL ``v``)."""
    stddev = (
        f"CASE WHEN count({v}) > 1 THEN sqrt(greatest(0, (sum({v} * {v}) - sum({v}) * sum({v}) / count({v}))"
        f" / (count({v}) - 1))) WHEN count({v}) = 1 THEN 0.0 END"
    )
    sql = {
        "totalCount": "count(*)",
        "distinctCount": f"count(DISTINCT {k})",
        "sum": f"sum({v})",
        "avg": f"avg({v})",
        "min": f"min({v})",
        "max": f"max({v})",
        "stddev": stddev,
        "sumsq": f"sum({v} * {v})",
    }
    return [sql.get(method, "NULL") for method in methods]


# -- query indexes ---------------------------------------------------------------------------------


def _sql_value(kind: int, value: Any) -> tuple[Decimal | None, bytes | None]:
    """The (num, str) columns of one attr_values row or literal."""
    if kind == STRING:
        return None, value.encode("utf-8", "surrogatepass")
    if kind in (NUMBER, BOOLEAN):
        return Decimal(value), None
    return None, None


def _index_params(entity: Entity) -> list[Any]:
    """Parameters $4.. of :func:`_write_sql`: the type, attr_values and geo_index rows of one
    entity (see the module docstring), as arrays."""
    rows = attribute_rows(entity)
    values = [_sql_value(kind, val) for _, kind, val, _ in rows]
    boxes = geometry_boxes(entity)
    return [
        list(dict.fromkeys(entity.get("type", ()))),
        [r[0] for r in rows],
        [r[1] for r in rows],
        [v[0] for v in values],
        [v[1] for v in values],
        [r[3] for r in rows],
        *([b[i] for b in boxes] for i in range(5)),
        [_pack(b[5])[0] for b in boxes],  # NULL when jsonb cannot hold it: the document is read
    ]


def _write_sql(schema: str, replace: bool) -> str:
    """One statement that writes an entity ($1 id, $2 jsonb text, $3 raw, $16 owner when inserted)
    and all its index rows
    (:func:`_index_params`), one round trip; a replacement also deletes the old index rows (the
    sub-statements of a WITH see one snapshot, so the deletes never see the rows inserted)."""
    if replace:
        head = (
            f"WITH e AS (UPDATE {schema}.entities SET doc = $2::text::jsonb, raw = $3"
            " WHERE id = $1 RETURNING pk),"
            f" dt AS (DELETE FROM {schema}.entity_types WHERE pk = (SELECT pk FROM e)),"
            f" da AS (DELETE FROM {schema}.attr_values WHERE pk = (SELECT pk FROM e)),"
            f" dg AS (DELETE FROM {schema}.geo_index WHERE pk = (SELECT pk FROM e)),"
        )
    else:
        head = (
            f"WITH e AS (INSERT INTO {schema}.entities (id, doc, raw, owner)"
            " VALUES ($1, $2::text::jsonb, $3, $16)"
            " RETURNING pk),"
        )
    return (
        head + f" t AS (INSERT INTO {schema}.entity_types (type, pk)"
        " SELECT t, e.pk FROM e, unnest($4::text[]) t),"
        f" a AS (INSERT INTO {schema}.attr_values (attribute, kind, num, str, pk, inst)"
        " SELECT r.a, r.k, r.n, r.s, e.pk, r.i FROM e,"
        " unnest($5::text[], $6::int2[], $7::numeric[], $8::bytea[], $9::int4[]) AS r(a, k, n, s, i)),"
        f" g AS (INSERT INTO {schema}.geo_index (pk, geoproperty, box, shapes)"
        " SELECT e.pk, b.p, ST_MakeEnvelope(b.x0, b.y0, b.x1, b.y1, 4326), b.s::jsonb FROM e,"
        " unnest($10::text[], $11::float8[], $12::float8[], $13::float8[], $14::float8[], $15::text[])"
        " AS b(p, x0, y0, x1, y1, s))"
        " SELECT pk FROM e"
    )


# -- q to SQL -------------------------------------------------------------------------------------


class _PgQ(QCompiler):
    """q on a tenant schema's ``attr_values`` (see :class:`QCompiler`): numbers and booleans in
    ``num``, strings in ``str``."""

    def __init__(self, schema: str) -> None:
        self.table = f"{schema}.attr_values"

    def select(self, attribute: str, probe: bool) -> Sql:
        return f"e.pk IN (SELECT v.pk FROM {self.table} v WHERE v.attribute = ? AND ", [attribute]

    def column(self, kind: int, alias: str) -> str:
        return f"{alias}.str" if kind == STRING else f"{alias}.num"

    def param(self, lit: tuple[int, Any]) -> Any:
        return _sql_value(*lit)[lit[0] == STRING]


def _compile_q_partially(schema: str, q: ql.QExpr) -> tuple[Sql | None, ql.QExpr | None]:
    """SQL for as much of ``q`` as compiles and the q left for Python (None: nothing left)."""
    q_sql = _PgQ(schema)
    whole = q_sql.term(q)
    if whole is not None:
        return whole, None
    if not isinstance(q, ql.QAnd):
        return None, q
    compiled: list[Sql] = []
    left: list[ql.QExpr] = []
    for term in q.terms:
        part = q_sql.term(term)
        if part is None:
            left.append(term)
        else:
            compiled.append(part)
    rest = left[0] if len(left) == 1 else ql.QAnd(tuple(left))
    if not compiled:
        return None, rest
    return (" AND ".join(sql for sql, _ in compiled), [p for _, params in compiled for p in params]), rest


def _by_types_only(query: EntityQuery) -> bool:
    return (
        query.types is not None
        and query.predicate is None
        and query.access is None
        and not any((query.ids, query.id_pattern, query.q, query.geo, query.scope, query.attrs))
    )


def _plan(schema: str, query: EntityQuery) -> tuple[str, list[Any], Callable[[Entity], bool] | None]:
    """The WHERE clause (on ``entities e``, ``?`` placeholders) of a query, its parameters, and the
    Python check left for what SQL does not decide (None: SQL decides everything) except the
    exact geometry check, which the caller runs on batches of candidates."""
    where = ["TRUE"]
    params: list[Any] = []
    if query.ids is not None:
        where.append("e.id = ANY(?::text[])")
        params.append(list(query.ids))
    id_check: Callable[[Entity], bool] | None = None
    if query.id_pattern is not None:
        prefix = literal_prefix(query.id_pattern)
        if prefix:
            # An anchored literal start is a range on the id index; RE2 checks the rest.
            where.append("e.id >= ? AND e.id < ?")
            params += [prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)]
        pattern = compile_pattern(query.id_pattern)
        id_check = lambda e: pattern.search(e["id"]) is not None  # noqa: E731
    left_q: ql.QExpr | None = None
    if query.q is not None:
        compiled, left_q = _compile_q_partially(schema, query.q)
        if compiled is not None:
            where.append(compiled[0])
            params += compiled[1]
    attrs_in_sql = query.attrs is not None and not any(a in CORE for a in query.attrs)
    if attrs_in_sql and query.attrs is not None:
        where.append(f"e.pk IN (SELECT pk FROM {schema}.attr_values WHERE attribute = ANY(?::text[]))")
        params.append(list(query.attrs))
    if query.geo is not None:
        box = query.geo.bbox()
        if box is not None:
            minx, miny, maxx, maxy = box
            where.append(
                f"e.pk IN (SELECT g.pk FROM {schema}.geo_index g WHERE g.geoproperty = ?"
                " AND g.box && ST_MakeEnvelope(?::float8, ?::float8, ?::float8, ?::float8, 4326))"
            )
            params += [query.geoproperty or "location", minx, miny, maxx, maxy]
    if query.types is not None:
        where.append(f"e.pk IN (SELECT pk FROM {schema}.entity_types WHERE type = ANY(?::text[]))")
        params.append(list(query.types))
    if query.access is not None:
        clause, clause_params = _access_clause(schema, query.access)
        where.append(clause)
        params += clause_params
    residual = query.residual(q=left_q, attrs=not attrs_in_sql, geo=False)  # geo: in batches
    if id_check is not None:
        rest = residual
        residual = id_check if rest is None else (lambda e: id_check(e) and rest(e))
    return " AND ".join(where), params, residual


def _access_clause(schema: str, access: AccessFilter) -> tuple[str, list[Any]]:
    """The access filter as one condition on ``e`` (see :class:`kizuna.store.AccessFilter`).

    Scopes are read from the jsonb document; an entity kept as raw bytes (it holds a NUL
    character, which jsonb refuses) matches no scoped target."""
    parts: list[str] = []
    params: list[Any] = []
    types_in = f"e.pk IN (SELECT pk FROM {schema}.entity_types WHERE type = ANY(?::text[]))"
    if access.owners:
        parts.append("e.owner = ANY(?::text[])")
        params.append(sorted(access.owners))
    if access.ids:
        parts.append("e.id = ANY(?::text[])")
        params.append(sorted(access.ids))
    if access.types:
        parts.append(types_in)
        params.append(sorted(access.types))
    for types, scopes in access.scoped:
        terms = []
        if types:
            terms.append(types_in)
            params.append(sorted(types))
        named = sorted(s for s in scopes if s != NO_SCOPE)
        held = []
        if named:
            held.append(
                "EXISTS (SELECT 1 FROM jsonb_array_elements_text(e.doc->'scope') s WHERE s = ANY(?::text[]))"
            )
            params.append(named)
        if NO_SCOPE in scopes:
            held.append("(e.doc IS NOT NULL AND e.doc->'scope' IS NULL)")
        terms.append("(" + " OR ".join(held) + ")")
        parts.append("(" + " AND ".join(terms) + ")")
    if access.policies and access.policy_attributes:
        parts.append(
            f"e.pk IN (SELECT pk FROM {schema}.attr_values WHERE attribute = ANY(?::text[])"
            " AND kind = ? AND str = ANY(?::bytea[]))"
        )
        params += [
            list(access.policy_attributes),
            STRING,
            [_sql_value(STRING, p)[1] for p in sorted(access.policies)],
        ]
    if not parts:
        return "FALSE", []
    return "(" + " OR ".join(parts) + ")", params


class PgWrite:
    """One write transaction on one pooled connection (see :meth:`PostgresStore.write`)."""

    __slots__ = ("conn", "schema", "tenant")

    def __init__(self, conn: asyncpg.Connection, schema: str, tenant: str) -> None:
        self.conn = conn
        self.schema = schema
        self.tenant = tenant

    async def get(self, entity_id: str) -> Entity | None:
        # FOR UPDATE: a concurrent writer of this entity waits until this transaction ends.
        row = await self.conn.fetchrow(
            f"SELECT doc, raw FROM {self.schema}.entities WHERE id = $1 FOR UPDATE", entity_id
        )
        return _unpack(row[0], row[1]) if row else None

    async def owner(self, entity_id: str) -> str | None:
        return await self.conn.fetchval(f"SELECT owner FROM {self.schema}.entities WHERE id = $1", entity_id)

    async def insert(self, entity: Entity, owner: str | None = None) -> None:
        try:
            await self.conn.fetchval(
                _write_sql(self.schema, replace=False),
                entity["id"],
                *_pack(entity),
                *_index_params(entity),
                owner,
            )
        except asyncpg.UniqueViolationError as exc:
            raise AlreadyExists(f"{entity['id']} exists already (created concurrently)") from exc

    async def replace(self, entity: Entity) -> None:
        pk = await self.conn.fetchval(
            _write_sql(self.schema, replace=True), entity["id"], *_pack(entity), *_index_params(entity)
        )
        if pk is None:
            raise KeyError(entity["id"])

    async def delete(self, entity_id: str) -> bool:
        # The index rows go with it (ON DELETE CASCADE).
        pk = await self.conn.fetchval(
            f"DELETE FROM {self.schema}.entities WHERE id = $1 RETURNING pk", entity_id
        )
        return pk is not None

    async def delete_matching(self, query: EntityQuery) -> list[Entity]:
        where, params, residual = _plan(self.schema, query)
        rows = await self.conn.fetch(
            _numbered(
                f"SELECT e.doc, e.raw FROM {self.schema}.entities e WHERE {where} ORDER BY e.pk FOR UPDATE"
            ),
            *params,
        )
        doomed = [e for e in (_unpack(doc, raw) for doc, raw in rows) if residual is None or residual(e)]
        if doomed:
            await self.conn.execute(
                f"DELETE FROM {self.schema}.entities WHERE id = ANY($1::text[])", [e["id"] for e in doomed]
            )
        return doomed

    # -- temporal history ------------------------------------------------------------------------

    async def temporal_entity(self, entity_id: str) -> Entity | None:
        return await _temporal_entity(self.conn, self.schema, entity_id)

    async def touch_temporal_entity(
        self, entity_id: str, types: list[str], scope: list[str] | None, now: str
    ) -> bool:
        row = await self.conn.fetchrow(
            f"SELECT {_TEMPORAL_COLUMNS} FROM {self.schema}.temporal_entities WHERE id = $1 FOR UPDATE",
            entity_id,
        )
        if row is None:
            created = await self.conn.fetchval(
                f"INSERT INTO {self.schema}.temporal_entities (id, types, scope, created_at, modified_at)"
                " VALUES ($1, $2, $3, $4, $4) ON CONFLICT (id) DO NOTHING RETURNING true",
                entity_id,
                list(types),
                None if scope is None else orjson.dumps(scope).decode(),
                now,
            )
            if created:
                return True
            row = await self.conn.fetchrow(
                f"SELECT {_TEMPORAL_COLUMNS} FROM {self.schema}.temporal_entities WHERE id = $1 FOR UPDATE",
                entity_id,
            )
        extended = extended_temporal_entity(_temporal_row(row), types, scope)
        if extended is not None:
            merged, new_scope = extended
            await self.conn.execute(
                f"UPDATE {self.schema}.temporal_entities SET types = $1, scope = $2, modified_at = $3"
                " WHERE id = $4",
                merged,
                None if new_scope is None else orjson.dumps(new_scope).decode(),
                now,
                entity_id,
            )
        return False

    async def append_history(
        self,
        entity_id: str,
        types: list[str],
        attribute: str,
        instance: dict[str, Any],
        *,
        scope: list[str] | None = None,
    ) -> str:
        instance_id, now = new_history_instance(instance)
        await self.touch_temporal_entity(entity_id, types, scope, now)
        *columns, doc = history_columns(instance)
        await self.conn.execute(
            f"INSERT INTO {self.schema}.attribute_history (entity_id, attribute, instance_id, dataset_id,"
            " observed_at, created_at, modified_at, deleted_at, value_number, value_key, doc, raw)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::text::jsonb, $12)",
            entity_id,
            attribute,
            instance_id,
            *columns,
            *_pack_bytes(doc),
        )
        return instance_id

    async def delete_history(
        self,
        entity_id: str,
        attribute: str | None = None,
        dataset_id: str | None = None,
        *,
        all_datasets: bool = True,
    ) -> int:
        if attribute is None:
            status = await self.conn.execute(
                f"DELETE FROM {self.schema}.attribute_history WHERE entity_id = $1", entity_id
            )
            await self.conn.execute(f"DELETE FROM {self.schema}.temporal_entities WHERE id = $1", entity_id)
            return int(status.split()[-1])
        sql = f"DELETE FROM {self.schema}.attribute_history WHERE entity_id = $1 AND attribute = $2"
        params: list[Any] = [entity_id, attribute]
        if not all_datasets:
            sql += " AND dataset_id IS NOT DISTINCT FROM $3::text"
            params.append(dataset_id)
        status = await self.conn.execute(sql, *params)
        return int(status.split()[-1])

    async def update_history_instance(
        self, entity_id: str, attribute: str, instance_id: str, instance: dict[str, Any]
    ) -> bool:
        *columns, doc = history_columns(instance)
        status = await self.conn.execute(
            f"UPDATE {self.schema}.attribute_history SET dataset_id = $1, observed_at = $2, created_at = $3,"
            " modified_at = $4, deleted_at = $5, value_number = $6, value_key = $7, doc = $8::text::jsonb,"
            " raw = $9 WHERE entity_id = $10 AND attribute = $11 AND instance_id = $12",
            *columns,
            *_pack_bytes(doc),
            entity_id,
            attribute,
            instance_id,
        )
        return status == "UPDATE 1"

    async def delete_history_instance(self, entity_id: str, attribute: str, instance_id: str) -> bool:
        status = await self.conn.execute(
            f"DELETE FROM {self.schema}.attribute_history WHERE entity_id = $1 AND attribute = $2"
            " AND instance_id = $3",
            entity_id,
            attribute,
            instance_id,
        )
        return status == "DELETE 1"

    async def subscription_version(self) -> int:
        return await self.conn.fetchval(f"SELECT version FROM {self.schema}.subscription_version")

    async def subscriptions(self) -> list[dict[str, Any]]:
        rows = await self.conn.fetch(f"SELECT doc FROM {self.schema}.subscriptions ORDER BY seq")
        return [orjson.loads(doc) for (doc,) in rows]

    async def add_outbox(self, rows: Sequence[tuple[str, str, str, bytes]]) -> None:
        """Queue notifications: (subscription id, entity id, trigger, orjson payload) each."""
        if not rows:
            return
        await self.conn.execute(
            "INSERT INTO kizuna.notification_outbox"
            " (tenant, subscription_id, entity_id, trigger, payload, created_at)"
            " SELECT $1::text, s, e, t, p, $6::float8"
            " FROM unnest($2::text[], $3::text[], $4::text[], $5::bytea[])"
            " AS r(s, e, t, p)",
            self.tenant,
            [r[0] for r in rows],
            [r[1] for r in rows],
            [r[2] for r in rows],
            [r[3] for r in rows],
            time.time(),
        )
        await _announce(self.conn, "outbox", "")


def _pack_bytes(data: bytes) -> tuple[str | None, bytes | None]:
    """(jsonb text, raw bytes) of orjson bytes (see :func:`_pack`)."""
    if b"\\u0000" in data:
        return None, data
    return data.decode(), None
