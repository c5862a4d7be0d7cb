"""The Store contract for temporal history (``store/*/history.py``), on every store kind of
``conftest.STORE_KINDS``: writes in the transaction, reads with time ranges, datasetIds and lastN,
aggregation in SQL, and pruning."""

from __future__ import annotations

import time
import uuid

import pytest

from kizuna.store import AggregateSeries, HistoryQuery, Store
from kizuna.times import epoch

SPEED = "https://uri.etsi.org/ngsi-ld/default-context/speed"
NAME = "https://uri.etsi.org/ngsi-ld/default-context/name"
V1, V2 = "urn:ngsi-ld:Vehicle:a", "urn:ngsi-ld:Vehicle:b"
T_V = "https://uri.etsi.org/ngsi-ld/default-context/Vehicle"
T_CAR = "https://uri.etsi.org/ngsi-ld/default-context/Car"


def at(minute: int) -> str:
    return f"2026-11-22T10:{minute:02d}:00.000Z"


def instance(value: object, minute: int, **members: object) -> dict:
    stamp = at(minute)
    return {
        "type": "Property",
        "value": value,
        "observedAt": stamp,
        "createdAt": stamp,
        "modifiedAt": stamp,
        **members,
    }


async def record(store: Store) -> list[str]:
    """V1: speed 10, 20, 30, 40 at minutes 0-3 and 99 (datasetId urn:d:1) at 5, a name;
    V2: speed 5 at minute 1. Returns the instanceIds of V1's default speeds, appended in one call."""
    async with store.write("") as tx:
        ids = await tx.append_histories(V1, [T_V], [(SPEED, instance(10 * (m + 1), m)) for m in range(4)])
        assert await tx.append_histories(V1, [T_V], []) == []
        await tx.append_history(V1, [T_V], SPEED, instance(99, 5, datasetId="urn:d:1"))
        await tx.append_history(V1, [T_CAR], NAME, instance("a", 6), scope=["/duisburg"])
        await tx.append_history(V2, [T_V], SPEED, instance(5, 1))
    return ids


def values(rows: list[tuple[str, dict]]) -> list[object]:
    return [i["value"] for _, i in rows]


async def test_history_is_read_by_attribute_time_range_dataset_and_last_n(store: Store) -> None:
    ids = await record(store)
    assert all(i.startswith("urn:ngsi-ld:attribute:instance:") for i in ids) and len(set(ids)) == 4
    assert sorted(await store.history_attributes("", V1)) == [NAME, SPEED]
    assert await store.history_attributes("", "urn:ngsi-ld:Vehicle:none") == []
    speeds = await store.read_history("", V1, HistoryQuery(attributes=[SPEED]))
    assert values(speeds) == [10, 20, 30, 40, 99]
    assert [i["instanceId"] for _, i in speeds[:4]] == ids
    everything = await store.read_history("", V1, HistoryQuery())
    assert [a for a, _ in everything] == [NAME] + [SPEED] * 5  # by attribute, then time
    assert values(await store.read_history("", V1, HistoryQuery(attributes=[SPEED], last_n=2))) == [40, 99]
    assert values(await store.read_history("", V1, HistoryQuery(attributes=[SPEED], first_n=2))) == [10, 20]
    default = HistoryQuery(attributes=[SPEED], dataset_ids=frozenset({None}))
    assert values(await store.read_history("", V1, default)) == [10, 20, 30, 40]
    named = HistoryQuery(attributes=[SPEED], dataset_ids=frozenset({"urn:d:1"}))
    assert values(await store.read_history("", V1, named)) == [99]
    between = HistoryQuery(attributes=[SPEED], start=epoch(at(1)), end=epoch(at(3)))
    assert values(await store.read_history("", V1, between)) == [20, 30]
    after = HistoryQuery(attributes=[SPEED], start=epoch(at(1)), start_exclusive=True, end=epoch(at(3)))
    assert values(await store.read_history("", V1, after)) == [30]
    newest_before = HistoryQuery(attributes=[SPEED], end=epoch(at(3)), last_n=1)
    assert values(await store.read_history("", V1, newest_before)) == [30]
    assert await store.read_history("nowhere", V1, HistoryQuery()) == []
    assert await store.read_histories("", [], HistoryQuery()) == {}


