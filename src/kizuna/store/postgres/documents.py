"""Documents kept whole: hosted @contexts and the audit trail (in ``kizuna``), and each tenant's
registrations and csource subscriptions, stored as documents of a ``kind``."""

from __future__ import annotations

from dataclasses import astuple
from typing import Any

import asyncpg
import orjson

from kizuna.store import AuditEvent
from kizuna.store.dialect import AUDIT_COLUMNS, audit_where
from kizuna.store.postgres.connection import PgBase, PgTransaction, _announce, _guarded, _numbered


class PgDocuments(PgBase):
    """Hosted @contexts, the audit trail and documents of :class:`~kizuna.store.postgres.PostgresStore`."""

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

    # -- audit trail ---------------------------------------------------------------------------

    @_guarded
    async def append_audit(self, event: AuditEvent) -> None:
        await self.pool.execute(
            f"INSERT INTO kizuna.audit_trail ({AUDIT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            *astuple(event),
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
        where, params = audit_where(subject, tenant, since)
        total = await self.pool.fetchval(
            _numbered(f"SELECT count(*) FROM kizuna.audit_trail WHERE {where}"), *params
        )
        rows = await self.pool.fetch(
            _numbered(
                f"SELECT {AUDIT_COLUMNS} FROM kizuna.audit_trail WHERE {where} ORDER BY seq LIMIT ? OFFSET ?"
            ),
            *params,
            limit,
            offset,
        )
        return [AuditEvent(*row) for row in rows], total

    # -- documents (registrations, csource subscriptions) -----------------------------------------

    async def insert_document(self, kind: str, tenant: str, doc: dict[str, Any]) -> bool:
        async with self._transaction(tenant) as (conn, schema):
            return await _insert_document(conn, schema, kind, doc)

    @_guarded
    async def replace_document(self, kind: str, tenant: str, doc: dict[str, Any]) -> bool:
        schema = await self._schema(tenant)
        if schema is None:
            return False
        return await _replace_document(self.pool, schema, kind, doc)

    @_guarded
    async def swap_document(self, kind: str, tenant: str, doc: dict[str, Any], expected: int) -> bool:
        schema = await self._schema(tenant)
        if schema is None:
            return False
        # The version is compared here, not in SQL: a document may hold a NUL character (a
        # counterparty's text), which PostgreSQL's JSON types refuse to read.
        async with self._transaction() as (conn, _):
            current = await conn.fetchval(
                f"SELECT doc FROM {schema}.documents WHERE kind = $1 AND id = $2 FOR UPDATE", kind, doc["id"]
            )
            if current is None or orjson.loads(current).get("version", 0) != expected:
                return False
            return await _replace_document(conn, schema, kind, doc)

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
        return await _documents(self.pool, schema, kind, limit, offset), total

    @_guarded
    async def delete_document(self, kind: str, tenant: str, doc_id: str) -> bool:
        schema = await self._schema(tenant)
        if schema is None:
            return False
        return await _delete_document(self.pool, schema, kind, doc_id)


class DocumentWrites(PgTransaction):
    """The document half of :class:`~kizuna.store.postgres.PgWrite`."""

    __slots__ = ()

    async def insert_document(self, kind: str, doc: dict[str, Any]) -> bool:
        return await _insert_document(self.conn, self.schema, kind, doc)

    async def replace_document(self, kind: str, doc: dict[str, Any]) -> bool:
        return await _replace_document(self.conn, self.schema, kind, doc)

    async def delete_document(self, kind: str, doc_id: str) -> bool:
        return await _delete_document(self.conn, self.schema, kind, doc_id)

    async def documents(self, kind: str) -> list[dict[str, Any]]:
        # Read committed lets two transactions that each stored a document (a registration, a
        # csource subscription) read before either commits and miss each other; under this lock
        # the second reads after the first committed.
        await self.conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('kizuna.documents:' || $1))", self.schema
        )
        return await _documents(self.conn, self.schema, kind)  # its snapshot is taken after the lock


# -- the statements, on the pool or on a write transaction's connection ------------------------------

_Executor = asyncpg.Connection | asyncpg.Pool


async def _insert_document(db: _Executor, schema: str, kind: str, doc: dict[str, Any]) -> bool:
    done = await db.fetchval(
        f"INSERT INTO {schema}.documents (kind, id, doc) VALUES ($1, $2, $3)"
        " ON CONFLICT (kind, id) DO NOTHING RETURNING true",
        kind,
        doc["id"],
        orjson.dumps(doc),
    )
    return bool(done)


async def _replace_document(db: _Executor, schema: str, kind: str, doc: dict[str, Any]) -> bool:
    status = await db.execute(
        f"UPDATE {schema}.documents SET doc = $1 WHERE kind = $2 AND id = $3",
        orjson.dumps(doc),
        kind,
        doc["id"],
    )
    return bool(status == "UPDATE 1")


async def _delete_document(db: _Executor, schema: str, kind: str, doc_id: str) -> bool:
    status = await db.execute(f"DELETE FROM {schema}.documents WHERE kind = $1 AND id = $2", kind, doc_id)
    return bool(status == "DELETE 1")


async def _documents(
    db: _Executor, schema: str, kind: str, limit: int | None = None, offset: int = 0
) -> list[dict[str, Any]]:
    rows = await db.fetch(
        f"SELECT doc FROM {schema}.documents WHERE kind = $1 ORDER BY seq LIMIT $2 OFFSET $3",
        kind,
        limit,
        offset,
    )
    return [orjson.loads(doc) for (doc,) in rows]
