"""Temporal API over 1,000,000 attribute instances, against hand-written SQL on the same store.

For each store (``--store``, repeatable: SQLite by default, or PostgreSQL), starts ``kizuna
serve`` on a fresh store and loads ``--sensors`` TrafficFlowObserved sensors with
``--observations`` instances each of an ``intensity`` Property observed every ``--interval``
seconds from 2026-11-01 (1,000 x 1,000 every 45 minutes: a month) through
``POST /ngsi-ld/v1/temporal/entities``, one request per sensor and ``--batch`` instances (the first
request of a sensor creates it, the next ones upsert). Then, for each query, wrk (one thread, one
connection: the latency of one request at a time) asks the node for ``--seconds`` over random
draws, and the equivalent hand-written SQL runs as long on the same draws straight on the same
store (SQLite: a read-only ``sqlite3`` connection on the file; PostgreSQL: one asyncpg
connection, statements written for PostgreSQL's schema). It prints the p50 of both and their
ratio, API/SQL, measured minutes apart in the same run:

- hourly ``avg`` over one sensor's month (aggregatedValues, aggrPeriodDuration=PT1H);
- daily ``max`` over all sensors of the type (aggrPeriodDuration=P1D, one page of up to 1,000);
- ``lastN=10`` of 100 sensors chosen by an id list.

The first draw's answer of each query is checked against its SQL rows. The server is stopped at
the end.

    .venv/bin/python bench/temporal.py --sensors 1000 --observations 1000 --seconds 10 \\
        [--store sqlite --store postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
import orjson

import _wrk
from _server import Store, add_stores_option, backing_store, export, machine, scratch, serve, stores_of

BASE = "/ngsi-ld/v1/temporal"
DEFAULT = "https://uri.etsi.org/ngsi-ld/default-context/"
TYPE = "TrafficFlowObserved"
T0 = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
JSON = {"Content-Type": "application/json"}
ROW = "{:<34} {:>7} {:>8} {:>9} {:>9} {:>9} {:>9} {:>8}"
DRAWS = 50  # random draws per query: wrk picks among their paths, the SQL takes them in turn
GET_ONE_OF = """
local paths = {}
for line in io.lines(os.getenv("PATHS")) do paths[#paths + 1] = line end
request = function() return wrk.format("GET", paths[math.random(#paths)]) end
"""


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


# -- the queries: per random draw, the HTTP path and the hand-written SQL ------------------------------


@dataclass(frozen=True)
class Query:
    """One benchmarked query over ``DRAWS`` random draws: the HTTP path of each (wrk picks among
    them), the SQL call of each (the same draws, in turn) and the check of the first draw's
    answer against its SQL rows."""

    name: str
    paths: list[str]
    sql: list[Callable[[], Any]]
    check: Callable[[Any, Any], str]


def path(route: str, params: dict[str, str]) -> str:
    return f"{BASE}{route}?{urlencode(params)}"


def queries(db: RawSql, args: argparse.Namespace) -> list[Query]:
    attribute = DEFAULT + "intensity"
    end = T0 + args.observations * args.interval
    between = {"timerel": "between", "timeAt": iso(T0), "endTimeAt": iso(end)}
    rng = random.Random(7)

    hourly_sql = {
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
    hourly_params = {
        **between,
        "options": "aggregatedValues",
        "aggrMethods": "avg",
        "aggrPeriodDuration": "PT1H",
        "attrs": "intensity",
    }
    hourly_ids = [sensor_id(rng.randrange(args.sensors)) for _ in range(DRAWS)]

    def hourly_check(answer: Any, rows: Any) -> str:
        series = answer["intensity"]["avg"]
        same = len(series) == len(rows) and all(
            abs(a[0] - r[1]) < 1e-6 and a[1] == iso(T0 + r[0] * 3600)
            for a, r in zip(series, rows, strict=True)
        )
        return verdict(f"{len(series)} buckets", same)

    # SQLite: CROSS JOIN, the sensors of the type first, then each one's range on the history
    # index. PostgreSQL: its planner chooses (a hash join over the history, as it happens).
    daily_sql = {
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
    daily_params = {
        **between,
        "type": TYPE,
        "options": "aggregatedValues",
        "aggrMethods": "max",
        "aggrPeriodDuration": "P1D",
        "attrs": "intensity",
        "limit": "1000",
    }

    def daily_check(answer: Any, rows: Any) -> str:
        got = {(e["id"], a[1]): a[0] for e in answer for a in e["intensity"]["max"]}
        want = {(r[0], iso(T0 + r[1] * 86400)): r[2] for r in rows}
        return verdict(f"{len(answer)} x {len(got) // max(1, len(answer))} days", got == want)

    # The 10 newest of each sensor straight from the (entity, attribute, time) index.
    last_sql = {
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
    picked = min(args.last_n_sensors, args.sensors)
    last_ids = [[sensor_id(n) for n in rng.sample(range(args.sensors), picked)] for _ in range(DRAWS)]

    def last_check(answer: Any, rows: Any) -> str:
        got = sorted((e["id"], i["instanceId"]) for e in answer for i in e["intensity"])
        want = sorted((r[0], r[2]) for r in rows)
        return verdict(f"{len(answer)} x {len(got) // max(1, len(answer))} instances", got == want)

    def last_params(ids: list[str]) -> dict[str, str]:
        return {"type": TYPE, "id": ",".join(ids), "attrs": "intensity", "lastN": "10", "limit": "1000"}

    return [
        Query(
            "hourly avg, 1 sensor, month",
            [path(f"/entities/{i}", hourly_params) for i in hourly_ids],
            [partial(db.fetch, hourly_sql, T0, i, attribute, T0, end) for i in hourly_ids],
            hourly_check,
        ),
        Query(
            "daily max, all sensors of type",
            [path("/entities", daily_params)],
            [partial(db.fetch, daily_sql, T0, DEFAULT + TYPE, attribute, T0, end)],
            daily_check,
        ),
        Query(
            f"lastN=10, {picked} sensors (id list)",
            [path("/entities", last_params(ids)) for ids in last_ids],
            [partial(db.fetch, last_sql, orjson.dumps(ids).decode(), attribute) for ids in last_ids],
            last_check,
        ),
    ]


def verdict(summary: str, same: bool) -> str:
    return summary + ("" if same else " MISMATCH with the SQL result")


def sql_p50(calls: list[Callable[[], Any]], seconds: float) -> tuple[int, float, float]:
    """Runs, p50 and p95 (ms) of ``calls`` made in turn, one at a time, for ``seconds`` (at
    least three runs)."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(latencies) < 3 or time.perf_counter() < deadline:
        call = calls[len(latencies) % len(calls)]
        start = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - start)
    ordered = sorted(latencies)
    return len(ordered), 1000 * ordered[len(ordered) // 2], 1000 * ordered[int(len(ordered) * 0.95)]


def measure(ports: dict[str, int], query: Query, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Check the first draw on each node, then ``--rounds`` times wrk on each node's API (one
    connection; which goes first alternates) and the SQL for as long; the median of the rounds."""
    for port in ports.values():
        answer = httpx.get(f"http://127.0.0.1:{port}{query.paths[0]}", timeout=300.0)
        if answer.status_code != 200:
            raise SystemExit(f"bench: GET {query.paths[0][:200]}: {answer.status_code} {answer.text[:300]}")
        check = query.check(answer.json(), query.sql[0]())
        if "MISMATCH" in check:
            break
    paths = tmp / "paths.txt"
    paths.write_text("".join(f"{p}\n" for p in query.paths))
    api: dict[str, list[_wrk.Measurement]] = {version: [] for version in ports}
    sql: list[tuple[int, float, float]] = []
    for round_ in range(args.rounds):
        order = list(ports.items())
        for version, port in order if round_ % 2 == 0 else order[::-1]:
            api[version].append(_wrk.measure(port, GET_ONE_OF, args.seconds, 1, tmp, {"PATHS": str(paths)}))
        sql.append(sql_p50(query.sql, args.seconds))
    return {
        "check": check,
        "api": {
            v: _wrk.Measurement(*(statistics.median(m[i] for m in ms) for i in range(3)))
            for v, ms in api.items()
        },
        "sql_p50": statistics.median(p50 for _, p50, _ in sql),
        "sql_p95": statistics.median(p95 for _, _, p95 in sql),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--sensors", type=int, default=1000, help="sensors, at most 1000: one page (default 1000)")
    add("--observations", type=int, default=1000, help="instances per sensor (default 1000)")
    add("--interval", type=int, default=2700, help="seconds between observations (default 2700)")
    add("--batch", type=int, default=1000, help="instances per POST (default 1000)")
    add("--last-n-sensors", type=int, default=100, help="sensors of the lastN query (default 100)")
    add("--seconds", type=float, default=10.0, help="time per query and side (default 10)")
    add("--rounds", type=int, default=1, help="interleaved runs of each query and side (default 1)")
    add("--before", help="git revision served too, on the same store, for an after/before ratio")
    add("--keep", action="store_true", help="keep the SQLite file (its path is printed)")
    add_stores_option(parser)
    args = parser.parse_args()
    if min(args.sensors, args.observations, args.interval, args.batch, args.last_n_sensors) < 1:
        parser.error("sizes must be positive")
    if args.sensors > 1000:
        parser.error("--sensors: at most 1000 (the daily query is measured as one page)")
    if args.seconds <= 0 or args.rounds < 1:
        parser.error("--seconds and --rounds must be positive")
    _wrk.require()
    for spec in stores_of(args):
        run(spec, args)


def run(spec: str, args: argparse.Namespace) -> None:
    """Load a fresh store ``spec`` and print the table of the three queries on it."""
    keep = args.keep and spec == "sqlite"
    with (
        scratch("kizuna-bench-t-", keep) as tmp,
        backing_store(spec, tmp) as store,
        serve(store, tmp) as port,
        ExitStack() as nodes,
    ):
        took = load(port, args)
        store.analyze()
        ports = {"after": port}
        if args.before is not None:
            # The code of --before on the same loaded store: its figures come from the same rounds.
            source = export(args.before, tmp / "before")
            env = {"PYTHONPATH": str(source)}
            ports["before"] = nodes.enter_context(serve(store, tmp / "before", env=env))
        db = RawSql(store)
        try:
            results = {q.name: measure(ports, q, args, tmp) for q in queries(db, args)}
            instances, size = db.instances_and_size()
        finally:
            db.close()
        where = machine()

    total = args.sensors * args.observations
    print(
        f"kizuna temporal bench on {store.description}: {args.sensors} sensors x {args.observations} "
        f"instances = {instances} stored, one every {args.interval} s from {iso(T0)}; loaded over HTTP "
        f"(POST /temporal/entities, {args.batch} instances a request) in {took:.1f} s "
        f"({total / took:,.0f} instances/s); API: wrk, 1 thread, 1 connection, {args.seconds:g} s a "
        f"query, median of {args.rounds} interleaved round(s)"
        + (f", after = working tree, before = {args.before}" if args.before else "")
        + "; SQL: as long, one call at a time;"
        f" 1 server worker, {where}; store size {size:.0f} MiB"
        + (f", kept {store.sqlite_path}" if keep else "")
    )
    versions = list(next(iter(results.values()))["api"])
    print(ROW.format("query", "version", "API q/s", "API p50", "API p99", "SQL p50", "SQL p95", "API/SQL"))
    for name, r in results.items():
        for version in versions:
            api = r["api"][version]
            print(
                ROW.format(
                    name,
                    version,
                    f"{api.rate:.1f}",
                    f"{api.p50:.2f}",
                    f"{api.p99:.2f}",
                    f"{r['sql_p50']:.2f}",
                    f"{r['sql_p95']:.2f}",
                    f"{api.p50 / r['sql_p50']:.1f}",
                )
            )
    print("times in ms; API/SQL is the ratio of the p50s; first draw checked against SQL:")
    for name, r in results.items():
        print(f"  {name}: {r['check']}")


if __name__ == "__main__":
    main()
