"""What only the PostgreSQL store has to show: versioned migrations, a schema per tenant, documents
jsonb cannot hold, two stores (processes) on one database, and a lost database as 503 with the
node reconnecting by itself. The rest is the shared contract and API tests, run on both stores."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from kizuna import query as ql
from kizuna.app import create_app
from kizuna.config import Settings
from kizuna.errors import ServiceUnavailable
from kizuna.query import parse_q
from kizuna.store import EntityQuery, open_store
from kizuna.store.postgres import PostgresStore
from kizuna.store.postgres.connection import _numbered
from kizuna.store.postgres.entities import _plan
from kizuna.store.postgres.schema import GLOBAL_MIGRATIONS, schema_for, tenant_version
from test_query_index import compilable_terms, entities, python_only_terms, trees

STATUS = "https://smartdatamodels.org/dataModel.Streetlighting/status"
T_LIGHT = "https://smartdatamodels.org/dataModel.Streetlighting/Streetlight"


def light(n: int, status: Any = "ok") -> dict[str, Any]:
    return {
        "id": f"urn:ngsi-ld:Streetlight:{n}",
        "type": [T_LIGHT],
        STATUS: [{"type": "Property", "value": status}],
    }


async def test_migrations_are_recorded_and_applied_once(postgres_url: str) -> None:
    first, second = open_store(postgres_url), open_store(postgres_url)
    await asyncio.gather(first.open(), second.open())  # two processes starting together
    try:
        conn = await asyncpg.connect(postgres_url)
        try:
            versions = [r[0] for r in await conn.fetch("SELECT version FROM kizuna.schema_migrations")]
            assert versions == [v for v, _, _ in GLOBAL_MIGRATIONS]
            default = await conn.fetchval("SELECT version FROM kizuna.tenants WHERE name = ''")
            assert default == tenant_version()
        finally:
            await conn.close()
    finally:
        await first.close()
        await second.close()


async def test_a_query_is_planned_for_its_values_every_time(postgres_url: str) -> None:
    """A q on a value half the entities hold ran 30x slower from its sixth run on, once
    PostgreSQL kept a generic plan for asyncpg's prepared statement: queries plan each run."""
    store = open_store(postgres_url)
    await store.open()
    try:
        assert isinstance(store, PostgresStore)
        async with store._planned() as conn:  # where query_entities runs its statements
            assert await conn.fetchval("SHOW plan_cache_mode") == "force_custom_plan"
        # Retrieves by id and writes, one plan fitting all their values, are not re-planned.
        assert await store.pool.fetchval("SHOW plan_cache_mode") == "auto"
    finally:
        await store.close()


def _plan_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    """A node of EXPLAIN (FORMAT JSON) and every node under it."""
    return [node] + [n for child in node.get("Plans", ()) for n in _plan_nodes(child)]


async def test_a_q_range_page_checks_candidates_in_pk_order_until_it_is_full(postgres_url: str) -> None:
    """The q range of issue 15 ran at 64x retrieve-by-id on PostgreSQL: it hashed the range's
    ~1,500 entities, checked every one and only then sorted and cut the page (25 ms). The range
    now drives as an array walked in pk order, and the page stops after a few candidates."""
    speed, flow = "urn:speed", "urn:Flow"
    docs = [
        {
            "id": f"urn:ngsi-ld:Flow:{n:05d}",
            "type": [flow],
            "urn:intensity": [{"type": "Property", "value": n % 1000}],
            speed: [{"type": "Property", "value": n % 7}],
        }
        for n in range(3000)
    ]
    store = PostgresStore.from_url(postgres_url)
    await store.open()
    try:
        async with store.write("") as tx:
            for doc in docs:
                await tx.insert(doc)
        await store.pool.execute("ANALYZE")
        query = EntityQuery(types=[flow], q=parse_q(f"urn:intensity==100..400;{speed}<3"), limit=5)
        found = await store.query_entities("", query)
        expected = [
            d["id"] for d in docs if 100 <= d["urn:intensity"][0]["value"] <= 400 and d[speed][0]["value"] < 3
        ]
        assert [e["id"] for e in found.entities] == expected[:5]
        schema = await store._schema("")
        assert schema is not None
        where, params, _ = _plan(schema, query)
        sql = _numbered(f"SELECT e.pk FROM {schema}.entities e WHERE {where} ORDER BY e.pk LIMIT 5")
        async with store._planned() as conn:
            plan = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *params)
        nodes = _plan_nodes(json.loads(plan)[0]["Plan"])
        walks = [
            n for n in nodes if n.get("Index Name") == "entities_pkey" and "ANY" in n.get("Index Cond", "")
        ]
        assert walks, nodes
        checked = walks[0]["Actual Rows"] + walks[0].get("Rows Removed by Filter", 0)
        assert checked <= 50, f"{checked} of the range's 903 candidates checked for a page of 5"
    finally:
        await store.close()


