"""The temporal API (clauses 5.6.11-5.6.16, 5.7.3-5.7.4): a vehicle fleet's speed and fuel history."""

from __future__ import annotations

import math
from typing import Any

from starlette.testclient import TestClient

BASE = "/ngsi-ld/v1/temporal"
ERR = "https://uri.etsi.org/ngsi-ld/errors/"
LD = {"Content-Type": "application/json"}
V1 = "urn:ngsi-ld:Vehicle:1"


def vehicle(entity_id: str = V1, **attrs: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": entity_id,
        "type": "Vehicle",
        "speed": [
            {"type": "Property", "value": 120, "observedAt": "2020-08-01T12:03:00Z"},
            {"type": "Property", "value": 80, "observedAt": "2020-08-01T12:05:00Z"},
            {"type": "Property", "value": 100, "observedAt": "2020-08-01T12:07:00Z"},
        ],
        "fuelLevel": [
            {"type": "Property", "value": 67, "observedAt": "2020-08-01T12:03:00Z"},
            {"type": "Property", "value": 53, "observedAt": "2020-08-01T13:05:00Z"},
            {"type": "Property", "value": 40, "observedAt": "2020-08-01T14:07:00Z"},
        ],
    }
    body.update(attrs)
    return body


def create(client: TestClient, body: dict[str, Any] | None = None) -> Any:
    return client.post(f"{BASE}/entities", json=body or vehicle(), headers=LD)


def get(client: TestClient, path: str = f"/entities/{V1}", **params: Any) -> Any:
    return client.get(BASE + path, params=params, headers={"Accept": "application/ld+json"})


def values(attr: Any) -> list[Any]:
    return [i["value"] for i in attr]


def error_type(response: Any) -> str:
    return response.json()["type"].removeprefix(ERR)


def test_create_then_update_and_retrieve(client: TestClient) -> None:
    response = create(client)
    assert response.status_code == 201
    assert response.headers["Location"] == f"{BASE}/entities/{V1}"
    more = {
        "id": V1,
        "type": "Vehicle",
        "speed": [{"type": "Property", "value": 90, "observedAt": "2020-08-01T12:09:00Z"}],
    }
    assert create(client, more).status_code == 204
    body = get(client).json()
    assert body["id"] == V1 and body["type"] == "Vehicle"
    speed = body["speed"]
    assert values(speed) == [120, 80, 100, 90]
    assert all(i["instanceId"].startswith("urn:ngsi-ld:attribute:instance:") for i in speed)
    assert "createdAt" not in speed[0]
    with_sys = get(client, options="sysAttrs").json()
    assert "createdAt" in with_sys and "modifiedAt" in with_sys["speed"][0]


def test_timerel_and_lastn(client: TestClient) -> None:
    create(client)
    after = get(client, timerel="after", timeAt="2020-08-01T12:05:00Z").json()
    assert values(after["speed"]) == [100]
    assert values(after["fuelLevel"]) == [53, 40]
    before = get(client, timerel="before", timeAt="2020-08-01T12:05:00Z").json()
    assert values(before["speed"]) == [120]
    between = get(
        client, timerel="between", timeAt="2020-08-01T12:05:00Z", endTimeAt="2020-08-01T13:05:00Z"
    ).json()
    assert values(between["speed"]) == [80, 100]
    assert "fuelLevel" not in between
    last = get(client, lastN="2").json()
    assert values(last["speed"]) == [80, 100]
    assert values(last["fuelLevel"]) == [53, 40]
    only = get(client, attrs="speed", lastN="1").json()
    assert set(only) == {"@context", "id", "type", "speed"}
    assert "fuelLevel" not in only


def test_temporal_values(client: TestClient) -> None:
    create(client)
    body = get(client, options="temporalValues").json()
    assert body["speed"] == {
        "type": "Property",
        "values": [
            [120, "2020-08-01T12:03:00Z"],
            [80, "2020-08-01T12:05:00Z"],
            [100, "2020-08-01T12:07:00Z"],
        ],
    }
    assert get(client, format="temporalValues", options="aggregatedValues", aggrMethods="sum").json() == body


