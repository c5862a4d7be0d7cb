"""The pool and what every concern of the PostgreSQL store shares: a lost database as 503, jsonb
packing, ``?`` placeholders, the tenant schemas (created in the first write's transaction), the
transaction helper, and the change feed (``pg_notify``).

The concerns (:mod:`.entities`, :mod:`.history`, :mod:`.outbox`, :mod:`.documents`) are mixins
on :class:`PgBase`, and the parts of a write transaction mixins on :class:`PgTransaction`;
:mod:`.store` assembles them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg
import orjson

from kizuna.errors import ServiceUnavailable
from kizuna.store import ChangeListener
from kizuna.store.common import PendingChange, TargetSets, TemporalTouch
from kizuna.store.postgres.schema import TENANT_MIGRATIONS, _quote, schema_for, tenant_version

_PAGE = 500
CHANNEL = "kizuna_changes"  # payload: topic "\n" key (see kizuna.store.ChangeListener)
RECONNECT_DELAY, RECONNECT_DELAY_MAX = 0.2, 5.0
ACQUIRE_TIMEOUT = 30.0  # seconds a write waits for a pooled connection before answering 503
log = logging.getLogger("kizuna.store")

# -- errors: a lost database is 503 ------------------------------------------------------------------

_LOST = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    # What asyncpg raises when it resets a connection that broke in the middle of a statement
    # (seen when PostgreSQL stops under load: "cannot switch to state ...").
    asyncpg.InternalClientError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
)


def _unavailable(exc: BaseException) -> ServiceUnavailable:
    return ServiceUnavailable(f"the database is not reachable ({type(exc).__name__}: {exc}); retry later")


_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])


def _guarded(fn: _F) -> _F:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except _LOST as exc:
            raise _unavailable(exc) from exc

    return wrapper  # type: ignore[return-value]


# -- documents ---------------------------------------------------------------------------------------


def _pack(obj: Any) -> tuple[str | None, bytes | None]:
    """(jsonb text, raw bytes): jsonb unless the JSON holds a NUL character, which jsonb refuses."""
    data = orjson.dumps(obj)
    if b"\\u0000" in data:
        return None, data
    return data.decode(), None


def _unpack(doc: Any, raw: bytes | None) -> Any:
    return orjson.loads(raw) if doc is None else doc


def _numbered(sql: str) -> str:
    """``?`` placeholders as asyncpg's ``$1``, ``$2``, ... (the SQL here never holds a literal ?)."""
    counter = iter(range(1, 10_000))
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=lambda v: v, decoder=orjson.loads, format="text"
    )


async def _reset_connection(conn: asyncpg.Connection) -> None:
    """What a pooled connection needs on its way back to the pool: nothing more than asyncpg's
    own rollback of an open transaction (run before this). Its default reset, ``RESET ALL``,
    ``UNLISTEN *``, ``CLOSE ALL`` and ``pg_advisory_unlock_all()``, is a round trip that every
    ``pool.fetch`` waited for, undoing what the store never leaves on a session: settings are
    ``SET LOCAL``, cursors live in transactions, LISTEN has its own connection and the
    migrations' session lock is released in a ``finally``."""


def _pack_bytes(data: bytes) -> tuple[str | None, bytes | None]:
    """(jsonb text, raw bytes) of orjson bytes (see :func:`_pack`)."""
    if b"\\u0000" in data:
        return None, data
    return data.decode(), None


def _notice(topic: str, key: str) -> str:
    """The payload of a NOTIFY on :data:`CHANNEL`."""
    return f"{topic}\n{key}"


async def _announce(conn: asyncpg.Connection, topic: str, key: str) -> None:
    """Tell every listening process, once the caller's transaction commits (see :data:`CHANNEL`)."""
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, _notice(topic, key))


class PgBase:
    """The pool, the tenant -> schema cache and the transaction helper the concerns share."""

    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 10) -> None:
        self.dsn = dsn
        self.min_size = min_size
        self.max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._schemas: dict[str, str] = {"": _quote(schema_for(""))}
        self._listeners: list[ChangeListener] = []
        self._follower: asyncio.Task[None] | None = None
        self._target_sets = TargetSets()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("store is not open")
        return self._pool

    async def _schema(self, tenant: str) -> str | None:
        """The quoted schema of an existing tenant, None if the tenant does not exist."""
        schema = self._schemas.get(tenant)
        if schema is None:
            name = await self.pool.fetchval("SELECT schema_name FROM kizuna.tenants WHERE name = $1", tenant)
            if name is None:
                return None
            schema = self._schemas[tenant] = _quote(name)
        return schema

    async def _ensure_tenant(self, conn: asyncpg.Connection, tenant: str) -> str:
        """The tenant's quoted schema, created (with its tables) in ``conn``'s transaction if new."""
        schema = self._schemas.get(tenant)
        if schema is not None:
            return schema
        name = schema_for(tenant)
        created = await conn.fetchval(
            "INSERT INTO kizuna.tenants (name, schema_name, version) VALUES ($1, $2, $3)"
            " ON CONFLICT (name) DO NOTHING RETURNING 1",
            tenant,
            name,
            tenant_version(),
        )
        if created:
            await conn.execute(f"CREATE SCHEMA {_quote(name)}")
            for _, ddl in TENANT_MIGRATIONS:
                await conn.execute(ddl.format(s=_quote(name)))
            # Cached only once committed: see :meth:`_remember`.
            return _quote(name)
        stored = await conn.fetchval("SELECT schema_name FROM kizuna.tenants WHERE name = $1", tenant)
        return _quote(stored)

    @asynccontextmanager
    async def _transaction(self, tenant: str | None = None) -> AsyncIterator[tuple[asyncpg.Connection, str]]:
        """A connection in a transaction (and the tenant's schema, created if new); commits on a
        clean exit. A lost connection becomes ServiceUnavailable."""
        try:
            async with self.pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
                async with conn.transaction():
                    schema = "" if tenant is None else await self._ensure_tenant(conn, tenant)
                    yield conn, schema
                if tenant is not None:
                    self._schemas.setdefault(tenant, schema)
        except _LOST as exc:
            raise _unavailable(exc) from exc


class PgTransaction:
    """The state of one write transaction on one pooled connection (see
    :meth:`PostgresStore.write`); the concerns add their methods as mixins."""

    __slots__ = ("changes", "conn", "schema", "tenant", "touched")

    def __init__(self, conn: asyncpg.Connection, schema: str, tenant: str) -> None:
        self.conn = conn
        self.schema = schema
        self.tenant = tenant
        self.touched: set[TemporalTouch] = set()  # see common.TouchesOnce
        self.changes: list[PendingChange] = []  # see ChangeWrites.log_changes
