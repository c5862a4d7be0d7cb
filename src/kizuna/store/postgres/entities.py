"""Entities: reads, the write half of a transaction (one statement writes an entity with all its
index rows), and the selection SQL that compiles an :class:`~kizuna.store.EntityQuery`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import asyncpg

from kizuna import query as ql
from kizuna.errors import AlreadyExists
from kizuna.patterns import compile_pattern
from kizuna.store import (
    NO_SCOPE,
    AccessFilter,
    Entity,
    EntityQuery,
    QueryResult,
)
from kizuna.store.common import (
    BOOLEAN,
    CORE,
    NUMBER,
    STRING,
    Paging,
    QCompiler,
    Sql,
    attribute_rows,
    by_types_only,
    compile_q,
    geometry_boxes,
    literal_prefix,
    selectivity,
    shapes_page,
)
from kizuna.store.postgres.connection import (
    _LOST,
    _PAGE,
    PgBase,
    PgTransaction,
    _guarded,
    _numbered,
    _pack,
    _unavailable,
    _unpack,
)


class PgEntities(PgBase):
    """The entity reads of :class:`~kizuna.store.postgres.PostgresStore`."""

    # -- reads -----------------------------------------------------------------------------------

    @_guarded
    async def get_entity(self, tenant: str, entity_id: str) -> Entity | None:
        schema = await self._schema(tenant)
        if schema is None:
            return None
        row = await self.pool.fetchrow(f"SELECT doc, raw FROM {schema}.entities WHERE id = $1", entity_id)
        return _unpack(row[0], row[1]) if row else None

    @_guarded
    async def get_owned_entity(self, tenant: str, entity_id: str) -> tuple[Entity, str | None] | None:
        schema = await self._schema(tenant)
        if schema is None:
            return None
        row = await self.pool.fetchrow(
            f"SELECT doc, raw, owner FROM {schema}.entities WHERE id = $1", entity_id
        )
        return (_unpack(row[0], row[1]), row[2]) if row else None

    @_guarded
    async def query_entities(self, tenant: str, query: EntityQuery) -> QueryResult:
        result = QueryResult(total=0 if query.count else None)
        schema = await self._schema(tenant)
        if schema is None:
            return result
        where, params, residual = _plan(schema, query)
        async with self._planned() as conn:
            if residual is None and query.geo is not None:
                shaped = await self._query_by_shapes(conn, schema, query)
                if shaped is not None:
                    return shaped
            if residual is None and query.geo is None:
                if by_types_only(query):
                    # A type listing pages and counts on the type index alone; only the documents
                    # of the page are read.
                    assert query.types is not None
                    distinct = "DISTINCT " if len(query.types) > 1 else ""
                    pks = f"SELECT {distinct}pk FROM {schema}.entity_types WHERE type = ANY($1::text[])"
                    page_sql = (
                        f"SELECT e.doc, e.raw FROM {schema}.entities e"
                        f" WHERE e.pk IN ({pks} ORDER BY pk LIMIT $2 OFFSET $3) ORDER BY e.pk"
                    )
                    count_sql = (
                        f"SELECT count({distinct}pk) FROM {schema}.entity_types WHERE type = ANY($1::text[])"
                    )
                    params = [list(query.types)]
                else:
                    # The page's keys first, then only its documents: PostgreSQL would otherwise
                    # read the document of every candidate before sorting and cutting the page.
                    page_sql = _numbered(
                        f"SELECT doc, raw FROM {schema}.entities WHERE pk IN (SELECT e.pk FROM"
                        f" {schema}.entities e WHERE {where} ORDER BY e.pk LIMIT ? OFFSET ?) ORDER BY pk"
                    )
                    count_sql = _numbered(f"SELECT count(*) FROM {schema}.entities e WHERE {where}")
                if query.limit != 0:
                    rows = await conn.fetch(page_sql, *params, query.limit, query.offset)
                    result.entities = [_unpack(doc, raw) for doc, raw in rows]
                if query.count:
                    result.total = await conn.fetchval(count_sql, *params)
                return result
            paging = Paging(query, residual)
            sql = _numbered(f"SELECT e.doc, e.raw FROM {schema}.entities e WHERE {where} ORDER BY e.pk")
            cursor = await conn.cursor(sql, *params)
            size = 64
            while batch := await cursor.fetch(size):  # candidates in growing batches
                size = min(2 * size, _PAGE)
                if paging.add([_unpack(doc, raw) for doc, raw in batch]):
                    break
            return paging.done()

    @asynccontextmanager
    async def _planned(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection in a read-only transaction whose statements are planned for their
        values. asyncpg prepares every statement, and from its sixth run PostgreSQL may keep a
        generic plan, blind to them: a q on a value half the entities hold went from 0.8 ms to
        23 ms (a hash of every match, not a merge that stops at the page). A query's planning
        costs far less; retrieves by id and writes, whose one plan fits all, keep the default."""
        async with self.pool.acquire() as conn, conn.transaction(readonly=True):
            await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
            yield conn

    async def _query_by_shapes(
        self, conn: asyncpg.Connection, schema: str, query: EntityQuery
    ) -> QueryResult | None:
        """A query where only the exact geo check is left to Python: it runs on the shapes kept
        in the geo index, and only the documents of the page are read. None if some candidate
        was indexed before shapes were kept (then the documents must be read). The box is tested
        on the geo index rows that give the shapes, not looked up a second time."""
        assert query.geo is not None
        where, params, _ = _plan(schema, query, shapes=True)
        rows = await conn.fetch(
            _numbered(
                f"SELECT e.pk, g.shapes FROM {schema}.geo_index g JOIN {schema}.entities e ON e.pk = g.pk"
                f" WHERE {where} ORDER BY e.pk"
            ),
            *params,
        )
        if any(found is None for _, found in rows):
            return None
        page, total = shapes_page(query, rows)
        result = QueryResult(total=total)
        if page:
            docs = await conn.fetch(
                f"SELECT doc, raw FROM {schema}.entities WHERE pk = ANY($1::bigint[]) ORDER BY pk", page
            )
            result.entities = [_unpack(doc, raw) for doc, raw in docs]
        return result

    async def iter_entities(self, tenant: str) -> AsyncIterator[Entity]:
        try:
            schema = await self._schema(tenant)
            if schema is None:
                return
            last = 0
            while True:
                rows = await self.pool.fetch(
                    f"SELECT pk, doc, raw FROM {schema}.entities WHERE pk > $1 ORDER BY pk LIMIT $2",
                    last,
                    _PAGE,
                )
                for pk, doc, raw in rows:
                    last = pk
                    yield _unpack(doc, raw)
                if len(rows) < _PAGE:
                    return
        except _LOST as exc:
            raise _unavailable(exc) from exc