def test_aggregations_in_buckets(client: TestClient) -> None:
    create(client)
    body = get(
        client, options="aggregatedValues", aggrMethods="avg,max,totalCount", aggrPeriodDuration="PT1H"
    ).json()
    assert body["speed"] == {
        "type": "Property",
        "avg": [[100.0, "2020-08-01T12:03:00Z", "2020-08-01T13:03:00Z"]],
        "max": [[120.0, "2020-08-01T12:03:00Z", "2020-08-01T13:03:00Z"]],
        "totalCount": [[3, "2020-08-01T12:03:00Z", "2020-08-01T13:03:00Z"]],
    }
    assert body["fuelLevel"]["avg"] == [
        [67.0, "2020-08-01T12:03:00Z", "2020-08-01T13:03:00Z"],
        [53.0, "2020-08-01T13:03:00Z", "2020-08-01T14:03:00Z"],
        [40.0, "2020-08-01T14:03:00Z", "2020-08-01T15:03:00Z"],
    ]
    whole = get(
        client,
        options="aggregatedValues",
        aggrMethods="sum,sumsq,min,stddev,distinctCount",
        attrs="speed",
    ).json()
    speed = whole["speed"]
    # 120, 80, 100: sum 300, sum of squares 14400+6400+10000, sample stddev sqrt(800/2) = 20.
    assert speed["sum"] == [[300.0, "2020-08-01T12:03:00Z", "2020-08-01T12:07:00Z"]]
    assert speed["sumsq"][0][0] == 30800.0
    assert speed["min"][0][0] == 80.0
    assert math.isclose(speed["stddev"][0][0], 20.0)
    assert speed["distinctCount"][0][0] == 3
    day = get(client, options="aggregatedValues", aggrMethods="min,max", aggrPeriodDuration="P1D").json()
    assert day["fuelLevel"]["min"] == [[40.0, "2020-08-01T12:03:00Z", "2020-08-02T12:03:00Z"]]


def test_aggregation_buckets_start_at_the_time_asked_for(client: TestClient) -> None:
    create(client)
    body = get(
        client,
        options="aggregatedValues",
        aggrMethods="avg,totalCount",
        aggrPeriodDuration="PT1H",
        timerel="between",
        timeAt="2020-08-01T12:00:00Z",
        endTimeAt="2020-08-01T14:00:00Z",
    ).json()
    assert body["speed"]["avg"] == [[100.0, "2020-08-01T12:00:00Z", "2020-08-01T13:00:00Z"]]
    assert body["fuelLevel"]["totalCount"] == [
        [1, "2020-08-01T12:00:00Z", "2020-08-01T13:00:00Z"],
        [1, "2020-08-01T13:00:00Z", "2020-08-01T14:00:00Z"],
    ]
    assert body["fuelLevel"]["type"] == "Property"


def test_dense_and_sparse_buckets_are_timed_alike(client: TestClient) -> None:
    """Speed fills buckets 0, 2 and 4 of PT1M (times from a table of the period), fuelLevel 0,
    62 and 124 (too sparse for one: each bucket's own)."""
    create(client)
    body = get(
        client,
        options="aggregatedValues",
        aggrMethods="max",
        aggrPeriodDuration="PT1M",
        timerel="after",
        timeAt="2020-08-01T12:03:00.500Z",
    ).json()
    assert body["speed"]["max"] == [
        [80.0, "2020-08-01T12:04:00.500Z", "2020-08-01T12:05:00.500Z"],
        [100.0, "2020-08-01T12:06:00.500Z", "2020-08-01T12:07:00.500Z"],
    ]
    assert body["fuelLevel"]["max"] == [
        [53.0, "2020-08-01T13:04:00.500Z", "2020-08-01T13:05:00.500Z"],
        [40.0, "2020-08-01T14:06:00.500Z", "2020-08-01T14:07:00.500Z"],
    ]