async def test_last_n_of_several_entities_merges_instances_with_and_without_observed_at(store: Store) -> None:
    """lastN and the first N of each attribute of each entity, in one read: instances without
    observedAt are timed by their creation and interleave with the others."""

    def untimed(value: object, minute: int) -> dict:
        return {"type": "Property", "value": value, "createdAt": at(minute), "modifiedAt": at(minute)}

    async with store.write("") as tx:
        await tx.append_histories(
            V1,
            [T_V],
            [
                (SPEED, instance(1, 0)),
                (SPEED, untimed(2, 4)),
                (SPEED, instance(3, 2)),
                (SPEED, instance(4, 6)),
            ],
        )
        await tx.append_histories(V1, [T_V], [(NAME, untimed("a", 1)), (NAME, instance("b", 3))])
        await tx.append_histories(V2, [T_V], [(SPEED, untimed(5, 5))])

    async def read(query: HistoryQuery) -> dict[str, list[tuple[str, object]]]:
        found = await store.read_histories("", [V2, V1, "urn:ngsi-ld:Vehicle:none"], query)
        return {e: [(a[-5:], i["value"]) for a, i in rows] for e, rows in found.items()}

    for attributes in ([SPEED, NAME], None):
        assert await read(HistoryQuery(attributes=attributes, last_n=2)) == {
            V2: [("speed", 5)],
            V1: [("/name", "a"), ("/name", "b"), ("speed", 2), ("speed", 4)],
        }
        assert await read(HistoryQuery(attributes=attributes, first_n=2)) == {
            V2: [("speed", 5)],
            V1: [("/name", "a"), ("/name", "b"), ("speed", 1), ("speed", 3)],
        }
    bounded = HistoryQuery(attributes=[SPEED], last_n=2, end=epoch(at(6)))  # observedAt only
    assert await read(bounded) == {V1: [("speed", 1), ("speed", 3)]}
    one = await store.read_history("", V1, HistoryQuery(attributes=[SPEED], last_n=3))
    assert values(one) == [3, 2, 4]


async def test_temporal_entities_gather_types_and_scope_and_are_queried(store: Store) -> None:
    await record(store)
    v1 = await store.get_temporal_entity("", V1)
    assert v1 is not None
    assert (v1["id"], v1["type"], v1["scope"]) == (V1, [T_V, T_CAR], ["/duisburg"])
    assert v1["createdAt"] == at(0) and v1["modifiedAt"] == at(6)
    assert await store.get_temporal_entity("", "urn:ngsi-ld:Vehicle:none") is None
    assert await store.get_temporal_entity("nowhere", V1) is None

    async def ids(types: list[str] | None, entity_ids: list[str] | None, pattern: str | None) -> list[str]:
        return [e["id"] for e in await store.query_temporal_entities("", types, entity_ids, pattern)]

    assert await ids(None, None, None) == [V1, V2]  # creation order
    assert await ids([T_V], None, None) == [V1, V2]
    assert await ids([T_CAR], None, None) == [V1]
    assert await ids(None, [V2, "urn:x"], None) == [V2]
    assert await ids(None, None, "Vehicle:b$") == [V2]
    assert await ids(None, None, "^urn:ngsi-ld:Vehicle:") == [V1, V2]
    assert await store.query_temporal_entities("nowhere", None, None, None) == []

    async with store.write("") as tx:
        assert await tx.temporal_entity(V1) == v1
        assert await tx.touch_temporal_entity("urn:ngsi-ld:Vehicle:c", [T_V], None, at(7))
        assert not await tx.touch_temporal_entity("urn:ngsi-ld:Vehicle:c", [T_CAR], ["/x"], at(8))
        assert not await tx.touch_temporal_entity("urn:ngsi-ld:Vehicle:c", [T_CAR], ["/x"], at(9))
    c = await store.get_temporal_entity("", "urn:ngsi-ld:Vehicle:c")
    assert c == {
        "id": "urn:ngsi-ld:Vehicle:c",
        "type": [T_V, T_CAR],
        "scope": ["/x"],
        "createdAt": at(7),
        "modifiedAt": at(8),  # the third touch changed nothing
    }