class EntityWrites(PgTransaction):
    """The entity half of :class:`~kizuna.store.postgres.PgWrite`."""

    __slots__ = ()

    async def get(self, entity_id: str) -> Entity | None:
        # FOR UPDATE: a concurrent writer of this entity waits until this transaction ends.
        row = await self.conn.fetchrow(
            f"SELECT doc, raw FROM {self.schema}.entities WHERE id = $1 FOR UPDATE", entity_id
        )
        return _unpack(row[0], row[1]) if row else None

    async def owner(self, entity_id: str) -> str | None:
        return await self.conn.fetchval(f"SELECT owner FROM {self.schema}.entities WHERE id = $1", entity_id)

    async def insert(self, entity: Entity, owner: str | None = None) -> None:
        try:
            await self.conn.fetchval(
                _write_sql(self.schema, replace=False),
                entity["id"],
                *_pack(entity),
                *_index_params(entity),
                owner,
            )
        except asyncpg.UniqueViolationError as exc:
            raise AlreadyExists(f"{entity['id']} exists already (created concurrently)") from exc
        self.changes.append((entity["id"], "create", entity.get("type", []), None, None))

    async def replace(self, entity: Entity) -> None:
        pk = await self.conn.fetchval(
            _write_sql(self.schema, replace=True), entity["id"], *_pack(entity), *_index_params(entity)
        )
        if pk is None:
            raise KeyError(entity["id"])
        self.changes.append((entity["id"], "update", entity.get("type", []), None, None))

    async def delete(self, entity_id: str) -> bool:
        # The index rows go with it (ON DELETE CASCADE).
        row = await self.conn.fetchrow(
            f"DELETE FROM {self.schema}.entities WHERE id = $1 RETURNING doc, raw, owner", entity_id
        )
        if row is None:
            return False
        gone = _unpack(row[0], row[1])
        self.changes.append((entity_id, "delete", gone.get("type", []), gone, row[2]))
        return True

    async def delete_matching(self, query: EntityQuery) -> list[Entity]:
        where, params, residual = _plan(self.schema, query)
        rows = await self.conn.fetch(
            _numbered(
                f"SELECT e.doc, e.raw FROM {self.schema}.entities e WHERE {where} ORDER BY e.pk FOR UPDATE"
            ),
            *params,
        )
        doomed = [e for e in (_unpack(doc, raw) for doc, raw in rows) if residual is None or residual(e)]
        if doomed:
            owners = await self.conn.fetch(
                f"DELETE FROM {self.schema}.entities WHERE id = ANY($1::text[]) RETURNING id, owner",
                [e["id"] for e in doomed],
            )
            owner_of = dict(owners)
            self.changes.extend(
                (e["id"], "delete", e.get("type", []), e, owner_of.get(e["id"])) for e in doomed
            )
        return doomed


