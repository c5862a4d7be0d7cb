"""The SQLite query indexes: q compiled to SQL answers exactly what Python evaluation answers,
geometries are found through the R*Tree, indexes follow every write and are rebuilt for files
written before they existed, and paginated GET /entities carries Link rel=prev/next."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from kizuna import query as ql
from kizuna.store import AccessFilter, EntityQuery
from kizuna.store.sqlite import SqliteStore
from kizuna.store.sqlite.entities import _plan

ATTRS = ("urn:a", "urn:b", "urn:c")
T = "urn:T"

# -- random entities ---------------------------------------------------------------------------------

numbers = st.one_of(st.integers(-3, 3), st.sampled_from([0.5, 1.0, -0.0, 2.5, -1.5, 2**53 + 1]))
strings = st.text(alphabet="ab:", max_size=3)
scalars = st.one_of(numbers, strings, st.booleans())
values = st.one_of(
    scalars,
    st.lists(st.one_of(scalars, st.lists(scalars, max_size=2)), max_size=3),
    st.builds(lambda v: {"@value": v}, scalars),
    st.fixed_dictionaries({"urn:k": scalars}),
)


@st.composite
def instances(draw: st.DrawFn) -> list[dict[str, Any]]:
    out = []
    for n in range(draw(st.integers(1, 2))):
        kind = draw(st.sampled_from(["Property", "Property", "Relationship", "LanguageProperty"]))
        if kind == "Property":
            instance: dict[str, Any] = {"type": kind, "value": draw(values)}
        elif kind == "Relationship":
            instance = {"type": kind, "object": draw(strings)}
        else:
            instance = {"type": kind, "languageMap": {"en": draw(strings), "de": draw(strings)}}
        if n:
            instance["datasetId"] = f"urn:ds:{n}"
        out.append(instance)
    return out


@st.composite
def entities(draw: st.DrawFn) -> list[dict[str, Any]]:
    out = []
    for n in range(draw(st.integers(1, 8))):
        entity: dict[str, Any] = {"id": f"urn:e:{n}", "type": [T]}
        for attr in ATTRS:
            if draw(st.booleans()):
                entity[attr] = draw(instances())
        out.append(entity)
    return out


# -- random q (the part that compiles to SQL, and beyond) ------------------------------------------

paths = st.sampled_from(ATTRS).map(ql.AttrPath)
literals = st.one_of(numbers, strings, st.booleans(), strings.map(lambda s: ql.Uri("urn:" + s)))
ordered = st.one_of(numbers, strings)


def comparison(path: ql.AttrPath, op: str, operand: Any) -> ql.Comparison:
    return ql.Comparison(path, op, operand)


compilable_terms = st.one_of(
    st.builds(ql.Exists, paths),
    st.builds(ql.NotExists, paths),
    st.builds(comparison, paths, st.sampled_from(["==", "!="]), literals),
    st.builds(comparison, paths, st.sampled_from([">", ">=", "<", "<="]), ordered),
    st.builds(
        comparison,
        paths,
        st.sampled_from(["==", "!="]),
        st.lists(literals, min_size=2, max_size=3).map(lambda v: ql.ValueList(tuple(v))),
    ),
    st.builds(comparison, paths, st.sampled_from(["==", "!="]), st.builds(ql.Range, ordered, ordered)),
    st.builds(ql.Pattern, paths, st.sampled_from(["a", "^b", "a$", "^$", ":"])),
)
python_only_terms = st.one_of(
    st.builds(ql.Pattern, paths, st.sampled_from(["a", "^b"]), st.just(True)),
    st.builds(comparison, st.just(ql.AttrPath("urn:a", compound=("urn:k",))), st.just("=="), scalars),
)


def trees(terms: st.SearchStrategy[ql.QExpr]) -> st.SearchStrategy[ql.QExpr]:
    return st.recursive(
        terms,
        lambda inner: st.one_of(
            st.lists(inner, min_size=2, max_size=3).map(lambda t: ql.QAnd(tuple(t))),
            st.lists(inner, min_size=2, max_size=3).map(lambda t: ql.QOr(tuple(t))),
        ),
        max_leaves=5,
    )


def store_answer(docs: list[dict[str, Any]], q: ql.QExpr) -> list[str]:
    async def run() -> list[str]:
        store = SqliteStore(":memory:")
        await store.open()
        try:
            async with store.write("") as tx:
                for doc in docs:
                    await tx.insert(doc)
            result = await store.query_entities("", EntityQuery(q=q, count=True))
            assert result.total == len(result.entities)
            return [e["id"] for e in result.entities]
        finally:
            await store.close()

    return asyncio.run(run())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entities(), trees(compilable_terms))
def test_q_compiled_to_sql_selects_what_python_evaluation_selects(
    docs: list[dict[str, Any]], q: ql.QExpr
) -> None:
    _, _, residual = _plan("", EntityQuery(q=q))
    assert residual is None, "this q should be decided by SQL alone"
    expected = [doc["id"] for doc in docs if ql.matches(q, doc)]
    assert store_answer(docs, q) == expected


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entities(), trees(st.one_of(compilable_terms, python_only_terms)))
def test_q_partly_compiled_still_selects_what_python_selects(docs: list[dict[str, Any]], q: ql.QExpr) -> None:
    expected = [doc["id"] for doc in docs if ql.matches(q, doc)]
    assert store_answer(docs, q) == expected


# -- the spatial index and index maintenance ---------------------------------------------------------

LOC = "https://uri.etsi.org/ngsi-ld/location"


def located(n: int, lon: float, lat: float, **attrs: Any) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "id": f"urn:ngsi-ld:Streetlight:{n}",
        "type": [T],
        LOC: [{"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}}],
    }
    for name, value in attrs.items():
        entity[f"urn:{name}"] = [{"type": "Property", "value": value}]
    return entity


def near(lon: float, lat: float, metres: int) -> ql.GeoQuery:
    return ql.parse_geoq(f"near;maxDistance=={metres}", "Point", f"[{lon},{lat}]")


async def ids(store: SqliteStore, query: EntityQuery) -> list[str]:
    return [e["id"] for e in (await store.query_entities("", query)).entities]


async def test_geo_candidates_come_from_the_rtree_and_follow_writes(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "k.db"))
    await store.open()
    async with store.write("") as tx:
        await tx.insert(located(1, 6.7620, 51.4300))  # ~0 m
        await tx.insert(located(2, 6.7640, 51.4300))  # ~139 m east
        await tx.insert(located(3, 6.7800, 51.4300))  # ~1.25 km east
    geo = EntityQuery(geo=near(6.7620, 51.4300, 200), geoproperty=LOC)
    assert await ids(store, geo) == ["urn:ngsi-ld:Streetlight:1", "urn:ngsi-ld:Streetlight:2"]
    boxes = store.db.execute("SELECT count(*) FROM geo_rtree").fetchone()[0]
    assert boxes == 3
    async with store.write("") as tx:
        await tx.replace(located(2, 6.7900, 51.4300))  # moves away
        await tx.delete("urn:ngsi-ld:Streetlight:1")
    assert await ids(store, geo) == []
    assert store.db.execute("SELECT count(*) FROM geo_rtree").fetchone()[0] == 2
    assert store.db.execute("SELECT count(*) FROM geo_entries").fetchone()[0] == 2
    # The plan for a bounded geoQuery reads the R*Tree.
    where, _, _ = _plan("", geo)
    assert "geo_rtree" in where
    await store.close()


async def test_indexes_are_built_at_open_for_entities_written_before_them(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    store = SqliteStore(path)
    await store.open()
    async with store.write("") as tx:
        for n in range(1, 6):
            await tx.insert(located(n, 6.76 + n * 0.01, 51.43, intensity=n * 100))
    # As a file of the previous version: the entities without any index row.
    for table in ("attr_values", "geo_rtree", "geo_entries", "store_indexes"):
        store.db.execute(f"DELETE FROM {table}")
    store.db.execute("DROP TABLE schema_migrations")  # it came with numbered migrations
    await store.close()

    store = SqliteStore(path)
    await store.open()
    q = ql.parse_q("urn:intensity>=300")
    assert await ids(store, EntityQuery(q=q)) == [f"urn:ngsi-ld:Streetlight:{n}" for n in (3, 4, 5)]
    box = EntityQuery(geo=near(6.78, 51.43, 100), geoproperty=LOC)
    assert await ids(store, box) == ["urn:ngsi-ld:Streetlight:2"]
    rows = store.db.execute("SELECT count(*) FROM attr_values").fetchone()[0]
    await store.close()
    # Done once: a second open does not rebuild (nor duplicate) anything.
    store = SqliteStore(path)
    await store.open()
    assert store.db.execute("SELECT count(*) FROM attr_values").fetchone()[0] == rows
    await store.close()


async def test_owners_reach_the_type_index_of_files_written_before_it_held_them(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    store = SqliteStore(path)
    await store.open()
    async with store.write("") as tx:
        for n in range(1, 5):
            await tx.insert(located(n, 6.76, 51.43), owner="alice" if n % 2 else "bob")
    # As a file of the previous version: entity_types without its owner column.
    store.db.executescript(
        "CREATE TABLE old_types AS SELECT tenant, type, pk FROM entity_types;"
        "DROP TABLE entity_types;"
        "CREATE TABLE entity_types (tenant TEXT NOT NULL, type TEXT NOT NULL, pk INTEGER NOT NULL,"
        " PRIMARY KEY (tenant, type, pk)) WITHOUT ROWID;"
        "INSERT INTO entity_types SELECT * FROM old_types; DROP TABLE old_types;"
        "DROP TABLE schema_migrations;"  # it came with numbered migrations
    )
    await store.close()

    store = SqliteStore(path)
    await store.open()
    alices = EntityQuery(types=[T], access=AccessFilter(owners=frozenset({"alice"})), count=True)
    page = await store.query_entities("", alices)
    assert [e["id"] for e in page.entities] == [f"urn:ngsi-ld:Streetlight:{n}" for n in (1, 3)]
    assert page.total == 2
    await store.close()


async def test_range_queries_read_the_attribute_index(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "k.db"))
    await store.open()
    where, params, residual = _plan("", EntityQuery(types=[T], q=ql.parse_q("urn:i==10..20;urn:s<20")))
    assert residual is None
    plan = " ".join(
        row[3]
        for row in store.db.execute(f"EXPLAIN QUERY PLAN SELECT e.doc FROM entities e WHERE {where}", params)
    )
    assert "SEARCH v USING PRIMARY KEY (tenant=? AND attribute=? AND kind=? AND val>? AND val<?)" in plan
    assert "SCAN" not in plan, plan
    await store.close()


def test_an_id_pattern_with_a_literal_start_is_an_index_range() -> None:
    where, params, _ = _plan("", EntityQuery(id_pattern="^urn:ngsi-ld:Streetlight:12"))
    assert "e.id >= ?" in where
    assert params[1:3] == ["urn:ngsi-ld:Streetlight:12", "urn:ngsi-ld:Streetlight:13"]


# -- pagination links ----------------------------------------------------------------------------------


def test_paginated_queries_link_to_the_previous_and_next_pages(client: TestClient) -> None:
    base = "/ngsi-ld/v1/entities"
    batch = [{"id": f"urn:ngsi-ld:Streetlight:p{n}", "type": "Streetlight"} for n in range(5)]
    assert client.post("/ngsi-ld/v1/entityOperations/create", json=batch).status_code == 201

    def links(response: Any) -> list[str]:
        parts = [p.strip().replace(" ", "") for p in response.headers["link"].split(",")]
        return [p for p in parts if 'rel="prev"' in p or 'rel="next"' in p]

    first = client.get(base, params={"type": "Streetlight", "limit": 2})
    assert [e["id"][-2:] for e in first.json()] == ["p0", "p1"]
    assert links(first) == [
        f'<{base}?type=Streetlight&limit=2&offset=2>;rel="next";type="application/ld+json"'
    ]
    middle = client.get(base, params={"type": "Streetlight", "limit": 2, "offset": 2, "count": "true"})
    assert middle.headers["ngsild-results-count"] == "5"
    assert links(middle) == [
        f'<{base}?type=Streetlight&count=true&limit=2&offset=0>;rel="prev";type="application/ld+json"',
        f'<{base}?type=Streetlight&count=true&limit=2&offset=4>;rel="next";type="application/ld+json"',
    ]
    last = client.get(base, params={"type": "Streetlight", "limit": 2, "offset": 4})
    assert [e["id"][-2:] for e in last.json()] == ["p4"]
    assert links(last) == [
        f'<{base}?type=Streetlight&limit=2&offset=2>;rel="prev";type="application/ld+json"'
    ]
    everything = client.get(base, params={"type": "Streetlight"})
    assert len(everything.json()) == 5 and links(everything) == []