async def test_history_instances_are_updated_and_deleted(store: Store) -> None:
    ids = await record(store)
    async with store.write("") as tx:
        assert await tx.update_history_instance(V1, SPEED, ids[0], instance(11, 0))
        assert not await tx.update_history_instance(
            V1, SPEED, "urn:ngsi-ld:attribute:instance:x", instance(1, 0)
        )
        assert await tx.delete_history_instance(V1, SPEED, ids[1])
        assert not await tx.delete_history_instance(V1, SPEED, ids[1])
    speeds = await store.read_history("", V1, HistoryQuery(attributes=[SPEED]))
    assert values(speeds) == [11, 30, 40, 99]
    assert speeds[0][1]["instanceId"] == ids[0]  # kept across the update
    async with store.write("") as tx:
        assert await tx.delete_history(V1, SPEED, "urn:d:1", all_datasets=False) == 1
        assert await tx.delete_history(V1, SPEED, None, all_datasets=False) == 3  # the default's
        assert await tx.delete_history(V1, NAME) == 1
        assert await tx.delete_history(V2) == 1  # the whole entity: its temporal entity goes too
    assert await store.history_attributes("", V1) == []
    assert await store.get_temporal_entity("", V1) is not None
    assert await store.get_temporal_entity("", V2) is None


def buckets(
    series: list[AggregateSeries], method: int = 1
) -> list[tuple[str, str | None, float, float, object]]:
    """(entity, datasetId, start from minute 0, length, value) of each bucket of ``series``."""
    return [
        (s.entity_id, s.dataset_id, start - epoch(at(0)), end - start, row[method])
        for s in series
        for row, (start, end) in zip(s.buckets, s.bounds(), strict=True)
    ]


@pytest.mark.parametrize("origin", [None, "2026-11-22T10:00:00.000Z"])
async def test_aggregates_are_computed_per_series_and_period(store: Store, origin: str | None) -> None:
    await record(store)
    query = HistoryQuery(attributes=[SPEED], dataset_ids=frozenset({None}))
    methods = ["totalCount", "sum", "avg", "min", "max", "distinctCount", "stddev", "sumsq", "unknown"]
    whole = await store.aggregate_histories("", [V1, V2], query, methods, None, None)
    assert [(s.entity_id, s.attribute, s.dataset_id, s.kind, len(s.buckets)) for s in whole] == [
        (V1, SPEED, None, "Property", 1),
        (V2, SPEED, None, "Property", 1),
    ]
    v1 = dict(zip(methods, whole[0].buckets[0][1:], strict=False))
    assert (v1["totalCount"], v1["sum"], v1["avg"], v1["min"], v1["max"]) == (4, 100, 25, 10, 40)
    assert (v1["distinctCount"], v1["sumsq"], v1["unknown"]) == (4, 3000, None)
    assert v1["stddev"] == pytest.approx(12.9099, abs=1e-4)
    assert whole[0].bounds() == [(epoch(at(0)), epoch(at(3)))]  # to the last instance
    v2 = whole[1].buckets[0]
    assert v2[1] == 1 and v2[7] == 0.0  # totalCount, stddev

    start = None if origin is None else epoch(origin)
    two_minutes = await store.aggregate_histories("", [V1, V2], query, ["sum"], 120.0, start)
    # From the origin given, else from each series' first instance (V2's is at minute 1).
    assert buckets(two_minutes) == [
        (V1, None, 0, 120, 30),
        (V1, None, 120, 120, 70),
        (V2, None, 0 if origin else 60, 120, 5),
    ]
    assert await store.aggregate_histories("", [], query, ["sum"], None, None) == []
    assert await store.aggregate_histories("nowhere", [V1], query, ["sum"], None, None) == []


