"""Entities: reads, the write half of a transaction, and the selection SQL that compiles an
:class:`~kizuna.store.EntityQuery` (ids, id pattern, R*Tree box, q, attrs, types, access) into one
statement on the indexes of :mod:`.indexes`."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from kizuna import query as ql
from kizuna.store import (
    NO_SCOPE,
    AccessFilter,
    Entity,
    EntityQuery,
    QueryResult,
)
from kizuna.store.common import (
    CORE,
    STRING,
    Paging,
    QCompiler,
    Sql,
    by_types_only,
    compile_q,
    page_of,
    shapes_page,
)
from kizuna.store.common import literal_prefix as _literal_prefix
from kizuna.store.sqlite.connection import _PAGE, SqliteBase, SqliteTransaction, marks
from kizuna.store.sqlite.indexes import (
    KIND_BITS,
    KIND_LIMIT,
    SIMPLE_SPREAD,
    _index_entity,
    _unindex_entity,
)
from kizuna.turns import let_others_run


class SqliteEntities(SqliteBase):
    """The entity reads of :class:`~kizuna.store.sqlite.SqliteStore`; queries run on a reader."""

    async def get_entity(self, tenant: str, entity_id: str) -> Entity | None:
        row = self.db.execute(
            "SELECT doc FROM entities WHERE tenant = ? AND id = ?", (tenant, entity_id)
        ).fetchone()
        return orjson.loads(row[0]) if row else None

    async def get_owned_entity(self, tenant: str, entity_id: str) -> tuple[Entity, str | None] | None:
        row = self.db.execute(
            "SELECT doc, owner FROM entities WHERE tenant = ? AND id = ?", (tenant, entity_id)
        ).fetchone()
        return (orjson.loads(row[0]), row[1]) if row else None

    async def query_entities(self, tenant: str, query: EntityQuery) -> QueryResult:
        return await self._read(_query_entities, tenant, query)

    async def iter_entities(self, tenant: str) -> AsyncIterator[Entity]:
        last = 0
        while True:
            # ``+tenant``: walk the primary key; through the (tenant, id) index SQLite would sort
            # the tenant's every row for each page (6 s instead of 0.5 over 50,000 entities).
            rows = self.db.execute(
                "SELECT pk, doc FROM entities WHERE +tenant = ? AND pk > ? ORDER BY pk LIMIT ?",
                (tenant, last, _PAGE),
            ).fetchall()
            for pk, doc in rows:
                last = pk
                yield orjson.loads(doc)
            if len(rows) < _PAGE:
                return
            await let_others_run()


class EntityWrites(SqliteTransaction):
    """The entity half of :class:`~kizuna.store.sqlite.SqliteWrite`."""

    __slots__ = ()

    async def get(self, entity_id: str) -> Entity | None:
        row = self.db.execute(
            "SELECT doc FROM entities WHERE tenant = ? AND id = ?", (self.tenant, entity_id)
        ).fetchone()
        return orjson.loads(row[0]) if row else None

    async def owner(self, entity_id: str) -> str | None:
        row = self.db.execute(
            "SELECT owner FROM entities WHERE tenant = ? AND id = ?", (self.tenant, entity_id)
        ).fetchone()
        return row[0] if row else None

    async def insert(self, entity: Entity, owner: str | None = None) -> None:
        cursor = self.db.execute(
            "INSERT INTO entities (tenant, id, doc, owner) VALUES (?, ?, ?, ?)",
            (self.tenant, entity["id"], orjson.dumps(entity), owner),
        )
        self._index_types(cursor.lastrowid, entity, owner)
        _index_entity(self.db, self.tenant, cursor.lastrowid, entity)
        self.changes.append((entity["id"], "create", entity.get("type", []), None, None))

    async def replace(self, entity: Entity) -> None:
        row = self.db.execute(
            "UPDATE entities SET doc = ? WHERE tenant = ? AND id = ? RETURNING pk, owner",
            (orjson.dumps(entity), self.tenant, entity["id"]),
        ).fetchone()
        if row is None:
            raise KeyError(entity["id"])
        _unindex_entity(self.db, row[0])
        self.db.execute("DELETE FROM entity_types WHERE pk = ?", (row[0],))
        self._index_types(row[0], entity, row[1])
        _index_entity(self.db, self.tenant, row[0], entity)
        self.changes.append((entity["id"], "update", entity.get("type", []), None, None))

    async def delete(self, entity_id: str) -> bool:
        row = self.db.execute(
            "DELETE FROM entities WHERE tenant = ? AND id = ? RETURNING pk, doc, owner",
            (self.tenant, entity_id),
        ).fetchone()
        if row is None:
            return False
        _unindex_entity(self.db, row[0])
        self.db.execute("DELETE FROM entity_types WHERE pk = ?", (row[0],))
        gone = orjson.loads(row[1])
        self.changes.append((entity_id, "delete", gone.get("type", []), gone, row[2]))
        return True

    async def delete_matching(self, query: EntityQuery) -> list[Entity]:
        where, params, residual = _plan(self.tenant, query)
        rows = self.db.execute(f"SELECT e.doc FROM entities e WHERE {where} ORDER BY e.pk", params).fetchall()
        doomed = [
            entity
            for entity in (orjson.loads(doc) for (doc,) in rows)
            if residual is None or residual(entity)
        ]
        for entity in doomed:
            await self.delete(entity["id"])
        return doomed

    def _index_types(self, pk: int | None, entity: Entity, owner: str | None) -> None:
        self.db.executemany(
            "INSERT OR IGNORE INTO entity_types (tenant, type, pk, owner) VALUES (?, ?, ?, ?)",
            [(self.tenant, t, pk, owner) for t in entity.get("type", ())],
        )


_GEO_SOURCE = "geo_rtree r JOIN geo_entries e ON e.id = r.id"


def _plan(tenant: str, query: EntityQuery) -> tuple[str, list[Any], Callable[[Entity], bool] | None]:
    """The WHERE clause (on ``entities e``) of a query, its parameters, and the Python check left
    for what SQL does not decide (None: SQL decides everything). See :func:`_select`."""
    _, where, params, residual, _ = _select(tenant, query, on_index=False)
    return where, params, residual


def _select(
    tenant: str, query: EntityQuery, *, on_index: bool = True, geo_apart: bool = False
) -> tuple[str, str, list[Any], Callable[[Entity], bool] | None, bool]:
    """(source, WHERE, parameters, residual, distinct): ``SELECT e.pk FROM {source} WHERE {where}``
    selects the pks of the entities SQL lets through, ``residual`` is the Python check left for
    what SQL does not decide (None: SQL decides everything), ``distinct`` says that a pk may come
    more than once (an entity with several of the types asked for). With ``geo_apart`` the
    residual leaves the exact geo check out, for the caller to run on batches of candidates.

    One condition drives (ids, an id prefix, the R*Tree box, the most selective q test, attrs,
    the type, in that order of preference), written ``e.pk IN (...)`` so that SQLite reads it
    as a pk list in pk order; every other condition is a correlated probe on that candidate
    (``EXISTS``), so that no second index range is materialised as a whole.

    With ``on_index`` and neither ids nor an id prefix, the source is an index rather than
    ``entities``, so that counting, paging and probing never read an entity row (the caller
    fetches documents for the pks it keeps): with a bounded geoQuery, the R*Tree joined with
    ``geo_entries`` (``_GEO_SOURCE``, which also gives the shapes for the exact check); with a
    type, ``entity_types`` (its (tenant, type, pk) key holds the tenant and the type). Otherwise
    it is ``entities``, and the tenant term is written ``+e.tenant`` (no index) unless
    ids or an id prefix make the (tenant, id) index the way in: otherwise SQLite would walk the
    tenant's every entity through that index and sort, instead of following the pk lists the
    other indexes give, in pk order."""
    prefix = "" if query.id_pattern is None else _literal_prefix(query.id_pattern)
    by_id = query.ids is not None or bool(prefix)
    box = query.geo.bbox() if query.geo is not None else None
    # Index sources have no id column: any id condition keeps the source on entities.
    on_ids = by_id or query.id_pattern is not None
    geo_source = on_index and box is not None and not on_ids
    types_source = on_index and not geo_source and query.types is not None and not on_ids
    # entity_types holds the tenant in its key; entities: see above.
    where = ["e.tenant = ?" if types_source or by_id else "+e.tenant = ?"]
    params: list[Any] = [tenant]
    if query.ids is not None:
        where.append(f"e.id IN ({','.join('?' * len(query.ids))})")
        params += list(query.ids)
    if query.id_pattern is not None:
        if prefix:
            # An anchored literal start is a range on the (tenant, id) index; regexp checks the rest.
            where.append("e.id >= ? AND e.id < ?")
            params += [prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)]
        where.append("regexp(?, e.id)")
        params.append(query.id_pattern)
    driven = by_id
    if box is not None:
        minx, miny, maxx, maxy = box
        boxed = (
            " r.min_x <= ? AND r.max_x >= ? AND r.min_y <= ? AND r.max_y >= ?"
            " AND g.tenant = ? AND g.geoproperty = ?"
        )
        if driven:
            where.append(
                "EXISTS (SELECT 1 FROM geo_entries g JOIN geo_rtree r ON r.id = g.id WHERE g.pk = e.pk AND"
                + boxed
                + ")"
            )
        elif geo_source:
            where.append(boxed.replace("g.tenant = ? AND g.", "e."))
        else:
            where.append(
                "e.pk IN (SELECT g.pk FROM geo_rtree r JOIN geo_entries g ON g.id = r.id WHERE" + boxed + ")"
            )
        params += [maxx, minx, maxy, miny] + ([] if geo_source else [tenant])
        params.append(query.geoproperty or "location")
        driven = True
    left_q: ql.QExpr | None = None
    if query.q is not None:
        compiled, left_q, drives = compile_q(_SqliteQ(tenant), query.q, drive=not driven)
        if compiled is not None:
            where.append(compiled[0])
            params += compiled[1]
        driven = driven or drives
    attrs_in_sql = query.attrs is not None and not any(a in CORE for a in query.attrs)
    if attrs_in_sql and query.attrs is not None:
        where.append(
            _in_index("attr_values a", "attribute", len(query.attrs), driven=driven, tenant_unindexed=True)
        )
        params += [tenant, *query.attrs]
        driven = True
    distinct = False
    if query.types is not None:
        if types_source:
            where.append(f"e.type IN ({','.join('?' * len(query.types))})")
            params += list(query.types)
            distinct = len(query.types) > 1
        else:
            where.append(_in_index("entity_types t", "type", len(query.types), driven=driven))
            params += [tenant, *query.types]
    source = _GEO_SOURCE if geo_source else "entity_types e" if types_source else "entities e"
    if query.access is not None:
        clause, clause_params = _access_clause(tenant, query.access, on=None if geo_source else source)
        where.append(clause)
        params += clause_params
    residual = query.residual(q=left_q, attrs=not attrs_in_sql, geo=not geo_apart)
    return source, " AND ".join(where), params, residual, distinct


def _in_index(table: str, column: str, n: int, *, driven: bool, tenant_unindexed: bool = False) -> str:
    """The condition that an entity has one of ``n`` values of ``column`` in an index ``table``
    (named with its alias; parameters: the tenant, then the values). When another index already
    selects the candidates (``driven``, usually far fewer) it is checked on each of them;
    otherwise the index gives the candidates. ``tenant_unindexed`` writes the tenant term so that
    SQLite does not pick the table's (tenant, ...) key for the per-candidate check when a
    (pk, ...) index exists."""
    name, alias = table.split()
    values = marks(n)
    if driven:
        tenant = f"{'+' if tenant_unindexed else ''}{alias}.tenant"
        return (
            f"EXISTS (SELECT 1 FROM {table} WHERE {alias}.pk = e.pk AND {tenant} = ?"
            f" AND {alias}.{column} IN ({values}))"
        )
    return f"e.pk IN (SELECT pk FROM {name} WHERE tenant = ? AND {column} IN ({values}))"


def _access_clause(tenant: str, access: AccessFilter, on: str | None) -> tuple[str, list[Any]]:
    """The access filter as one test of the candidate ``e``, so that it narrows the count and the
    pages with the rest of the query. ``on`` is the table ``e`` is (None: one without an owner):
    the owner, types and policies are tested on the row at hand (entities and entity_types hold
    the owner) and the candidate's pk; ids and scopes on the entity row, looked up only for the
    candidates the cheaper tests did not let through (unless ``e`` is the entity itself)."""

    x = "e" if on == "entities e" else "x"  # the entity row: the candidate itself, or looked up
    tests: list[str] = []  # on the candidate's own columns and its pk
    on_row: list[str] = []  # on the entity row's id or document
    params: list[Any] = []
    row_params: list[Any] = []
    if access.owners:
        (tests if on is not None else on_row).append(f"{'e' if on else x}.owner IN ({marks(access.owners)})")
        (params if on is not None else row_params).extend(sorted(access.owners))
    if access.ids:
        on_row.append(f"{x}.id IN ({marks(access.ids)})")
        row_params += sorted(access.ids)
    if access.types:
        tests.append(
            f"EXISTS (SELECT 1 FROM entity_types t WHERE t.pk = e.pk AND t.type IN ({marks(access.types)}))"
        )
        params += sorted(access.types)
    for types, scopes in access.scoped:
        terms = []
        if types:
            terms.append(
                f"EXISTS (SELECT 1 FROM entity_types t WHERE t.pk = {x}.pk AND t.type IN ({marks(types)}))"
            )
            row_params += sorted(types)
        named = sorted(s for s in scopes if s != NO_SCOPE)
        held = []
        if named:
            held.append(
                f"EXISTS (SELECT 1 FROM json_each(CAST({x}.doc AS TEXT), '$.scope') s"
                f" WHERE s.value IN ({marks(named)}))"
            )
            row_params += named
        if NO_SCOPE in scopes:
            held.append(f"json_type(CAST({x}.doc AS TEXT), '$.scope') IS NULL")
        terms.append("(" + " OR ".join(held) + ")")
        on_row.append("(" + " AND ".join(terms) + ")")
    if access.policies and access.policy_attributes:
        # The uncorrelated test runs once per statement: most tenants have no entity with a
        # specificAccessPolicy, and then no candidate pays for the probe (half a type query).
        attributes, policies = marks(access.policy_attributes), marks(access.policies)
        tests.append(
            "(EXISTS (SELECT 1 FROM attr_values p WHERE p.tenant = ?"
            f" AND p.attribute IN ({attributes}) AND p.kind = ? AND p.val IN ({policies}))"
            " AND EXISTS (SELECT 1 FROM attr_values a WHERE a.pk = e.pk"
            f" AND a.attribute IN ({attributes}) AND a.kind = ? AND a.val IN ({policies})))"
        )
        wanted = [*access.policy_attributes, STRING, *sorted(access.policies)]
        params += [tenant, *wanted, *wanted]
    if on_row and x == "x":
        on_row = [f"EXISTS (SELECT 1 FROM entities x WHERE x.pk = e.pk AND ({' OR '.join(on_row)}))"]
    tests += on_row  # last: the lookup only for candidates no cheaper test let through
    if not tests:
        return "0", []
    return "(" + " OR ".join(tests) + ")", params + row_params


def _query_entities(db: sqlite3.Connection, tenant: str, query: EntityQuery) -> QueryResult:
    """:meth:`SqliteStore.query_entities` on ``db`` (a reader's connection, in a thread)."""
    if _geo_of_one_type(query):
        found = _query_kind(db, tenant, query)
        if found is not None:
            return found
    source, where, params, residual, distinct = _select(tenant, query, geo_apart=True)
    result = QueryResult()
    pks = f"SELECT {'DISTINCT ' if distinct else ''}e.pk FROM {source} WHERE {where}"
    if residual is None and query.geo is None:
        # Everything is in SQL: the page and the count are two indexed statements, and only
        # the documents of the page are read.
        if query.limit != 0:
            page = [*params, -1 if query.limit is None else query.limit, query.offset]
            if source == "entities e":
                sql = f"SELECT e.doc FROM entities e WHERE {where} ORDER BY e.pk LIMIT ? OFFSET ?"
            else:
                sql = (
                    f"SELECT doc FROM entities WHERE pk IN ({pks} ORDER BY e.pk LIMIT ? OFFSET ?) ORDER BY pk"
                )
            result.entities = [orjson.loads(doc) for (doc,) in db.execute(sql, page)]
        if query.count and by_types_only(query) and query.types is not None and len(query.types) == 1:
            # One row kept on write (migration 3) rather than a walk of the type's keys.
            sql = "SELECT n FROM entity_type_counts WHERE tenant = ? AND type = ?"
            found = db.execute(sql, (tenant, query.types[0])).fetchone()
            result.total = 0 if found is None else found[0]
        elif query.count:
            counted = "DISTINCT e.pk" if distinct else "*"
            sql = f"SELECT count({counted}) FROM {source} WHERE {where}"
            result.total = db.execute(sql, params).fetchone()[0]
        return result
    if residual is None and source == _GEO_SOURCE:
        # Only the exact geo check is left: it runs on the shapes kept in the geo index, and
        # only the documents of the page are read.
        sql = f"SELECT e.pk, e.shapes FROM {source} WHERE {where} ORDER BY e.pk"
        rows = db.execute(sql, params).fetchall()
        if all(found is not None for _, found in rows):  # else written by an older version
            page, result.total = shapes_page(query, [(pk, orjson.loads(found)) for pk, found in rows])
            result.entities = _documents(db, page)
            return result
    if source == "entities e":
        sql = f"SELECT e.doc FROM entities e WHERE {where} ORDER BY e.pk"
    else:
        sql = f"SELECT doc FROM entities WHERE pk IN ({pks}) ORDER BY pk"
    paging = Paging(query, residual)
    cursor = db.execute(sql, params)
    size = 64
    while batch := cursor.fetchmany(size):  # candidates in growing batches
        size = min(2 * size, 1024)
        if paging.add([orjson.loads(doc) for (doc,) in batch]):
            break
    return paging.done()


def _documents(db: sqlite3.Connection, pks: list[int]) -> list[Entity]:
    """The entities of ``pks``, in pk order."""
    if not pks:
        return []
    sql = f"SELECT doc FROM entities WHERE pk IN ({marks(pks)}) ORDER BY pk"
    return [orjson.loads(doc) for (doc,) in db.execute(sql, pks)]


def _geo_of_one_type(query: EntityQuery) -> bool:
    """Whether ``query`` is a bounded geoQuery of one type and nothing else, which
    geo_kind_rtree answers alone (see :func:`_query_kind`)."""
    return (
        query.geo is not None
        and query.geo.bbox() is not None
        and query.types is not None
        and len(query.types) == 1
        and query.predicate is None
        and query.access is None
        and not any((query.ids, query.id_pattern, query.q, query.scope, query.attrs))
    )


def _query_kind(db: sqlite3.Connection, tenant: str, query: EntityQuery) -> QueryResult | None:
    """:func:`_query_entities` of a :func:`_geo_of_one_type` query on geo_kind_rtree: the type's
    boxes in the query's box, in pk order, without a lookup each (the pk is in the R*Tree id).
    A simple point whose box lies inside a within / intersects geometry matches as it is
    (:func:`kizuna.query.boxes_inside`); only the other candidates' shapes are read and checked.
    None: a kind this index does not hold, or shapes written before they were kept (the caller
    takes geo_rtree)."""
    assert query.geo is not None and query.types is not None
    box = query.geo.bbox()
    assert box is not None
    geoproperty = query.geoproperty or "location"
    sql = "SELECT code FROM geo_kinds WHERE tenant = ? AND geoproperty = ? AND type = ?"
    kind = db.execute(sql, (tenant, geoproperty, query.types[0])).fetchone()
    if kind is None:  # no entity of the type has that geoproperty
        return QueryResult(total=0 if query.count else None)
    if kind[0] >= KIND_LIMIT:
        return None
    min_x, min_y, max_x, max_y = box
    rows = db.execute(
        "SELECT id >> ?, min_x, min_y, max_x, max_y, max_k - min_k = ? FROM geo_kind_rtree"
        " WHERE min_k <= ? AND max_k >= ? AND min_x <= ? AND max_x >= ? AND min_y <= ? AND max_y >= ?"
        " ORDER BY id",
        (KIND_BITS, SIMPLE_SPREAD, kind[0] + 0.25, kind[0] + 0.25, max_x, min_x, max_y, min_y),
    ).fetchall()
    inside = ql.boxes_inside(query.geo, [row[1:5] for row in rows])
    sure = [bool(ok and row[5]) for row, ok in zip(rows, inside, strict=True)]
    unsure = [row[0] for row, ok in zip(rows, sure, strict=True) if not ok]
    exact: dict[int, bool] = {}
    if unsure:
        sql = (
            "SELECT pk, shapes FROM geo_entries"
            " WHERE pk IN (SELECT value FROM json_each(?)) AND geoproperty = ?"
        )
        found = dict(db.execute(sql, (orjson.dumps(unsure), geoproperty)).fetchall())
        if len(found) < len(unsure) or None in found.values():
            return None
        checked = ql.geo_matches_values(query.geo, [orjson.loads(found[pk]) for pk in unsure])
        exact = dict(zip(unsure, checked, strict=True))
    matched = [row[0] for row, ok in zip(rows, sure, strict=True) if ok or exact[row[0]]]
    page, total = page_of(query, matched)
    return QueryResult(entities=_documents(db, page), total=total)


# -- q to SQL --------------------------------------------------------------------------------------


class _SqliteQ(QCompiler):
    """q on this file's ``attr_values`` (see :class:`QCompiler`).

    Each attribute test is ``e.pk IN (...)``, which SQLite may use to drive the query (the
    attribute's value range in one index scan, in pk order), or with ``probe`` a correlated
    ``EXISTS`` that looks the candidate's rows up on ``attr_values_by_pk``: a test that only
    filters the rows another index selects then costs one lookup per candidate instead of
    materialising every entity it holds for. (``+v.tenant`` keeps SQLite off the primary key,
    which it would otherwise prefer for its longer equality prefix and scan once per candidate.)"""

    regexp = True

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant

    def select(self, attribute: str, probe: bool) -> Sql:
        if probe:
            sql = (
                "EXISTS (SELECT 1 FROM attr_values v"
                " WHERE v.pk = e.pk AND +v.tenant = ? AND v.attribute = ? AND "
            )
        else:
            sql = "e.pk IN (SELECT v.pk FROM attr_values v WHERE v.tenant = ? AND v.attribute = ? AND "
        return sql, [self.tenant, attribute]

    def column(self, kind: int, alias: str) -> str:
        return f"{alias}.val"  # no type affinity: numbers and strings in one column

    def param(self, lit: tuple[int, Any]) -> Any:
        return lit[1]