def test_query_entities(client: TestClient) -> None:
    create(client)
    create(
        client,
        vehicle(
            "urn:ngsi-ld:Vehicle:2",
            speed=[{"type": "Property", "value": 10, "observedAt": "2020-09-01T00:00:00Z"}],
        ),
    )
    create(client, {**vehicle("urn:ngsi-ld:Bus:1"), "type": "Bus"})
    response = get(client, "/entities", type="Vehicle", count="true")
    assert response.status_code == 200
    assert response.headers["NGSILD-Results-Count"] == "2"
    assert [e["id"] for e in response.json()] == [V1, "urn:ngsi-ld:Vehicle:2"]
    fast = get(client, "/entities", type="Vehicle", q="speed>90").json()
    assert [e["id"] for e in fast] == [V1]
    later = get(client, "/entities", type="Vehicle", timerel="after", timeAt="2020-08-15T00:00:00Z").json()
    assert [e["id"] for e in later] == ["urn:ngsi-ld:Vehicle:2"]
    page = get(client, "/entities", type="Vehicle,Bus", limit="1", offset="1").json()
    assert [e["id"] for e in page] == ["urn:ngsi-ld:Vehicle:2"]
    posted = client.post(
        f"{BASE}/entityOperations/query",
        json={
            "type": "Query",
            "entities": [{"type": "Bus"}],
            "temporalQ": {"timerel": "before", "timeAt": "2020-08-01T12:04:00Z"},
        },
    )
    assert posted.status_code == 200
    assert [(e["id"], values(e["speed"])) for e in posted.json()] == [("urn:ngsi-ld:Bus:1", [120])]


def test_instance_operations(client: TestClient) -> None:
    create(client)
    speed = get(client).json()["speed"]
    first = speed[0]["instanceId"]
    path = f"{BASE}/entities/{V1}/attrs/speed/{first}"
    patched = client.patch(
        path, json={"type": "Property", "value": 129, "observedAt": "2020-08-01T12:03:00Z"}
    )
    assert patched.status_code == 204
    speed = get(client).json()["speed"]
    assert speed[0]["instanceId"] == first and speed[0]["value"] == 129
    assert client.delete(path).status_code == 204
    assert values(get(client).json()["speed"]) == [80, 100]
    assert client.delete(path).status_code == 404
    missing = client.delete(f"{BASE}/entities/{V1}/attrs/speed/urn:ngsi-ld:nope")
    assert missing.status_code == 404
    assert client.delete(f"{BASE}/entities/{V1}/attrs/speed/notAUri").status_code == 400


def test_append_and_delete_attributes(client: TestClient) -> None:
    create(
        client,
        vehicle(
            fuelLevel=[
                {"type": "Property", "value": 67, "observedAt": "2020-08-01T12:03:00Z"},
                {
                    "type": "Property",
                    "value": 40,
                    "observedAt": "2020-08-01T14:07:00Z",
                    "datasetId": "urn:ngsi-ld:fuel",
                },
            ]
        ),
    )
    appended = client.post(
        f"{BASE}/entities/{V1}/attrs",
        json={"brand": [{"type": "Property", "value": "BMW"}]},
        headers=LD,
    )
    assert appended.status_code == 204
    assert values(get(client).json()["brand"]) == ["BMW"]
    fuel = f"{BASE}/entities/{V1}/attrs/fuelLevel"
    assert client.delete(fuel).status_code == 204  # the default instance only
    assert values(get(client).json()["fuelLevel"]) == [40]
    assert client.delete(fuel, params={"deleteAll": "true"}).status_code == 204
    assert "fuelLevel" not in get(client).json()
    assert client.delete(fuel).status_code == 404
    unknown = client.post(f"{BASE}/entities/urn:ngsi-ld:Vehicle:404/attrs", json={"brand": "x"}, headers=LD)
    assert unknown.status_code == 404
    assert client.delete(f"{BASE}/entities/{V1}").status_code == 204
    assert get(client).status_code == 404
    assert client.delete(f"{BASE}/entities/{V1}").status_code == 404
    # The entity the temporal create made goes with its history.
    assert client.get(f"/ngsi-ld/v1/entities/{V1}").status_code == 404