# -- query indexes ---------------------------------------------------------------------------------


def _sql_value(kind: int, value: Any) -> tuple[Decimal | None, bytes | None]:
    """The (num, str) columns of one attr_values row or literal."""
    if kind == STRING:
        return None, value.encode("utf-8", "surrogatepass")
    if kind in (NUMBER, BOOLEAN):
        return Decimal(value), None
    return None, None


def _index_params(entity: Entity) -> list[Any]:
    """Parameters $4.. of :func:`_write_sql`: the type, attr_values and geo_index rows of one
    entity (see the module docstring), as arrays."""
    rows = attribute_rows(entity)
    values = [_sql_value(kind, val) for _, kind, val, _ in rows]
    boxes = geometry_boxes(entity)
    return [
        list(dict.fromkeys(entity.get("type", ()))),
        [r[0] for r in rows],
        [r[1] for r in rows],
        [v[0] for v in values],
        [v[1] for v in values],
        [r[3] for r in rows],
        *([b[i] for b in boxes] for i in range(5)),
        [_pack(b[5])[0] for b in boxes],  # NULL when jsonb cannot hold it: the document is read
    ]


def _write_sql(schema: str, replace: bool) -> str:
    """One statement that writes an entity ($1 id, $2 jsonb text, $3 raw, $16 owner when inserted)
    and all its index rows
    (:func:`_index_params`), one round trip; a replacement also deletes the old index rows (the
    sub-statements of a WITH see one snapshot, so the deletes never see the rows inserted)."""
    if replace:
        head = (
            f"WITH e AS (UPDATE {schema}.entities SET doc = $2::text::jsonb, raw = $3"
            " WHERE id = $1 RETURNING pk),"
            f" dt AS (DELETE FROM {schema}.entity_types WHERE pk = (SELECT pk FROM e)),"
            f" da AS (DELETE FROM {schema}.attr_values WHERE pk = (SELECT pk FROM e)),"
            f" dg AS (DELETE FROM {schema}.geo_index WHERE pk = (SELECT pk FROM e)),"
        )
    else:
        head = (
            f"WITH e AS (INSERT INTO {schema}.entities (id, doc, raw, owner)"
            " VALUES ($1, $2::text::jsonb, $3, $16)"
            " RETURNING pk),"
        )
    return (
        head + f" t AS (INSERT INTO {schema}.entity_types (type, pk)"
        " SELECT t, e.pk FROM e, unnest($4::text[]) t),"
        f" a AS (INSERT INTO {schema}.attr_values (attribute, kind, num, str, pk, inst)"
        " SELECT r.a, r.k, r.n, r.s, e.pk, r.i FROM e,"
        " unnest($5::text[], $6::int2[], $7::numeric[], $8::bytea[], $9::int4[]) AS r(a, k, n, s, i)),"
        f" g AS (INSERT INTO {schema}.geo_index (pk, geoproperty, box, shapes)"
        " SELECT e.pk, b.p, ST_MakeEnvelope(b.x0, b.y0, b.x1, b.y1, 4326), b.s::jsonb FROM e,"
        " unnest($10::text[], $11::float8[], $12::float8[], $13::float8[], $14::float8[], $15::text[])"
        " AS b(p, x0, y0, x1, y1, s))"
        " SELECT pk FROM e"
    )


