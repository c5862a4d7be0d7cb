"""The figures a scrape of ``/metrics`` reads: the outbox's depth and age, and how many
documents of a kind (the DSP processes) are in each state."""

from __future__ import annotations

from collections.abc import Sequence

from kizuna.store import Vitals
from kizuna.store.common import TimedWrites
from kizuna.store.sqlite.connection import SqliteBase


class SqliteVitals(TimedWrites, SqliteBase):
    """Read-only, on the writer connection: two aggregate statements, no document decoded in Python."""

    async def vitals(self, tenant: str, kinds: Sequence[str]) -> Vitals:
        rows, oldest = self.db.execute(
            "SELECT count(*), min(created_at) FROM notification_changes"
        ).fetchone()
        marks = ", ".join("?" * len(kinds))
        states = (
            self.db.execute(
                "SELECT kind, state, count(*) FROM (SELECT kind,"
                " json_extract(CAST(doc AS TEXT), '$.state') AS state"
                f" FROM documents WHERE tenant = ? AND kind IN ({marks}))"
                " WHERE state IS NOT NULL GROUP BY kind, state",
                (tenant, *kinds),
            ).fetchall()
            if kinds
            else []
        )
        return Vitals(rows, oldest, {(kind, state): n for kind, state, n in states})

    def pool_usage(self) -> tuple[int, int] | None:
        return None
