"""The embedded store: one SQLite file in WAL mode.

SQLite answers a primary-key read in microseconds, less than the cost of handing the call to a
thread, so statements run directly on the event loop. Write transactions are serialised by an
asyncio lock (one connection per process) and by SQLite itself across processes
(``BEGIN IMMEDIATE`` with a busy timeout).

Queries run in SQL on indexes kept beside the documents, in the transaction of each write:

- ``entity_types``: the type index, with each entity's owner, so that a restricted subject's type
  query tests ownership on the index row it walks instead of looking up each candidate entity.
- ``attr_values``: one row per scalar a q expression compares with (number, string, boolean; the
  leaves of each attribute instance, found by :func:`kizuna.query.instance_leaves`, so that
  SQL and :func:`kizuna.query.matches` see the same values), keyed
  ``(tenant, attribute, kind, val, pk, inst)``. A separate table rather than ``json_extract`` on
  the document: attributes are user-defined, so no expression index could cover them, and a
  range ``speed < 20`` or ``intensity == 800..1200`` on this table is one B-tree range scan over
  the attribute's values instead of a parse of every document. ``val`` has no type affinity, so
  numbers stay numbers (integers exact) and strings stay strings (BINARY collation orders UTF-8 by
  code point, as Python does); ``kind`` keeps booleans apart from numbers, as q does. Marker rows
  (kind 3: an instance without scalars; kind 4: a key without any valued instance) make
  existence and the per-instance ``!=`` exact.
- ``geo_rtree`` (an R*Tree of boxes) with ``geo_entries`` (rtree id -> tenant, entity pk,
  geoproperty IRI, and ``shapes``: the GeoJSON values of the property's instances): one box per
  (entity, property holding GeoJSON), the union of its instances. A geoQuery reads candidates
  through :meth:`GeoQuery.bbox` and checks only those exactly with shapely, on ``shapes`` (a few
  bytes to decode, not the document; points in one vectorised call). The R*Tree stores 32-bit
  floats rounded outwards, so a box never shrinks.

q compiles to SQL for top-level attribute paths with ``==`` ``!=`` ``>`` ``>=`` ``<`` ``<=``
against numbers, strings, booleans and URIs, ranges, value lists, ``~=``, existence, ``!`` and
``;`` / ``|``; an AND keeps its compilable terms in SQL and leaves the others to Python. The
rest (sub-attributes, metadata, compound keys, ``id``, DateTime/Date/Time literals, ``!~=``)
and scopeQ are evaluated in Python on the rows SQL selects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson

from kizuna import query as ql
from kizuna.files import create_private
from kizuna.patterns import search
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
    CORE,
    STRING,
    QCompiler,
    Sql,
    attribute_rows,
    audit_conditions,
    extended_temporal_entity,
    geometry_boxes,
    new_history_instance,
    shapes,
    tell,
)
from kizuna.store.common import TIME_COLUMN as _TIME_COLUMN
from kizuna.store.common import history_columns as _history_columns
from kizuna.store.common import literal_prefix as _literal_prefix
from kizuna.turns import let_others_run

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
    owner TEXT,
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
    geoproperty TEXT NOT NULL,
    shapes BLOB
);
CREATE INDEX IF NOT EXISTS geo_entries_by_pk ON geo_entries (pk);
CREATE VIRTUAL TABLE IF NOT EXISTS geo_rtree USING rtree(id, min_x, max_x, min_y, max_y);
CREATE TABLE IF NOT EXISTS store_indexes (
    name TEXT PRIMARY KEY
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hosted_contexts (
    local_id TEXT PRIMARY KEY,
    document BLOB NOT NULL,
    created_at REAL NOT NULL,
    owner TEXT,
    tenant TEXT NOT NULL DEFAULT ''
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
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    key TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_trail (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    subject TEXT NOT NULL,
    tenant TEXT NOT NULL,
    operation TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_trail_by_subject ON audit_trail (subject, at);
CREATE INDEX IF NOT EXISTS audit_trail_by_time ON audit_trail (at);
CREATE TABLE IF NOT EXISTS notification_status (
    tenant TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    doc BLOB NOT NULL,
    PRIMARY KEY (tenant, subscription_id)
) WITHOUT ROWID;
"""
log = logging.getLogger("kizuna.store")
_PAGE = 500
CHANGE_POLL = 0.5  # seconds between reads of the change feed (see SqliteStore.listen)
CHANGE_KEEP = 300.0  # seconds a change stays in the feed for processes that poll late


def _regexp(pattern: str, value: str | None) -> bool:
    return value is not None and search(pattern, value)