def test_errors(client: TestClient) -> None:
    create(client)
    cases = [
        ({"timerel": "after"}, "BadRequestData"),
        ({"timerel": "between", "timeAt": "2020-08-01T12:00:00Z"}, "BadRequestData"),
        ({"timerel": "whenever", "timeAt": "2020-08-01T12:00:00Z"}, "BadRequestData"),
        ({"timerel": "after", "timeAt": "yesterday"}, "BadRequestData"),
        ({"timeAt": "2020-08-01T12:00:00Z"}, "BadRequestData"),
        ({"lastN": "0"}, "BadRequestData"),
        ({"options": "aggregatedValues", "aggrMethods": "median"}, "BadRequestData"),
        (
            {"options": "aggregatedValues", "aggrMethods": "avg", "aggrPeriodDuration": "1 hour"},
            "BadRequestData",
        ),
        ({"options": "temporalValues,invalid"}, "InvalidRequest"),  # ETSI 021_20
        ({"format": "invalidFormat"}, "InvalidRequest"),
        ({"timeproperty": "seenAt"}, "BadRequestData"),
        ({"unknown": "1"}, "InvalidRequest"),
    ]
    for params, expected in cases:
        response = get(client, **params)
        assert response.status_code == 400, params
        assert error_type(response) == expected, (params, response.json())
    detail = get(client, timerel="between", timeAt="2020-08-01T12:00:00Z").json()["detail"]
    assert "endTimeAt" in detail
    assert get(client, "/entities/notAUri").status_code == 400
    assert get(client, "/entities/urn:ngsi-ld:Vehicle:404").status_code == 404
    assert get(client, attrs="nothing").status_code == 404
    geo = client.get(f"{BASE}/entities/{V1}", headers={"Accept": "application/geo+json"})
    assert geo.status_code == 406
    no_filter = get(client, "/entities", timerel="after", timeAt="2020-08-01T12:00:00Z")
    assert no_filter.status_code == 400 and error_type(no_filter) == "BadRequestData"
    only_ids = get(client, "/entities", id=V1)
    assert only_ids.status_code == 400
    text = client.post(f"{BASE}/entities", content=b"{}", headers={"Content-Type": "text/plain"})
    assert text.status_code == 415
    wrong_type = client.post(
        f"{BASE}/entities/urn:ngsi-ld:Vehicle:404/attrs",
        content=b"{}",
        headers={"Content-Type": "text/plain"},
    )
    assert wrong_type.status_code == 415  # media type before existence
    broken = client.post(f"{BASE}/entities", content=b'{"id": ,}', headers=LD)
    assert broken.status_code == 400 and error_type(broken) == "InvalidRequest"
    no_id = create(client, {"type": "Vehicle"})
    assert no_id.status_code == 400 and error_type(no_id) == "BadRequestData"
    assert client.delete(f"{BASE}/entities").status_code == 405
    unreachable = client.post(
        f"{BASE}/entities",
        json={**vehicle("urn:ngsi-ld:Vehicle:9"), "@context": "http://127.0.0.1:9/unreachable.jsonld"},
        headers={"Content-Type": "application/ld+json"},
    )
    assert unreachable.status_code == 503


async def test_record_changes_keeps_deletions(store: Any) -> None:
    from kizuna.ngsild.history import record_changes
    from kizuna.store import HistoryQuery

    t = "2020-08-01T12:00:00Z"
    before = {
        "id": V1,
        "type": ["T"],
        "p": [{"type": "Relationship", "object": "urn:x:1", "createdAt": t, "modifiedAt": t}],
    }
    async with store.write("") as tx:
        await record_changes(tx, None, before, t)
        await record_changes(tx, before, {"id": V1, "type": ["T"]}, "2020-08-01T13:00:00Z")
    kept = await store.read_history("", V1, HistoryQuery())
    deleted = await store.read_history("", V1, HistoryQuery(timeproperty="deletedAt"))
    assert [i["object"] for _, i in kept] == ["urn:x:1"]
    assert [(i["object"], i["deletedAt"]) for _, i in deleted] == [
        ("urn:ngsi-ld:null", "2020-08-01T13:00:00Z")
    ]


