"""The embedded store: one SQLite file in WAL mode.

SQLite answers a primary-key read in microseconds, less than the cost of handing the call to a
thread, so statements run directly on the event loop. Write transactions are serialised by an
asyncio lock (one connection per process) and by SQLite itself across processes
(``BEGIN IMMEDIATE`` with a busy timeout).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from kizuna.store import AggregateRow, Entity, EntityQuery, HistoryQuery, QueryResult

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
        sql, params = _select(tenant, query)
        result = QueryResult()
        if query.predicate is None and not query.count and query.limit is not None:
            sql += " LIMIT ? OFFSET ?"
            result.entities = [
                orjson.loads(doc) for (doc,) in self.db.execute(sql, [*params, query.limit, query.offset])
            ]
            return result
        matched = 0
        wanted_end = None if query.limit is None else query.offset + query.limit
        for (doc,) in self.db.execute(sql, params):
            entity = orjson.loads(doc)
            if query.predicate is not None and not query.predicate(entity):
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
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return cursor.rowcount == 1

    async def replace_subscription(self, tenant: str, sub: dict[str, Any]) -> bool:
        async with self._write_lock:
            cursor = self.db.execute(
                "UPDATE subscriptions SET doc = ? WHERE tenant = ? AND id = ?",
                (orjson.dumps(sub), tenant, sub["id"]),
            )
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
        async with self._write_lock:
            cursor = self.db.execute(
                "DELETE FROM subscriptions WHERE tenant = ? AND id = ?", (tenant, subscription_id)
            )
            return cursor.rowcount == 1

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
        if query.last_n is not None:
            select = (
                f"SELECT attribute, instance_id, doc, t, pk FROM (SELECT *, ROW_NUMBER() OVER"
                f" (PARTITION BY attribute ORDER BY t DESC, pk DESC) AS n FROM ({select})) WHERE n <= ?"
            )
            params.append(query.last_n)
        out: list[tuple[str, dict[str, Any]]] = []
        for attribute, instance_id, doc, _, _ in self.db.execute(
            f"{select} ORDER BY attribute, t, pk", params
        ):
            instance = orjson.loads(doc)
            instance["instanceId"] = instance_id
            out.append((attribute, instance))
        return out

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


def _select(tenant: str, query: EntityQuery) -> tuple[str, list[Any]]:
    where = ["e.tenant = ?"]
    params: list[Any] = [tenant]
    if query.types is not None:
        marks = ",".join("?" * len(query.types))
        where.append(f"e.pk IN (SELECT pk FROM entity_types WHERE tenant = ? AND type IN ({marks}))")
        params += [tenant, *query.types]
    if query.ids is not None:
        where.append(f"e.id IN ({','.join('?' * len(query.ids))})")
        params += list(query.ids)
    if query.id_pattern is not None:
        where.append("regexp(?, e.id)")
        params.append(query.id_pattern)
    return f"SELECT e.doc FROM entities e WHERE {' AND '.join(where)} ORDER BY e.pk", params


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

    async def replace(self, entity: Entity) -> None:
        row = self.db.execute(
            "UPDATE entities SET doc = ? WHERE tenant = ? AND id = ? RETURNING pk",
            (orjson.dumps(entity), self.tenant, entity["id"]),
        ).fetchone()
        if row is None:
            raise KeyError(entity["id"])
        self.db.execute("DELETE FROM entity_types WHERE pk = ?", (row[0],))
        self._index_types(row[0], entity)

    async def delete(self, entity_id: str) -> bool:
        row = self.db.execute(
            "DELETE FROM entities WHERE tenant = ? AND id = ? RETURNING pk", (self.tenant, entity_id)
        ).fetchone()
        if row is None:
            return False
        self.db.execute("DELETE FROM entity_types WHERE pk = ?", (row[0],))
        return True

    async def delete_matching(self, query: EntityQuery) -> list[Entity]:
        sql, params = _select(self.tenant, query)
        doomed = [
            entity
            for entity in (orjson.loads(doc) for (doc,) in self.db.execute(sql, params).fetchall())
            if query.predicate is None or query.predicate(entity)
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

    def _index_types(self, pk: int | None, entity: Entity) -> None:
        self.db.executemany(
            "INSERT OR IGNORE INTO entity_types (tenant, type, pk) VALUES (?, ?, ?)",
            [(self.tenant, t, pk) for t in entity.get("type", ())],
        )


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
