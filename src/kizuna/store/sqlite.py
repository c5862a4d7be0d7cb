"""The embedded store: one SQLite file in WAL mode.

SQLite answers a primary-key read in microseconds, less than the cost of handing the call to a
thread, so statements run directly on the event loop. Write transactions are serialised by an
asyncio lock (one connection per process) and by SQLite itself across processes
(``BEGIN IMMEDIATE`` with a busy timeout).

Queries run in SQL on indexes kept beside the documents, in the transaction of each write:

- ``entity_types``: the type index.
- ``attr_values``: one row per scalar a q expression compares with (number, string, boolean; the
  leaves of each attribute instance, found by :func:`kizuna.ngsild.query.instance_leaves`, so that
  SQL and :func:`kizuna.ngsild.query.matches` see the same values), keyed
  ``(tenant, attribute, kind, val, pk, inst)``. A separate table rather than ``json_extract`` on
  the document: attributes are user-defined, so no expression index could cover them, and a
  range ``speed < 20`` or ``intensity == 800..1200`` on this table is one B-tree range scan over
  the attribute's values instead of a parse of every document. ``val`` has no type affinity, so
  numbers stay numbers (integers exact) and strings stay strings (BINARY collation orders UTF-8 by
  code point, as Python does); ``kind`` keeps booleans apart from numbers, as q does. Marker rows
  (kind 3: an instance without scalars; kind 4: a key without any valued instance) make
  existence and the per-instance ``!=`` exact.
- ``geo_rtree`` (an R*Tree of boxes) with ``geo_entries`` (rtree id -> tenant, entity pk,
  geoproperty IRI): one box per (entity, property holding GeoJSON), the union of its instances.
  A geoQuery reads candidates through :meth:`GeoQuery.bbox` and checks only those exactly with
  shapely. The R*Tree stores 32-bit floats rounded outwards, so a box never shrinks.

q compiles to SQL for top-level attribute paths with ``==`` ``!=`` ``>`` ``>=`` ``<`` ``<=``
against numbers, strings, booleans and URIs, ranges, value lists, ``~=``, existence, ``!`` and
``;`` / ``|``; an AND keeps its compilable terms in SQL and leaves the others to Python. The
rest (sub-attributes, metadata, compound keys, ``id``, DateTime/Date/Time literals, ``!~=``)
and scopeQ are evaluated in Python on the rows SQL selects.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from kizuna.ngsild import query as ql
from kizuna.store import AggregateRow, Entity, EntityQuery, HistoryQuery, OutboxRow, QueryResult

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    name TEXT PRIMARY KEY
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entities (
    pk INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    doc BLOB NOT NULL,
    UNIQUE (tenant, id)
);
CREATE TABLE IF NOT EXISTS entity_types (
    tenant TEXT NOT NULL,
    type TEXT NOT NULL,
    pk INTEGER NOT NULL,
    PRIMARY KEY (tenant, type, pk)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entity_types_by_pk ON entity_types (pk);
CREATE TABLE IF NOT EXISTS attr_values (
    tenant TEXT NOT NULL,
    attribute TEXT NOT NULL,
    kind INTEGER NOT NULL,
    val NOT NULL,
    pk INTEGER NOT NULL,
    inst INTEGER NOT NULL,
    PRIMARY KEY (tenant, attribute, kind, val, pk, inst)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS attr_values_by_pk ON attr_values (pk, attribute, inst);
CREATE TABLE IF NOT EXISTS geo_entries (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    pk INTEGER NOT NULL,
    geoproperty TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS geo_entries_by_pk ON geo_entries (pk);
CREATE VIRTUAL TABLE IF NOT EXISTS geo_rtree USING rtree(id, min_x, max_x, min_y, max_y);
CREATE TABLE IF NOT EXISTS store_indexes (
    name TEXT PRIMARY KEY
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hosted_contexts (
    local_id TEXT PRIMARY KEY,
    document BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS subscriptions (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    doc BLOB NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE TABLE IF NOT EXISTS documents (
    kind TEXT NOT NULL,
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    doc BLOB NOT NULL,
    PRIMARY KEY (kind, tenant, id)
);
CREATE TABLE IF NOT EXISTS temporal_entities (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    types TEXT NOT NULL,
    scope TEXT,
    created_at TEXT NOT NULL,
    modified_at TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE TABLE IF NOT EXISTS attribute_history (
    pk INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    attribute TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    dataset_id TEXT,
    observed_at REAL,
    created_at REAL NOT NULL,
    modified_at REAL NOT NULL,
    deleted_at REAL,
    value_number REAL,
    value_key TEXT,
    doc BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS attribute_history_observed
    ON attribute_history (tenant, entity_id, attribute, observed_at);
CREATE INDEX IF NOT EXISTS attribute_history_created
    ON attribute_history (tenant, entity_id, attribute, created_at);
CREATE UNIQUE INDEX IF NOT EXISTS attribute_history_instance ON attribute_history (tenant, instance_id);
CREATE TABLE IF NOT EXISTS subscription_versions (
    tenant TEXT PRIMARY KEY,
    version INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS notification_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    trigger TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS notification_outbox_by_subscription
    ON notification_outbox (tenant, subscription_id, seq);
CREATE TABLE IF NOT EXISTS notification_leases (
    tenant TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    until REAL NOT NULL,
    PRIMARY KEY (tenant, subscription_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS notification_status (
    tenant TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    doc BLOB NOT NULL,
    PRIMARY KEY (tenant, subscription_id)
) WITHOUT ROWID;
"""
_PAGE = 500


def _regexp(pattern: str, value: str | None) -> bool:
    return value is not None and re.search(pattern, value) is not None


