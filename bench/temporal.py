"""Temporal API over 1,000,000 attribute instances, against hand-written SQL on the same store.

Starts ``kizuna serve`` (as ``bench/entities.py`` does) with a fresh store (``--store``: SQLite by
default, or PostgreSQL) and loads
``--sensors`` TrafficFlowObserved sensors with ``--observations`` instances each of an
``intensity`` Property observed every ``--interval`` seconds from 2026-11-01 (1,000 x 1,000 every
45 minutes: a month) through ``POST /ngsi-ld/v1/temporal/entities``, one request per sensor and
``--batch`` instances (the first request of a sensor creates it, the next ones upsert). Then, for
each query, it runs the HTTP request in a loop for ``--seconds`` (at least ``--min-runs`` and at most
``--max-runs`` times, one request at a time) and the equivalent hand-written SQL directly on the
same store (SQLite: a read-only ``sqlite3`` connection on the file; PostgreSQL: one asyncpg
connection, statements written for PostgreSQL's schema), and prints p50/p95 and queries/s of both
and the ratio API/SQL of the p50:

- hourly ``avg`` over one sensor's month (aggregatedValues, aggrPeriodDuration=PT1H);
- daily ``max`` over all sensors of the type (aggrPeriodDuration=P1D, limit 1000, paged if more);
- ``lastN=10`` of 100 sensors chosen by an id list.

The first answer of each query is checked against the SQL result. The server is stopped at the end.

    .venv/bin/python bench/temporal.py --sensors 1000 --observations 1000 --seconds 10 [--store postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import orjson

from _server import Store, add_store_option, backing_store, machine, scratch, serve

BASE = "/ngsi-ld/v1/temporal"
DEFAULT = "https://uri.etsi.org/ngsi-ld/default-context/"
TYPE = "TrafficFlowObserved"
T0 = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
JSON = {"Content-Type": "application/json"}
ROW = "{:<34} {:>5} {:>8} {:>9} {:>9} {:>6} {:>9} {:>9} {:>8} {:>7}"


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sensor_id(n: int) -> str:
    return f"urn:ngsi-ld:{TYPE}:dui-{n:05d}"


def intensity(n: int, i: int, t: float, rng: random.Random) -> int:
    """Vehicles per hour: a daily wave (peak mid-afternoon) scaled per sensor, plus noise."""
    hour = (t % 86400) / 3600
    wave = 1 - abs(hour - 15) / 15
    return max(0, int((200 + n % 7 * 150) * wave + rng.gauss(0, 40)))


def load(port: int, args: argparse.Namespace) -> float:
    """Create the sensors and their history over HTTP; seconds taken."""
    rng = random.Random(20261101)
    start = time.perf_counter()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300.0) as client:
        for n in range(args.sensors):
            for first in range(0, args.observations, args.batch):
                last = min(first + args.batch, args.observations)
                instances = []
                for i in range(first, last):
                    t = T0 + i * args.interval
                    value = intensity(n, i, t, rng)
                    instances.append({"type": "Property", "value": value, "observedAt": iso(t)})
                body = {"id": sensor_id(n), "type": TYPE, "intensity": instances}
                response = client.post(f"{BASE}/entities", content=orjson.dumps(body), headers=JSON)
                if response.status_code not in (201, 204):
                    raise SystemExit(f"bench: temporal create: {response.status_code} {response.text[:300]}")
            if n and n % 100 == 0:
                took = time.perf_counter() - start
                print(f"bench: {n} sensors loaded in {took:.0f} s", file=sys.stderr, flush=True)
    return time.perf_counter() - start


# -- the hand-written side --------------------------------------------------------------------------


class RawSql:
    """Hand-written SQL straight on the store the server uses: a read-only ``sqlite3`` connection
    on the SQLite file, or one asyncpg connection to the PostgreSQL database (driven by a private
    event loop, so that it is timed like the HTTP side, one synchronous call at a time)."""

    def __init__(self, store: Store) -> None:
        self.dialect = "postgresql" if store.postgres else "sqlite"
        self.loop = asyncio.new_event_loop()
        if store.postgres:
            self.pg: asyncpg.Connection = self.loop.run_until_complete(asyncpg.connect(store.url))
        else:
            self.db = sqlite3.connect(f"file:{store.sqlite_path}?mode=ro", uri=True, check_same_thread=False)

    def fetch(self, sql: dict[str, str], *params: Any) -> list[Any]:
        """Run the statement written for this store (``sql`` by dialect) with ``params``."""
        if self.dialect == "postgresql":
            return self.loop.run_until_complete(self.pg.fetch(sql["postgresql"], *params))
        return self.db.execute(sql["sqlite"], params).fetchall()

    def instances_and_size(self) -> tuple[int, float]:
        """Attribute instances stored, and the size of the store (file or database) in MiB."""
        count = {
            "sqlite": "SELECT count(*) FROM attribute_history",
            "postgresql": "SELECT count(*) FROM tenant_default.attribute_history",
        }
        size = {
            "sqlite": "SELECT page_count * page_size FROM pragma_page_count, pragma_page_size",
            "postgresql": "SELECT pg_database_size(current_database())",
        }
        return self.fetch(count)[0][0], self.fetch(size)[0][0] / 2**20

    def close(self) -> None:
        if self.dialect == "postgresql":
            self.loop.run_until_complete(self.pg.close())
        else:
            self.db.close()
        self.loop.close()


# -- the queries: (HTTP request, hand-written SQL, check) for one random draw -----------------------


class Query:
    """One benchmarked query: ``draw(rng)`` gives the HTTP call and the SQL call of one draw."""

    def __init__(self, name: str, draw: Callable[[random.Random], tuple[Any, Any, Any]]) -> None:
        self.name = name
        self.draw = draw


def get_all(client: httpx.Client, path: str, params: dict[str, str], page: int | None) -> list[Any]:
    """GET a temporal query and every following page (``limit`` = ``page``); the entities."""
    out: list[Any] = []
    offset = 0
    while True:
        query = params if page is None else {**params, "limit": str(page), "offset": str(offset)}
        response = client.get(path, params=query)
        if response.status_code != 200:
            raise SystemExit(f"bench: GET {path}: {response.status_code} {response.text[:300]}")
        body = response.json()
        out += body if isinstance(body, list) else [body]
        if page is None or not isinstance(body, list) or len(body) < page:
            return out
        offset += page


def queries(client: httpx.Client, db: RawSql, args: argparse.Namespace) -> list[Query]:
    attribute = DEFAULT + "intensity"
    end = T0 + args.observations * args.interval
    between = {"timerel": "between", "timeAt": iso(T0), "endTimeAt": iso(end)}

    def hourly(rng: random.Random) -> tuple[Any, Any, Any]:
        entity_id = sensor_id(rng.randrange(args.sensors))
        params = {
            **between,
            "options": "aggregatedValues",
            "aggrMethods": "avg",
            "aggrPeriodDuration": "PT1H",
            "attrs": "intensity",
        }
        sql = {
            "sqlite": """
            SELECT CAST((observed_at - ?) / 3600 AS INTEGER) AS bucket, avg(value_number)
            FROM attribute_history
            WHERE tenant = '' AND entity_id = ? AND attribute = ? AND deleted_at IS NULL
              AND observed_at >= ? AND observed_at < ?
            GROUP BY bucket ORDER BY bucket""",
            "postgresql": """
            SELECT floor((observed_at - $1) / 3600)::bigint AS bucket, avg(value_number)
            FROM tenant_default.attribute_history
            WHERE entity_id = $2 AND attribute = $3 AND deleted_at IS NULL
              AND observed_at >= $4 AND observed_at < $5
            GROUP BY bucket ORDER BY bucket""",
        }

        def api() -> Any:
            return get_all(client, f"{BASE}/entities/{entity_id}", params, None)

        def hand() -> Any:
            return db.fetch(sql, T0, entity_id, attribute, T0, end)

        def check(answer: Any, rows: Any) -> str:
            series = answer[0]["intensity"]["avg"]
            same = len(series) == len(rows) and all(
                abs(a[0] - r[1]) < 1e-6 and a[1] == iso(T0 + r[0] * 3600)
                for a, r in zip(series, rows, strict=True)
            )
            return verdict(f"{len(series)} buckets", same)

        return api, hand, check

    def daily(rng: random.Random) -> tuple[Any, Any, Any]:
        params = {
            **between,
            "type": TYPE,
            "options": "aggregatedValues",
            "aggrMethods": "max",
            "aggrPeriodDuration": "P1D",
            "attrs": "intensity",
        }
        # SQLite: CROSS JOIN, the sensors of the type first, then each one's range on the history
        # index. PostgreSQL: its planner chooses (a hash join over the history, as it happens).
        sql = {
            "sqlite": """
            SELECT h.entity_id, CAST((h.observed_at - ?) / 86400 AS INTEGER) AS bucket, max(h.value_number)
            FROM temporal_entities e CROSS JOIN attribute_history h
                ON h.tenant = e.tenant AND h.entity_id = e.id
            WHERE e.tenant = '' AND EXISTS (SELECT 1 FROM json_each(e.types) WHERE value = ?)
              AND h.attribute = ? AND h.deleted_at IS NULL AND h.observed_at >= ? AND h.observed_at < ?
            GROUP BY h.entity_id, bucket ORDER BY h.entity_id, bucket""",
            "postgresql": """
            SELECT h.entity_id, floor((h.observed_at - $1) / 86400)::bigint AS bucket, max(h.value_number)
            FROM tenant_default.temporal_entities e JOIN tenant_default.attribute_history h
                ON h.entity_id = e.id
            WHERE $2 = ANY(e.types)
              AND h.attribute = $3 AND h.deleted_at IS NULL AND h.observed_at >= $4 AND h.observed_at < $5
            GROUP BY h.entity_id, bucket ORDER BY h.entity_id, bucket""",
        }

        def api() -> Any:
            return get_all(client, f"{BASE}/entities", params, 1000)

        def hand() -> Any:
            return db.fetch(sql, T0, DEFAULT + TYPE, attribute, T0, end)

        def check(answer: Any, rows: Any) -> str:
            got = {(e["id"], a[1]): a[0] for e in answer for a in e["intensity"]["max"]}
            want = {(r[0], iso(T0 + r[1] * 86400)): r[2] for r in rows}
            return verdict(f"{len(answer)} x {len(got) // max(1, len(answer))} days", got == want)

        return api, hand, check

    def last_n(rng: random.Random) -> tuple[Any, Any, Any]:
        ids = [sensor_id(n) for n in rng.sample(range(args.sensors), min(args.last_n_sensors, args.sensors))]
        params = {"type": TYPE, "id": ",".join(ids), "attrs": "intensity", "lastN": "10", "limit": "1000"}
        # The 10 newest of each sensor straight from the (entity, attribute, time) index.
        sql = {
            "sqlite": """
            SELECT h.entity_id, h.observed_at, h.instance_id, h.doc FROM json_each(?) AS ids
            JOIN attribute_history h ON h.pk IN (
                SELECT pk FROM attribute_history
                WHERE tenant = '' AND entity_id = ids.value AND attribute = ? AND deleted_at IS NULL
                ORDER BY observed_at DESC LIMIT 10)
            ORDER BY h.entity_id, h.observed_at""",
            "postgresql": """
            SELECT h.entity_id, h.observed_at, h.instance_id, h.doc
            FROM json_array_elements_text($1::json) AS ids(id) CROSS JOIN LATERAL (
                SELECT entity_id, observed_at, instance_id, doc FROM tenant_default.attribute_history
                WHERE entity_id = ids.id AND attribute = $2 AND deleted_at IS NULL
                ORDER BY observed_at DESC LIMIT 10) h
            ORDER BY h.entity_id, h.observed_at""",
        }

        def api() -> Any:
            return get_all(client, f"{BASE}/entities", params, None)

        def hand() -> Any:
            return db.fetch(sql, orjson.dumps(ids).decode(), attribute)

        def check(answer: Any, rows: Any) -> str:
            got = sorted((e["id"], i["instanceId"]) for e in answer for i in e["intensity"])
            want = sorted((r[0], r[2]) for r in rows)
            return verdict(f"{len(answer)} x {len(got) // max(1, len(answer))} instances", got == want)

        return api, hand, check

    return [
        Query("hourly avg, 1 sensor, month", hourly),
        Query("daily max, all sensors of type", daily),
        Query(f"lastN=10, {min(args.last_n_sensors, args.sensors)} sensors (id list)", last_n),
    ]


def verdict(summary: str, same: bool) -> str:
    return summary + ("" if same else " MISMATCH with the SQL result")


def timed(run: Callable[[], Any], args: argparse.Namespace) -> tuple[list[float], Any]:
    """Latencies (s) of ``run`` repeated for ``args.seconds`` (bounded by min/max runs); first result."""
    latencies: list[float] = []
    first: Any = None
    deadline = time.perf_counter() + args.seconds
    while len(latencies) < args.max_runs and (
        len(latencies) < args.min_runs or time.perf_counter() < deadline
    ):
        start = time.perf_counter()
        result = run()
        latencies.append(time.perf_counter() - start)
        if first is None:
            first = result
    return latencies, first


def stats(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "runs": len(ordered),
        "p50": 1000 * ordered[len(ordered) // 2],
        "p95": 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))],
        "rate": len(ordered) / sum(ordered),
    }


def measure(query: Query, args: argparse.Namespace) -> dict[str, Any]:
    """Run the API and the SQL form of ``query`` on the same draws (same seed), one at a time."""
    out: dict[str, Any] = {}
    calls = {}
    for side in ("api", "sql"):
        rng = random.Random(7)
        which = 0 if side == "api" else 1
        calls[side] = timed(lambda rng=rng, which=which: query.draw(rng)[which](), args)
    # The first draw of both sides is the same: check the API's answer against the SQL rows.
    check = query.draw(random.Random(7))[2]
    out["check"] = check(calls["api"][1], calls["sql"][1])
    out["api"] = stats(calls["api"][0])
    out["sql"] = stats(calls["sql"][0])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--sensors", type=int, default=1000, help="sensors (default 1000)")
    add("--observations", type=int, default=1000, help="instances per sensor (default 1000)")
    add("--interval", type=int, default=2700, help="seconds between observations (default 2700)")
    add("--batch", type=int, default=1000, help="instances per POST (default 1000)")
    add("--last-n-sensors", type=int, default=100, help="sensors of the lastN query (default 100)")
    add("--seconds", type=float, default=10.0, help="time per query and side (default 10)")
    add("--min-runs", type=int, default=3, help="runs per query and side at least (default 3)")
    add("--max-runs", type=int, default=500, help="runs per query and side at most (default 500)")
    add("--keep", action="store_true", help="keep the SQLite file (its path is printed)")
    add_store_option(parser)
    args = parser.parse_args()
    if min(args.sensors, args.observations, args.interval, args.batch, args.last_n_sensors) < 1:
        parser.error("sizes must be positive")
    if args.seconds <= 0 or args.min_runs < 1 or args.max_runs < args.min_runs:
        parser.error("--seconds must be positive and 1 <= --min-runs <= --max-runs")

    keep = args.keep and args.store == "sqlite"
    with (
        scratch("kizuna-bench-t-", keep) as tmp,
        backing_store(args.store, tmp) as store,
        serve(store, tmp) as port,
    ):
        took = load(port, args)
        store.analyze()
        db = RawSql(store)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300.0) as client:
                results = {q.name: measure(q, args) for q in queries(client, db, args)}
            instances, size = db.instances_and_size()
        finally:
            db.close()
        where = machine()

    total = args.sensors * args.observations
    print(
        f"kizuna temporal bench on {store.description}: {args.sensors} sensors x {args.observations} "
        f"instances = {instances} "
        f"stored, one every {args.interval} s from {iso(T0)}; loaded over HTTP (POST /temporal/entities, "
        f"{args.batch} instances a request) in {took:.1f} s ({total / took:,.0f} instances/s); "
        f"one request at a time, {args.seconds:g} s per query and side, 1 server worker, {where}; "
        f"store size {size:.0f} MiB" + (f", kept {store.sqlite_path}" if keep else "")
    )
    head = (
        "query",
        "runs",
        "API q/s",
        "API p50",
        "API p95",
        "runs",
        "SQL p50",
        "SQL p95",
        "API/SQL",
        "SQL q/s",
    )
    print(ROW.format(*head))
    for name, r in results.items():
        api, sql = r["api"], r["sql"]
        print(
            ROW.format(
                name,
                api["runs"],
                f"{api['rate']:.1f}",
                f"{api['p50']:.1f}",
                f"{api['p95']:.1f}",
                sql["runs"],
                f"{sql['p50']:.2f}",
                f"{sql['p95']:.2f}",
                f"{api['p50'] / sql['p50']:.1f}",
                f"{sql['rate']:.0f}",
            )
        )
    print("times in ms; API/SQL is the ratio of the p50; answers checked against SQL:")
    for name, r in results.items():
        print(f"  {name}: {r['check']}")


if __name__ == "__main__":
    main()
