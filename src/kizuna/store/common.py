"""What the SQL stores share: how entities become index rows and history rows, independent of
the SQL dialect that stores them (see :mod:`kizuna.store.sqlite` and :mod:`kizuna.store.postgres`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

import orjson

from kizuna import query as ql
from kizuna import times
from kizuna.store import (
    ChangeListener,
    Entity,
    EntityQuery,
    OutboxRow,
    QueryResult,
    WriteObserver,
)

log = logging.getLogger("kizuna.store")
_T = TypeVar("_T")

# Entity members that are not attributes (never q targets; ``attrs`` may not name them).
CORE = frozenset({"id", "type", "scope", "createdAt", "modifiedAt", "deletedAt"})
# The kinds of attr_values rows: scalars q compares with, and the two marker rows.
NUMBER, STRING, BOOLEAN, NO_SCALAR, NO_INSTANCE = 0, 1, 2, 3, 4
INT64 = (-(2**63), 2**63 - 1)

# One entity write of a transaction for the change log, written when the transaction ends:
# (entity id, op, types, the entity as it was for a delete, and its owner then).
PendingChange = tuple[str, str, list[str], Entity | None, str | None]

TIME_COLUMN = {
    "observedAt": "observed_at",
    "createdAt": "created_at",
    "modifiedAt": "modified_at",
    "deletedAt": "deleted_at",
}


def tell(listeners: Sequence[ChangeListener], topic: str, key: str) -> None:
    """Pass one change to every listener; one that fails must not keep it from the others."""
    for listener in listeners:
        try:
            listener(topic, key)
        except Exception:
            log.exception("a change listener failed on %s %s", topic, key)


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel a store's background task (its change-feed follower) and wait until it is over."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class TimedWrites:
    """Both stores time their write transactions alike (:meth:`kizuna.store.VitalsStore.time_writes`)."""

    _write_observer: WriteObserver | None = None

    def time_writes(self, observer: WriteObserver) -> None:
        self._write_observer = observer

    @asynccontextmanager
    async def _timed(self, transaction: AbstractAsyncContextManager[_T]) -> AsyncIterator[_T]:
        started = time.perf_counter()
        try:
            async with transaction as tx:
                yield tx
        finally:
            if self._write_observer is not None:
                self._write_observer(time.perf_counter() - started)


def extended_temporal_entity(
    current: dict[str, Any], types: Sequence[str], scope: list[str] | None
) -> tuple[list[str], list[str] | None] | None:
    """The types and scope a temporal entity has once a write adds ``types`` (and replaces its
    scope, if ``scope`` is given); None when that changes nothing."""
    merged = current["type"] + [t for t in types if t not in current["type"]]
    new_scope = current.get("scope") if scope is None else scope
    if merged == current["type"] and new_scope == current.get("scope"):
        return None
    return merged, new_scope


def new_history_instance(instance: dict[str, Any]) -> tuple[str, str]:
    """The instanceId a recorded instance gets, and the time its temporal entity is touched at."""
    now = instance.get("modifiedAt") or instance.get("deletedAt") or instance.get("createdAt") or ""
    return f"urn:ngsi-ld:attribute:instance:{time_ordered_uuid()}", now


def time_ordered_uuid() -> str:
    """An RFC 9562 version 7 UUID (milliseconds since 1970, then 74 random bits). Instance ids
    made later sort later, so the unique index on them grows at its right edge: the instances of
    one write dirty one page of it, where random (version 4) ids dirtied one page each, and
    every dirty page is written to the WAL at commit. The bits need to be unique, not secret:
    ``random`` (reseeded in each forked worker) costs a fifth of ``os.urandom``'s system call."""
    value = (time.time_ns() // 1_000_000) << 80 | 0x7 << 76 | random.getrandbits(12) << 64
    value |= 0b10 << 62 | random.getrandbits(62)
    hex_ = f"{value:032x}"
    return f"{hex_[:8]}-{hex_[8:12]}-{hex_[12:16]}-{hex_[16:20]}-{hex_[20:]}"


TemporalTouch = tuple[str, tuple[str, ...], tuple[str, ...] | None]


class TouchesOnce:
    """What both stores' history writes share: one write records many instances of one entity,
    and its temporal entity needs touching once, not once per instance. A second identical
    touch in the same transaction changes nothing, unless the temporal entity was changed in
    between, so the store's ``touch_temporal_entity`` and ``delete_history`` empty ``touched``.
    ``append_history`` is ``append_histories`` of one instance, on both stores."""

    __slots__ = ()
    touched: set[TemporalTouch]

    async def touch_temporal_entity(
        self, entity_id: str, types: list[str], scope: list[str] | None, now: str
    ) -> bool:
        raise NotImplementedError

    async def touch_once(self, entity_id: str, types: list[str], scope: list[str] | None, now: str) -> None:
        touch = entity_id, tuple(types), None if scope is None else tuple(scope)
        if touch not in self.touched:
            await self.touch_temporal_entity(entity_id, types, scope, now)
            self.touched.add(touch)

    async def append_histories(
        self,
        entity_id: str,
        types: list[str],
        instances: Sequence[tuple[str, dict[str, Any]]],
        *,
        scope: list[str] | None = None,
    ) -> list[str]:
        raise NotImplementedError

    async def append_history(
        self,
        entity_id: str,
        types: list[str],
        attribute: str,
        instance: dict[str, Any],
        *,
        scope: list[str] | None = None,
    ) -> str:
        return (await self.append_histories(entity_id, types, [(attribute, instance)], scope=scope))[0]


VALUE_MEMBERS = ("value", "object", "languageMap", "vocab", "json", "valueList", "objectList")


def scalar_key(leaf: Any) -> tuple[int, Any] | None:
    """(kind, value) of one leaf a q expression may compare with, or None."""
    if isinstance(leaf, bool):
        return (BOOLEAN, int(leaf))
    if isinstance(leaf, int):
        return (NUMBER, leaf if INT64[0] <= leaf <= INT64[1] else float(leaf))
    if isinstance(leaf, float):
        return (NUMBER, leaf)
    if isinstance(leaf, str):
        return (STRING, leaf)
    return None


def literal(value: Any) -> tuple[int, Any] | None:
    """(kind, value) of a q literal, or None when SQL cannot compare it as q does."""
    if isinstance(value, ql.Uri):
        return (STRING, value.value)
    if isinstance(value, bool):
        return (BOOLEAN, int(value))
    if isinstance(value, int):
        return (NUMBER, value) if INT64[0] <= value <= INT64[1] else None
    if isinstance(value, float):
        return (NUMBER, value)
    if isinstance(value, str):
        return (STRING, value)
    return None  # DateTime, Date, Time: compared after parsing, in Python


def attribute_rows(entity: dict[str, Any]) -> list[tuple[str, int, Any, int]]:
    """(attribute, kind, value, instance number) of every attr_values row of one entity: the
    scalar leaves of each instance (:func:`kizuna.query.instance_leaves`, so that SQL and
    :func:`kizuna.query.matches` see the same values), a NO_SCALAR marker for an instance
    without any, a NO_INSTANCE marker for a key without any valued instance."""
    rows: list[tuple[str, int, Any, int]] = []
    for key in entity:
        if key in CORE:
            continue
        targets = ql.instance_leaves(entity, key)
        for inst, leaves in enumerate(targets):
            keys = {k for leaf in leaves if (k := scalar_key(leaf)) is not None}
            if not keys:
                rows.append((key, NO_SCALAR, 0, inst))
            rows.extend((key, kind, val, inst) for kind, val in keys)
        if not targets:
            rows.append((key, NO_INSTANCE, 0, 0))
    return rows


def _positions(node: Any, xs: list[float], ys: list[float]) -> None:
    if not isinstance(node, list) or not node:
        return
    head = node[0]
    if len(node) >= 2 and all(isinstance(n, int | float) and not isinstance(n, bool) for n in node[:2]):
        xs.append(float(head))
        ys.append(float(node[1]))
        return
    for child in node:
        _positions(child, xs, ys)


def geometry_box(value: dict[str, Any], xs: list[float], ys: list[float]) -> None:
    """Add the positions of a GeoJSON geometry (collections included) to ``xs``/``ys``."""
    _positions(value.get("coordinates"), xs, ys)
    for part in value.get("geometries") or ():
        if isinstance(part, dict):
            geometry_box(part, xs, ys)


def geometry_boxes(
    entity: dict[str, Any],
) -> list[tuple[str, float, float, float, float, list[dict[str, Any]]]]:
    """(property, min_x, min_y, max_x, max_y, shapes) per property of ``entity`` holding GeoJSON:
    the box around all its instances, and their GeoJSON values (what the exact check of a
    geoQuery reads instead of the document)."""
    boxes = []
    for key, instances in entity.items():
        if key in CORE or not isinstance(instances, list):
            continue
        xs: list[float] = []
        ys: list[float] = []
        found = shapes(instances)
        for shape in found:
            geometry_box(shape, xs, ys)
        if xs:
            boxes.append((key, min(xs), min(ys), max(xs), max(ys), found))
    return boxes


def shapes(instances: Any) -> list[dict[str, Any]]:
    """The GeoJSON candidates of an attribute: the dict values of its instances, in order."""
    if not isinstance(instances, list):
        return []
    return [i["value"] for i in instances if isinstance(i, dict) and isinstance(i.get("value"), dict)]


_REGEX_SPECIAL = frozenset("\\.^$*+?{}[]|()")


def by_types_only(query: EntityQuery) -> bool:
    """Whether ``query`` selects by type and nothing else: the type index alone answers its
    pages, and a per-type count kept on write its count."""
    return (
        query.types is not None
        and query.predicate is None
        and query.access is None
        and not any((query.ids, query.id_pattern, query.q, query.geo, query.scope, query.attrs))
    )


def literal_prefix(pattern: str) -> str:
    """The literal text every match of ``pattern`` starts with when it is anchored by ``^`` (and
    has no top-level alternation or inline flags), else ''."""
    if not pattern.startswith("^") or "|" in pattern or "(?" in pattern:
        return ""
    prefix = []
    for char in pattern[1:]:
        if char in _REGEX_SPECIAL:
            if char in "*?{" and prefix:
                prefix.pop()  # the last literal may be repeated zero times
            break
        prefix.append(char)
    text = "".join(prefix)
    return text if text and ord(text[-1]) not in (0xD7FF, 0x10FFFF) else ""


def epoch(text: Any) -> float | None:
    """POSIX seconds of an ISO 8601 DateTime (naive means UTC); None if absent or unparsable."""
    if not isinstance(text, str):
        return None
    try:
        return times.epoch(text)
    except ValueError:
        return None


def history_columns(instance: dict[str, Any]) -> tuple[Any, ...]:
    """(dataset_id, observed_at, created_at, modified_at, deleted_at, value_number, value_key,
    doc) of an attribute_history row for one canonical instance; ``doc`` is orjson bytes."""
    doc = {k: v for k, v in instance.items() if k != "instanceId"}
    value: Any = None
    for member in VALUE_MEMBERS:
        if member in doc:
            value = doc[member]
            break
    number = float(value) if isinstance(value, (int, float)) else None
    created = epoch(doc.get("createdAt"))
    modified = epoch(doc.get("modifiedAt"))
    deleted = epoch(doc.get("deletedAt"))
    fallback = created or modified or deleted or 0.0
    return (
        doc.get("datasetId"),
        epoch(doc.get("observedAt")),
        fallback if created is None else created,
        fallback if modified is None else modified,
        deleted,
        number,
        orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode(),
        orjson.dumps(doc),
    )


# -- what both stores' reads make of their rows ----------------------------------------------------

TEMPORAL_COLUMNS = "id, types, scope, created_at, modified_at"


def temporal_row(entity_id: str, types: list[str], scope: str | None, created: str, modified: str) -> Entity:
    """The core members of a temporal entity from its row (``scope`` as JSON text)."""
    entity: Entity = {"id": entity_id, "type": types}
    if scope is not None:
        entity["scope"] = orjson.loads(scope)
    entity["createdAt"] = created
    entity["modifiedAt"] = modified
    return entity


# What a subscription's deletion (or a dispatcher's drop) forgets with it; its cursor is moved
# past every queued change instead (see :func:`change_rows`).
NOTIFICATION_TABLES = ("notification_leases", "notification_status")


def change_rows(rows: Sequence[tuple[str, str, str, bytes]]) -> list[tuple[str, bytes, bytes]]:
    """The outbox rows of queued notifications: one per entity change, not one per subscription,
    so that a write costs the same whatever the number of subscriptions it matches.

    Each (entity id, targets, payloads) row holds ``targets`` (orjson: subscription id ->
    [trigger, index into payloads]) and ``payloads`` (an orjson array of the distinct payloads,
    joined as bytes: matching shares one payload among the subscriptions with the same trigger).
    Consecutive notifications of one entity share a row; a subscription notified twice of it
    starts a new row, so that each row holds at most one notification per subscription."""
    out: list[tuple[str, bytes, bytes]] = []
    entity_id = ""
    targets: dict[str, tuple[str, int]] = {}
    payloads: dict[bytes, int] = {}

    def flush() -> None:
        if targets:
            out.append((entity_id, orjson.dumps(targets), b"[" + b",".join(payloads) + b"]"))

    for sub_id, entity, trigger, payload in rows:
        if entity != entity_id or sub_id in targets:
            flush()
            entity_id, targets, payloads = entity, {}, {}
        targets[sub_id] = (trigger, payloads.setdefault(payload, len(payloads)))
    flush()
    return out


def outbox_rows(tenant: str, subscription_id: str, rows: Iterable[Sequence[Any]]) -> list[OutboxRow]:
    """One subscription's OutboxRows from (seq, entity_id, target, payloads, created_at) change
    rows (see :func:`change_rows`) that name it; ``target`` is its [trigger, index] of them."""
    out = []
    for seq, entity_id, (trigger, index), payloads, created in rows:
        payload = orjson.loads(payloads)[index]
        out.append(OutboxRow(seq, tenant, subscription_id, entity_id, trigger, payload, created))
    return out


class TargetSets:
    """The outbox changes' ``targets`` by their hash (a column beside them), parsed once per
    process. A change's targets name up to every subscription (~5 KB with 100): reading them
    again for each subscription's read of its rows made delivery on PostgreSQL slower than with a
    row per notification. A subscription's read skips the hashes known not to name it and looks
    up its [trigger, index] here; the targets of a hash not seen yet are read once."""

    LIMIT = 1024  # distinct targets kept; all are forgotten past it (they are read again)

    def __init__(self) -> None:
        self._by_hash: dict[bytes, dict[str, list[Any]]] = {}

    def __contains__(self, digest: bytes) -> bool:
        return digest in self._by_hash

    def learn(self, rows: Iterable[tuple[bytes, str | bytes]]) -> None:
        for digest, targets in rows:
            if len(self._by_hash) >= self.LIMIT:
                self._by_hash.clear()
            self._by_hash[digest] = orjson.loads(targets)

    def skipped(self, subscription_id: str) -> list[bytes]:
        """The known hashes whose targets do not name the subscription."""
        return [digest for digest, targets in self._by_hash.items() if subscription_id not in targets]

    def named(
        self, subscription_id: str, rows: Sequence[Sequence[Any]]
    ) -> tuple[list[tuple[Any, ...]], bool]:
        """Of (seq, entity_id, hash, payloads, created_at) rows in seq order, those naming the
        subscription, with its target in place of the hash, up to the first row of an unknown hash
        (a later row must not be taken before it: the cursor would pass it); and whether all were
        known."""
        out = []
        for seq, entity_id, digest, payloads, created in rows:
            targets = self._by_hash.get(digest)
            if targets is None:
                return out, False
            target = targets.get(subscription_id)
            if target is not None:
                out.append((seq, entity_id, target, payloads, created))
        return out, True


class Paging:
    """The page and count of a query whose candidates SQL cannot decide alone: fed the candidate
    documents in growing batches (in pk order), it keeps those that pass ``residual`` and then
    the exact geo check (on a whole batch at once, vectorised for points), and says when the
    page is full and no count is wanted, so that the caller stops reading."""

    def __init__(self, query: EntityQuery, residual: Callable[[Entity], bool] | None) -> None:
        self.query = query
        self.residual = residual
        self.result = QueryResult()
        self.matched = 0
        self.end = None if query.limit is None else query.offset + query.limit

    def add(self, entities: list[Entity]) -> bool:
        """Take one batch; True when no further batch can change the result."""
        query = self.query
        if self.residual is not None:
            entities = [entity for entity in entities if self.residual(entity)]
        if query.geo is not None:
            keep = ql.geo_matches_many(query.geo, query.geoproperty or "location", entities)
            entities = [entity for entity, ok in zip(entities, keep, strict=True) if ok]
        for entity in entities:
            if self.matched >= query.offset and (self.end is None or self.matched < self.end):
                self.result.entities.append(entity)
            self.matched += 1
        return not query.count and self.end is not None and self.matched >= self.end

    def done(self) -> QueryResult:
        if self.query.count:
            self.result.total = self.matched
        return self.result


def shapes_page(query: EntityQuery, rows: Sequence[tuple[int, Any]]) -> tuple[list[int], int | None]:
    """For a query where only the exact geo check is left: the pks of the page among the
    (pk, GeoJSON shapes) candidates kept in the geo index, and the count (None unless asked)."""
    assert query.geo is not None
    keep = ql.geo_matches_values(query.geo, [found for _, found in rows])
    return page_of(query, [pk for (pk, _), ok in zip(rows, keep, strict=True) if ok])


def page_of(query: EntityQuery, matched: list[int]) -> tuple[list[int], int | None]:
    """The pks of the query's page among all those it ``matched`` in order, and the count (None
    unless asked)."""
    end = None if query.limit is None else query.offset + query.limit
    return matched[query.offset : end], len(matched) if query.count else None


# -- q to SQL ----------------------------------------------------------------------------------------

Sql = tuple[str, list[Any]]


SQL_ORDER = {"==": "=", ">": ">", ">=": ">=", "<": "<", "<=": "<="}


class QCompiler:
    """q terms as conditions on ``e.pk`` over the ``attr_values`` rows of :func:`attribute_rows`.

    The two stores compile the same AST with the same coverage and differ only in where the rows
    are (:meth:`select`, ``table``), how a literal is typed (:meth:`column`, :meth:`param`) and
    whether ``~=`` can run in SQL (``regexp``: SQLite calls RE2 through :mod:`kizuna.patterns`,
    PostgreSQL's regular expressions are another dialect)."""

    table = "attr_values"
    regexp = False

    def select(self, attribute: str, probe: bool) -> Sql:
        """The opening of a test on the rows of ``attribute``, up to ``AND`` before the value test."""
        raise NotImplementedError

    def closing(self, probe: bool) -> str:
        """What ends a test that :meth:`select` opened."""
        return ")"

    def may_drive(self, expr: ql.QExpr) -> bool:
        """Whether a compiled q test may drive a query (see :func:`compile_q`)."""
        return True

    def column(self, kind: int, alias: str) -> str:
        raise NotImplementedError

    def param(self, lit: tuple[int, Any]) -> Any:
        raise NotImplementedError

    def term(self, expr: ql.QExpr, probe: bool = False) -> Sql | None:
        """A condition on ``e.pk`` equivalent to ``expr``, or None if SQL cannot decide it."""
        if isinstance(expr, ql.QAnd | ql.QOr):
            parts = [self.term(term, probe) for term in expr.terms]
            if any(part is None for part in parts):
                return None
            joiner = " AND " if isinstance(expr, ql.QAnd) else " OR "
            return _joined(joiner, parts)  # type: ignore[arg-type]
        path = getattr(expr, "path", None)
        if (
            path is None
            or path.attribute in CORE
            or path.sub_attributes
            or path.metadata is not None
            or path.compound
        ):
            return None
        select, scope = self.select(path.attribute, probe)
        end = self.closing(probe)
        if isinstance(expr, ql.Exists | ql.NotExists):
            sql = select + f"v.kind < {NO_INSTANCE}" + end
            return ("NOT " + sql if isinstance(expr, ql.NotExists) else sql, scope)
        if isinstance(expr, ql.Pattern):
            if expr.negated or not self.regexp:
                return None
            return (select + f"v.kind = {STRING} AND regexp(?, v.val)" + end, [*scope, expr.regex])
        if not isinstance(expr, ql.Comparison):
            return None
        if expr.op in ("==", "!="):
            alias = "v" if expr.op == "==" else "b"
            condition = self.equality(expr.value, alias)
            if condition is None:
                return None
            if expr.op == "==":
                return (select + condition[0] + end, [*scope, *condition[1]])
            # Per instance: some instance of the attribute has no value equal to the operand.
            return (
                select + f"v.kind < {NO_INSTANCE} AND NOT EXISTS (SELECT 1 FROM {self.table} b"
                " WHERE b.pk = v.pk AND b.attribute = v.attribute AND b.inst = v.inst AND "
                + condition[0]
                + ")"
                + end,
                [*scope, *condition[1]],
            )
        lit = literal(expr.value)
        if lit is None or isinstance(expr.value, ql.Uri):
            return None
        return (
            select + f"v.kind = ? AND {self.column(lit[0], 'v')} {SQL_ORDER[expr.op]} ?" + end,
            [*scope, lit[0], self.param(lit)],
        )

    def equality(self, operand: Any, alias: str) -> Sql | None:
        """The condition on one attr_values row ``alias`` that ``==`` (with a list or range) holds."""
        if isinstance(operand, ql.ValueList):
            parts = [self.equality(item, alias) for item in operand.values]
            if any(part is None for part in parts):
                return None
            return _joined(" OR ", parts)  # type: ignore[arg-type]
        if isinstance(operand, ql.Range):
            low, high = literal(operand.low), literal(operand.high)
            if low is None or high is None or ql.Uri in (type(operand.low), type(operand.high)):
                return None
            if low[0] != high[0]:
                return ("FALSE", [])  # no value is both a number and a string
            column = self.column(low[0], alias)
            return (
                f"({alias}.kind = ? AND {column} >= ? AND {column} <= ?)",
                [low[0], self.param(low), self.param(high)],
            )
        lit = literal(operand)
        if lit is None:
            return None
        return (f"({alias}.kind = ? AND {self.column(lit[0], alias)} = ?)", [lit[0], self.param(lit)])


def _joined(joiner: str, parts: Sequence[Sql]) -> Sql:
    return "(" + joiner.join(sql for sql, _ in parts) + ")", [p for _, params in parts for p in params]


def compile_q(compiler: QCompiler, q: ql.QExpr, *, drive: bool) -> tuple[Sql | None, ql.QExpr | None, bool]:
    """SQL for as much of ``q`` as compiles, the q left for Python (None: nothing left), and
    whether the SQL has a test that drives the query.

    With ``drive``, the conjunct most likely to select few entities (by its operator, see
    :func:`selectivity`, among those the compiler lets drive) is the pk list to start from;
    every other conjunct is compiled as a probe of the candidates it gives (on SQLite one index
    lookup each, instead of reading every entity it holds for). Without, every test probes.
    Both stores choose alike, each compiler saying which tests its database drives well."""
    terms = q.terms if isinstance(q, ql.QAnd) else (q,)
    compiled: list[ql.QExpr] = []
    left: list[ql.QExpr] = []
    for term in terms:
        (left if compiler.term(term, probe=True) is None else compiled).append(term)
    rest = None if not left else left[0] if len(left) == 1 else ql.QAnd(tuple(left))
    if not compiled:
        return None, rest, False
    driver = None
    if drive:
        ranked = [
            (rank, n)
            for n, term in enumerate(compiled)
            if (rank := selectivity(term)) is not None and compiler.may_drive(term)
        ]
        driver = min(ranked)[1] if ranked else None
    parts = [compiler.term(term, probe=n != driver) for n, term in enumerate(compiled)]
    sql = " AND ".join(part[0] for part in parts if part is not None)
    return (sql, [p for part in parts if part is not None for p in part[1]]), rest, driver is not None


def selectivity(expr: ql.QExpr) -> int | None:
    """How few entities a compiled q test is likely to select (lower: fewer), from its operator
    alone; None when it cannot drive a query (a negation selects from outside any index range)."""
    if isinstance(expr, ql.QAnd):
        ranks = [r for term in expr.terms if (r := selectivity(term)) is not None]
        return min(ranks) if ranks else None
    if isinstance(expr, ql.QOr):
        ranks = [selectivity(term) for term in expr.terms]
        return None if any(r is None for r in ranks) else max(r for r in ranks if r is not None) + 1
    if isinstance(expr, ql.Comparison):
        if expr.op == "==":
            if isinstance(expr.value, ql.Range):
                return 2
            return 1 if isinstance(expr.value, ql.ValueList) else 0
        return 5 if expr.op == "!=" else 3
    if isinstance(expr, ql.Pattern):
        return 4
    if isinstance(expr, ql.Exists):
        return 5
    return None