def series(name: str, start_hour: int, count: int) -> list[dict[str, Any]]:
    return [
        {"type": "Property", "value": i, "observedAt": f"2020-08-01T{start_hour}:{i:02d}:00Z"}
        for i in range(count)
    ]


def test_instance_limit_answers_206_with_content_range(client: TestClient) -> None:
    """Clause 6.3.10: past 10 instances of an attribute, the answer is cut at one time for all."""
    create(client, vehicle(speed=series("speed", 12, 15), fuelLevel=series("fuelLevel", 13, 15)))
    oldest = get(client)
    assert oldest.status_code == 206
    assert oldest.headers["Content-Range"] == "date-time 2020-08-01T12:00:00Z-2020-08-01T12:09:00Z/*"
    assert values(oldest.json()["speed"]) == list(range(10))
    assert oldest.json()["fuelLevel"] == []
    newest = get(client, lastN=12, timerel="before", timeAt="2021-01-01T00:00:00Z")
    assert newest.status_code == 206
    assert newest.headers["Content-Range"] == "date-time 2021-01-01T00:00:00Z-2020-08-01T13:05:00Z/12"
    assert values(newest.json()["fuelLevel"]) == list(range(5, 15))
    assert newest.json()["speed"] == []
    simplified = get(client, options="temporalValues", timerel="after", timeAt="2020-08-01T11:00:00Z")
    assert simplified.headers["Content-Range"] == "date-time 2020-08-01T11:00:00Z-2020-08-01T12:09:00Z/*"
    assert simplified.json()["fuelLevel"] == {"type": "Property", "values": []}
    complete = get(client, lastN=5)
    assert complete.status_code == 200 and "Content-Range" not in complete.headers
    query = get(client, "/entities", type="Vehicle")
    assert query.status_code == 206 and len(query.json()[0]["speed"]) == 10


def test_same_observation_is_replaced_and_values_are_wrapped(client: TestClient) -> None:
    create(client)
    again = {
        "id": V1,
        "type": "Vehicle",
        "speed": [{"type": "Property", "value": 121, "observedAt": "2020-08-01T12:03:00Z"}],
    }
    assert create(client, again).status_code == 204
    assert values(get(client).json()["speed"]) == [121, 80, 100]
    name = [
        {"type": "LanguageProperty", "languageMap": {"fr": "Voiture"}, "observedAt": "2020-08-01T12:03:00Z"}
    ]
    client.post(f"{BASE}/entities/{V1}/attrs", json={"name": name}, headers=LD)
    assert get(client, options="temporalValues").json()["name"]["languageMaps"] == [
        [{"languageMap": {"fr": "Voiture"}}, "2020-08-01T12:03:00Z"]
    ]


def test_order_by_pick_and_omit(client: TestClient) -> None:
    for n in (2, 1, 3):
        create(client, vehicle(f"urn:ngsi-ld:Vehicle:{n}"))
    ids = [e["id"][-1] for e in get(client, "/entities", type="Vehicle", orderBy="id;desc").json()]
    assert ids == ["3", "2", "1"]
    created = [e["id"][-1] for e in get(client, "/entities", type="Vehicle", orderBy="createdAt").json()]
    assert created == ["2", "1", "3"]
    page = get(client, "/entities", type="Vehicle", orderBy="id", limit=1, offset=1)
    assert [e["id"][-1] for e in page.json()] == ["2"]
    assert 'rel="next"' in page.headers["Link"] and 'rel="prev"' in page.headers["Link"]
    both = get(client, pick="speed", omit="speed")
    assert both.status_code == 400 and error_type(both) == "BadRequestData"
    assert get(client, pick="unknown").status_code == 404
    assert get(client, omit="id,type,speed,fuelLevel").status_code == 404
    assert client.delete(f"{BASE}/entities/{V1}/attrs//urn:ngsi-ld:x:1").status_code == 400
    assert client.patch(f"{BASE}/entities/{V1}/attrs//urn:ngsi-ld:x:1", json={}).status_code == 405