async def test_a_pooled_read_is_one_round_trip_and_a_left_transaction_is_rolled_back(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """asyncpg's default reset (RESET ALL, UNLISTEN *, ...) was a second round trip after every
    pool.fetch; a transaction left open on a released connection is still rolled back."""
    store = open_store(postgres_url)
    await store.open()
    try:
        assert isinstance(store, PostgresStore)
        sent: list[str] = []
        execute = asyncpg.Connection.execute

        async def recorded(self: asyncpg.Connection, query: str, *args: Any, **kwargs: Any) -> str:
            sent.append(query)
            return await execute(self, query, *args, **kwargs)

        monkeypatch.setattr(asyncpg.Connection, "execute", recorded)
        assert await store.pool.fetchval("SELECT 1") == 1
        assert sent == []
        async with store.pool.acquire() as conn:
            await conn.execute("BEGIN")  # not asyncpg's managed transaction: left open
            await conn.execute("CREATE TEMP TABLE left_open (n int)")
        monkeypatch.undo()
        async with store.pool.acquire() as conn:  # the same (only idle) connection or another
            assert await conn.fetchval("SELECT to_regclass('pg_temp.left_open') IS NULL")
            assert not conn.is_in_transaction()
    finally:
        await store.close()


async def test_each_tenant_has_a_schema_of_its_own(postgres_url: str) -> None:
    store = open_store(postgres_url)
    await store.open()
    try:
        for tenant in ("", "duisburg", "kanagawa"):
            async with store.write(tenant) as tx:
                await tx.insert(light(1, status=tenant or "default"))
        conn = await asyncpg.connect(postgres_url)
        try:
            for tenant in ("", "duisburg", "kanagawa"):
                doc = await conn.fetchval(f'SELECT doc::text FROM "{schema_for(tenant)}".entities')
                assert (tenant or "default") in doc
        finally:
            await conn.close()
        assert await store.tenants() == ["duisburg", "kanagawa"]
    finally:
        await store.close()


async def test_values_jsonb_cannot_hold_round_trip(postgres_url: str) -> None:
    store = open_store(postgres_url)
    await store.open()
    try:
        async with store.write("") as tx:
            await tx.insert(light(1, status="nul\x00inside"))
            await tx.insert(light(2, status="plain"))
        assert (await store.get_entity("", "urn:ngsi-ld:Streetlight:1")) == light(1, status="nul\x00inside")
        async with store.write("") as tx:
            await tx.insert(
                {"id": "urn:x:3", "type": ["T"], "urn:s": [{"type": "Property", "value": "a\x00b"}]}
            )
            await tx.insert({"id": "urn:x:4", "type": ["T"], "urn:s": [{"type": "Property", "value": "a"}]})
        found = await store.query_entities("", EntityQuery(q=parse_q('urn:s>"a"')))
        assert [e["id"] for e in found.entities] == ["urn:x:3"]
    finally:
        await store.close()


async def test_two_stores_on_one_database_see_each_others_writes(postgres_url: str) -> None:
    one, two = open_store(postgres_url), open_store(postgres_url)
    await one.open()
    await two.open()
    try:
        async with one.write("shared") as tx:
            await tx.insert(light(1))
        assert await two.has_tenant("shared")
        assert (await two.get_entity("shared", "urn:ngsi-ld:Streetlight:1")) == light(1)
        assert await two.insert_subscription(
            "shared", {"id": "urn:ngsi-ld:Subscription:1", "type": "Subscription"}
        )
        assert await one.subscription_version("shared") == 1
        # A notification is leased to one process at a time.
        keys = [("shared", "urn:ngsi-ld:Subscription:1")]
        assert await one.lease_subscriptions("a", keys, now=100.0, until=130.0) == keys
        assert await two.lease_subscriptions("b", keys, now=101.0, until=131.0) == []
        assert await two.lease_subscriptions("b", keys, now=140.0, until=170.0) == keys
    finally:
        await one.close()
        await two.close()


def test_a_lost_database_is_503_and_the_node_reconnects(
    postgres_cluster: Any, postgres_url: str, tmp_path: Path
) -> None:
    settings = Settings(store=postgres_url, context_map=None)
    entity = {
        "id": "urn:ngsi-ld:Streetlight:1",
        "type": "Streetlight",
        "status": {"type": "Property", "value": "ok"},
    }
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert client.post("/ngsi-ld/v1/entities", json=entity).status_code == 201
        postgres_cluster.stop_server()
        try:
            down = client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Streetlight:1")
            assert down.status_code == 503, down.text
            problem = down.json()
            assert problem["type"].endswith("ServiceUnavailable")
            assert "database" in problem["detail"]
            write = client.post("/ngsi-ld/v1/entities", json={**entity, "id": "urn:ngsi-ld:Streetlight:2"})
            assert write.status_code == 503
        finally:
            postgres_cluster.start_server()
        up = client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Streetlight:1")
        assert up.status_code == 200, up.text  # reconnected by itself; nothing committed was lost
        assert up.json()["status"]["value"] == "ok"
        assert (
            client.post(
                "/ngsi-ld/v1/entities", json={**entity, "id": "urn:ngsi-ld:Streetlight:2"}
            ).status_code
            == 201
        )


async def test_the_change_feed_reconnects_after_a_restart_and_says_what_may_be_missed(
    postgres_cluster: Any, postgres_url: str
) -> None:
    listener, writer = open_store(postgres_url), open_store(postgres_url)
    heard: list[tuple[str, str]] = []
    listener.listen(lambda topic, key: heard.append((topic, key)))
    await listener.open()

    async def hear(change: tuple[str, str]) -> None:
        for _ in range(300):
            if change in heard:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{change} not heard; heard {heard}")

    try:
        await asyncio.to_thread(postgres_cluster.stop_server)
        await asyncio.to_thread(postgres_cluster.start_server)
        await hear(("*", ""))  # whatever was committed while it was away
        await writer.open()
        async with writer.write("") as tx:
            await tx.add_outbox([("urn:ngsi-ld:Subscription:1", "urn:x:1", "entityCreated", b"{}")])
        await hear(("outbox", ""))  # other processes' dispatchers wake at once
    finally:
        await writer.close()
        await listener.close()


async def test_an_unreachable_database_fails_with_service_unavailable() -> None:
    store = PostgresStore.from_url("postgresql://nobody@127.0.0.1:1/none")
    store._pool = await asyncpg.create_pool("postgresql://nobody@127.0.0.1:1/none", min_size=0)
    try:
        with pytest.raises(ServiceUnavailable):
            await store.get_entity("", "urn:x:1")
        with pytest.raises(ServiceUnavailable):
            async with store.write("") as tx:
                await tx.insert(light(1))
    finally:
        await store.close()


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_q_in_postgresql_selects_what_python_evaluation_selects(
    postgres_url: str, data: st.DataObject
) -> None:
    """The property test_query_index checks on SQLite, on the PostgreSQL compilation (numeric and
    bytea columns, code point order, per-instance !=); each example in a tenant of its own."""
    docs = data.draw(entities())
    q = data.draw(trees(st.one_of(compilable_terms, python_only_terms)))
    expected = [doc["id"] for doc in docs if ql.matches(q, doc)]
    tenant = f"t{uuid.uuid4().hex}"

    async def run() -> list[str]:
        store = PostgresStore.from_url(postgres_url)
        await store.open()
        try:
            async with store.write(tenant) as tx:
                for doc in docs:
                    await tx.insert(doc)
            result = await store.query_entities(tenant, EntityQuery(q=q, count=True))
            assert result.total == len(result.entities)
            return [e["id"] for e in result.entities]
        finally:
            await store.close()

    assert asyncio.run(run()) == expected


def test_a_write_never_needs_a_second_pool_connection(postgres_url: str) -> None:
    """With one pooled connection, writes that must first load the tenant's subscriptions (a cold
    cache, as in a new process) still complete: a write holding the only connection and asking
    the pool for another would wait forever, and ten at once would stall the default pool."""
    settings = Settings(store=postgres_url + "?pool_max=1", context_map=None)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        sub = {
            "type": "Subscription",
            "entities": [{"type": "Streetlight"}],
            "notification": {"endpoint": {"uri": "http://127.0.0.1:9/notify"}},
        }
        assert client.post("/ngsi-ld/v1/subscriptions", json=sub).status_code == 201
        for n in range(3):
            entity = {"id": f"urn:ngsi-ld:Streetlight:{n}", "type": "Streetlight"}
            assert client.post("/ngsi-ld/v1/entities", json=entity).status_code == 201
