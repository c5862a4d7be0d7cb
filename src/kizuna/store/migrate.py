"""``kizuna migrate``: a SQLite store copied into a PostgreSQL one, every tenant, every table.

Each table of the SQLite store has a :class:`Move` (where its rows go in PostgreSQL and how each
becomes a row there) or a reason to stay behind (:data:`STAYS`); the copy starts by checking the
two stores' actual tables against these, so a table added to either store without a word here
stops the copy instead of being left out silently. Rows go through ``COPY`` in batches of a
range of the table's integer key; each batch commits with its table's watermark in the target
(``kizuna.copied_from``), so a copy that was interrupted, or stopped by ``--stop-after``,
goes on from the last batch committed when run again. Keys are kept (entity pks, history pks,
outbox and audit sequence numbers, and the rowids that order subscriptions and documents by
creation), so index rows still point at their entities and every listing keeps its order.

Every run ends with a check of every table: the row count and the SHA-256 of its rows, each
in one canonical form on both sides (JSON with sorted keys, numbers as exact decimals), in the
order of their own digests, so neither store's ordering or representation decides.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import asyncpg
import orjson

from kizuna.store.backup import HOLDS_DATA
from kizuna.store.common import geometry_box
from kizuna.store.postgres.connection import _pack, _pack_bytes
from kizuna.store.postgres.entities import _sql_value
from kizuna.store.postgres.schema import schema_for
from kizuna.store.postgres.store import PostgresStore
from kizuna.store.sqlite.store import SqliteStore, sqlite_path

Row = tuple[Any, ...]


def _entity(pk: int, entity_id: str, doc: bytes, owner: str | None) -> Row:
    return (pk, entity_id, *_pack_bytes(doc), owner)


def _attr_value(attribute: str, kind: int, val: Any, pk: int, inst: int) -> Row:
    return (attribute, kind, *_sql_value(kind, val), pk, inst)


def _geo(pk: int, geoproperty: str, found: bytes) -> Row:
    """The box PostGIS indexes, from the GeoJSON the SQLite row keeps (its R*Tree holds 32-bit
    floats rounded outwards; PostgreSQL's own writes box the exact coordinates)."""
    shapes = orjson.loads(found)
    xs: list[float] = []
    ys: list[float] = []
    for shape in shapes:
        geometry_box(shape, xs, ys)
    return (pk, geoproperty, min(xs), min(ys), max(xs), max(ys), _pack(shapes)[0])


def _temporal(seq: int, entity_id: str, types: str, *rest: Any) -> Row:
    return (seq, entity_id, orjson.loads(types), *rest)


def _history(pk: int, *columns: Any) -> Row:
    *rest, doc = columns
    return (pk, *rest, *_pack_bytes(doc))


def _notification_change(
    seq: int, tenant: str, entity_id: str, targets: str | bytes, payloads: str | bytes, created: float
) -> Row:
    """jsonb text for the targets, bytea for the payloads (SQLite holds either as text or blob)."""
    return (
        seq,
        tenant,
        entity_id,
        targets.decode() if isinstance(targets, bytes) else targets,
        payloads.encode() if isinstance(payloads, str) else payloads,
        created,
    )


def _same(*columns: Any) -> Row:
    return columns


@dataclass(frozen=True)
class Move:
    """Where one SQLite table's rows go.

    ``select`` is what to read of each row, after the ``key`` (and the tenant, for a table of a
    tenant schema: ``target`` then starts with ``{s}.``); ``row`` makes the target row of it.
    ``key`` orders the batches: an integer column, possibly shared by several rows (an entity's
    index rows), or "" for a small table copied in one batch. ``insert`` replaces COPY where
    the target computes a column (a PostGIS box) or holds the row already; ``read`` is how the
    check reads the target's rows back (default: its columns); ``serial`` is the target column
    whose sequence must continue after the copied values."""

    table: str
    key: str
    select: str
    target: str
    columns: tuple[str, ...]
    row: Callable[..., Row] = _same
    json: tuple[int, ...] = ()  # positions of jsonb values in a target row
    insert: str = ""
    read: str = ""
    present: str = "true"  # which target rows the check counts (see subscription_versions)
    serial: str = ""

    @property
    def per_tenant(self) -> bool:
        return self.target.startswith("{s}.")


MOVES: tuple[Move, ...] = (
    Move(
        "entities",
        "pk",
        "pk, id, doc, owner",
        "{s}.entities",
        ("pk", "id", "doc", "raw", "owner"),
        _entity,
        json=(2,),
        read="pk, id, doc, raw, owner",
        serial="pk",
    ),
    Move("entity_types", "pk", "type, pk", "{s}.entity_types", ("type", "pk")),
    Move(
        "attr_values",
        "pk",
        "attribute, kind, val, pk, inst",
        "{s}.attr_values",
        ("attribute", "kind", "num", "str", "pk", "inst"),
        _attr_value,
    ),
    Move(
        "geo_entries",
        "pk",
        "pk, geoproperty, shapes",
        "{s}.geo_index",
        ("pk", "geoproperty", "box", "shapes"),
        _geo,
        json=(6,),
        insert="INSERT INTO {s}.geo_index (pk, geoproperty, box, shapes)"
        " VALUES ($1, $2, ST_MakeEnvelope($3, $4, $5, $6, 4326), $7::jsonb)",
        read="pk, geoproperty, ST_XMin(box), ST_YMin(box), ST_XMax(box), ST_YMax(box), shapes",
    ),
    Move(
        "temporal_entities",
        "rowid",
        "rowid, id, types, scope, created_at, modified_at",
        "{s}.temporal_entities",
        ("seq", "id", "types", "scope", "created_at", "modified_at"),
        _temporal,
        serial="seq",
    ),
    Move(
        "attribute_history",
        "pk",
        "pk, entity_id, attribute, instance_id, dataset_id, observed_at, created_at, modified_at,"
        " deleted_at, value_number, value_key, doc",
        "{s}.attribute_history",
        (
            "pk",
            "entity_id",
            "attribute",
            "instance_id",
            "dataset_id",
            "observed_at",
            "created_at",
            "modified_at",
            "deleted_at",
            "value_number",
            "value_key",
            "doc",
            "raw",
        ),
        _history,
        json=(11,),
        serial="pk",
    ),
    Move("subscriptions", "rowid", "rowid, id, doc", "{s}.subscriptions", ("seq", "id", "doc"), serial="seq"),
    Move(
        "subscription_versions",
        "",
        "version",
        "{s}.subscription_version",
        ("version",),
        insert="UPDATE {s}.subscription_version SET version = $1",
        present="version <> 0",  # every tenant schema has the row; SQLite from the first change
    ),
    Move(
        "documents",
        "rowid",
        "rowid, kind, id, doc",
        "{s}.documents",
        ("seq", "kind", "id", "doc"),
        serial="seq",
    ),
    Move(
        "hosted_contexts",
        "rowid",
        "local_id, document, created_at, owner, tenant",
        "kizuna.hosted_contexts",
        ("local_id", "document", "created_at", "owner", "tenant"),
    ),
    Move(
        "notification_changes",
        "seq",
        "seq, tenant, entity_id, targets, payloads, created_at",
        "kizuna.notification_changes",
        ("seq", "tenant", "entity_id", "targets", "payloads", "created_at"),
        _notification_change,
        json=(3,),
        serial="seq",
    ),
    Move(
        "notification_cursors",
        "",
        "tenant, subscription_id, seq",
        "kizuna.notification_cursors",
        ("tenant", "subscription_id", "seq"),
    ),
    Move(
        "notification_status",
        "",
        "tenant, subscription_id, doc",
        "kizuna.notification_status",
        ("tenant", "subscription_id", "doc"),
    ),
    Move(
        "audit_trail",
        "seq",
        "seq, at, subject, tenant, operation, target, outcome, detail",
        "kizuna.audit_trail",
        ("seq", "at", "subject", "tenant", "operation", "target", "outcome", "detail"),
        serial="seq",
    ),
)

# SQLite tables not copied, and why.
STAYS = {
    "tenants": "made in the target as tenant schemas, first (and checked by name)",
    "geo_rtree": "SQLite's R*Tree of the boxes; PostGIS indexes the boxes made from geo_entries",
    "geo_kind_rtree": "SQLite's R*Tree of the boxes per type, derived from geo_entries and entity_types",
    "geo_kinds": "the codes of geo_kind_rtree's (tenant, geoproperty, type) dimension",
    "store_indexes": "marks SQLite index rebuilds as done",
    "notification_leases": "held by the old node's dispatchers; the new node takes them afresh",
    "changes": "SQLite's change feed; PostgreSQL's is pg_notify",
    "schema_migrations": "each store's own",
    "sqlite_sequence": "SQLite's AUTOINCREMENT counters; the target's sequences are set after",
    "entity_changes": "the console's change log: the new node starts its own (consoles open"
    " across the move should reload: an id of the old log means nothing in the new one)",
    "entity_change_horizon": "the change log's (see entity_changes)",
    "entity_type_counts": "derived from entity_types by triggers; PostgreSQL counts its type index",
}
_SHADOW = r"_(node|rowid|parent)$"
# PostgreSQL tables no move writes to, and why.
PG_ONLY = {
    "schema_migrations": "each store's own",
    "tenants": "written by the target as each tenant schema is made",
    "notification_leases": "the new node's dispatchers'",
    "copied_from": "this copy's watermarks",
    "entity_changes": "the new node's own change log (see STAYS)",
    "entity_change_counter": "the new node's own change log (see STAYS)",
}


class Progress:
    """A line per table on stderr, rewritten in place on a terminal (at most ten times a second),
    else written anew at most every two seconds (a log file)."""

    def __init__(self, out: TextIO = sys.stderr) -> None:
        self.out = out
        self.live = out.isatty()
        self.shown = 0.0

    def __call__(self, table: str, done: int, total: int, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.shown < (0.1 if self.live else 2.0):
            return
        self.shown = now
        width = 30
        filled = width if total == 0 else min(width, width * done // total)
        line = f"{table:<22} [{'#' * filled}{'.' * (width - filled)}] {done:>10,}/{total:,}"
        self.out.write(("\r" + line + ("\n" if final else "")) if self.live else line + "\n")
        self.out.flush()


def migrate(source_url: str, target_url: str, batch_size: int = 5000, stop_after: int | None = None) -> None:
    """Copy (or go on copying) the SQLite store at ``source_url`` into the PostgreSQL store at
    ``target_url``, then check every table; SystemExit on a refusal or a difference."""
    asyncio.run(_migrate(source_url, target_url, batch_size, stop_after, Progress()))


async def _migrate(
    source_url: str, target_url: str, batch_size: int, stop_after: int | None, progress: Progress
) -> None:
    path = sqlite_path(source_url)
    if path == ":memory:" or not Path(path).is_file():
        raise SystemExit(f"kizuna migrate: no SQLite store at {source_url}")
    source = SqliteStore(path)
    target = PostgresStore.from_url(target_url)
    await source.open()  # both at this release's schema first
    try:
        await target.open()
        try:
            conn = await asyncpg.connect(target.dsn)
            try:
                copy = Copy(source.db, conn, str(Path(path).resolve()), batch_size, progress)
                await copy.check_tables()
                await copy.claim_target()
                for tenant in ["", *await source.tenants()]:
                    async with target.write(tenant):
                        pass  # makes the tenant's schema
                started = time.monotonic()
                if not await copy.run(stop_after):
                    raise SystemExit(
                        f"kizuna migrate: stopped after {stop_after} batches; run it again to go on"
                    )
                copied = time.monotonic()
                await copy.verify()
                took = f"copied in {copied - started:.1f} s, checked in {time.monotonic() - copied:.1f} s"
                print(f"kizuna migrate: {took}", file=sys.stderr)
            finally:
                await conn.close()
        finally:
            await target.close()
    finally:
        await source.close()


class Copy:
    """One run of a copy: the source connection, the target connection, and the watermarks."""

    def __init__(
        self, db: sqlite3.Connection, conn: asyncpg.Connection, source: str, batch: int, progress: Progress
    ) -> None:
        self.db = db
        self.conn = conn
        self.source = source
        self.batch = batch
        self.progress = progress

    async def check_tables(self) -> None:
        """Every table of both stores is moved or has a reason not to be."""
        moved = {move.table for move in MOVES}
        tables = {row[0] for row in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        # An R*Tree keeps its nodes in tables of its own: geo_rtree_node, _rowid, _parent.
        unknown = sorted(t for t in tables if t not in moved and re.sub(_SHADOW, "", t) not in STAYS)
        targets = {move.target.split(".", 1)[1] for move in MOVES}
        rows = await self.conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema IN ('kizuna', $1)",
            schema_for(""),
        )
        unknown += sorted(r[0] for r in rows if r[0] not in targets and r[0] not in PG_ONLY)
        if unknown:
            raise SystemExit(
                f"kizuna migrate: no rule for the tables {', '.join(unknown)}; this release cannot copy them"
            )

    async def claim_target(self) -> None:
        """Refuse a target that holds another node's data: it must be empty, or be this copy's."""
        sources = {row[0] for row in await self.conn.fetch("SELECT DISTINCT source FROM kizuna.copied_from")}
        if sources - {self.source}:
            raise SystemExit(
                f"kizuna migrate: the target is a copy of {', '.join(sorted(sources))}, not of this store"
            )
        if not sources and await self.conn.fetchval(HOLDS_DATA):
            raise SystemExit("kizuna migrate: the target holds a node's data; copy into an empty database")
        # Claimed before anything is written, so that a run interrupted from here on may go on.
        await self.conn.execute(
            "INSERT INTO kizuna.copied_from (source, step, last, done) VALUES ($1, 'tenants', 0, true)"
            " ON CONFLICT DO NOTHING",
            self.source,
        )

    async def run(self, stop_after: int | None) -> bool:
        """Copy what is left; False when ``stop_after`` batches were copied before the end."""
        batches = 0
        for move in MOVES:
            state = await self.conn.fetchrow(
                "SELECT last, done FROM kizuna.copied_from WHERE source = $1 AND step = $2",
                self.source,
                move.table,
            )
            last, done = (0, False) if state is None else (state[0], state[1])
            total = self.db.execute(f"SELECT count(*) FROM {move.table}").fetchone()[0]
            copied = total if done or not move.key else self._count(move, last)
            # The next batch is read and converted in a thread while PostgreSQL takes this one:
            # the two halves of the work then run on two cores.
            upcoming = None if done else self._read_ahead(move, last)
            try:
                while upcoming is not None:
                    if stop_after is not None and batches >= stop_after:
                        return False
                    high, rows = await upcoming
                    done = high is None
                    upcoming = None if done else self._read_ahead(move, high)
                    async with self.conn.transaction():
                        if rows:
                            await self._write(move, rows)
                        await self.conn.execute(
                            "INSERT INTO kizuna.copied_from (source, step, last, done)"
                            " VALUES ($1, $2, $3, $4)"
                            " ON CONFLICT (source, step) DO UPDATE SET last = $3, done = $4",
                            self.source,
                            move.table,
                            last if high is None else high,
                            done,
                        )
                        if done and move.serial:
                            await self._continue_sequences(move)
                    last = last if high is None else high
                    copied += len(rows)
                    batches += 1
                    self.progress(move.table, copied, total)
            finally:
                if upcoming is not None:  # the thread must be done with the connection first
                    await asyncio.wait([upcoming])
            self.progress(move.table, copied, total, final=True)
        return True

    def _read_ahead(self, move: Move, last: int) -> asyncio.Task[tuple[int | None, list[Row]]]:
        return asyncio.create_task(asyncio.to_thread(self._batch, move, last))

    def _count(self, move: Move, last: int) -> int:
        return self.db.execute(
            f"SELECT count(*) FROM {move.table} WHERE {move.key} <= ?", (last,)
        ).fetchone()[0]

    def _batch(self, move: Move, last: int) -> tuple[int | None, list[Row]]:
        """The next range of keys after ``last`` and its rows as target rows (with the tenant
        first for a tenant table); (None, rows) for the last one."""
        tenant = "tenant, " if move.per_tenant else ""
        if not move.key:
            rows = self.db.execute(f"SELECT {tenant}{move.select} FROM {move.table}").fetchall()
            return None, list(self._rows(move, rows))
        high = self.db.execute(
            f"SELECT max(k) FROM (SELECT {move.key} AS k FROM {move.table} WHERE {move.key} > ?"
            f" ORDER BY {move.key} LIMIT ?)",
            (last, self.batch),
        ).fetchone()[0]
        if high is None:
            return None, []
        rows = self.db.execute(
            f"SELECT {tenant}{move.select} FROM {move.table} WHERE {move.key} > ? AND {move.key} <= ?",
            (last, high),
        ).fetchall()
        return high, list(self._rows(move, rows))

    @staticmethod
    def _rows(move: Move, rows: Iterable[Row]) -> Iterable[Row]:
        make = move.row
        if move.per_tenant:
            return ((row[0], *make(*row[1:])) for row in rows)
        return (make(*row) for row in rows)

    async def _write(self, move: Move, rows: list[Row]) -> None:
        groups: dict[str, list[Row]] = {}
        if move.per_tenant:
            for row in rows:
                groups.setdefault(row[0], []).append(row[1:])
        else:
            groups[""] = rows
        for tenant, group in groups.items():
            schema = schema_for(tenant) if move.per_tenant else "kizuna"
            if move.insert:
                await self.conn.executemany(move.insert.format(s=f'"{schema}"'), group)
                continue
            await self.conn.copy_records_to_table(
                move.target.split(".", 1)[1], schema_name=schema, columns=list(move.columns), records=group
            )

    async def _continue_sequences(self, move: Move) -> None:
        for schema in await self._schemas(move):
            table = f'"{schema}".{move.target.split(".", 1)[1]}'
            await self.conn.execute(
                f"SELECT setval(pg_get_serial_sequence($1, $2), coalesce(max({move.serial}), 0) + 1, false)"
                f" FROM {table}",
                table,
                move.serial,
            )

    async def _schemas(self, move: Move) -> list[str]:
        if not move.per_tenant:
            return ["kizuna"]
        return [row[0] for row in await self.conn.fetch("SELECT schema_name FROM kizuna.tenants")]

    # -- the check -------------------------------------------------------------------------------

    async def verify(self) -> None:
        """Count and checksum every table on both sides; SystemExit naming the tables that differ."""
        differ = []
        names = sorted(row[0] for row in self.db.execute("SELECT name FROM tenants"))
        stored = sorted(
            row[0] for row in await self.conn.fetch("SELECT name FROM kizuna.tenants WHERE name <> ''")
        )
        if names != stored:
            differ.append(f"tenants: {len(names)} in SQLite, {len(stored)} in PostgreSQL")
        for move in MOVES:
            # The source's side in a thread, while the target's rows come over the network.
            ours, theirs = await asyncio.gather(
                asyncio.to_thread(self._source_digest, move), self._target_digest(move)
            )
            if ours != theirs:
                differ.append(
                    f"{move.table}: {ours[0]} rows in SQLite (sha256 {ours[1][:16]}),"
                    f" {theirs[0]} in PostgreSQL (sha256 {theirs[1][:16]})"
                )
            else:
                print(f"{move.table:<22} {ours[0]:>10,} rows  sha256 {ours[1][:16]}  same", file=sys.stderr)
        if differ:
            raise SystemExit("kizuna migrate: the copy differs from the source:\n  " + "\n  ".join(differ))

    def _source_digest(self, move: Move) -> tuple[int, str]:
        tenant = "tenant, " if move.per_tenant else ""
        rows = self.db.execute(f"SELECT {tenant}{move.select} FROM {move.table}")
        return _digest(self._rows(move, rows), move, move.per_tenant)

    async def _target_digest(self, move: Move) -> tuple[int, str]:
        table = move.target.split(".", 1)[1]
        columns = move.read or ", ".join(move.columns)
        if not move.per_tenant:
            rows = await self.conn.fetch(f"SELECT {columns} FROM kizuna.{table}")
            return _digest((tuple(r) for r in rows), move, False)
        found: list[Row] = []
        for name, schema in await self.conn.fetch("SELECT name, schema_name FROM kizuna.tenants"):
            rows = await self.conn.fetch(f'SELECT {columns} FROM "{schema}".{table} WHERE {move.present}')
            found.extend((name, *r) for r in rows)
        return _digest(found, move, True)


def _digest(rows: Iterable[Row], move: Move, tenant_first: bool) -> tuple[int, str]:
    """(count, SHA-256 of the rows' canonical forms in the order of their own digests)."""
    shift = 1 if tenant_first else 0
    json_at = {i + shift for i in move.json}
    digests = sorted(hashlib.sha256(_canonical(row, json_at)).digest() for row in rows)
    whole = hashlib.sha256()
    for digest in digests:
        whole.update(digest)
    return len(digests), whole.hexdigest()


def _canonical(row: Row, json_at: set[int]) -> bytes:
    if not json_at:
        return orjson.dumps(row, default=_plain)
    values = list(row)
    for i in json_at:
        # jsonb keeps no key order and spells numbers its own way: compare the JSON it holds,
        # and the raw bytes beside it (JSON jsonb cannot hold) likewise.
        for at in (i, i + 1):
            if at < len(values) and isinstance(values[at], str | bytes):
                values[at] = orjson.loads(values[at])
    return orjson.dumps(values, default=_plain, option=orjson.OPT_SORT_KEYS)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value.normalize())
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(type(value))
