"""The shared store assembled: :class:`PostgresStore` is the pool base with one mixin per concern,
and :class:`PgWrite` the transaction with the write half of each (see the package docstring)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import asyncpg

from kizuna.store import ChangeListener
from kizuna.store.common import stop_task, tell
from kizuna.store.postgres.changes import ChangeWrites, PgChanges
from kizuna.store.postgres.connection import (
    _LOST,
    ACQUIRE_TIMEOUT,
    CHANNEL,
    RECONNECT_DELAY,
    RECONNECT_DELAY_MAX,
    PgBase,
    _announce,
    _guarded,
    _init_connection,
    _reset_connection,
    log,
)
from kizuna.store.postgres.documents import DocumentWrites, PgDocuments
from kizuna.store.postgres.entities import EntityWrites, PgEntities
from kizuna.store.postgres.history import HistoryWrites, PgHistory
from kizuna.store.postgres.outbox import OutboxWrites, PgOutbox
from kizuna.store.postgres.schema import migrate, mismatch
from kizuna.store.postgres.vitals import PgVitals


def pool_options(url: str) -> tuple[str, dict[str, int]]:
    """The URL for the driver (and PostgreSQL's own tools), and the pool sizes only Kizuna reads."""
    parts = urlsplit(url)
    options = [p.split("=", 1) for p in parts.query.split("&") if "=" in p]
    sizes = {f"{k[5:]}_size": int(v) for k, v in options if k in ("pool_min", "pool_max")}
    query = "&".join(f"{k}={v}" for k, v in options if k not in ("pool_min", "pool_max"))
    return parts._replace(scheme="postgresql", query=query).geturl(), sizes


class PgWrite(EntityWrites, HistoryWrites, OutboxWrites, ChangeWrites, DocumentWrites):
    """One write transaction on one pooled connection (see :meth:`PostgresStore.write`)."""

    __slots__ = ()


class PostgresStore(PgEntities, PgHistory, PgOutbox, PgChanges, PgDocuments, PgVitals, PgBase):
    """PostgreSQL with PostGIS through an asyncpg pool; see the package docstring."""

    @classmethod
    def from_url(cls, url: str) -> PostgresStore:
        """postgresql://user:password@host:port/db, optionally ?pool_min=N&pool_max=N (the other
        query parameters, sslmode for instance, go to the driver)."""
        dsn, sizes = pool_options(url)
        return cls(dsn, **sizes)

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=self.min_size,
                max_size=self.max_size,
                init=_init_connection,
                reset=_reset_connection,
                command_timeout=60,
            )
        except _LOST as exc:
            raise SystemExit(f"kizuna: cannot connect to PostgreSQL at {self.dsn}: {exc}") from exc
        try:
            async with self.pool.acquire() as conn:
                await migrate(conn)
        except BaseException:
            await self.close()
            raise
        # Listening before open() returns: nothing committed after the caller's first reads
        # (hosted contexts, subscriptions) can go unheard.
        listening = await self._listening()
        self._follower = asyncio.create_task(self._follow(listening), name="kizuna-pg-changes")

    @_guarded
    async def schema_mismatch(self) -> str | None:
        async with self.pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
            return await mismatch(conn)

    def listen(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    async def announce(self, topic: str, key: str) -> None:
        async with self._transaction() as (conn, _):
            await _announce(conn, topic, key)

    def _heard(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        topic, _, key = payload.partition("\n")
        tell(self._listeners, topic, key)

    async def _listening(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(self.dsn, timeout=10)
        await conn.add_listener(CHANNEL, self._heard)
        return conn

    async def _follow(self, conn: asyncpg.Connection | None) -> None:
        """Keep the LISTEN connection for the store's life. A ping each second notices a lost
        server; the reconnect (with backoff) is followed by ``*``, for what was missed meanwhile."""
        delay = RECONNECT_DELAY
        try:
            while True:
                if conn is None:
                    try:
                        conn = await self._listening()
                    except _LOST:
                        await asyncio.sleep(delay)
                        delay = min(2 * delay, RECONNECT_DELAY_MAX)
                        continue
                    delay = RECONNECT_DELAY
                    log.info("listening to PostgreSQL again")
                    tell(self._listeners, "*", "")
                await asyncio.sleep(1.0)
                try:
                    await conn.fetchval("SELECT 1", timeout=5)
                except _LOST:
                    log.warning("lost the PostgreSQL LISTEN connection; reconnecting")
                    conn.terminate()
                    conn = None
        finally:
            if conn is not None:
                conn.terminate()

    async def close(self) -> None:
        await stop_task(self._follower)
        self._follower = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), 10)
            except (TimeoutError, *_LOST):
                pool.terminate()

    # -- tenants ---------------------------------------------------------------------------------

    @_guarded
    async def has_tenant(self, tenant: str) -> bool:
        return await self._schema(tenant) is not None

    @_guarded
    async def tenants(self) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT name FROM kizuna.tenants WHERE name <> '' ORDER BY name COLLATE \"C\""
        )
        return [row[0] for row in rows]

    # -- writes ----------------------------------------------------------------------------------

    @asynccontextmanager
    async def write(self, tenant: str) -> AsyncIterator[PgWrite]:
        async with self._timed(self._transaction(tenant)) as (conn, schema):
            tx = PgWrite(conn, schema, tenant)
            yield tx
            await tx.log_changes()
