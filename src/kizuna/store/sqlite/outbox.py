"""Subscriptions and the notification outbox: one row per change (whatever the number of
subscriptions it notifies), written in the transaction of the change, and one cursor per
subscription (the last change delivered), moved under a per-subscription lease so that one
process delivers each subscription, in order."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

import orjson

from kizuna.store import OutboxRow
from kizuna.store.common import NOTIFICATION_TABLES, change_rows, outbox_rows
from kizuna.store.sqlite.connection import SqliteBase, SqliteTransaction, _announce


class SqliteOutbox(SqliteBase):
    """Subscriptions, leases, the outbox and delivery state of :class:`~kizuna.store.sqlite.SqliteStore`."""

    async def insert_subscription(self, tenant: str, sub: dict[str, Any]) -> bool:
        async with self._immediate(tenant) as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO subscriptions (tenant, id, doc) VALUES (?, ?, ?)",
                (tenant, sub["id"], orjson.dumps(sub)),
            )
            if cursor.rowcount == 1:
                _bump_subscription_version(db, tenant)
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

    async def outbox_subscriptions(self) -> list[tuple[str, str]]:
        """Changes naming the same subscriptions share their targets: each distinct targets is
        read once, with its newest change (a subscription is owed something if its cursor is
        behind that), not every change's."""
        return [
            (tenant, sub_id)
            for tenant, sub_id in self.db.execute(
                "SELECT DISTINCT c.tenant, t.key FROM (SELECT tenant, targets, max(seq) AS last"
                " FROM notification_changes GROUP BY tenant, targets) c, json_each(c.targets) t"
                " LEFT JOIN notification_cursors k ON k.tenant = c.tenant AND k.subscription_id = t.key"
                " WHERE c.last > coalesce(k.seq, 0)"
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
            "SELECT seq, entity_id, target, payloads, created_at FROM (SELECT seq, entity_id,"
            " json_extract(targets, ?) AS target, payloads, created_at FROM notification_changes c"
            " WHERE tenant = ? AND seq > coalesce((SELECT seq FROM notification_cursors"
            " WHERE tenant = c.tenant AND subscription_id = ?), 0)) WHERE target IS NOT NULL"
            " ORDER BY seq LIMIT ?",
            (_json_key(subscription_id), tenant, subscription_id, limit),
        )
        return outbox_rows(tenant, subscription_id, [(s, e, orjson.loads(t), p, c) for s, e, t, p, c in rows])

    async def ack_outbox(
        self, tenant: str, subscription_id: str, seq: int, status: dict[str, Any] | None = None
    ) -> None:
        async with self._immediate() as db:
            _advance(db, tenant, subscription_id, seq)
            if status is not None:
                _save_status(db, tenant, subscription_id, status)

    async def drop_outbox(self, tenant: str, subscription_id: str) -> None:
        async with self._immediate() as db:
            _forget_notifications(db, tenant, subscription_id)

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
            _save_status(db, tenant, subscription_id, status)


class OutboxWrites(SqliteTransaction):
    """The notification half of :class:`~kizuna.store.sqlite.SqliteWrite`."""

    __slots__ = ()

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
            "INSERT INTO notification_changes (tenant, entity_id, targets, payloads, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            [
                # text, not a blob: SQLite 3.45+ reads a blob given to json_each as JSONB
                (self.tenant, entity_id, targets.decode(), payloads, now)
                for entity_id, targets, payloads in change_rows(rows)
            ],
        )


# -- subscription and outbox helpers ---------------------------------------------------------------


def _bump_subscription_version(db: sqlite3.Connection, tenant: str) -> None:
    db.execute(
        "INSERT INTO subscription_versions (tenant, version) VALUES (?, 1)"
        " ON CONFLICT (tenant) DO UPDATE SET version = version + 1",
        (tenant,),
    )
    _announce(db, "subscriptions", tenant)


def _subscription_version(db: sqlite3.Connection, tenant: str) -> int:
    row = db.execute("SELECT version FROM subscription_versions WHERE tenant = ?", (tenant,)).fetchone()
    return row[0] if row else 0


def _forget_notifications(db: sqlite3.Connection, tenant: str, subscription_id: str) -> None:
    """Lease and delivery state go; the cursor passes every change queued so far (a subscription
    created again with the id is owed only what comes after)."""
    for table in NOTIFICATION_TABLES:
        db.execute(f"DELETE FROM {table} WHERE tenant = ? AND subscription_id = ?", (tenant, subscription_id))
    last = db.execute("SELECT max(seq) FROM notification_changes").fetchone()[0]
    if last is not None:
        _advance(db, tenant, subscription_id, last)


def _advance(db: sqlite3.Connection, tenant: str, subscription_id: str, seq: int) -> None:
    """Move a subscription's cursor to ``seq`` (never back), and delete the changes it passed
    that every subscription they name has passed too (writers are serialised: no race). The
    changes passed mostly share one targets: the cursors are compared once per distinct one."""
    row = db.execute(
        "SELECT seq FROM notification_cursors WHERE tenant = ? AND subscription_id = ?",
        (tenant, subscription_id),
    ).fetchone()
    before = row[0] if row else 0
    if seq <= before:
        return
    db.execute(
        "INSERT OR REPLACE INTO notification_cursors (tenant, subscription_id, seq) VALUES (?, ?, ?)",
        (tenant, subscription_id, seq),
    )
    passed = db.execute(
        "SELECT g.targets, min(coalesce(k.seq, 0)) FROM (SELECT DISTINCT targets FROM notification_changes"
        " WHERE tenant = ? AND seq > ? AND seq <= ?) g, json_each(g.targets) t"
        " LEFT JOIN notification_cursors k ON k.tenant = ? AND k.subscription_id = t.key GROUP BY g.targets",
        (tenant, before, seq, tenant),
    ).fetchall()
    db.executemany(
        "DELETE FROM notification_changes WHERE tenant = ? AND seq > ? AND seq <= ? AND targets = ?",
        [(tenant, before, min(seq, upto), targets) for targets, upto in passed if upto > before],
    )


def _save_status(db: sqlite3.Connection, tenant: str, subscription_id: str, status: dict[str, Any]) -> None:
    """Kept only while the (entity or csource) subscription exists."""
    if db.execute(
        "SELECT 1 FROM subscriptions WHERE tenant = ? AND id = ?"
        " UNION ALL SELECT 1 FROM documents"
        " WHERE kind = 'csourceSubscription' AND tenant = ? AND id = ?",
        (tenant, subscription_id, tenant, subscription_id),
    ).fetchone():
        db.execute(
            "INSERT OR REPLACE INTO notification_status (tenant, subscription_id, doc) VALUES (?, ?, ?)",
            (tenant, subscription_id, orjson.dumps(status)),
        )


def _json_key(key: str) -> str:
    """The JSON path of an object member (subscription ids are URIs: no quote in them)."""
    return f'$."{key}"'