@pytest.mark.parametrize("origin", [None, "2026-11-22T10:00:00.000Z"])
@pytest.mark.parametrize("period", [None, 120.0])
async def test_one_entity_and_attribute_still_aggregates_each_dataset_apart(
    store: Store, origin: str | None, period: float | None
) -> None:
    """With the entity and the attribute fixed the statement groups on the datasetId and the
    bucket only; the series of each datasetId (the default first) must still come apart."""
    await record(store)
    start = None if origin is None else epoch(origin)
    query = HistoryQuery(attributes=[SPEED])
    got = await store.aggregate_histories("", [V1], query, ["sum", "totalCount"], period, start)
    assert [(s.entity_id, s.attribute, s.dataset_id, s.kind) for s in got] == [
        (V1, SPEED, None, "Property"),
        (V1, SPEED, "urn:d:1", "Property"),
    ]
    if period is None:
        assert buckets(got) == [
            (V1, None, 0, 180, 100),
            (V1, "urn:d:1", 0 if origin else 300, 0 if origin is None else 300, 99),
        ]
    else:
        assert buckets(got) == [
            (V1, None, 0, 120, 30),
            (V1, None, 120, 120, 70),
            (V1, "urn:d:1", 240 if origin else 300, 120, 99),
        ]
    named = HistoryQuery(attributes=[SPEED], dataset_ids=frozenset({"urn:d:1"}))
    only = await store.aggregate_histories("", [V1], named, ["totalCount"], period, start)
    assert [(s.dataset_id, [row[1] for row in s.buckets]) for s in only] == [("urn:d:1", [1])]
    nothing = HistoryQuery(attributes=[SPEED], dataset_ids=frozenset({"urn:d:2"}))
    assert await store.aggregate_histories("", [V1], nothing, ["totalCount"], period, start) == []


async def test_pruning_forgets_old_instances_and_emptied_temporal_entities(store: Store) -> None:
    await record(store)
    async with store.write("") as tx:
        await tx.append_history("urn:ngsi-ld:Vehicle:old", [T_V], SPEED, instance(1, 0))
    pruned = await store.prune_history(epoch(at(2)))
    assert pruned == 4  # V1's 10 and 20, V2's 5, the old vehicle's 1
    assert values(await store.read_history("", V1, HistoryQuery(attributes=[SPEED]))) == [30, 40, 99]
    assert await store.get_temporal_entity("", "urn:ngsi-ld:Vehicle:old") is None
    assert await store.get_temporal_entity("", V1) is not None


async def test_instance_ids_sort_in_the_order_they_were_made(store: Store) -> None:
    """Version 7 UUIDs: the unique index on instance ids grows at its right edge."""

    def made_at(instance_id: str) -> int:  # the milliseconds in the id, and its version
        found = uuid.UUID(instance_id.rsplit(":", 1)[1])
        assert found.version == 7
        return found.int >> 80

    start = time.time_ns() // 1_000_000
    ids = await record(store)
    later = await record(store)
    assert start <= max(map(made_at, ids)) <= min(map(made_at, later)) <= time.time_ns() // 1_000_000
    by_text = [made_at(i) for i in sorted(ids + later)]
    assert by_text == sorted(by_text)  # text order is time order


async def test_one_write_touches_its_temporal_entity_again_after_deleting_its_history(store: Store) -> None:
    """The transaction remembers what it touched, and forgets it when the temporal entity may
    have changed (here: deleted, then recorded again in the same transaction)."""
    async with store.write("") as tx:
        await tx.append_history(V1, [T_V], SPEED, instance(1, 0), scope=["/a"])
        await tx.touch_temporal_entity(V1, [T_V], ["/b"], at(1))
        await tx.append_history(V1, [T_V], SPEED, instance(2, 2), scope=["/a"])
        assert (await tx.temporal_entity(V1))["scope"] == ["/a"]
        await tx.delete_history(V1)
        await tx.append_history(V1, [T_V], SPEED, instance(3, 3), scope=["/a"])
    entity = await store.get_temporal_entity("", V1)
    assert entity is not None and entity["scope"] == ["/a"] and entity["createdAt"] == at(3)
    assert values(await store.read_history("", V1, HistoryQuery(attributes=[SPEED]))) == [3]
