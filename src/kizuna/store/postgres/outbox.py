"""Subscriptions and the notification outbox (in ``kizuna``, with a tenant column): one row per
change (whatever the number of subscriptions it notifies), written in the transaction of the
change, and one cursor per subscription (the last change delivered), moved by the process that
holds the subscription's lease."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from kizuna.store import OutboxRow
from kizuna.store.common import NOTIFICATION_TABLES, change_rows, outbox_rows
from kizuna.store.postgres.connection import PgBase, PgTransaction, _announce, _guarded


class PgOutbox(PgBase):
    """Subscriptions, leases, the outbox and delivery state of
    :class:`~kizuna.store.postgres.PostgresStore`."""

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
        """Changes naming the same subscriptions share their targets: the changes are grouped by
        the targets' hash and each group's newest change is read (a subscription is owed something
        if its cursor is behind that), not every change's targets."""
        rows = await self.pool.fetch(
            "SELECT DISTINCT c.tenant, t.key FROM (SELECT tenant, targets_hash, max(seq) AS last"
            " FROM kizuna.notification_changes GROUP BY tenant, targets_hash) c"
            " JOIN kizuna.notification_changes r ON r.seq = c.last"
            " CROSS JOIN LATERAL jsonb_object_keys(r.targets) AS t(key)"
            " LEFT JOIN kizuna.notification_cursors k ON k.tenant = c.tenant AND k.subscription_id = t.key"
            " WHERE c.last > coalesce(k.seq, 0)"
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
        """The rows are read without their targets (see :class:`TargetSets`); those of a hash
        not seen yet once per hash. Rows of hashes that turn out not to name the subscription are
        skipped by the next read."""
        sets = self._target_sets
        while True:
            rows = await self.pool.fetch(
                "SELECT seq, entity_id, targets_hash, payloads, created_at"
                " FROM kizuna.notification_changes WHERE tenant = $1"
                " AND seq > coalesce((SELECT seq FROM kizuna.notification_cursors"
                " WHERE tenant = $1 AND subscription_id = $2), 0) AND targets_hash <> ALL($3::bytea[])"
                " ORDER BY seq LIMIT $4",
                tenant,
                subscription_id,
                sets.skipped(subscription_id),
                limit,
            )
            unknown = {digest: seq for seq, _, digest, _, _ in rows if digest not in sets}
            if unknown:
                sets.learn(
                    await self.pool.fetch(
                        "SELECT targets_hash, targets::text FROM kizuna.notification_changes"
                        " WHERE seq = ANY($1::bigint[])",
                        list(unknown.values()),
                    )
                )
            found, _ = sets.named(subscription_id, rows)
            if found or not rows:
                return outbox_rows(tenant, subscription_id, found)

    @_guarded
    async def ack_outbox(
        self, tenant: str, subscription_id: str, seq: int, status: dict[str, Any] | None = None
    ) -> None:
        schema = await self._schema(tenant)
        async with self._transaction() as (conn, _):
            await _advance(conn, tenant, subscription_id, seq)
            if status is not None and schema is not None:
                await _save_status(conn, schema, tenant, subscription_id, status)

    @_guarded
    async def drop_outbox(self, tenant: str, subscription_id: str) -> None:
        async with self._transaction() as (conn, _):
            await _forget_notifications(conn, tenant, subscription_id)

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
        async with self.pool.acquire() as conn:
            await _save_status(conn, schema, tenant, subscription_id, status)


class OutboxWrites(PgTransaction):
    """The notification half of :class:`~kizuna.store.postgres.PgWrite`."""

    __slots__ = ()

    async def subscription_version(self) -> int:
        return await self.conn.fetchval(f"SELECT version FROM {self.schema}.subscription_version")

    async def subscriptions(self) -> list[dict[str, Any]]:
        rows = await self.conn.fetch(f"SELECT doc FROM {self.schema}.subscriptions ORDER BY seq")
        return [orjson.loads(doc) for (doc,) in rows]

    async def add_outbox(self, rows: Sequence[tuple[str, str, str, bytes]]) -> None:
        """Queue notifications: (subscription id, entity id, trigger, orjson payload) each."""
        changes = change_rows(rows)
        if not changes:
            return
        await self.conn.execute(
            "INSERT INTO kizuna.notification_changes (tenant, entity_id, targets, payloads, created_at)"
            " SELECT $1::text, e, t::jsonb, p, $5::float8"
            " FROM unnest($2::text[], $3::text[], $4::bytea[]) AS r(e, t, p)",
            self.tenant,
            [c[0] for c in changes],
            [c[1].decode() for c in changes],
            [c[2] for c in changes],
            time.time(),
        )
        await _announce(self.conn, "outbox", "")


async def _save_status(
    conn: asyncpg.Connection, schema: str, tenant: str, subscription_id: str, status: dict[str, Any]
) -> None:
    """Kept only while the (entity or csource) subscription exists."""
    await conn.execute(
        "INSERT INTO kizuna.notification_status (tenant, subscription_id, doc)"
        " SELECT $1::text, $2::text, $3::bytea"
        f" WHERE EXISTS (SELECT 1 FROM {schema}.subscriptions WHERE id = $2)"
        f" OR EXISTS (SELECT 1 FROM {schema}.documents WHERE kind = 'csourceSubscription' AND id = $2)"
        " ON CONFLICT (tenant, subscription_id) DO UPDATE SET doc = excluded.doc",
        tenant,
        subscription_id,
        orjson.dumps(status),
    )


async def _bump_subscription_version(conn: asyncpg.Connection, schema: str, tenant: str) -> None:
    await conn.execute(f"UPDATE {schema}.subscription_version SET version = version + 1")
    await _announce(conn, "subscriptions", tenant)


async def _forget_notifications(conn: asyncpg.Connection, tenant: str, subscription_id: str) -> None:
    """Lease and delivery state go; the cursor passes every change queued so far (a subscription
    created again with the id is owed only what comes after)."""
    for table in NOTIFICATION_TABLES:
        await conn.execute(
            f"DELETE FROM kizuna.{table} WHERE tenant = $1 AND subscription_id = $2", tenant, subscription_id
        )
    last = await conn.fetchval("SELECT max(seq) FROM kizuna.notification_changes")
    if last is not None:
        await _advance(conn, tenant, subscription_id, last)


async def _advance(conn: asyncpg.Connection, tenant: str, subscription_id: str, seq: int) -> None:
    """Move a subscription's cursor to ``seq`` (never back), and delete the changes it passed
    that every subscription they name has passed too (those of one targets' hash at once, by
    the targets of the newest of them; changes of other subscriptions in between too). The
    tenant's outbox collection is serialised by a transaction's advisory lock (row locks would
    write every passed row once per subscription), so that of two processes moving the cursors
    of one change's subscriptions at once, the second waits for the first and then sees its
    cursor (READ COMMITTED: a new snapshot per statement)."""
    before = await conn.fetchval(
        "SELECT seq FROM kizuna.notification_cursors WHERE tenant = $1 AND subscription_id = $2 FOR UPDATE",
        tenant,
        subscription_id,
    )
    before = before or 0
    if seq <= before:
        return
    await conn.execute(
        "INSERT INTO kizuna.notification_cursors (tenant, subscription_id, seq) VALUES ($1, $2, $3)"
        " ON CONFLICT (tenant, subscription_id) DO UPDATE SET seq = excluded.seq",
        tenant,
        subscription_id,
        seq,
    )
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('kizuna.notification_changes:' || $1))", tenant)
    passed = await conn.fetch(  # a statement of its own: its snapshot is taken after the lock
        "SELECT g.targets_hash, min(coalesce(k.seq, 0)) FROM (SELECT targets_hash, max(seq) AS last"
        " FROM kizuna.notification_changes WHERE tenant = $1 AND seq > $2 AND seq <= $3"
        " GROUP BY targets_hash) g JOIN kizuna.notification_changes r ON r.seq = g.last"
        " CROSS JOIN LATERAL jsonb_object_keys(r.targets) AS t(key)"
        " LEFT JOIN kizuna.notification_cursors k ON k.tenant = $1 AND k.subscription_id = t.key"
        " GROUP BY g.targets_hash",
        tenant,
        before,
        seq,
    )
    await conn.executemany(
        "DELETE FROM kizuna.notification_changes WHERE tenant = $1 AND seq > $2 AND seq <= $3"
        " AND targets_hash = $4",
        [(tenant, before, min(seq, upto), digest) for digest, upto in passed if upto > before],
    )
