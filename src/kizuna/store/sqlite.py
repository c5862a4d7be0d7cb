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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson

from kizuna.store import Entity, EntityQuery, QueryResult

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

    async def delete_matching(self, query: EntityQuery) -> list[str]:
        sql, params = _select(self.tenant, query)
        doomed = [
            entity["id"]
            for entity in (orjson.loads(doc) for (doc,) in self.db.execute(sql, params).fetchall())
            if query.predicate is None or query.predicate(entity)
        ]
        for entity_id in doomed:
            await self.delete(entity_id)
        return doomed

    def _index_types(self, pk: int | None, entity: Entity) -> None:
        self.db.executemany(
            "INSERT OR IGNORE INTO entity_types (tenant, type, pk) VALUES (?, ?, ?)",
            [(self.tenant, t, pk) for t in entity.get("type", ())],
        )