class SqliteStore:
    def __init__(self, path: str) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._write_lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str) -> SqliteStore:
        # sqlite:///relative.db, sqlite:////absolute.db, sqlite:///:memory:
        path = url.removeprefix("sqlite:").removeprefix("//")
        if path.startswith("/") and not path.startswith("//"):
            path = path[1:] or ":memory:"
        else:
            path = path.removeprefix("/")
        return cls(path)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=10000")
        db.execute("PRAGMA foreign_keys=ON")
        db.create_function("regexp", 2, _regexp, deterministic=True)
        # Every statement of SCHEMA is idempotent: tables added later reach existing files too.
        db.executescript(f"BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
        _backfill_indexes(db)
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- tenants ---------------------------------------------------------------------------------

    async def has_tenant(self, tenant: str) -> bool:
        if tenant == "":
            return True
        return self.db.execute("SELECT 1 FROM tenants WHERE name = ?", (tenant,)).fetchone() is not None

    async def tenants(self) -> list[str]:
        return [row[0] for row in self.db.execute("SELECT name FROM tenants ORDER BY name")]

    # -- writes ----------------------------------------------------------------------------------

    @asynccontextmanager
    async def write(self, tenant: str) -> AsyncIterator[SqliteWrite]:
        async with self._write_lock:
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            try:
                if tenant:
                    db.execute("INSERT OR IGNORE INTO tenants (name) VALUES (?)", (tenant,))
                yield SqliteWrite(db, tenant)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # -- reads -----------------------------------------------------------------------------------

    async def get_entity(self, tenant: str, entity_id: str) -> Entity | None:
        row = self.db.execute(
            "SELECT doc FROM entities WHERE tenant = ? AND id = ?", (tenant, entity_id)
        ).fetchone()
        return orjson.loads(row[0]) if row else None

    async def query_entities(self, tenant: str, query: EntityQuery) -> QueryResult:
        where, params, residual = _plan(tenant, query)
        result = QueryResult()
        if residual is None:
            # Everything is in SQL: the page and the count are two indexed statements.
            if query.limit != 0:
                rows = self.db.execute(
                    f"SELECT e.doc FROM entities e WHERE {where} ORDER BY e.pk LIMIT ? OFFSET ?",
                    [*params, -1 if query.limit is None else query.limit, query.offset],
                )
                result.entities = [orjson.loads(doc) for (doc,) in rows]
            if query.count:
                result.total = self.db.execute(
                    f"SELECT count(*) FROM entities e WHERE {where}", params
                ).fetchone()[0]
            return result
        matched = 0
        wanted_end = None if query.limit is None else query.offset + query.limit
        for (doc,) in self.db.execute(f"SELECT e.doc FROM entities e WHERE {where} ORDER BY e.pk", params):
            entity = orjson.loads(doc)
            if not residual(entity):
                continue
            if matched >= query.offset and (wanted_end is None or matched < wanted_end):
                result.entities.append(entity)
            matched += 1
            if not query.count and wanted_end is not None and matched >= wanted_end:
                break
        if query.count:
            result.total = matched
        return result

    async def iter_entities(self, tenant: str) -> AsyncIterator[Entity]:
        last = 0
        while True:
            rows = self.db.execute(
                "SELECT pk, doc FROM entities WHERE tenant = ? AND pk > ? ORDER BY pk LIMIT ?",
                (tenant, last, _PAGE),
            ).fetchall()
            for pk, doc in rows:
                last = pk
                yield orjson.loads(doc)
            if len(rows) < _PAGE:
                return
            await asyncio.sleep(0)

    # -- hosted @contexts ------------------------------------------------------------------------

    async def hosted_contexts(self) -> list[tuple[str, dict[str, Any], float]]:
        rows = self.db.execute(
            "SELECT local_id, document, created_at FROM hosted_contexts ORDER BY created_at"
        )
        return [(local_id, orjson.loads(doc), created) for local_id, doc, created in rows]

    async def save_hosted_context(self, local_id: str, document: dict[str, Any], created_at: float) -> None:
        async with self._write_lock:
            self.db.execute(
                "INSERT OR REPLACE INTO hosted_contexts (local_id, document, created_at) VALUES (?, ?, ?)",
                (local_id, orjson.dumps(document), created_at),
            )

    async def delete_hosted_context(self, local_id: str) -> None:
        async with self._write_lock:
            self.db.execute("DELETE FROM hosted_contexts WHERE local_id = ?", (local_id,))

    # -- subscriptions ---------------------------------------------------------------------------

    async def insert_subscription(self, tenant: str, sub: dict[str, Any]) -> bool:
        async with self._write_lock:
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            try:
                if tenant:
                    db.execute("INSERT OR IGNORE INTO tenants (name) VALUES (?)", (tenant,))
                cursor = db.execute(
                    "INSERT OR IGNORE INTO subscriptions (tenant, id, doc) VALUES (?, ?, ?)",
                    (tenant, sub["id"], orjson.dumps(sub)),
                )
                if cursor.rowcount == 1:
                    _bump_subscription_version(db, tenant)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return cursor.rowcount == 1

    async def replace_subscription(self, tenant: str, sub: dict[str, Any]) -> bool:
        async with self._immediate() as db:
            cursor = db.execute(
                "UPDATE subscriptions SET doc = ? WHERE tenant = ? AND id = ?",
                (orjson.dumps(sub), tenant, sub["id"]),
            )
            if cursor.rowcount == 1:
                _bump_subscription_version(db, tenant)
            return cursor.rowcount == 1

    async def get_subscription(self, tenant: str, subscription_id: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT doc FROM subscriptions WHERE tenant = ? AND id = ?", (tenant, subscription_id)
        ).fetchone()
        return orjson.loads(row[0]) if row else None

    async def list_subscriptions(
        self, tenant: str, limit: int | None, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        total = self.db.execute("SELECT count(*) FROM subscriptions WHERE tenant = ?", (tenant,)).fetchone()[
            0
        ]
        rows = self.db.execute(
            "SELECT doc FROM subscriptions WHERE tenant = ? ORDER BY rowid LIMIT ? OFFSET ?",
            (tenant, -1 if limit is None else limit, offset),
        )
        return [orjson.loads(doc) for (doc,) in rows], total

    async def delete_subscription(self, tenant: str, subscription_id: str) -> bool:
        """Delete a subscription with its pending notifications and delivery state."""
        async with self._immediate() as db:
            cursor = db.execute(
                "DELETE FROM subscriptions WHERE tenant = ? AND id = ?", (tenant, subscription_id)
            )
            if cursor.rowcount == 1:
                _bump_subscription_version(db, tenant)
            _forget_notifications(db, tenant, subscription_id)
            return cursor.rowcount == 1

    async def subscription_version(self, tenant: str) -> int:
        return _subscription_version(self.db, tenant)

    # -- the notification outbox -----------------------------------------------------------------

    @asynccontextmanager
    async def _immediate(self) -> AsyncIterator[sqlite3.Connection]:
        async with self._write_lock:
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    async def outbox_subscriptions(self) -> list[tuple[str, str]]:
        return [
            (tenant, sub_id)
            for tenant, sub_id in self.db.execute(
                "SELECT DISTINCT tenant, subscription_id FROM notification_outbox"
            )
        ]

    async def lease_subscriptions(
        self, owner: str, keys: Sequence[tuple[str, str]], now: float, until: float
    ) -> list[tuple[str, str]]:
        if not keys:
            return []
        got = []
        async with self._immediate() as db:
            for tenant, sub_id in keys:
                row = db.execute(
                    "INSERT INTO notification_leases (tenant, subscription_id, owner, until)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (tenant, subscription_id) DO UPDATE"
                    " SET owner = excluded.owner, until = excluded.until"
                    " WHERE notification_leases.owner = excluded.owner OR notification_leases.until < ?"
                    " RETURNING owner",
                    (tenant, sub_id, owner, until, now),
                ).fetchone()
                if row is not None:
                    got.append((tenant, sub_id))
        return got

    async def lease_owners(self) -> list[str]:
        return [row[0] for row in self.db.execute("SELECT DISTINCT owner FROM notification_leases")]

    async def renew_leases(self, owner: str, until: float) -> None:
        async with self._immediate() as db:
            db.execute("UPDATE notification_leases SET until = ? WHERE owner = ?", (until, owner))

    async def release_leases(self, owner: str) -> None:
        async with self._immediate() as db:
            db.execute("DELETE FROM notification_leases WHERE owner = ?", (owner,))

    async def outbox_head(self, tenant: str, subscription_id: str, limit: int) -> list[OutboxRow]:
        rows = self.db.execute(
            "SELECT seq, entity_id, trigger, payload, created_at FROM notification_outbox"
            " WHERE tenant = ? AND subscription_id = ? ORDER BY seq LIMIT ?",
            (tenant, subscription_id, limit),
        )
        return [
            OutboxRow(seq, tenant, subscription_id, entity_id, trigger, orjson.loads(payload), created)
            for seq, entity_id, trigger, payload, created in rows
        ]

    async def delete_outbox(self, seqs: Sequence[int]) -> None:
        if not seqs:
            return
        async with self._immediate() as db:
            db.execute(f"DELETE FROM notification_outbox WHERE seq IN ({','.join('?' * len(seqs))})", seqs)

    async def drop_outbox(self, tenant: str, subscription_id: str) -> None:
        async with self._immediate() as db:
            _forget_notifications(db, tenant, subscription_id)

    async def outbox_size(self) -> int:
        return self.db.execute("SELECT count(*) FROM notification_outbox").fetchone()[0]

    async def notification_status(self, tenant: str, subscription_id: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT doc FROM notification_status WHERE tenant = ? AND subscription_id = ?",
            (tenant, subscription_id),
        ).fetchone()
        return orjson.loads(row[0]) if row else None

    async def save_notification_status(
        self, tenant: str, subscription_id: str, status: dict[str, Any]
    ) -> None:
        async with self._immediate() as db:
            if db.execute(
                "SELECT 1 FROM subscriptions WHERE tenant = ? AND id = ?", (tenant, subscription_id)
            ).fetchone():
                db.execute(
                    "INSERT OR REPLACE INTO notification_status (tenant, subscription_id, doc)"
                    " VALUES (?, ?, ?)",
                    (tenant, subscription_id, orjson.dumps(status)),
                )

    # -- temporal history ------------------------------------------------------------------------

    async def get_temporal_entity(self, tenant: str, entity_id: str) -> Entity | None:
        return _temporal_entity(self.db, tenant, entity_id)

    async def query_temporal_entities(
        self,
        tenant: str,
        types: Sequence[str] | None,
        ids: Sequence[str] | None,
        id_pattern: str | None,
    ) -> list[Entity]:
        where = ["tenant = ?"]
        params: list[Any] = [tenant]
        if types is not None:
            marks = ",".join("?" * len(types))
            where.append(f"EXISTS (SELECT 1 FROM json_each(types) WHERE value IN ({marks}))")
            params += list(types)
        if ids is not None:
            where.append(f"id IN ({','.join('?' * len(ids))})")
            params += list(ids)
        if id_pattern is not None:
            where.append("regexp(?, id)")
            params.append(id_pattern)
        rows = self.db.execute(
            f"SELECT {_TEMPORAL_COLUMNS} FROM temporal_entities WHERE {' AND '.join(where)} ORDER BY rowid",
            params,
        )
        return [_temporal_row(row) for row in rows]

    async def history_attributes(self, tenant: str, entity_id: str) -> list[str]:
        rows = self.db.execute(
            "SELECT DISTINCT attribute FROM attribute_history WHERE tenant = ? AND entity_id = ?",
            (tenant, entity_id),
        )
        return [attribute for (attribute,) in rows]

    async def read_history(
        self, tenant: str, entity_id: str, query: HistoryQuery
    ) -> list[tuple[str, dict[str, Any]]]:
        where, params, when = _history_where(tenant, entity_id, query)
        select = f"SELECT attribute, instance_id, doc, {when} AS t, pk FROM attribute_history WHERE {where}"
        limit = query.last_n if query.last_n is not None else query.first_n
        if limit is not None:
            direction = "DESC" if query.last_n is not None else "ASC"
            select = (
                f"SELECT attribute, instance_id, doc, t, pk FROM (SELECT *, ROW_NUMBER() OVER"
                f" (PARTITION BY attribute ORDER BY t {direction}, pk {direction}) AS n FROM ({select}))"
                " WHERE n <= ?"
            )
            params.append(limit)
        out: list[tuple[str, dict[str, Any]]] = []
        for attribute, instance_id, doc, _, _ in self.db.execute(
            f"{select} ORDER BY attribute, t, pk", params
        ):
            instance = orjson.loads(doc)
            instance["instanceId"] = instance_id
            out.append((attribute, instance))
        return out

    async def prune_history(self, before: float) -> int:
        async with self._immediate() as db:
            pruned = db.execute(
                "DELETE FROM attribute_history WHERE COALESCE(observed_at, created_at) < ?", (before,)
            ).rowcount
            db.execute(
                "DELETE FROM temporal_entities WHERE NOT EXISTS (SELECT 1 FROM attribute_history h"
                " WHERE h.tenant = temporal_entities.tenant AND h.entity_id = temporal_entities.id)"
                " AND modified_at < strftime('%Y-%m-%dT%H:%M:%SZ', ?, 'unixepoch')",
                (before,),
            )
        return pruned

    async def aggregate_history(
        self,
        tenant: str,
        entity_id: str,
        query: HistoryQuery,
        methods: Sequence[str],
        period: float | None,
        origin: float | None,
    ) -> list[AggregateRow]:
        where, params, when = _history_where(tenant, entity_id, query)
        # Buckets are [origin + k*period, origin + (k+1)*period); everything is computed here.
        sql = f"""
        WITH sel AS (
            SELECT attribute, dataset_id, {when} AS t, value_number AS v, value_key AS k
            FROM attribute_history WHERE {where}
        ), series AS (
            SELECT attribute, dataset_id, COALESCE(?, min(t)) AS o, max(t) AS last
            FROM sel GROUP BY attribute, dataset_id
        )
        SELECT s.attribute, s.dataset_id, r.o, r.last,
               CASE WHEN ? IS NULL THEN 0 ELSE CAST((s.t - r.o) / ? AS INTEGER) END AS bucket,
               count(*), count(DISTINCT s.k), sum(s.v), avg(s.v), min(s.v), max(s.v),
               sum(s.v * s.v), count(s.v),
               CASE WHEN count(s.v) > 1
                    THEN sqrt(max(0, (sum(s.v * s.v) - sum(s.v) * sum(s.v) / count(s.v)) / (count(s.v) - 1)))
                    WHEN count(s.v) = 1 THEN 0.0 END
        FROM sel s JOIN series r ON s.attribute = r.attribute AND s.dataset_id IS r.dataset_id
        WHERE s.t >= r.o
        GROUP BY s.attribute, s.dataset_id, bucket
        ORDER BY s.attribute, s.dataset_id, bucket
        """
        rows = self.db.execute(sql, [*params, origin, period, period])
        out: list[AggregateRow] = []
        for attribute, dataset_id, start, last, bucket, total, distinct, *numbers in rows:
            total_sum, avg, low, high, sumsq, numeric, stddev = numbers
            if period is None:
                begin, end = start, query.end if query.end is not None else last
            else:
                begin = start + bucket * period
                end = begin + period
            every = {
                "totalCount": total,
                "distinctCount": distinct,
                "sum": total_sum if numeric else None,
                "avg": avg,
                "min": low,
                "max": high,
                "stddev": stddev,
                "sumsq": sumsq if numeric else None,
            }
            out.append(AggregateRow(attribute, dataset_id, begin, end, {m: every.get(m) for m in methods}))
        return out

    # -- documents (registrations, csource subscriptions) -----------------------------------------

    async def insert_document(self, kind: str, tenant: str, doc: dict[str, Any]) -> bool:
        async with self._write_lock:
            db = self.db
            db.execute("BEGIN IMMEDIATE")
            try:
                if tenant:
                    db.execute("INSERT OR IGNORE INTO tenants (name) VALUES (?)", (tenant,))
                cursor = db.execute(
                    "INSERT OR IGNORE INTO documents (kind, tenant, id, doc) VALUES (?, ?, ?, ?)",
                    (kind, tenant, doc["id"], orjson.dumps(doc)),
                )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return cursor.rowcount == 1

    async def replace_document(self, kind: str, tenant: str, doc: dict[str, Any]) -> bool:
        async with self._write_lock:
            cursor = self.db.execute(
                "UPDATE documents SET doc = ? WHERE kind = ? AND tenant = ? AND id = ?",
                (orjson.dumps(doc), kind, tenant, doc["id"]),
            )
            return cursor.rowcount == 1

    async def get_document(self, kind: str, tenant: str, doc_id: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT doc FROM documents WHERE kind = ? AND tenant = ? AND id = ?", (kind, tenant, doc_id)
        ).fetchone()
        return orjson.loads(row[0]) if row else None

    async def list_documents(
        self, kind: str, tenant: str, limit: int | None = None, offset: int = 0
    ) -> tuple[list[dict[str, Any]], int]:
        total = self.db.execute(
            "SELECT count(*) FROM documents WHERE kind = ? AND tenant = ?", (kind, tenant)
        ).fetchone()[0]
        rows = self.db.execute(
            "SELECT doc FROM documents WHERE kind = ? AND tenant = ? ORDER BY rowid LIMIT ? OFFSET ?",
            (kind, tenant, -1 if limit is None else limit, offset),
        )
        return [orjson.loads(doc) for (doc,) in rows], total

    async def delete_document(self, kind: str, tenant: str, doc_id: str) -> bool:
        async with self._write_lock:
            cursor = self.db.execute(
                "DELETE FROM documents WHERE kind = ? AND tenant = ? AND id = ?", (kind, tenant, doc_id)
            )
            return cursor.rowcount == 1


def _plan(tenant: str, query: EntityQuery) -> tuple[str, list[Any], Callable[[Entity], bool] | None]:
    """The WHERE clause (on ``entities e``) of a query, its parameters, and the Python check left
    for what SQL does not decide (None: SQL decides everything).

    The tenant term is written ``+e.tenant`` (no index) unless ids or an id prefix make the
    (tenant, id) index the way in: otherwise SQLite would walk the tenant's every entity through
    that index and sort, instead of following the pk lists the other indexes give, in pk order."""
    prefix = "" if query.id_pattern is None else _literal_prefix(query.id_pattern)
    where = ["e.tenant = ?" if query.ids is not None or prefix else "+e.tenant = ?"]
    params: list[Any] = [tenant]
    if query.ids is not None:
        where.append(f"e.id IN ({','.join('?' * len(query.ids))})")
        params += list(query.ids)
    if query.id_pattern is not None:
        if prefix:
            # An anchored literal start is a range on the (tenant, id) index; regexp checks the rest.
            where.append("e.id >= ? AND e.id < ?")
            params += [prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)]
        where.append("regexp(?, e.id)")
        params.append(query.id_pattern)
    left_q: ql.QExpr | None = None
    if query.q is not None:
        compiled, left_q = _compile_q_partially(tenant, query.q)
        if compiled is not None:
            where.append(compiled[0])
            params += compiled[1]
    attrs_in_sql = query.attrs is not None and not any(a in _CORE for a in query.attrs)
    if attrs_in_sql and query.attrs is not None:
        marks = ",".join("?" * len(query.attrs))
        where.append(f"e.pk IN (SELECT pk FROM attr_values WHERE tenant = ? AND attribute IN ({marks}))")
        params += [tenant, *query.attrs]
    if query.geo is not None:
        box = query.geo.bbox()
        if box is not None:
            minx, miny, maxx, maxy = box
            where.append(
                "e.pk IN (SELECT g.pk FROM geo_rtree r JOIN geo_entries g ON g.id = r.id"
                " WHERE r.min_x <= ? AND r.max_x >= ? AND r.min_y <= ? AND r.max_y >= ?"
                " AND g.tenant = ? AND g.geoproperty = ?)"
            )
            params += [maxx, minx, maxy, miny, tenant, query.geoproperty or "location"]
    if query.types is not None:
        marks = ",".join("?" * len(query.types))
        if len(where) > 1:
            # Another index selects the candidates (usually far fewer): the type is checked on them.
            where.append(
                "EXISTS (SELECT 1 FROM entity_types t WHERE t.pk = e.pk AND t.tenant = ?"
                f" AND t.type IN ({marks}))"
            )
        else:
            where.append(f"e.pk IN (SELECT pk FROM entity_types WHERE tenant = ? AND type IN ({marks}))")
        params += [tenant, *query.types]
    residual = query.residual(q=left_q, attrs=not attrs_in_sql)
    return " AND ".join(where), params, residual


class SqliteWrite:
    """One write transaction; every call runs inside the BEGIN IMMEDIATE of :meth:`SqliteStore.write`."""

    __slots__ = ("db", "tenant")

    def __init__(self, db: sqlite3.Connection, tenant: str) -> None:
        self.db = db
        self.tenant = tenant

    async def get(self, entity_id: str) -> Entity | None:
        row = self.db.execute(
            "SELECT doc FROM entities WHERE tenant = ? AND id = ?", (self.tenant, entity_id)
        ).fetchone()
        return orjson.loads(row[0]) if row else None

    async def insert(self, entity: Entity) -> None:
        cursor = self.db.execute(
            "INSERT INTO entities (tenant, id, doc) VALUES (?, ?, ?)",
            (self.tenant, entity["id"], orjson.dumps(entity)),
        )
        self._index_types(cursor.lastrowid, entity)
        _index_entity(self.db, self.tenant, cursor.lastrowid, entity)

    async def replace(self, entity: Entity) -> None:
        row = self.db.execute(
            "UPDATE entities SET doc = ? WHERE tenant = ? AND id = ? RETURNING pk",
            (orjson.dumps(entity), self.tenant, entity["id"]),
        ).fetchone()
        if row is None:
            raise KeyError(entity["id"])
        self.db.execute("DELETE FROM entity_types WHERE pk = ?", (row[0],))
        self._index_types(row[0], entity)
        _unindex_entity(self.db, row[0])
        _index_entity(self.db, self.tenant, row[0], entity)

    async def delete(self, entity_id: str) -> bool:
        row = self.db.execute(
            "DELETE FROM entities WHERE tenant = ? AND id = ? RETURNING pk", (self.tenant, entity_id)
        ).fetchone()
        if row is None:
            return False
        self.db.execute("DELETE FROM entity_types WHERE pk = ?", (row[0],))
        _unindex_entity(self.db, row[0])
        return True

    async def delete_matching(self, query: EntityQuery) -> list[Entity]:
        where, params, residual = _plan(self.tenant, query)
        rows = self.db.execute(f"SELECT e.doc FROM entities e WHERE {where} ORDER BY e.pk", params).fetchall()
        doomed = [
            entity
            for entity in (orjson.loads(doc) for (doc,) in rows)
            if residual is None or residual(entity)
        ]
        for entity in doomed:
            await self.delete(entity["id"])
        return doomed

    # -- temporal history ------------------------------------------------------------------------

    async def temporal_entity(self, entity_id: str) -> Entity | None:
        return _temporal_entity(self.db, self.tenant, entity_id)

    async def touch_temporal_entity(
        self, entity_id: str, types: list[str], scope: list[str] | None, now: str
    ) -> bool:
        current = _temporal_entity(self.db, self.tenant, entity_id)
        if current is None:
            self.db.execute(
                "INSERT INTO temporal_entities (tenant, id, types, scope, created_at, modified_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    self.tenant,
                    entity_id,
                    orjson.dumps(list(types)).decode(),
                    None if scope is None else orjson.dumps(scope).decode(),
                    now,
                    now,
                ),
            )
            return True
        merged = current["type"] + [t for t in types if t not in current["type"]]
        new_scope = current.get("scope") if scope is None else scope
        if merged != current["type"] or new_scope != current.get("scope"):
            self.db.execute(
                "UPDATE temporal_entities SET types = ?, scope = ?, modified_at = ?"
                " WHERE tenant = ? AND id = ?",
                (
                    orjson.dumps(merged).decode(),
                    None if new_scope is None else orjson.dumps(new_scope).decode(),
                    now,
                    self.tenant,
                    entity_id,
                ),
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
        now = instance.get("modifiedAt") or instance.get("deletedAt") or instance.get("createdAt") or ""
        await self.touch_temporal_entity(entity_id, types, scope, now)
        instance_id = f"urn:ngsi-ld:attribute:instance:{uuid.uuid4()}"
        self.db.execute(
            "INSERT INTO attribute_history (tenant, entity_id, attribute, instance_id, dataset_id,"
            " observed_at, created_at, modified_at, deleted_at, value_number, value_key, doc)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (self.tenant, entity_id, attribute, instance_id, *_history_columns(instance)),
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
            cursor = self.db.execute(
                "DELETE FROM attribute_history WHERE tenant = ? AND entity_id = ?", (self.tenant, entity_id)
            )
            self.db.execute(
                "DELETE FROM temporal_entities WHERE tenant = ? AND id = ?", (self.tenant, entity_id)
            )
            return cursor.rowcount
        sql = "DELETE FROM attribute_history WHERE tenant = ? AND entity_id = ? AND attribute = ?"
        params: list[Any] = [self.tenant, entity_id, attribute]
        if not all_datasets:
            sql += " AND dataset_id IS ?"
            params.append(dataset_id)
        return self.db.execute(sql, params).rowcount

    async def update_history_instance(
        self, entity_id: str, attribute: str, instance_id: str, instance: dict[str, Any]
    ) -> bool:
        cursor = self.db.execute(
            "UPDATE attribute_history SET dataset_id = ?, observed_at = ?, created_at = ?, modified_at = ?,"
            " deleted_at = ?, value_number = ?, value_key = ?, doc = ?"
            " WHERE tenant = ? AND entity_id = ? AND attribute = ? AND instance_id = ?",
            (*_history_columns(instance), self.tenant, entity_id, attribute, instance_id),
        )
        return cursor.rowcount == 1

    async def delete_history_instance(self, entity_id: str, attribute: str, instance_id: str) -> bool:
        cursor = self.db.execute(
            "DELETE FROM attribute_history WHERE tenant = ? AND entity_id = ? AND attribute = ?"
            " AND instance_id = ?",
            (self.tenant, entity_id, attribute, instance_id),
        )
        return cursor.rowcount == 1

    async def subscription_version(self) -> int:
        return _subscription_version(self.db, self.tenant)

    async def add_outbox(self, rows: Sequence[tuple[str, str, str, bytes]]) -> None:
        """Queue notifications: (subscription id, entity id, trigger, orjson payload) each."""
        now = time.time()
        self.db.executemany(
            "INSERT INTO notification_outbox"
            " (tenant, subscription_id, entity_id, trigger, payload, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (self.tenant, sub_id, entity_id, trigger, payload, now)
                for sub_id, entity_id, trigger, payload in rows
            ],
        )

    def _index_types(self, pk: int | None, entity: Entity) -> None:
        self.db.executemany(
            "INSERT OR IGNORE INTO entity_types (tenant, type, pk) VALUES (?, ?, ?)",
            [(self.tenant, t, pk) for t in entity.get("type", ())],
        )


# -- subscription and outbox helpers ---------------------------------------------------------------


def _bump_subscription_version(db: sqlite3.Connection, tenant: str) -> None:
    db.execute(
        "INSERT INTO subscription_versions (tenant, version) VALUES (?, 1)"
        " ON CONFLICT (tenant) DO UPDATE SET version = version + 1",
        (tenant,),
    )


def _subscription_version(db: sqlite3.Connection, tenant: str) -> int:
    row = db.execute("SELECT version FROM subscription_versions WHERE tenant = ?", (tenant,)).fetchone()
    return row[0] if row else 0


def _forget_notifications(db: sqlite3.Connection, tenant: str, subscription_id: str) -> None:
    for table in ("notification_outbox", "notification_leases", "notification_status"):
        db.execute(f"DELETE FROM {table} WHERE tenant = ? AND subscription_id = ?", (tenant, subscription_id))


# -- temporal history helpers ----------------------------------------------------------------------

_TEMPORAL_COLUMNS = "id, types, scope, created_at, modified_at"
_TIME_COLUMN = {
    "observedAt": "observed_at",
    "createdAt": "created_at",
    "modifiedAt": "modified_at",
    "deletedAt": "deleted_at",
}
_VALUE_MEMBERS = ("value", "object", "languageMap", "vocab", "json", "valueList", "objectList")


def _temporal_row(row: tuple[Any, ...]) -> Entity:
    entity_id, types, scope, created_at, modified_at = row
    entity: Entity = {"id": entity_id, "type": orjson.loads(types)}
    if scope is not None:
        entity["scope"] = orjson.loads(scope)
    entity["createdAt"] = created_at
    entity["modifiedAt"] = modified_at
    return entity


def _temporal_entity(db: sqlite3.Connection, tenant: str, entity_id: str) -> Entity | None:
    row = db.execute(
        f"SELECT {_TEMPORAL_COLUMNS} FROM temporal_entities WHERE tenant = ? AND id = ?", (tenant, entity_id)
    ).fetchone()
    return _temporal_row(row) if row else None


def _epoch(text: Any) -> float | None:
    """POSIX seconds of an ISO 8601 DateTime (naive means UTC); None if absent or unparsable."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _history_columns(instance: dict[str, Any]) -> tuple[Any, ...]:
    """dataset_id .. doc of an attribute_history row for one canonical instance."""
    doc = {k: v for k, v in instance.items() if k != "instanceId"}
    value: Any = None
    for member in _VALUE_MEMBERS:
        if member in doc:
            value = doc[member]
            break
    number = float(value) if isinstance(value, (int, float)) else None
    created = _epoch(doc.get("createdAt"))
    modified = _epoch(doc.get("modifiedAt"))
    deleted = _epoch(doc.get("deletedAt"))
    fallback = created or modified or deleted or 0.0
    return (
        doc.get("datasetId"),
        _epoch(doc.get("observedAt")),
        fallback if created is None else created,
        fallback if modified is None else modified,
        deleted,
        number,
        orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode(),
        orjson.dumps(doc),
    )


def _history_where(tenant: str, entity_id: str, query: HistoryQuery) -> tuple[str, list[Any], str]:
    """The WHERE clause of a history read, its parameters and the time expression it orders by."""
    column = _TIME_COLUMN[query.timeproperty]
    where = ["tenant = ?", "entity_id = ?"]
    params: list[Any] = [tenant, entity_id]
    where.append("deleted_at IS NOT NULL" if query.timeproperty == "deletedAt" else "deleted_at IS NULL")
    if query.attributes is not None:
        where.append(f"attribute IN ({','.join('?' * len(query.attributes))})")
        params += list(query.attributes)
    if query.start is not None:
        where.append(f"{column} {'>' if query.start_exclusive else '>='} ?")
        params.append(query.start)
    if query.end is not None:
        where.append(f"{column} < ?")
        params.append(query.end)
    if query.dataset_ids is not None:
        named = [d for d in query.dataset_ids if d is not None]
        alternatives = []
        if named:
            alternatives.append(f"dataset_id IN ({','.join('?' * len(named))})")
            params += named
        if None in query.dataset_ids:
            alternatives.append("dataset_id IS NULL")
        where.append(f"({' OR '.join(alternatives)})")
    return " AND ".join(where), params, f"COALESCE({column}, created_at)"


# -- query indexes: attribute values and geometries ------------------------------------------------

# Entity members that are not attributes (never q targets; ``attrs`` may not name them).
_CORE = frozenset({"id", "type", "scope", "createdAt", "modifiedAt", "deletedAt"})
_NUMBER, _STRING, _BOOLEAN, _NO_SCALAR, _NO_INSTANCE = 0, 1, 2, 3, 4
_INT64 = (-(2**63), 2**63 - 1)
_INDEX_VERSION = "entity-indexes-1"


def _scalar_key(leaf: Any) -> tuple[int, Any] | None:
    if isinstance(leaf, bool):
        return (_BOOLEAN, int(leaf))
    if isinstance(leaf, int):
        return (_NUMBER, leaf if _INT64[0] <= leaf <= _INT64[1] else float(leaf))
    if isinstance(leaf, float):
        return (_NUMBER, leaf)
    if isinstance(leaf, str):
        return (_STRING, leaf)
    return None


def _positions(node: Any, xs: list[float], ys: list[float]) -> None:
    if not isinstance(node, list) or not node:
        return
    head = node[0]
    if len(node) >= 2 and all(isinstance(n, int | float) and not isinstance(n, bool) for n in node[:2]):
        xs.append(float(head))
        ys.append(float(node[1]))
        return
    for child in node:
        _positions(child, xs, ys)


def _geometry_box(value: dict[str, Any], xs: list[float], ys: list[float]) -> None:
    _positions(value.get("coordinates"), xs, ys)
    for part in value.get("geometries") or ():
        if isinstance(part, dict):
            _geometry_box(part, xs, ys)


def _index_entity(db: sqlite3.Connection, tenant: str, pk: int | None, entity: Entity) -> None:
    """Write the attr_values rows and geometry boxes of one entity (see the module docstring)."""
    rows: list[tuple[Any, ...]] = []
    for key, instances in entity.items():
        if key in _CORE:
            continue
        targets = ql.instance_leaves(entity, key)
        for inst, leaves in enumerate(targets):
            keys = {k for leaf in leaves if (k := _scalar_key(leaf)) is not None}
            if not keys:
                rows.append((tenant, key, _NO_SCALAR, 0, pk, inst))
            rows.extend((tenant, key, kind, val, pk, inst) for kind, val in keys)
        if not targets:
            rows.append((tenant, key, _NO_INSTANCE, 0, pk, 0))
        if not isinstance(instances, list):
            continue
        xs: list[float] = []
        ys: list[float] = []
        for instance in instances:
            if isinstance(instance, dict) and isinstance(instance.get("value"), dict):
                _geometry_box(instance["value"], xs, ys)
        if xs:
            cursor = db.execute(
                "INSERT INTO geo_entries (tenant, pk, geoproperty) VALUES (?, ?, ?)", (tenant, pk, key)
            )
            db.execute(
                "INSERT INTO geo_rtree (id, min_x, max_x, min_y, max_y) VALUES (?, ?, ?, ?, ?)",
                (cursor.lastrowid, min(xs), max(xs), min(ys), max(ys)),
            )
    db.executemany(
        "INSERT OR IGNORE INTO attr_values (tenant, attribute, kind, val, pk, inst)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )


def _unindex_entity(db: sqlite3.Connection, pk: int) -> None:
    db.execute("DELETE FROM attr_values WHERE pk = ?", (pk,))
    db.execute("DELETE FROM geo_rtree WHERE id IN (SELECT id FROM geo_entries WHERE pk = ?)", (pk,))
    db.execute("DELETE FROM geo_entries WHERE pk = ?", (pk,))


def _backfill_indexes(db: sqlite3.Connection) -> None:
    """Build the query indexes of entities written before they existed, once per store file.

    A marker row says it was done: an index table may rightly stay empty while entities exist
    (no attribute, no geometry), and the entities must not be re-read at every open."""
    db.execute("BEGIN IMMEDIATE")
    try:
        if db.execute("SELECT 1 FROM store_indexes WHERE name = ?", (_INDEX_VERSION,)).fetchone() is None:
            db.execute("DELETE FROM attr_values")
            db.execute("DELETE FROM geo_rtree")
            db.execute("DELETE FROM geo_entries")
            last = 0
            while True:
                rows = db.execute(
                    "SELECT pk, tenant, doc FROM entities WHERE pk > ? ORDER BY pk LIMIT ?", (last, _PAGE)
                ).fetchall()
                for pk, tenant, doc in rows:
                    _index_entity(db, tenant, pk, orjson.loads(doc))
                    last = pk
                if len(rows) < _PAGE:
                    break
            db.execute("INSERT INTO store_indexes (name) VALUES (?)", (_INDEX_VERSION,))
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


_REGEX_SPECIAL = frozenset("\\.^$*+?{}[]|()")


def _literal_prefix(pattern: str) -> str:
    """The literal text every match of ``pattern`` starts with when it is anchored by ``^`` (and
    has no top-level alternation or inline flags), else ''."""
    if not pattern.startswith("^") or "|" in pattern or "(?" in pattern:
        return ""
    prefix = []
    for char in pattern[1:]:
        if char in _REGEX_SPECIAL:
            if char in "*?{" and prefix:
                prefix.pop()  # the last literal may be repeated zero times
            break
        prefix.append(char)
    text = "".join(prefix)
    return text if text and ord(text[-1]) not in (0xD7FF, 0x10FFFF) else ""


# -- q to SQL --------------------------------------------------------------------------------------

_Sql = tuple[str, list[Any]]
_SQL_ORDER = {"==": "=", ">": ">", ">=": ">=", "<": "<", "<=": "<="}


def _literal(value: Any) -> tuple[int, Any] | None:
    """(kind, SQL value) of a q literal, or None when SQL cannot compare it as q does."""
    if isinstance(value, ql.Uri):
        return (_STRING, value.value)
    if isinstance(value, bool):
        return (_BOOLEAN, int(value))
    if isinstance(value, int):
        return (_NUMBER, value) if _INT64[0] <= value <= _INT64[1] else None
    if isinstance(value, float):
        return (_NUMBER, value)
    if isinstance(value, str):
        return (_STRING, value)
    return None  # DateTime, Date, Time: compared after parsing, in Python


def _equality(operand: Any, alias: str) -> _Sql | None:
    """The condition on one attr_values row ``alias`` that ``==`` (with a list or range) holds."""
    if isinstance(operand, ql.ValueList):
        parts = [_equality(item, alias) for item in operand.values]
        if any(part is None for part in parts):
            return None
        return (
            "(" + " OR ".join(sql for sql, _ in parts) + ")",  # type: ignore[misc]
            [p for part in parts for p in part[1]],  # type: ignore[index]
        )
    if isinstance(operand, ql.Range):
        low, high = _literal(operand.low), _literal(operand.high)
        if low is None or high is None or ql.Uri in (type(operand.low), type(operand.high)):
            return None
        if low[0] != high[0]:
            return ("0", [])  # no value is both a number and a string
        return (f"({alias}.kind = ? AND {alias}.val >= ? AND {alias}.val <= ?)", [low[0], low[1], high[1]])
    literal = _literal(operand)
    if literal is None:
        return None
    return (f"({alias}.kind = ? AND {alias}.val = ?)", list(literal))


def _compile_term(tenant: str, expr: ql.QExpr) -> _Sql | None:
    """A condition on ``e.pk`` equivalent to ``expr``, or None if SQL cannot decide it."""
    if isinstance(expr, ql.QAnd | ql.QOr):
        parts = [_compile_term(tenant, term) for term in expr.terms]
        if any(part is None for part in parts):
            return None
        joiner = " AND " if isinstance(expr, ql.QAnd) else " OR "
        return (
            "(" + joiner.join(sql for sql, _ in parts) + ")",  # type: ignore[misc]
            [p for part in parts for p in part[1]],  # type: ignore[index]
        )
    path = getattr(expr, "path", None)
    if (
        path is None
        or path.attribute == "id"
        or path.attribute in _CORE
        or path.sub_attributes
        or path.metadata is not None
        or path.compound
    ):
        return None
    select = "e.pk IN (SELECT v.pk FROM attr_values v WHERE v.tenant = ? AND v.attribute = ? AND "
    scope = [tenant, path.attribute]
    if isinstance(expr, ql.Exists | ql.NotExists):
        sql = select + f"v.kind < {_NO_INSTANCE})"
        return ("NOT " + sql if isinstance(expr, ql.NotExists) else sql, scope)
    if isinstance(expr, ql.Pattern):
        if expr.negated:
            return None
        return (select + f"v.kind = {_STRING} AND regexp(?, v.val))", [*scope, expr.regex])
    if not isinstance(expr, ql.Comparison):
        return None
    if expr.op in ("==", "!="):
        alias = "v" if expr.op == "==" else "b"
        condition = _equality(expr.value, alias)
        if condition is None:
            return None
        if expr.op == "==":
            return (select + condition[0] + ")", [*scope, *condition[1]])
        # Per instance: some instance of the attribute has no value equal to the operand.
        return (
            select + f"v.kind < {_NO_INSTANCE} AND NOT EXISTS (SELECT 1 FROM attr_values b"
            " WHERE b.pk = v.pk AND b.attribute = v.attribute AND b.inst = v.inst AND " + condition[0] + "))",
            [*scope, *condition[1]],
        )
    literal = _literal(expr.value)
    if literal is None or isinstance(expr.value, ql.Uri):
        return None
    return (select + f"v.kind = ? AND v.val {_SQL_ORDER[expr.op]} ?)", [*scope, *literal])


def _compile_q_partially(tenant: str, q: ql.QExpr) -> tuple[_Sql | None, ql.QExpr | None]:
    """SQL for as much of ``q`` as compiles and the q left for Python (None: nothing left)."""
    whole = _compile_term(tenant, q)
    if whole is not None:
        return whole, None
    if not isinstance(q, ql.QAnd):
        return None, q
    compiled: list[_Sql] = []
    left: list[ql.QExpr] = []
    for term in q.terms:
        part = _compile_term(tenant, term)
        if part is None:
            left.append(term)
        else:
            compiled.append(part)
    rest = left[0] if len(left) == 1 else ql.QAnd(tuple(left))
    if not compiled:
        return None, rest
    return (" AND ".join(sql for sql, _ in compiled), [p for _, params in compiled for p in params]), rest