# -- q to SQL -------------------------------------------------------------------------------------


class _PgQ(QCompiler):
    """q on a tenant schema's ``attr_values`` (see :class:`QCompiler`): numbers and booleans in
    ``num``, strings in ``str``.

    The driving test is ``e.pk = ANY(ARRAY(...))``: its index range is read once into an array
    that the primary key index walks in pk order, so that a page stops at its last entity, and
    the other conditions, estimated on that small array, are checked per candidate. As ``e.pk
    IN (...)`` PostgreSQL hashed the range and checked all of it before sorting (25 ms instead
    of 1.2 for ``intensity==a..a+200;averageVehicleSpeed<20`` at 30,000 entities): it estimates
    a value range on ``attr_values`` 30x too low, the column's statistics mixing every
    attribute's values, and does not see that the page would stop early. Only one value list,
    range or order comparison drives (:meth:`may_drive`): one value's index range is already in
    pk order, which PostgreSQL merges without help (0.6 ms for ``powerState=="on"``, 2.1 as an
    array); ``!=`` or existence hold for most entities (57 ms to read ``status!="ok"`` over
    15,000 lights as an array, 0.2 to merge); arrays joined by ``|`` are no longer in pk order
    (32 ms instead of 1.7). Every other test stays ``e.pk IN (...)``, for PostgreSQL to plan:
    probed per candidate under an array, merged or hashed otherwise (a forced probe per
    candidate, ``EXISTS ... OFFSET 0``, cost 3-20x its plans when counting thousands)."""

    def __init__(self, schema: str) -> None:
        self.table = f"{schema}.attr_values"

    def select(self, attribute: str, probe: bool) -> Sql:
        head = "e.pk IN (" if probe else "e.pk = ANY(ARRAY("
        return f"{head}SELECT v.pk FROM {self.table} v WHERE v.attribute = ? AND ", [attribute]

    def closing(self, probe: bool) -> str:
        return ")" if probe else "))"

    def may_drive(self, expr: ql.QExpr) -> bool:
        return not isinstance(expr, ql.QAnd | ql.QOr) and selectivity(expr) in (1, 2, 3)

    def column(self, kind: int, alias: str) -> str:
        return f"{alias}.str" if kind == STRING else f"{alias}.num"

    def param(self, lit: tuple[int, Any]) -> Any:
        return _sql_value(*lit)[lit[0] == STRING]


