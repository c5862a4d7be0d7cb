"""Documents kept whole: hosted @contexts, the audit trail, and the registrations and csource
subscriptions stored as documents of a ``kind``."""

from __future__ import annotations

import sqlite3
from dataclasses import astuple
from typing import Any

import orjson

from kizuna.store import AuditEvent
from kizuna.store.dialect import AUDIT_COLUMNS, audit_where
from kizuna.store.sqlite.connection import SqliteBase, SqliteTransaction, _announce


class SqliteDocuments(SqliteBase):
    """Hosted @contexts, the audit trail and documents of :class:`~kizuna.store.sqlite.SqliteStore`."""

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

    # -- audit trail ---------------------------------------------------------------------------

    async def append_audit(self, event: AuditEvent) -> None:
        async with self._write_lock:
            self.db.execute(
                f"INSERT INTO audit_trail ({AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", astuple(event)
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
        where, params = audit_where(subject, tenant, since)
        total = self.db.execute(f"SELECT count(*) FROM audit_trail WHERE {where}", params).fetchone()[0]
        rows = self.db.execute(
            f"SELECT {AUDIT_COLUMNS} FROM audit_trail WHERE {where} ORDER BY seq LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return [AuditEvent(*row) for row in rows], total

    # -- documents (registrations, csource subscriptions) -----------------------------------------

    async def insert_document(self, kind: str, tenant: str, doc: dict[str, Any]) -> bool:
        async with self._immediate(tenant) as db:
            return _insert_document(db, kind, tenant, doc)

    async def replace_document(self, kind: str, tenant: str, doc: dict[str, Any]) -> bool:
        async with self._write_lock:
            return _replace_document(self.db, kind, tenant, doc)

    async def swap_document(self, kind: str, tenant: str, doc: dict[str, Any], expected: int) -> bool:
        async with self._immediate() as db:  # the file's write lock: atomic across processes too
            row = db.execute(
                "SELECT doc FROM documents WHERE kind = ? AND tenant = ? AND id = ?",
                (kind, tenant, doc["id"]),
            ).fetchone()
            swapped = row is not None and orjson.loads(row[0]).get("version", 0) == expected
            if swapped:
                _replace_document(db, kind, tenant, doc)
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
        return _documents(self.db, kind, tenant, limit, offset), total

    async def delete_document(self, kind: str, tenant: str, doc_id: str) -> bool:
        async with self._write_lock:
            return _delete_document(self.db, kind, tenant, doc_id)


class DocumentWrites(SqliteTransaction):
    """The document half of :class:`~kizuna.store.sqlite.SqliteWrite`."""

    __slots__ = ()

    async def insert_document(self, kind: str, doc: dict[str, Any]) -> bool:
        return _insert_document(self.db, kind, self.tenant, doc)

    async def replace_document(self, kind: str, doc: dict[str, Any]) -> bool:
        return _replace_document(self.db, kind, self.tenant, doc)

    async def delete_document(self, kind: str, doc_id: str) -> bool:
        return _delete_document(self.db, kind, self.tenant, doc_id)

    async def documents(self, kind: str) -> list[dict[str, Any]]:
        return _documents(self.db, kind, self.tenant)


# -- the statements, on the store's writer connection or inside a write transaction ------------------


def _insert_document(db: sqlite3.Connection, kind: str, tenant: str, doc: dict[str, Any]) -> bool:
    cursor = db.execute(
        "INSERT OR IGNORE INTO documents (kind, tenant, id, doc) VALUES (?, ?, ?, ?)",
        (kind, tenant, doc["id"], orjson.dumps(doc)),
    )
    return cursor.rowcount == 1


def _replace_document(db: sqlite3.Connection, kind: str, tenant: str, doc: dict[str, Any]) -> bool:
    cursor = db.execute(
        "UPDATE documents SET doc = ? WHERE kind = ? AND tenant = ? AND id = ?",
        (orjson.dumps(doc), kind, tenant, doc["id"]),
    )
    return cursor.rowcount == 1


def _delete_document(db: sqlite3.Connection, kind: str, tenant: str, doc_id: str) -> bool:
    cursor = db.execute(
        "DELETE FROM documents WHERE kind = ? AND tenant = ? AND id = ?", (kind, tenant, doc_id)
    )
    return cursor.rowcount == 1


def _documents(
    db: sqlite3.Connection, kind: str, tenant: str, limit: int | None = None, offset: int = 0
) -> list[dict[str, Any]]:
    rows = db.execute(
        "SELECT doc FROM documents WHERE kind = ? AND tenant = ? ORDER BY rowid LIMIT ? OFFSET ?",
        (kind, tenant, -1 if limit is None else limit, offset),
    )
    return [orjson.loads(doc) for (doc,) in rows]
