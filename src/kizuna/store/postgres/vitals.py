"""The figures a scrape of ``/metrics`` reads: the outbox's depth and age, how many documents
of a kind (the DSP processes) are in each state, and this process's pool."""

from __future__ import annotations

from collections.abc import Sequence

from kizuna.store import Vitals
from kizuna.store.common import TimedWrites
from kizuna.store.postgres.connection import PgBase, _guarded

# A document may hold an escaped NUL, which PostgreSQL's JSON types refuse; as an escaped space
# it parses (also where the text was an escaped backslash before "u0000"), and no state has one.
_NUL_AS_SPACE = ("\\u0000", "\\u0020")


class PgVitals(TimedWrites, PgBase):
    """Read-only: two aggregate statements in the database, nothing decoded in Python."""

    @_guarded
    async def vitals(self, tenant: str, kinds: Sequence[str]) -> Vitals:
        rows, oldest = await self.pool.fetchrow(
            "SELECT count(*), min(created_at) FROM kizuna.notification_changes"
        )
        schema = await self._schema(tenant) if kinds else None
        states = (
            []
            if schema is None
            else await self.pool.fetch(
                "SELECT kind, state, count(*) FROM (SELECT kind,"
                " replace(convert_from(doc, 'UTF8'), $2, $3)::jsonb ->> 'state' AS state"
                f" FROM {schema}.documents WHERE kind = ANY($1)) d"
                " WHERE state IS NOT NULL GROUP BY kind, state",
                list(kinds),
                *_NUL_AS_SPACE,
            )
        )
        return Vitals(rows, oldest, {(kind, state): n for kind, state, n in states})

    def pool_usage(self) -> tuple[int, int] | None:
        if self._pool is None:
            return None
        size = self._pool.get_size()
        return size, size - self._pool.get_idle_size()