def _plan(
    schema: str, query: EntityQuery, *, shapes: bool = False
) -> tuple[str, list[Any], Callable[[Entity], bool] | None]:
    """The WHERE clause (on ``entities e``, ``?`` placeholders) of a query, its parameters, and the
    Python check left for what SQL does not decide (None: SQL decides everything) except the
    exact geometry check, which the caller runs on batches of candidates. With ``shapes``, on
    ``entities e`` joined with the geo index row ``g`` of the query's property.

    A q test drives (see :class:`_PgQ`) unless ids, an id prefix or the geo box select the
    candidates, as on SQLite."""
    where = ["TRUE"]
    params: list[Any] = []
    if query.ids is not None:
        where.append("e.id = ANY(?::text[])")
        params.append(list(query.ids))
    id_check: Callable[[Entity], bool] | None = None
    prefix = "" if query.id_pattern is None else literal_prefix(query.id_pattern)
    if query.id_pattern is not None:
        if prefix:
            # An anchored literal start is a range on the id index; RE2 checks the rest.
            where.append("e.id >= ? AND e.id < ?")
            params += [prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)]
        pattern = compile_pattern(query.id_pattern)
        id_check = lambda e: pattern.search(e["id"]) is not None  # noqa: E731
    box = None if query.geo is None else query.geo.bbox()
    if shapes:
        # The caller joins the geo index row of the property as ``g``: the box is tested on it,
        # not looked up a second time.
        where.append("g.geoproperty = ?")
        params.append(query.geoproperty or "location")
    if box is not None:
        boxed = "g.box && ST_MakeEnvelope(?::float8, ?::float8, ?::float8, ?::float8, 4326)"
        if shapes:
            where.append(boxed)
        else:
            geo_rows = f"SELECT g.pk FROM {schema}.geo_index g WHERE g.geoproperty = ? AND {boxed}"
            where.append(f"e.pk IN ({geo_rows})")
            params.append(query.geoproperty or "location")
        params += box
    left_q: ql.QExpr | None = None
    if query.q is not None:
        drive = query.ids is None and not prefix and box is None
        compiled, left_q, _ = compile_q(_PgQ(schema), query.q, drive=drive)
        if compiled is not None:
            where.append(compiled[0])
            params += compiled[1]
    attrs_in_sql = query.attrs is not None and not any(a in CORE for a in query.attrs)
    if attrs_in_sql and query.attrs is not None:
        where.append(f"e.pk IN (SELECT pk FROM {schema}.attr_values WHERE attribute = ANY(?::text[]))")
        params.append(list(query.attrs))
    if query.types is not None:
        where.append(f"e.pk IN (SELECT pk FROM {schema}.entity_types WHERE type = ANY(?::text[]))")
        params.append(list(query.types))
    if query.access is not None:
        clause, clause_params = _access_clause(schema, query.access)
        where.append(clause)
        params += clause_params
    residual = query.residual(q=left_q, attrs=not attrs_in_sql, geo=False)  # geo: in batches
    if id_check is not None:
        rest = residual
        residual = id_check if rest is None else (lambda e: id_check(e) and rest(e))
    return " AND ".join(where), params, residual


def _access_clause(schema: str, access: AccessFilter) -> tuple[str, list[Any]]:
    """The access filter as one condition on ``e`` (see :class:`kizuna.store.AccessFilter`).

    Scopes are read from the jsonb document; an entity kept as raw bytes (it holds a NUL
    character, which jsonb refuses) matches no scoped target."""
    parts: list[str] = []
    params: list[Any] = []
    types_in = f"e.pk IN (SELECT pk FROM {schema}.entity_types WHERE type = ANY(?::text[]))"
    if access.owners:
        parts.append("e.owner = ANY(?::text[])")
        params.append(sorted(access.owners))
    if access.ids:
        parts.append("e.id = ANY(?::text[])")
        params.append(sorted(access.ids))
    if access.types:
        parts.append(types_in)
        params.append(sorted(access.types))
    for types, scopes in access.scoped:
        terms = []
        if types:
            terms.append(types_in)
            params.append(sorted(types))
        named = sorted(s for s in scopes if s != NO_SCOPE)
        held = []
        if named:
            held.append(
                "EXISTS (SELECT 1 FROM jsonb_array_elements_text(e.doc->'scope') s WHERE s = ANY(?::text[]))"
            )
            params.append(named)
        if NO_SCOPE in scopes:
            held.append("(e.doc IS NOT NULL AND e.doc->'scope' IS NULL)")
        terms.append("(" + " OR ".join(held) + ")")
        parts.append("(" + " AND ".join(terms) + ")")
    if access.policies and access.policy_attributes:
        parts.append(
            f"e.pk IN (SELECT pk FROM {schema}.attr_values WHERE attribute = ANY(?::text[])"
            " AND kind = ? AND str = ANY(?::bytea[]))"
        )
        params += [
            list(access.policy_attributes),
            STRING,
            [_sql_value(STRING, p)[1] for p in sorted(access.policies)],
        ]
    if not parts:
        return "FALSE", []
    return "(" + " OR ".join(parts) + ")", params