class SqliteStore:
    def __init__(self, path: str) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._readers: list[sqlite3.Connection] = []  # idle reader connections (see _read)
        self._write_lock = asyncio.Lock()
        self._listeners: list[ChangeListener] = []
        self._follower: asyncio.Task[None] | None = None

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
            create_private(self.path)
        db = _connect(self.path)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        # Every statement of SCHEMA is idempotent: tables added later reach existing files too.
        db.executescript(f"BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
        _backfill_indexes(db)
        self._db = db
        seen = db.execute("SELECT max(seq) FROM changes").fetchone()[0] or 0
        self._follower = asyncio.create_task(self._follow(seen), name="kizuna-sqlite-changes")

    def listen(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    async def announce(self, topic: str, key: str) -> None:
        async with self._immediate() as db:
            _announce(db, topic, key)

    async def _follow(self, seen: int) -> None:
        """Poll the ``changes`` table that other processes on this file (``--workers``) append to
        in their commits. Sequence numbers are gap-free (AUTOINCREMENT, rolled back with their
        transaction), so a gap means pruned rows were missed: then everything may have changed."""
        while True:
            await asyncio.sleep(CHANGE_POLL)
            try:
                rows = self.db.execute(
                    "SELECT seq, topic, key FROM changes WHERE seq > ? ORDER BY seq", (seen,)
                ).fetchall()
            except sqlite3.Error:
                log.exception("cannot read the change feed")
                continue
            if rows and rows[0][0] != seen + 1:
                tell(self._listeners, "*", "")
            for seq, topic, key in rows:
                tell(self._listeners, topic, key)
                seen = seq

    async def close(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
            self._follower = None
        if self._db is not None:
            self._db.close()
            self._db = None
        while self._readers:
            self._readers.pop().close()

    async def _read(self, read: Callable[..., Any], *args: Any) -> Any:
        """``read(connection, *args)`` in a worker thread, on a reader connection of its own.

        SQLite's calls block the thread that makes them, and a query that walks 20,000 rows
        (a regular expression or a q on each) held the event loop, and every other request,
        for as long. A reader connection sees every committed write (WAL); a file store opens
        readers as reads overlap and keeps them for the next. ``:memory:`` has no second
        connection to the same database, so there the read runs on the loop."""
        if self.path == ":memory:":
            return read(self.db, *args)
        reader = self._readers.pop() if self._readers else _connect(self.path)
        try:
            return await asyncio.to_thread(read, reader, *args)
        finally:
            if self._db is None:
                reader.close()
            else:
                self._readers.append(reader)

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

    async def get_owned_entity(self, tenant: str, entity_id: str) -> tuple[Entity, str | None] | None:
        row = self.db.execute(
            "SELECT doc, owner FROM entities WHERE tenant = ? AND id = ?", (tenant, entity_id)
        ).fetchone()
        return (orjson.loads(row[0]), row[1]) if row else None

    async def query_entities(self, tenant: str, query: EntityQuery) -> QueryResult:
        return await self._read(_query_entities, tenant, query)

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
            await let_others_run()

    # -- hosted @contexts ------------------------------------------------------------------------

    async def hosted_contexts(self) -> list[tuple[str, dict[str, Any], float, str | None, str]]:
        rows = self.db.execute(
            "SELECT local_id, document, created_at, owner, tenant FROM hosted_contexts ORDER BY created_at"
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
        async with self._immediate() as db:
            db.execute(
                "INSERT OR REPLACE INTO hosted_contexts (local_id, document, created_at, owner, tenant)"
                " VALUES (?, ?, ?, ?, ?)",
                (local_id, orjson.dumps(document), created_at, owner, tenant),
            )
            _announce(db, "contexts", local_id)

    async def delete_hosted_context(self, local_id: str) -> None:
        async with self._immediate() as db:
            db.execute("DELETE FROM hosted_contexts WHERE local_id = ?", (local_id,))
            _announce(db, "contexts", local_id)

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
                "SELECT 1 FROM subscriptions WHERE tenant = ? AND id = ?"
                " UNION ALL SELECT 1 FROM documents"
                " WHERE kind = 'csourceSubscription' AND tenant = ? AND id = ?",
                (tenant, subscription_id, tenant, subscription_id),
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
        return await self._read(_query_temporal_entities, tenant, types, ids, id_pattern)

    async def history_attributes(self, tenant: str, entity_id: str) -> list[str]:
        rows = self.db.execute(
            "SELECT DISTINCT attribute FROM attribute_history WHERE tenant = ? AND entity_id = ?",
            (tenant, entity_id),
        )
        return [attribute for (attribute,) in rows]

    async def read_history(
        self, tenant: str, entity_id: str, query: HistoryQuery
    ) -> list[tuple[str, dict[str, Any]]]:
        return _read_history(self.db, tenant, entity_id, query)

    async def read_histories(
        self, tenant: str, entity_ids: Sequence[str], query: HistoryQuery
    ) -> dict[str, list[tuple[str, dict[str, Any]]]]:
        return await self._read(_read_histories, tenant, entity_ids, query)

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

    async def aggregate_histories(
        self,
        tenant: str,
        entity_ids: Sequence[str],
        query: HistoryQuery,
        methods: Sequence[str],
        period: float | None,
        origin: float | None,
    ) -> list[AggregateRow]:
        if not entity_ids:
            return []
        ids = orjson.dumps(list(entity_ids)).decode()
        where, params, when = _history_where(tenant, None, query, entity_sql="ids.value")
        # Buckets are [origin + k*period, origin + (k+1)*period); everything is computed here, in
        # one statement over all the entities (the entity list drives the history index: CROSS
        # JOIN), and only the aggregates asked for.
        if origin is not None or period is None:
            # The origin is known (or there is one bucket a series): one pass, no series CTE.
            head: list[Any] = []
            if origin is not None:
                start_sql, tail = "?", [origin]
                head.append(origin)
            else:
                start_sql, tail = f"min({when})", []
            bucket = "0"
            if period is not None:
                bucket = f"CAST(({when} - ?) / ? AS INTEGER)"
                head += [origin, period]
            columns = ", ".join(_aggregate_columns(methods, "value_number", "value_key"))
            sql = f"""
            SELECT entity_id, attribute, dataset_id, {start_sql}, max({when}), {bucket} AS bucket, {columns}
            FROM json_each(?) AS ids CROSS JOIN attribute_history
            WHERE {where}{f" AND {when} >= ?" if tail else ""}
            GROUP BY entity_id, attribute, dataset_id, bucket
            ORDER BY entity_id, attribute, dataset_id, bucket
            """
            rows = self.db.execute(sql, [*head, ids, *params, *tail])
        else:
            # Each series starts at its first instance: that needs the series first.
            columns = ", ".join(_aggregate_columns(methods, "s.v", "s.k"))
            sql = f"""
            WITH sel AS (
                SELECT entity_id AS e, attribute AS a, dataset_id AS d, {when} AS t,
                       value_number AS v, value_key AS k
                FROM json_each(?) AS ids CROSS JOIN attribute_history WHERE {where}
            ), series AS (
                SELECT e, a, d, min(t) AS o FROM sel GROUP BY e, a, d
            )
            SELECT s.e, s.a, s.d, r.o, max(s.t), CAST((s.t - r.o) / ? AS INTEGER) AS bucket, {columns}
            FROM sel s JOIN series r ON s.e = r.e AND s.a = r.a AND s.d IS r.d
            GROUP BY s.e, s.a, s.d, bucket
            ORDER BY s.e, s.a, s.d, bucket
            """
            rows = self.db.execute(sql, [ids, *params, period])
        out: list[AggregateRow] = []
        for entity_id, attribute, dataset_id, start, last, bucket, *values in rows:
            if period is None:
                begin, end = start, query.end if query.end is not None else last
            else:
                begin = start + bucket * period
                end = begin + period
            row = AggregateRow(attribute, dataset_id, begin, end, dict(zip(methods, values, strict=True)))
            row.entity_id = entity_id
            out.append(row)
        if out:
            kinds = self._history_kinds(tenant, query, {(r.entity_id, r.attribute) for r in out})
            for row in out:
                row.kind = kinds.get((row.entity_id, row.attribute))
        return out

    def _history_kinds(
        self, tenant: str, query: HistoryQuery, pairs: set[tuple[str, str]]
    ) -> dict[tuple[str, str], str]:
        """The kind (type) of the newest instance ``query`` selects of each (entity, attribute),
        in one statement: a walk of the history index that stops at the first row, per pair."""
        entity, attribute = "json_extract(p.value, '$[0]')", "json_extract(p.value, '$[1]')"
        where, params, _ = _history_where(tenant, None, query, entity_sql=entity, attribute_sql=attribute)
        bounded = query.start is not None or query.end is not None
        newest, copies = _ends_select(where, _TIME_COLUMN[query.timeproperty], True, bounded=bounded)
        sql = (
            f"SELECT {entity}, {attribute}, (SELECT doc FROM ({newest}) ORDER BY t DESC, pk DESC LIMIT 1)"
            " FROM json_each(?) AS p"
        )
        kinds: dict[tuple[str, str], str] = {}
        pairs_json = orjson.dumps(sorted(pairs)).decode()
        for entity_id, attribute, doc in self.db.execute(sql, [*[*params, 1] * copies, pairs_json]):
            if doc is not None:
                kinds[(entity_id, attribute)] = orjson.loads(doc)["type"]
        return kinds

    # -- audit trail ---------------------------------------------------------------------------

    async def append_audit(self, event: AuditEvent) -> None:
        async with self._write_lock:
            self.db.execute(
                "INSERT INTO audit_trail (at, subject, tenant, operation, target, outcome, detail)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    event.at,
                    event.subject,
                    event.tenant,
                    event.operation,
                    event.target,
                    event.outcome,
                    event.detail,
                ),
            )

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
        where = " AND ".join(f"{test} ?" for test, _ in conditions) or "1"
        params = [value for _, value in conditions]
        total = self.db.execute(f"SELECT count(*) FROM audit_trail WHERE {where}", params).fetchone()[0]
        rows = self.db.execute(
            "SELECT at, subject, tenant, operation, target, outcome, detail FROM audit_trail"
            f" WHERE {where} ORDER BY seq LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return [AuditEvent(*row) for row in rows], total

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

    async def swap_document(self, kind: str, tenant: str, doc: dict[str, Any], expected: int) -> bool:
        async with self._write_lock:
            db = self.db
            db.execute("BEGIN IMMEDIATE")  # the file's write lock: atomic across processes too
            try:
                row = db.execute(
                    "SELECT doc FROM documents WHERE kind = ? AND tenant = ? AND id = ?",
                    (kind, tenant, doc["id"]),
                ).fetchone()
                swapped = row is not None and orjson.loads(row[0]).get("version", 0) == expected
                if swapped:
                    db.execute(
                        "UPDATE documents SET doc = ? WHERE kind = ? AND tenant = ? AND id = ?",
                        (orjson.dumps(doc), kind, tenant, doc["id"]),
                    )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return swapped

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


_GEO_SOURCE = "geo_rtree r JOIN geo_entries e ON e.id = r.id"


def _plan(tenant: str, query: EntityQuery) -> tuple[str, list[Any], Callable[[Entity], bool] | None]:
    """The WHERE clause (on ``entities e``) of a query, its parameters, and the Python check left
    for what SQL does not decide (None: SQL decides everything). See :func:`_select`."""
    _, where, params, residual, _ = _select(tenant, query, on_index=False)
    return where, params, residual


def _select(
    tenant: str, query: EntityQuery, *, on_index: bool = True, geo_apart: bool = False
) -> tuple[str, str, list[Any], Callable[[Entity], bool] | None, bool]:
    """(source, WHERE, parameters, residual, distinct): ``SELECT e.pk FROM {source} WHERE {where}``
    selects the pks of the entities SQL lets through, ``residual`` is the Python check left for
    what SQL does not decide (None: SQL decides everything), ``distinct`` says that a pk may come
    more than once (an entity with several of the types asked for). With ``geo_apart`` the
    residual leaves the exact geo check out, for the caller to run on batches of candidates.

    One condition drives (ids, an id prefix, the R*Tree box, the most selective q test, attrs,
    the type, in that order of preference), written ``e.pk IN (...)`` so that SQLite reads it
    as a pk list in pk order; every other condition is a correlated probe on that candidate
    (``EXISTS``), so that no second index range is materialised as a whole.

    With ``on_index`` and neither ids nor an id prefix, the source is an index rather than
    ``entities``, so that counting, paging and probing never read an entity row (the caller
    fetches documents for the pks it keeps): with a bounded geoQuery, the R*Tree joined with
    ``geo_entries`` (``_GEO_SOURCE``, which also gives the shapes for the exact check); with a
    type, ``entity_types`` (its (tenant, type, pk) key holds the tenant and the type). Otherwise
    it is ``entities``, and the tenant term is written ``+e.tenant`` (no index) unless
    ids or an id prefix make the (tenant, id) index the way in: otherwise SQLite would walk the
    tenant's every entity through that index and sort, instead of following the pk lists the
    other indexes give, in pk order."""
    prefix = "" if query.id_pattern is None else _literal_prefix(query.id_pattern)
    by_id = query.ids is not None or bool(prefix)
    box = query.geo.bbox() if query.geo is not None else None
    # Index sources have no id column: any id condition keeps the source on entities.
    on_ids = by_id or query.id_pattern is not None
    geo_source = on_index and box is not None and not on_ids
    types_source = on_index and not geo_source and query.types is not None and not on_ids
    # entity_types holds the tenant in its key; entities: see above.
    where = ["e.tenant = ?" if types_source or by_id else "+e.tenant = ?"]
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
    driven = by_id
    if box is not None:
        minx, miny, maxx, maxy = box
        boxed = (
            " r.min_x <= ? AND r.max_x >= ? AND r.min_y <= ? AND r.max_y >= ?"
            " AND g.tenant = ? AND g.geoproperty = ?"
        )
        if driven:
            where.append(
                "EXISTS (SELECT 1 FROM geo_entries g JOIN geo_rtree r ON r.id = g.id WHERE g.pk = e.pk AND"
                + boxed
                + ")"
            )
        elif geo_source:
            where.append(boxed.replace("g.tenant = ? AND g.", "e."))
        else:
            where.append(
                "e.pk IN (SELECT g.pk FROM geo_rtree r JOIN geo_entries g ON g.id = r.id WHERE" + boxed + ")"
            )
        params += [maxx, minx, maxy, miny] + ([] if geo_source else [tenant])
        params.append(query.geoproperty or "location")
        driven = True
    left_q: ql.QExpr | None = None
    if query.q is not None:
        compiled, left_q, drives = _compile_q_partially(tenant, query.q, drive=not driven)
        if compiled is not None:
            where.append(compiled[0])
            params += compiled[1]
        driven = driven or drives
    attrs_in_sql = query.attrs is not None and not any(a in CORE for a in query.attrs)
    if attrs_in_sql and query.attrs is not None:
        marks = ",".join("?" * len(query.attrs))
        if driven:
            where.append(
                "EXISTS (SELECT 1 FROM attr_values a WHERE a.pk = e.pk AND +a.tenant = ?"
                f" AND a.attribute IN ({marks}))"
            )
        else:
            where.append(f"e.pk IN (SELECT pk FROM attr_values WHERE tenant = ? AND attribute IN ({marks}))")
        params += [tenant, *query.attrs]
        driven = True
    distinct = False
    if query.types is not None:
        marks = ",".join("?" * len(query.types))
        if types_source:
            where.append(f"e.type IN ({marks})")
            params += list(query.types)
            distinct = len(query.types) > 1
        else:
            if driven:
                # Another index selects the candidates (usually far fewer): the type is checked on them.
                where.append(
                    "EXISTS (SELECT 1 FROM entity_types t WHERE t.pk = e.pk AND t.tenant = ?"
                    f" AND t.type IN ({marks}))"
                )
            else:
                where.append(f"e.pk IN (SELECT pk FROM entity_types WHERE tenant = ? AND type IN ({marks}))")
            params += [tenant, *query.types]
    source = _GEO_SOURCE if geo_source else "entity_types e" if types_source else "entities e"
    if query.access is not None:
        clause, clause_params = _access_clause(tenant, query.access, on=None if geo_source else source)
        where.append(clause)
        params += clause_params
    residual = query.residual(q=left_q, attrs=not attrs_in_sql, geo=not geo_apart)
    return source, " AND ".join(where), params, residual, distinct


def _access_clause(tenant: str, access: AccessFilter, on: str | None) -> tuple[str, list[Any]]:
    """The access filter as one test of the candidate ``e``, so that it narrows the count and the
    pages with the rest of the query. ``on`` is the table ``e`` is (None: one without an owner):
    the owner, types and policies are tested on the row at hand (entities and entity_types hold
    the owner) and the candidate's pk; ids and scopes on the entity row, looked up only for the
    candidates the cheaper tests did not let through (unless ``e`` is the entity itself)."""

    def marks(values: Collection[str]) -> str:
        return ",".join("?" * len(values))

    x = "e" if on == "entities e" else "x"  # the entity row: the candidate itself, or looked up
    tests: list[str] = []  # on the candidate's own columns and its pk
    on_row: list[str] = []  # on the entity row's id or document
    params: list[Any] = []
    row_params: list[Any] = []
    if access.owners:
        (tests if on is not None else on_row).append(f"{'e' if on else x}.owner IN ({marks(access.owners)})")
        (params if on is not None else row_params).extend(sorted(access.owners))
    if access.ids:
        on_row.append(f"{x}.id IN ({marks(access.ids)})")
        row_params += sorted(access.ids)
    if access.types:
        tests.append(
            f"EXISTS (SELECT 1 FROM entity_types t WHERE t.pk = e.pk AND t.type IN ({marks(access.types)}))"
        )
        params += sorted(access.types)
    for types, scopes in access.scoped:
        terms = []
        if types:
            terms.append(
                f"EXISTS (SELECT 1 FROM entity_types t WHERE t.pk = {x}.pk AND t.type IN ({marks(types)}))"
            )
            row_params += sorted(types)
        named = sorted(s for s in scopes if s != NO_SCOPE)
        held = []
        if named:
            held.append(
                f"EXISTS (SELECT 1 FROM json_each(CAST({x}.doc AS TEXT), '$.scope') s"
                f" WHERE s.value IN ({marks(named)}))"
            )
            row_params += named
        if NO_SCOPE in scopes:
            held.append(f"json_type(CAST({x}.doc AS TEXT), '$.scope') IS NULL")
        terms.append("(" + " OR ".join(held) + ")")
        on_row.append("(" + " AND ".join(terms) + ")")
    if access.policies and access.policy_attributes:
        # The uncorrelated test runs once per statement: most tenants have no entity with a
        # specificAccessPolicy, and then no candidate pays for the probe (half a type query).
        attributes, policies = marks(access.policy_attributes), marks(access.policies)
        tests.append(
            "(EXISTS (SELECT 1 FROM attr_values p WHERE p.tenant = ?"
            f" AND p.attribute IN ({attributes}) AND p.kind = ? AND p.val IN ({policies}))"
            " AND EXISTS (SELECT 1 FROM attr_values a WHERE a.pk = e.pk"
            f" AND a.attribute IN ({attributes}) AND a.kind = ? AND a.val IN ({policies})))"
        )
        wanted = [*access.policy_attributes, STRING, *sorted(access.policies)]
        params += [tenant, *wanted, *wanted]
    if on_row and x == "x":
        on_row = [f"EXISTS (SELECT 1 FROM entities x WHERE x.pk = e.pk AND ({' OR '.join(on_row)}))"]
    tests += on_row  # last: the lookup only for candidates no cheaper test let through
    if not tests:
        return "0", []
    return "(" + " OR ".join(tests) + ")", params + row_params


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

    async def owner(self, entity_id: str) -> str | None:
        row = self.db.execute(
            "SELECT owner FROM entities WHERE tenant = ? AND id = ?", (self.tenant, entity_id)
        ).fetchone()
        return row[0] if row else None

    async def insert(self, entity: Entity, owner: str | None = None) -> None:
        cursor = self.db.execute(
            "INSERT INTO entities (tenant, id, doc, owner) VALUES (?, ?, ?, ?)",
            (self.tenant, entity["id"], orjson.dumps(entity), owner),
        )
        self._index_types(cursor.lastrowid, entity, owner)
        _index_entity(self.db, self.tenant, cursor.lastrowid, entity)

    async def replace(self, entity: Entity) -> None:
        row = self.db.execute(
            "UPDATE entities SET doc = ? WHERE tenant = ? AND id = ? RETURNING pk, owner",
            (orjson.dumps(entity), self.tenant, entity["id"]),
        ).fetchone()
        if row is None:
            raise KeyError(entity["id"])
        self.db.execute("DELETE FROM entity_types WHERE pk = ?", (row[0],))
        self._index_types(row[0], entity, row[1])
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
        extended = extended_temporal_entity(current, types, scope)
        if extended is not None:
            merged, new_scope = extended
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
        instance_id, now = new_history_instance(instance)
        await self.touch_temporal_entity(entity_id, types, scope, now)
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

    async def subscriptions(self) -> list[dict[str, Any]]:
        sql = "SELECT doc FROM subscriptions WHERE tenant = ? ORDER BY rowid"
        rows = self.db.execute(sql, (self.tenant,))
        return [orjson.loads(doc) for (doc,) in rows]

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

    def _index_types(self, pk: int | None, entity: Entity, owner: str | None) -> None:
        self.db.executemany(
            "INSERT OR IGNORE INTO entity_types (tenant, type, pk, owner) VALUES (?, ?, ?, ?)",
            [(self.tenant, t, pk, owner) for t in entity.get("type", ())],
        )


# -- subscription and outbox helpers ---------------------------------------------------------------


def _bump_subscription_version(db: sqlite3.Connection, tenant: str) -> None:
    db.execute(
        "INSERT INTO subscription_versions (tenant, version) VALUES (?, 1)"
        " ON CONFLICT (tenant) DO UPDATE SET version = version + 1",
        (tenant,),
    )
    _announce(db, "subscriptions", tenant)


def _announce(db: sqlite3.Connection, topic: str, key: str) -> None:
    """Append to the change feed in the caller's transaction, forgetting what everyone has read."""
    now = time.time()
    db.execute("DELETE FROM changes WHERE at < ?", (now - CHANGE_KEEP,))
    db.execute("INSERT INTO changes (topic, key, at) VALUES (?, ?, ?)", (topic, key, now))


def _subscription_version(db: sqlite3.Connection, tenant: str) -> int:
    row = db.execute("SELECT version FROM subscription_versions WHERE tenant = ?", (tenant,)).fetchone()
    return row[0] if row else 0


def _forget_notifications(db: sqlite3.Connection, tenant: str, subscription_id: str) -> None:
    for table in ("notification_outbox", "notification_leases", "notification_status"):
        db.execute(f"DELETE FROM {table} WHERE tenant = ? AND subscription_id = ?", (tenant, subscription_id))


# -- temporal history helpers ----------------------------------------------------------------------

_TEMPORAL_COLUMNS = "id, types, scope, created_at, modified_at"


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


def _history_where(
    tenant: str,
    entity_id: str | None,
    query: HistoryQuery,
    *,
    entity_sql: str | None = None,
    attribute_sql: str | None = None,
) -> tuple[str, list[Any], str]:
    """The WHERE clause of a history read, its parameters and the time expression it orders by.

    ``entity_sql`` is an SQL expression in place of ``entity_id`` (``entity_id`` then None), e.g.
    the value of a ``json_each`` of several; ``attribute_sql`` one for the attribute, in place of
    ``query.attributes`` (its parameters, if any, are the caller's: they go after the first two)."""
    column = _TIME_COLUMN[query.timeproperty]
    where = ["tenant = ?", "entity_id = ?" if entity_sql is None else f"entity_id = {entity_sql}"]
    params: list[Any] = [tenant] if entity_sql is not None else [tenant, entity_id]
    if attribute_sql is not None:
        where.append(f"attribute = {attribute_sql}")
    elif query.attributes is not None:
        where.append(f"attribute IN ({','.join('?' * len(query.attributes))})")
        params += list(query.attributes)
    where.append("deleted_at IS NOT NULL" if query.timeproperty == "deletedAt" else "deleted_at IS NULL")
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


def _ends_select(where: str, column: str, newest: bool, *, bounded: bool = False) -> tuple[str, int]:
    """SQL of the last (``newest``) or first ``LIMIT ?`` history rows matching ``where`` in time
    order: (attribute, instance_id, doc, t, pk), unordered; and how many times its parameters
    (``where``'s, then the limit) are to be given.

    The time is ``COALESCE(column, created_at)``. When the column is set that is an ordered walk
    of the (tenant, entity, attribute, column) index, served in order (the rowid, pk, ends each
    index entry); observed_at may be null, and the rows without it are a second walk, by
    created_at: the caller merges the two and keeps the first ``limit``. A ``bounded`` query (a
    start or end on the column) has none: the walk is not made (it would scan the range)."""
    direction = "DESC" if newest else "ASC"
    select = "SELECT attribute, instance_id, doc, {t} AS t, pk FROM attribute_history{by} WHERE {where}"
    if column != "observed_at" or bounded:  # created_at, modified_at NOT NULL; deletedAt: deleted_at set
        sql = (
            select.format(t=column, by="", where=where)
            + f" ORDER BY {column} {direction}, pk {direction} LIMIT ?"
        )
        return sql, 1
    timed = select.format(t=column, by="", where=f"{where} AND {column} IS NOT NULL")
    # Left to itself the planner walks the created_at index in order, reading every row to find
    # the (usually no) rows without observed_at; these are an equality on the observed_at index.
    by = " INDEXED BY attribute_history_observed"
    untimed = select.format(t="created_at", by=by, where=f"{where} AND {column} IS NULL")
    return (
        f"SELECT * FROM ({timed} ORDER BY {column} {direction}, pk {direction} LIMIT ?) UNION ALL"
        f" SELECT * FROM ({untimed} ORDER BY created_at {direction}, pk {direction} LIMIT ?)",
        2,
    )


def _history_attribute_list(db: sqlite3.Connection, tenant: str, entity_id: str) -> list[str]:
    """The attributes an entity has history of, in order: one index seek each (a skip scan)."""
    rows = db.execute(
        """
        WITH RECURSIVE a(name) AS (
            SELECT min(attribute) FROM attribute_history WHERE tenant = ?1 AND entity_id = ?2
            UNION ALL
            SELECT (SELECT min(attribute) FROM attribute_history
                    WHERE tenant = ?1 AND entity_id = ?2 AND attribute > a.name)
            FROM a WHERE a.name IS NOT NULL
        )
        SELECT name FROM a WHERE name IS NOT NULL
        """,
        (tenant, entity_id),
    )
    return [name for (name,) in rows]


def _aggregate_columns(methods: Sequence[str], v: str, k: str) -> list[str]:
    """SQL of each aggregation method, over numeric values ``v`` and value keys ``k``: numeric
    aggregates skip non-numeric values (NULL ``v``; a sum of none is NULL)."""
    stddev = (
        f"CASE WHEN count({v}) > 1 THEN sqrt(max(0, (sum({v} * {v}) - sum({v}) * sum({v}) / count({v}))"
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


# -- query indexes: attribute values and geometries ------------------------------------------------

_INDEX_VERSION = "entity-indexes-1"
_SHAPES_VERSION = "geo-shapes-1"  # geo_entries.shapes filled for the rows written before it


def _index_entity(db: sqlite3.Connection, tenant: str, pk: int | None, entity: Entity) -> None:
    """Write the attr_values rows and geometry boxes of one entity (see the module docstring)."""
    rows = [(tenant, key, kind, val, pk, inst) for key, kind, val, inst in attribute_rows(entity)]
    for key, min_x, min_y, max_x, max_y, found in geometry_boxes(entity):
        cursor = db.execute(
            "INSERT INTO geo_entries (tenant, pk, geoproperty, shapes) VALUES (?, ?, ?, ?)",
            (tenant, pk, key, orjson.dumps(found)),
        )
        db.execute(
            "INSERT INTO geo_rtree (id, min_x, max_x, min_y, max_y) VALUES (?, ?, ?, ?, ?)",
            (cursor.lastrowid, min_x, max_x, min_y, max_y),
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


def _connect(path: str) -> sqlite3.Connection:
    """A connection with what every statement of this store relies on."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA busy_timeout=10000")
    # Reads through a memory map: a query that visits thousands of rows spends most of its time
    # in read() calls without it (address space only; pages stay in the OS page cache).
    db.execute("PRAGMA mmap_size=1073741824")
    db.create_function("regexp", 2, _regexp, deterministic=True)
    return db


def _backfill_indexes(db: sqlite3.Connection) -> None:
    """Build the query indexes of entities written before they existed, once per store file.

    A marker row says it was done: an index table may rightly stay empty while entities exist
    (no attribute, no geometry), and the entities must not be re-read at every open."""
    db.execute("BEGIN IMMEDIATE")
    try:
        if "owner" not in {row[1] for row in db.execute("PRAGMA table_info(entities)")}:
            db.execute("ALTER TABLE entities ADD COLUMN owner TEXT")  # entities before access control
        hosted_columns = {row[1] for row in db.execute("PRAGMA table_info(hosted_contexts)")}
        if "owner" not in hosted_columns:
            db.execute("ALTER TABLE hosted_contexts ADD COLUMN owner TEXT")  # admins' only, as before
        if "tenant" not in hosted_columns:  # contexts hosted before tenants held them: the default's
            db.execute("ALTER TABLE hosted_contexts ADD COLUMN tenant TEXT NOT NULL DEFAULT ''")
        if "owner" not in {row[1] for row in db.execute("PRAGMA table_info(entity_types)")}:
            db.execute("ALTER TABLE entity_types ADD COLUMN owner TEXT")
            db.execute(
                "UPDATE entity_types SET owner = (SELECT owner FROM entities x WHERE x.pk = entity_types.pk)"
            )
        if "shapes" not in {row[1] for row in db.execute("PRAGMA table_info(geo_entries)")}:
            db.execute("ALTER TABLE geo_entries ADD COLUMN shapes BLOB")  # filled below
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
        if db.execute("SELECT 1 FROM store_indexes WHERE name = ?", (_SHAPES_VERSION,)).fetchone() is None:
            # Only the geo rows, each from its entity's document: far less than a rebuild.
            last = 0
            while True:
                rows = db.execute(
                    "SELECT g.id, g.geoproperty, e.doc FROM geo_entries g JOIN entities e ON e.pk = g.pk"
                    " WHERE g.id > ? AND g.shapes IS NULL ORDER BY g.id LIMIT ?",
                    (last, _PAGE),
                ).fetchall()
                for geo_id, key, doc in rows:
                    found = orjson.dumps(shapes(orjson.loads(doc).get(key)))
                    db.execute("UPDATE geo_entries SET shapes = ? WHERE id = ?", (found, geo_id))
                    last = geo_id
                if len(rows) < _PAGE:
                    break
            db.execute("INSERT INTO store_indexes (name) VALUES (?)", (_SHAPES_VERSION,))
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


# -- q to SQL --------------------------------------------------------------------------------------


class _SqliteQ(QCompiler):
    """q on this file's ``attr_values`` (see :class:`QCompiler`).

    Each attribute test is ``e.pk IN (...)``, which SQLite may use to drive the query (the
    attribute's value range in one index scan, in pk order), or with ``probe`` a correlated
    ``EXISTS`` that looks the candidate's rows up on ``attr_values_by_pk``: a test that only
    filters the rows another index selects then costs one lookup per candidate instead of
    materialising every entity it holds for. (``+v.tenant`` keeps SQLite off the primary key,
    which it would otherwise prefer for its longer equality prefix and scan once per candidate.)"""

    regexp = True

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant

    def select(self, attribute: str, probe: bool) -> Sql:
        if probe:
            sql = (
                "EXISTS (SELECT 1 FROM attr_values v"
                " WHERE v.pk = e.pk AND +v.tenant = ? AND v.attribute = ? AND "
            )
        else:
            sql = "e.pk IN (SELECT v.pk FROM attr_values v WHERE v.tenant = ? AND v.attribute = ? AND "
        return sql, [self.tenant, attribute]

    def column(self, kind: int, alias: str) -> str:
        return f"{alias}.val"  # no type affinity: numbers and strings in one column

    def param(self, lit: tuple[int, Any]) -> Any:
        return lit[1]


def _compile_q_partially(
    tenant: str, q: ql.QExpr, *, drive: bool = True
) -> tuple[Sql | None, ql.QExpr | None, bool]:
    """SQL for as much of ``q`` as compiles, the q left for Python (None: nothing left), and
    whether the SQL has a test that drives the query.

    With ``drive``, the conjunct most likely to select few entities (by its operator, see
    :func:`_selectivity`) stays an ``IN`` that SQLite reads as the pk list to start from; every
    other conjunct probes the candidates it gives. Without, every test probes."""
    q_sql = _SqliteQ(tenant)
    terms = q.terms if isinstance(q, ql.QAnd) else (q,)
    compiled: list[ql.QExpr] = []
    left: list[ql.QExpr] = []
    for term in terms:
        (left if q_sql.term(term, probe=True) is None else compiled).append(term)
    rest = None if not left else left[0] if len(left) == 1 else ql.QAnd(tuple(left))
    if not compiled:
        return None, rest, False
    driver = None
    if drive:
        ranked = [(rank, n) for n, term in enumerate(compiled) if (rank := _selectivity(term)) is not None]
        driver = min(ranked)[1] if ranked else None
    parts = [q_sql.term(term, probe=n != driver) for n, term in enumerate(compiled)]
    sql = " AND ".join(part[0] for part in parts if part is not None)
    return (sql, [p for part in parts if part is not None for p in part[1]]), rest, driver is not None


def _selectivity(expr: ql.QExpr) -> int | None:
    """How few entities a compiled q test is likely to select (lower: fewer), from its operator
    alone; None when it cannot drive a query (a negation selects from outside any index range)."""
    if isinstance(expr, ql.QAnd):
        ranks = [r for term in expr.terms if (r := _selectivity(term)) is not None]
        return min(ranks) if ranks else None
    if isinstance(expr, ql.QOr):
        ranks = [_selectivity(term) for term in expr.terms]
        return None if any(r is None for r in ranks) else max(r for r in ranks if r is not None) + 1
    if isinstance(expr, ql.Comparison):
        if expr.op == "==":
            if isinstance(expr.value, ql.Range):
                return 2
            return 1 if isinstance(expr.value, ql.ValueList) else 0
        return 5 if expr.op == "!=" else 3
    if isinstance(expr, ql.Pattern):
        return 4
    if isinstance(expr, ql.Exists):
        return 5
    return None


def _query_temporal_entities(
    db: sqlite3.Connection,
    tenant: str,
    types: Sequence[str] | None,
    ids: Sequence[str] | None,
    id_pattern: str | None,
) -> list[Entity]:
    """:meth:`SqliteStore.query_temporal_entities` on ``db`` (a reader's, in a thread)."""
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
    rows = db.execute(
        f"SELECT {_TEMPORAL_COLUMNS} FROM temporal_entities WHERE {' AND '.join(where)} ORDER BY rowid",
        params,
    )
    return [_temporal_row(row) for row in rows]


def _read_histories(
    db: sqlite3.Connection, tenant: str, entity_ids: Sequence[str], query: HistoryQuery
) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """:meth:`SqliteStore.read_histories` on ``db``. In-process reads cost microseconds: one
    entity at a time walks the indexes best."""
    out: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for entity_id in entity_ids:
        if rows := _read_history(db, tenant, entity_id, query):
            out[entity_id] = rows
    return out


def _read_history(
    db: sqlite3.Connection, tenant: str, entity_id: str, query: HistoryQuery
) -> list[tuple[str, dict[str, Any]]]:
    limit = query.last_n if query.last_n is not None else query.first_n
    if limit is not None:
        return _history_ends(db, tenant, entity_id, query, limit)
    where, params, when = _history_where(tenant, entity_id, query)
    out: list[tuple[str, dict[str, Any]]] = []
    for attribute, instance_id, doc in db.execute(
        f"SELECT attribute, instance_id, doc FROM attribute_history WHERE {where}"
        f" ORDER BY attribute, {when}, pk",
        params,
    ):
        instance = orjson.loads(doc)
        instance["instanceId"] = instance_id
        out.append((attribute, instance))
    return out


def _history_ends(
    db: sqlite3.Connection, tenant: str, entity_id: str, query: HistoryQuery, limit: int
) -> list[tuple[str, dict[str, Any]]]:
    """lastN (or the first N) instances of each attribute, oldest first: per attribute, a walk
    of the (entity, attribute, time) index that stops after ``limit`` rows, instead of ranking
    the whole series (see :func:`_ends_select`)."""
    newest = query.last_n is not None
    if query.attributes is not None:
        attributes = sorted(set(query.attributes))
    else:
        attributes = _history_attribute_list(db, tenant, entity_id)
    out: list[tuple[str, dict[str, Any]]] = []
    for attribute in attributes:
        where, params, _ = _history_where(tenant, entity_id, query, attribute_sql="?")
        params.insert(2, attribute)  # after tenant and entity_id: see _history_where
        bounded = query.start is not None or query.end is not None
        sql, copies = _ends_select(where, _TIME_COLUMN[query.timeproperty], newest, bounded=bounded)
        rows = db.execute(sql, [*params, limit] * copies).fetchall()
        if copies > 1:  # two index walks (time column set / null): keep the first ``limit``
            rows.sort(key=lambda row: (row[3], row[4]), reverse=newest)
            del rows[limit:]
        rows.sort(key=lambda row: (row[3], row[4]))
        for _, instance_id, doc, _, _ in rows:
            instance = orjson.loads(doc)
            instance["instanceId"] = instance_id
            out.append((attribute, instance))
    return out


def _query_entities(db: sqlite3.Connection, tenant: str, query: EntityQuery) -> QueryResult:
    """:meth:`SqliteStore.query_entities` on ``db`` (a reader's connection, in a thread)."""
    source, where, params, residual, distinct = _select(tenant, query, geo_apart=True)
    result = QueryResult()
    pks = f"SELECT {'DISTINCT ' if distinct else ''}e.pk FROM {source} WHERE {where}"
    if residual is None and query.geo is None:
        # Everything is in SQL: the page and the count are two indexed statements, and only
        # the documents of the page are read.
        if query.limit != 0:
            page = [*params, -1 if query.limit is None else query.limit, query.offset]
            if source == "entities e":
                sql = f"SELECT e.doc FROM entities e WHERE {where} ORDER BY e.pk LIMIT ? OFFSET ?"
            else:
                sql = (
                    f"SELECT doc FROM entities WHERE pk IN ({pks} ORDER BY e.pk LIMIT ? OFFSET ?) ORDER BY pk"
                )
            result.entities = [orjson.loads(doc) for (doc,) in db.execute(sql, page)]
        if query.count:
            counted = "DISTINCT e.pk" if distinct else "*"
            sql = f"SELECT count({counted}) FROM {source} WHERE {where}"
            result.total = db.execute(sql, params).fetchone()[0]
        return result
    if residual is None and source == _GEO_SOURCE:
        # Only the exact geo check is left: it runs on the shapes kept in the geo index, and
        # only the documents of the page are read.
        sql = f"SELECT e.pk, e.shapes FROM {source} WHERE {where} ORDER BY e.pk"
        rows = db.execute(sql, params).fetchall()
        if all(found is not None for _, found in rows):  # else written by an older version
            keep = ql.geo_matches_values(query.geo, [orjson.loads(found) for _, found in rows])
            matched = [pk for (pk, _), ok in zip(rows, keep, strict=True) if ok]
            if query.count:
                result.total = len(matched)
            end = None if query.limit is None else query.offset + query.limit
            page = matched[query.offset : end]
            if page:
                marks = ",".join("?" * len(page))
                sql = f"SELECT doc FROM entities WHERE pk IN ({marks}) ORDER BY pk"
                result.entities = [orjson.loads(doc) for (doc,) in db.execute(sql, page)]
            return result
    if source == "entities e":
        sql = f"SELECT e.doc FROM entities e WHERE {where} ORDER BY e.pk"
    else:
        sql = f"SELECT doc FROM entities WHERE pk IN ({pks}) ORDER BY pk"
    # Candidates come in growing batches; the exact geo check runs on a whole batch at once
    # (vectorised for points), after the rest of the residual.
    matched, size = 0, 64
    wanted_end = None if query.limit is None else query.offset + query.limit
    cursor = db.execute(sql, params)
    while batch := cursor.fetchmany(size):
        size = min(2 * size, 1024)
        entities = [orjson.loads(doc) for (doc,) in batch]
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