def test_a_new_temporal_entity_is_also_the_current_entity(client: TestClient) -> None:
    """As peers (and ETSI 020_17-020_20) do: its latest instances become the entity's attributes,
    so deleting one through the entity API leaves a deletion record."""
    create(client, vehicle(scope="/Nantes"))
    current = client.get(f"/ngsi-ld/v1/entities/{V1}").json()
    assert current["speed"]["value"] == 100 and current["fuelLevel"]["value"] == 40
    assert client.delete(f"/ngsi-ld/v1/entities/{V1}/attrs/speed").status_code == 204
    assert client.delete(f"/ngsi-ld/v1/entities/{V1}/attrs/scope").status_code == 204
    deleted = get(client, timeproperty="deletedAt").json()
    assert [(i["value"], "deletedAt" in i) for i in deleted["speed"]] == [("urn:ngsi-ld:null", True)]
    assert [(i["value"], "deletedAt" in i) for i in deleted["scope"]] == [([], True)]


async def test_prune_history_forgets_old_instances(store: Any) -> None:
    from kizuna.ngsild.temporal_params import parse_datetime, parse_retention
    from kizuna.store import HistoryQuery

    def instance(observed: str) -> dict[str, Any]:
        t = "2020-01-01T00:00:00Z"
        return {"type": "Property", "value": 1, "observedAt": observed, "createdAt": t, "modifiedAt": t}

    async with store.write("") as tx:
        for entity_id, observed in (
            (V1, "2020-01-01T00:00:00Z"),
            (V1, "2020-03-01T00:00:00Z"),
            ("urn:x:2", "2020-01-01T00:00:00Z"),
        ):
            await tx.append_history(entity_id, ["T"], "p", instance(observed))
    assert await store.prune_history(parse_datetime("2020-02-01T00:00:00Z", "t")) == 2
    kept = await store.read_history("", V1, HistoryQuery())
    assert [i["observedAt"] for _, i in kept] == ["2020-03-01T00:00:00Z"]
    assert await store.get_temporal_entity("", "urn:x:2") is None
    assert await store.get_temporal_entity("", V1) is not None
    assert parse_retention("90d") == 90 * 86400 and parse_retention("P1W") == 7 * 86400


async def test_pruner_prunes_periodically_until_cancelled() -> None:
    import asyncio
    import time

    from kizuna.ngsild.history import prune_history_forever

    cutoffs: list[float] = []

    class Store:
        async def prune_history(self, before: float) -> int:
            cutoffs.append(before)
            if len(cutoffs) == 1:
                raise RuntimeError("a failed round is retried")
            return 0

    task = asyncio.create_task(prune_history_forever(Store(), 3600, every=0.01))  # type: ignore[arg-type]
    await asyncio.sleep(0.1)
    task.cancel()
    assert len(cutoffs) >= 2
    assert abs(cutoffs[-1] - (time.time() - 3600)) < 5


def test_retrieve_of_attributes_it_never_had_is_not_found(client: TestClient) -> None:
    """attrs naming none of the entity's attributes is 404, however the history is read; an
    attribute it has, with no instance in the time range, is an empty answer."""
    create(client)
    for params in ({}, {"options": "aggregatedValues", "aggrMethods": "max", "aggrPeriodDuration": "PT1H"}):
        missing = get(client, attrs="colour", **params)
        assert missing.status_code == 404
        assert error_type(missing) == "ResourceNotFound"
        empty = get(client, attrs="speed", timerel="before", timeAt="2019-01-01T00:00:00Z", **params)
        assert empty.status_code == 200
        assert empty.json()["id"] == V1
        assert get(client, attrs="speed", **params).json()["speed"]
