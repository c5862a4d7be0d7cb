"""The entity change log (:class:`kizuna.store.ChangeLog`) on PostgreSQL.

A ``bigserial`` cannot order changes for a reader: a transaction that took number 10 may commit
after the one that took 11, and a reader that has seen 11 would never look back for 10. So the
writes leave their rows unnumbered, and the first read after a commit numbers every committed
row it finds, under the lock of the tenant's counter row: what one reader numbers was committed
before what any later reader numbers, so a ``seq`` once read is never undercut. Writers take no
shared lock and pay nothing for the numbering; it is done only when someone reads.
"""

from __future__ import annotations

import time

import orjson

from kizuna.store import EntityChange
from kizuna.store.postgres.connection import (
    CHANNEL,
    PgBase,
    PgTransaction,
    _guarded,
    _notice,
    _pack_bytes,
    _unpack,
)
from kizuna.store.postgres.schema import _quote

# One statement, so that the numbering costs one round trip. Its snapshot is taken before it
# waits for the counter row (another numbering in flight); rows that one numbered meanwhile fail
# the recheck of ``seq IS NULL`` and keep their numbers, and the counter, read after the wait,
# puts every number given here above the other's (those skipped leave gaps, which is allowed).
_NUMBER = """
WITH todo AS (
    SELECT pk, row_number() OVER (ORDER BY pk) AS n FROM {s}.entity_changes WHERE seq IS NULL
), counter AS (
    UPDATE {s}.entity_change_counter SET last = last + (SELECT count(*) FROM todo)
    RETURNING last - (SELECT count(*) FROM todo) AS base
)
UPDATE {s}.entity_changes c SET seq = counter.base + todo.n
FROM todo, counter WHERE c.pk = todo.pk AND c.seq IS NULL
"""
_LOG = """
WITH logged AS (
    INSERT INTO {s}.entity_changes (entity_id, op, at, types, doc, raw, owner)
    SELECT c.entity_id, c.op, $1, c.types::jsonb, c.doc::jsonb, c.raw, c.owner
    FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::text[])
        WITH ORDINALITY AS c (entity_id, op, types, doc, raw, owner, n)
    ORDER BY c.n
)
SELECT pg_notify($8, $9)
"""
_READ = """
SELECT c.seq, c.entity_id, c.op, c.at, c.types, c.doc, c.raw, c.owner,
    e.pk IS NOT NULL, e.doc, e.raw, e.owner, d.doc, d.raw, d.owner
FROM {s}.entity_changes c
LEFT JOIN {s}.entities e ON c.op <> 'delete' AND e.id = c.entity_id
LEFT JOIN LATERAL (
    SELECT x.doc, x.raw, x.owner FROM {s}.entity_changes x
    WHERE e.pk IS NULL AND c.op <> 'delete' AND x.entity_id = c.entity_id AND x.op = 'delete'
        AND (x.seq > c.seq OR x.seq IS NULL)
    ORDER BY x.seq NULLS LAST, x.pk LIMIT 1
) d ON true
WHERE c.seq > $1 ORDER BY c.seq LIMIT $2
"""


class ChangeWrites(PgTransaction):
    """The change-log half of :class:`~kizuna.store.postgres.PgWrite`."""

    __slots__ = ()

    async def log_changes(self) -> None:
        """Write the changes the transaction's entity writes noted and wake every process's
        readers once the transaction commits: one statement, one round trip, however many."""
        if not self.changes:
            return
        columns: list[list[object]] = [[], [], [], [], [], []]
        for entity_id, op, types, doc, owner in self.changes:
            doc_text, raw = (None, None) if doc is None else _pack_bytes(orjson.dumps(doc))
            for column, value in zip(
                columns, (entity_id, op, orjson.dumps(types).decode(), doc_text, raw, owner), strict=True
            ):
                column.append(value)
        await self.conn.execute(
            _LOG.format(s=self.schema), time.time(), *columns, CHANNEL, _notice("entities", self.tenant)
        )


class PgChanges(PgBase):
    """The change-log reads and pruning of :class:`~kizuna.store.postgres.PostgresStore`."""

    async def _number(self, schema: str) -> None:
        """Give the committed unnumbered rows their ``seq`` (see the module docstring)."""
        pending = await self.pool.fetchval(
            f"SELECT EXISTS (SELECT 1 FROM {schema}.entity_changes WHERE seq IS NULL)"
        )
        if not pending:
            return
        async with self._transaction() as (conn, _):
            # Not worth a WAL flush of its own: a crash loses at most the last numbering, which
            # the next reader does again (a stream's client that saw its numbers may then get a
            # change twice or miss one; docs/console.md). Both in one round trip.
            await conn.execute("SET LOCAL synchronous_commit = off; " + _NUMBER.format(s=schema))

    @_guarded
    async def entity_changes(self, tenant: str, after: int, limit: int) -> list[EntityChange]:
        schema = await self._schema(tenant)
        if schema is None:
            return []
        await self._number(schema)
        rows = await self.pool.fetch(_READ.format(s=schema), after, limit)
        changes = []
        for row in rows:
            seq, entity_id, op, at, types = row[:5]
            if op == "delete":
                doc, raw, owner = row[5:8]
            elif row[8]:
                doc, raw, owner = row[9:12]
            else:
                doc, raw, owner = row[12:15]
            entity = None if doc is None and raw is None else _unpack(doc, raw)
            changes.append(EntityChange(seq, entity_id, op, at, types, entity, owner))
        return changes

    @_guarded
    async def change_bounds(self, tenant: str) -> tuple[int, int]:
        schema = await self._schema(tenant)
        if schema is None:
            return 0, 0
        await self._number(schema)
        row = await self.pool.fetchrow(f"SELECT pruned, last FROM {schema}.entity_change_counter")
        return row[0], row[1]

    @_guarded
    async def prune_changes(self, before: float) -> int:
        pruned = 0
        for (name,) in await self.pool.fetch("SELECT schema_name FROM kizuna.tenants"):
            schema = _quote(name)
            await self._number(schema)  # a change forgotten unnumbered would leave no horizon
            async with self._transaction() as (conn, _):
                row = await conn.fetchrow(
                    f"WITH gone AS (DELETE FROM {schema}.entity_changes WHERE at < $1 AND seq IS NOT NULL"
                    " RETURNING seq) SELECT count(*), max(seq) FROM gone",
                    before,
                )
                if row[0]:
                    await conn.execute(
                        f"UPDATE {schema}.entity_change_counter SET pruned = greatest(pruned, $1)", row[1]
                    )
                pruned += row[0]
        return pruned
