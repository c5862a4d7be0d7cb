"""The entity change log (:class:`kizuna.store.ChangeLog`) on SQLite: the rows a transaction's
entity writes leave, written as it ends, read back with the entity each names, and pruned."""

from __future__ import annotations

import time

import orjson

from kizuna.store import EntityChange
from kizuna.store.sqlite.connection import SqliteBase, SqliteTransaction

# The entity a change is decided and shown on: a delete's own copy; else the entity now; else,
# deleted since, its copy at the first delete after the change.
_READ = """
SELECT c.seq, c.entity_id, c.op, c.at, c.types,
    CASE WHEN c.op = 'delete' THEN c.doc WHEN e.pk IS NOT NULL THEN e.doc ELSE d.doc END,
    CASE WHEN c.op = 'delete' THEN c.owner WHEN e.pk IS NOT NULL THEN e.owner ELSE d.owner END
FROM entity_changes c
LEFT JOIN entities e ON c.op <> 'delete' AND e.tenant = c.tenant AND e.id = c.entity_id
LEFT JOIN entity_changes d ON e.pk IS NULL AND c.op <> 'delete' AND d.seq = (
    SELECT min(x.seq) FROM entity_changes x
    WHERE x.tenant = c.tenant AND x.entity_id = c.entity_id AND x.op = 'delete' AND x.seq > c.seq)
WHERE c.tenant = ? AND c.seq > ? ORDER BY c.seq LIMIT ?
"""


class ChangeWrites(SqliteTransaction):
    """The change-log half of :class:`~kizuna.store.sqlite.SqliteWrite`."""

    __slots__ = ()

    def log_changes(self) -> None:
        """Write the changes the transaction's entity writes noted, in one statement, just before
        the commit (so a batch of a hundred entities costs one ``executemany``)."""
        if not self.changes:
            return
        now = time.time()
        dumps = orjson.dumps
        self.db.executemany(
            "INSERT INTO entity_changes (tenant, entity_id, op, at, types, doc, owner)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (self.tenant, entity_id, op, now, dumps(types), None if doc is None else dumps(doc), owner)
                for entity_id, op, types, doc, owner in self.changes
            ],
        )


class SqliteChanges(SqliteBase):
    """The change-log reads and pruning of :class:`~kizuna.store.sqlite.SqliteStore`."""

    async def entity_changes(self, tenant: str, after: int, limit: int) -> list[EntityChange]:
        # A primary-key range of a few hundred rows at most: on the loop, as other short reads.
        rows = self.db.execute(_READ, (tenant, after, limit)).fetchall()
        return [
            EntityChange(
                seq, entity_id, op, at, orjson.loads(types), None if doc is None else orjson.loads(doc), owner
            )
            for seq, entity_id, op, at, types, doc, owner in rows
        ]

    async def change_bounds(self, tenant: str) -> tuple[int, int]:
        pruned, last = self.db.execute(
            "SELECT (SELECT pruned FROM entity_change_horizon WHERE tenant = ?),"
            " (SELECT max(seq) FROM entity_changes WHERE tenant = ?)",
            (tenant, tenant),
        ).fetchone()
        return pruned or 0, max(pruned or 0, last or 0)

    async def prune_changes(self, before: float) -> int:
        async with self._immediate() as db:
            gone = db.execute(
                "SELECT tenant, max(seq), count(*) FROM entity_changes WHERE at < ? GROUP BY tenant",
                (before,),
            ).fetchall()
            db.execute("DELETE FROM entity_changes WHERE at < ?", (before,))
            db.executemany(
                "INSERT INTO entity_change_horizon (tenant, pruned) VALUES (?, ?)"
                " ON CONFLICT (tenant) DO UPDATE SET pruned = max(pruned, excluded.pruned)",
                [(tenant, top) for tenant, top, _ in gone],
            )
        return sum(count for _, _, count in gone)
