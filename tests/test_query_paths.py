"""The SQL paths of SqliteStore.query_entities select what plain Python evaluation selects.

Each path is checked against the slow, obvious answer: the type index as the source of counts and
pages (one type, several types, an entity holding two of them), q tests as correlated probes
beside the one that drives, the shapes kept in the geo index with the vectorised point check
(points on the polygon's edges and vertices included), and files whose geo index predates the
shapes. EXPLAIN QUERY PLAN shows that each reads the index it is meant to read."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kizuna import query as ql
from kizuna.store import EntityQuery
from kizuna.store.sqlite import SqliteStore
from kizuna.store.sqlite import schema as sqlite_schema
from kizuna.store.sqlite.entities import _select
from test_query_index import compilable_terms, instances, trees

T, U = "urn:T", "urn:U"
ATTRS = ("urn:a", "urn:b", "urn:c")
LOC = "https://uri.etsi.org/ngsi-ld/location"
# A concave district (an L shape) on a 0.25 grid, so that points land on its vertices and edges.
DISTRICT = [[[0, 0], [2, 0], [2, 1], [1, 1], [1, 2], [0, 2], [0, 0]]]
grid = st.integers(-2, 10).map(lambda n: n / 4)


@st.composite
def typed_entities(draw: st.DrawFn) -> list[dict[str, Any]]:
    out = []
    for n in range(draw(st.integers(1, 10))):
        types = draw(st.sampled_from([[T], [U], [T, U], ["urn:V"]]))
        entity: dict[str, Any] = {"id": f"urn:e:{n}", "type": types}
        for attr in ATTRS:
            if draw(st.booleans()):
                entity[attr] = draw(instances())
        out.append(entity)
    return out


def point(x: float, y: float) -> dict[str, Any]:
    return {"type": "Point", "coordinates": [x, y]}


geo_values = st.one_of(
    st.builds(point, grid, grid),
    st.builds(point, grid, grid),
    st.builds(lambda x, y: {"type": "Point", "coordinates": [x, y, 3]}, grid, grid),
    st.builds(lambda x, y: {"type": "LineString", "coordinates": [[x, y], [x + 0.5, y]]}, grid, grid),
    st.builds(lambda x, y: {"type": "Point", "coordinates": [int(4 * x), y]}, grid, grid),
    st.just({"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}),  # invalid: never matches
)
# Booleans are no positions for the R*Tree (the API never stores them), but shapely reads them.
odd_values = st.one_of(geo_values, st.just({"type": "Point", "coordinates": [True, 1]}))


@st.composite
def located_entities(draw: st.DrawFn) -> list[dict[str, Any]]:
    out = []
    for n in range(draw(st.integers(0, 12))):
        entity: dict[str, Any] = {"id": f"urn:g:{n}", "type": draw(st.sampled_from([[T], [U], [T, U]]))}
        values = draw(st.lists(geo_values, min_size=0, max_size=2))
        if values:
            entity[LOC] = [
                {"type": "GeoProperty", "value": v, **({"datasetId": f"urn:ds:{i}"} if i else {})}
                for i, v in enumerate(values)
            ]
        if draw(st.booleans()):
            entity["urn:a"] = [{"type": "Property", "value": draw(st.integers(0, 3))}]
        out.append(entity)
    return out


pages = st.tuples(st.sampled_from([None, 0, 1, 2, 5]), st.integers(0, 4), st.booleans())


def answer(docs: list[dict[str, Any]], query: EntityQuery) -> tuple[list[str], int | None]:
    async def run() -> tuple[list[str], int | None]:
        store = SqliteStore(":memory:")
        await store.open()
        try:
            async with store.write("") as tx:
                for doc in docs:
                    await tx.insert(doc)
            async with store.write("other") as tx:  # another tenant's twins must never show
                for doc in docs:
                    await tx.insert(doc)
            result = await store.query_entities("", query)
            return [e["id"] for e in result.entities], result.total
        finally:
            await store.close()

    return asyncio.run(run())


def expected(matching: list[str], query: EntityQuery) -> tuple[list[str], int | None]:
    end = None if query.limit is None else query.offset + query.limit
    return matching[query.offset : end], len(matching) if query.count else None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(typed_entities(), st.one_of(st.none(), trees(compilable_terms)), st.sampled_from([[T], [T, U]]), pages)
def test_type_and_q_pages_and_counts_from_the_indexes(
    docs: list[dict[str, Any]], q: ql.QExpr | None, types: list[str], page: tuple[int | None, int, bool]
) -> None:
    limit, offset, count = page
    query = EntityQuery(types=types, q=q, limit=limit, offset=offset, count=count)
    matching = [d["id"] for d in docs if set(d["type"]) & set(types) and (q is None or ql.matches(q, d))]
    assert answer(docs, query) == expected(matching, query)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    located_entities(),
    st.sampled_from(["within", "intersects", "disjoint", "contains", "overlaps"]),
    st.sampled_from([None, [T], [T, U]]),
    st.booleans(),
    pages,
)
def test_geo_queries_from_the_shapes_in_the_index(
    docs: list[dict[str, Any]],
    georel: str,
    types: list[str] | None,
    with_q: bool,
    page: tuple[int | None, int, bool],
) -> None:
    limit, offset, count = page
    geo = ql.parse_geoq(georel, "Polygon", json.dumps(DISTRICT))
    q = ql.parse_q("urn:a>=1") if with_q else None
    query = EntityQuery(types=types, geo=geo, geoproperty=LOC, q=q, limit=limit, offset=offset, count=count)
    matching = [
        d["id"]
        for d in docs
        if (types is None or set(d["type"]) & set(types))
        and (q is None or ql.matches(q, d))
        and ql.geo_matches(geo, LOC, d)
    ]
    assert answer(docs, query) == expected(matching, query)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.lists(odd_values, max_size=3), max_size=20),
    st.sampled_from(["within", "intersects", "disjoint", "contains", "equals"]),
    st.sampled_from(
        [
            DISTRICT,
            [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]],
            [[[0, 0], [2, 2], [2, 0], [0, 2], [0, 0]]],  # a bow tie: invalid for GEOS
        ]
    ),
)
def test_the_vectorised_point_check_decides_as_the_one_by_one_check(
    candidates: list[list[dict[str, Any]]], georel: str, polygon: list[Any]
) -> None:
    geo = ql.parse_geoq(georel, "Polygon", json.dumps(polygon))
    one_by_one = [any(geo.matches(v) for v in values) for values in candidates]
    assert ql.geo_matches_values(geo, candidates) == one_by_one


# -- plans -----------------------------------------------------------------------------------------


def plan(store: SqliteStore, query: EntityQuery) -> str:
    source, where, params, _, _ = _select("", query)
    rows = store.db.execute(f"EXPLAIN QUERY PLAN SELECT e.pk FROM {source} WHERE {where}", params)
    return " | ".join(row[3] for row in rows)


async def test_plans_read_one_index_and_probe_the_rest() -> None:
    store = SqliteStore(":memory:")
    await store.open()
    # Counting and paging a type reads the type index alone.
    listing = plan(store, EntityQuery(types=[T]))
    assert listing == "SEARCH e USING PRIMARY KEY (tenant=? AND type=?)", listing
    # A range drives; the second test and the type are probes on the candidate's pk.
    ranged = plan(store, EntityQuery(types=[T], q=ql.parse_q("urn:i==10..20;urn:s<20")))
    assert "SEARCH v USING PRIMARY KEY (tenant=? AND attribute=? AND kind=? AND val>? AND val<?)" in ranged
    assert "SEARCH v USING COVERING INDEX attr_values_by_pk (pk=? AND attribute=?)" in ranged
    assert "SCAN" not in ranged, ranged
    # The equality drives even when written last.
    eq = plan(store, EntityQuery(q=ql.parse_q("urn:s<20;urn:i==10")))
    assert "SEARCH v USING PRIMARY KEY (tenant=? AND attribute=? AND kind=? AND val=?)" in eq, eq
    assert "attr_values_by_pk (pk=? AND attribute=?)" in eq, eq
    # A bounded geoQuery starts from the R*Tree; the type and q are probes.
    box = ql.parse_geoq("within", "Polygon", json.dumps(DISTRICT))
    geo = plan(store, EntityQuery(types=[T], geo=box, geoproperty=LOC, q=ql.parse_q("urn:s<20")))
    assert geo.startswith("SCAN r VIRTUAL TABLE"), geo
    assert "SEARCH t USING PRIMARY KEY (tenant=? AND type=? AND pk=?)" in geo, geo
    assert "SCAN e" not in geo and "SCAN t" not in geo, geo
    # With ids, the (tenant, id) index drives and the geo box is a probe.
    by_id = plan(store, EntityQuery(ids=["urn:x"], geo=box, geoproperty=LOC))
    assert by_id.startswith("SEARCH e USING COVERING INDEX sqlite_autoindex_entities_1 (tenant=? AND id=?)")
    # (the R*Tree's index 1 is its lookup by id)
    assert "SEARCH g USING INDEX geo_entries_by_pk (pk=?) | SCAN r VIRTUAL TABLE INDEX 1:" in by_id, by_id
    await store.close()


# -- files whose geo index predates the shapes -----------------------------------------------------


def located(n: int, x: float, y: float) -> dict[str, Any]:
    return {"id": f"urn:g:{n}", "type": [T], LOC: [{"type": "GeoProperty", "value": point(x, y)}]}


async def test_a_geo_index_without_shapes_is_filled_at_open_and_missing_shapes_fall_back(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "old.db")
    store = SqliteStore(path)
    await store.open()
    async with store.write("") as tx:
        for n, (x, y) in enumerate([(0.5, 0.5), (1.5, 1.5), (0.5, 1.5), (1, 1), (3, 3)]):
            await tx.insert(located(n, x, y))
    # As a file of the previous version: no shapes column, no marker for them.
    store.db.execute("ALTER TABLE geo_entries DROP COLUMN shapes")
    store.db.execute("DELETE FROM store_indexes WHERE name = 'geo-shapes-1'")
    store.db.execute("DROP TABLE schema_migrations")  # it came with numbered migrations
    await store.close()

    within = EntityQuery(
        geo=ql.parse_geoq("within", "Polygon", json.dumps(DISTRICT)), geoproperty=LOC, count=True
    )
    store = SqliteStore(path)
    await store.open()
    assert store.db.execute("SELECT count(*) FROM geo_entries WHERE shapes IS NULL").fetchone()[0] == 0
    result = await store.query_entities("", within)
    assert [e["id"] for e in result.entities] == ["urn:g:0", "urn:g:2"] and result.total == 2
    # A row written without shapes (by an older process on the same file): documents decide.
    store.db.execute("UPDATE geo_entries SET shapes = NULL WHERE pk = (SELECT min(pk) FROM geo_entries)")
    result = await store.query_entities("", within)
    assert [e["id"] for e in result.entities] == ["urn:g:0", "urn:g:2"] and result.total == 2
    await store.close()


def test_the_shapes_are_the_instance_values() -> None:
    async def run() -> list[Any]:
        store = SqliteStore(":memory:")
        await store.open()
        entity = located(1, 0.5, 0.5)
        entity[LOC].append({"type": "GeoProperty", "value": point(3, 3), "datasetId": "urn:ds:1"})
        async with store.write("") as tx:
            await tx.insert(entity)
        (shapes,) = store.db.execute("SELECT shapes FROM geo_entries").fetchone()
        await store.close()
        return json.loads(shapes)

    assert asyncio.run(run()) == [point(0.5, 0.5), point(3, 3)]


# -- the boxes per type (geo_kind_rtree, migration 5) -----------------------------------------------


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(located_entities(), located_entities(), st.sampled_from(["within", "intersects", "overlaps"]), pages)
def test_a_geo_query_of_one_type_follows_replaces_and_deletes(
    docs: list[dict[str, Any]], later: list[dict[str, Any]], georel: str, page: tuple[int | None, int, bool]
) -> None:
    """Replacing an entity (another type, another place, none) and deleting one move its boxes in
    the per-type index as in the documents."""
    limit, offset, count = page
    geo = ql.parse_geoq(georel, "Polygon", json.dumps(DISTRICT))
    query = EntityQuery(types=[T], geo=geo, geoproperty=LOC, limit=limit, offset=offset, count=count)
    replaced = {docs[n]["id"]: {**doc, "id": docs[n]["id"]} for n, doc in enumerate(later[: len(docs)])}
    gone = [d["id"] for d in docs[::3]]

    async def run() -> tuple[list[str], int | None]:
        store = SqliteStore(":memory:")
        await store.open()
        try:
            for tenant in ("", "other"):
                async with store.write(tenant) as tx:
                    for doc in docs:
                        await tx.insert(doc)
                    for doc in replaced.values():
                        await tx.replace(doc)
                    if tenant == "":
                        for entity_id in gone:
                            await tx.delete(entity_id)
            result = await store.query_entities("", query)
            return [e["id"] for e in result.entities], result.total
        finally:
            await store.close()

    kept = [replaced.get(d["id"], d) for d in docs if d["id"] not in gone]
    matching = [d["id"] for d in kept if T in d["type"] and ql.geo_matches(geo, LOC, d)]
    assert asyncio.run(run()) == expected(matching, query)


async def test_the_boxes_per_type_are_made_from_the_geo_index_at_open(tmp_path: Path) -> None:
    path = str(tmp_path / "before-5.db")
    store = SqliteStore(path)
    await store.open()
    async with store.write("") as tx:
        for n, (x, y) in enumerate([(0.5, 0.5), (1.5, 1.5), (0.5, 1.5), (1, 1), (3, 3)]):
            await tx.insert(located(n, x, y))
        await tx.insert({**located(9, 0.25, 0.25), "type": [T, U]})
    # As a file of the release before the migration that makes them (and any after it).
    store.db.execute("DROP TABLE geo_kind_rtree")
    store.db.execute("DROP TABLE geo_kinds")
    (version,) = [v for v, _, step in sqlite_schema.MIGRATIONS if step is sqlite_schema._geo_kinds]
    store.db.execute("DELETE FROM schema_migrations WHERE version >= ?", (version,))
    await store.close()

    store = SqliteStore(path)
    await store.open()
    assert store.db.execute("SELECT count(*) FROM geo_kind_rtree").fetchone()[0] == 7
    for types, ids in (([T], ["urn:g:0", "urn:g:2", "urn:g:9"]), ([U], ["urn:g:9"])):
        within = EntityQuery(
            types=types,
            geo=ql.parse_geoq("within", "Polygon", json.dumps(DISTRICT)),
            geoproperty=LOC,
            count=True,
        )
        result = await store.query_entities("", within)
        assert [e["id"] for e in result.entities] == ids and result.total == len(ids)
    await store.close()


def test_a_type_named_twice_is_boxed_once() -> None:
    async def run() -> tuple[list[str], int | None]:
        store = SqliteStore(":memory:")
        await store.open()
        try:
            async with store.write("") as tx:
                await tx.insert({**located(1, 0.5, 0.5), "type": [T, T]})
                await tx.replace({**located(1, 0.25, 0.5), "type": [T, T]})
            within = ql.parse_geoq("within", "Polygon", json.dumps(DISTRICT))
            result = await store.query_entities(
                "", EntityQuery(types=[T], geo=within, geoproperty=LOC, count=True)
            )
            return [e["id"] for e in result.entities], result.total
        finally:
            await store.close()

    assert asyncio.run(run()) == (["urn:g:1"], 1)
