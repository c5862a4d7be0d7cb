"""``kizuna migrate``: SQLite stores copied into a real PostgreSQL (tests/pg_cluster.py), run as an
operator runs it, and checked through both nodes' APIs."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from starlette.testclient import TestClient

from conftest import KIZUNA
from kizuna.app import create_app
from kizuna.config import Settings
from kizuna.store.sqlite import SqliteStore
from store_fixtures import BASE, LIGHTS, REGISTRATION, TENANTS, headers, light_id, populate

T_LIGHT = "https://smartdatamodels.org/dataModel.Streetlighting/Streetlight"
STATUS = "https://smartdatamodels.org/dataModel.Streetlighting/status"
LOCATION = "location"
OBSERVED = "2026-11-22T18:00:00.000Z"


def node(url: str) -> TestClient:
    settings = Settings(store=url, outbound_allow="127.0.0.1/32")
    return TestClient(create_app(settings), raise_server_exceptions=False)


def migrate(source: str, target: str, *flags: str) -> subprocess.CompletedProcess[str]:
    command = [KIZUNA, "migrate", "--from", source, "--to", target, *flags]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


@pytest.fixture
def source(tmp_path: Path) -> str:
    """A small SQLite store with something in every table (see tests/store_fixtures.py)."""
    url = f"sqlite:///{tmp_path}/source.db"
    with node(url) as client:
        populate(client)
    return url


async def bulk(url: str, count: int, history: int) -> None:
    """``count`` lights, each with ``history`` instances of status, straight into the store."""
    store = SqliteStore.from_url(url)
    await store.open()
    try:
        for start in range(0, count, 10_000):
            async with store.write("") as tx:
                for n in range(start, min(count, start + 10_000)):
                    entity = {
                        "id": f"urn:ngsi-ld:Streetlight:bulk-{n}",
                        "type": [T_LIGHT],
                        "createdAt": "2026-11-22T18:00:00.000Z",
                        "modifiedAt": "2026-11-22T18:00:00.000Z",
                        STATUS: [
                            {"type": "Property", "value": n % 7, "observedAt": "2026-11-22T18:00:00.000Z"}
                        ],
                        LOCATION: [
                            {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [n % 90, 51.4]}}
                        ],
                    }
                    await tx.insert(entity)
                    for step in range(history):
                        instance = {
                            "type": "Property",
                            "value": step,
                            "observedAt": f"2026-11-22T18:{step:02d}:00.000Z",
                            "createdAt": "2026-11-22T18:00:00.000Z",
                            "modifiedAt": "2026-11-22T18:00:00.000Z",
                        }
                        await tx.append_history(entity["id"], [T_LIGHT], STATUS, instance)
    finally:
        await store.close()


def reads(client: TestClient) -> dict[str, Any]:
    """What a client reads of the fixture's data: every light, its history, the subscriptions,
    registrations and hosted @contexts."""
    seen: dict[str, Any] = {}
    for tenant in TENANTS:
        for n in range(1, LIGHTS + 1):
            for path in ("entities", "temporal/entities"):
                answer = client.get(f"{BASE}/{path}/{light_id(tenant, n)}", headers=headers(tenant))
                assert answer.status_code == 200, answer.text
                seen[f"{tenant}/{path}/{n}"] = answer.json()
        answer = client.get(f"{BASE}/subscriptions", headers=headers(tenant))
        seen[f"{tenant}/subscriptions"] = [
            (sub["id"], sub["entities"], sub["notification"]["endpoint"]) for sub in answer.json()
        ]
    for name, answer in (
        ("registration", client.get(f"{BASE}/csourceRegistrations/{REGISTRATION}")),
        ("contexts", client.get(f"{BASE}/jsonldContexts", params={"details": "true"})),
    ):
        assert answer.status_code == 200, answer.text
        seen[name] = answer.json()
    assert len(seen["contexts"]) == 1
    return seen


def test_a_store_is_copied_and_reads_the_same_on_both_nodes(source: str, postgres_url: str) -> None:
    done = migrate(source, postgres_url)
    assert done.returncode == 0, done.stderr
    for table in ("entities", "attr_values", "attribute_history", "subscriptions", "notification_changes"):
        assert f"{table} " in done.stderr and "same" in done.stderr
    with node(source) as old:
        before = reads(old)
    with node(postgres_url) as new:
        after = reads(new)
        histories = [v for k, v in after.items() if "temporal" in k]
        assert all(len(h["status"]) == 3 for h in histories), histories[0]  # created, 2 updates
        assert new.get("/health/ready").status_code == 200
    assert len(before) == len(after) == 2 * (2 * LIGHTS + 1) + 2
    assert after == before


async def watermarks(url: str) -> dict[str, tuple[int, bool]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT step, last, done FROM kizuna.copied_from")
    finally:
        await conn.close()
    return {step: (last, done) for step, last, done in rows}


def test_a_copy_stopped_after_some_batches_goes_on_where_it_stopped(source: str, postgres_url: str) -> None:
    asyncio.run(bulk(source, 2000, 2))
    stopped = migrate(source, postgres_url, "--batch-size", "100", "--stop-after", "25")
    assert stopped.returncode != 0 and "run it again to go on" in stopped.stderr
    marks = asyncio.run(watermarks(postgres_url))
    assert marks["entities"][1] and not marks["entity_types"][1], marks
    resumed = migrate(source, postgres_url, "--batch-size", "100")
    assert resumed.returncode == 0, resumed.stderr
    # It went on: the entities were not copied again (COPY would have hit their primary keys).
    assert "entities " in resumed.stderr and "differs" not in resumed.stderr


def test_a_killed_copy_is_resumed_and_verified(source: str, postgres_url: str) -> None:
    asyncio.run(bulk(source, 5000, 3))
    command = [KIZUNA, "migrate", "--from", source, "--to", postgres_url, "--batch-size", "50"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            marks = asyncio.run(watermarks(postgres_url)) if _migrated(postgres_url) else {}
            if marks.get("attr_values", (0, False))[0] > 0:
                break
            assert process.poll() is None, "the copy ended before it could be interrupted"
            time.sleep(0.05)
        else:
            raise AssertionError("the copy did not reach attr_values within 60 s")
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL
    assert not asyncio.run(watermarks(postgres_url))["attr_values"][1]
    resumed = migrate(source, postgres_url)
    assert resumed.returncode == 0, resumed.stderr
    with node(postgres_url) as new:
        answer = new.get(f"{BASE}/entities", params={"type": T_LIGHT, "count": "true", "limit": 1})
        assert answer.headers["NGSILD-Results-Count"] == "5000"


def _migrated(url: str) -> bool:
    async def has_table() -> bool:
        conn = await asyncpg.connect(url)
        try:
            return bool(await conn.fetchval("SELECT to_regclass('kizuna.copied_from') IS NOT NULL"))
        finally:
            await conn.close()

    return asyncio.run(has_table())


def test_a_corrupted_copy_is_found_and_named(source: str, postgres_url: str) -> None:
    assert migrate(source, postgres_url).returncode == 0

    async def corrupt() -> None:
        conn = await asyncpg.connect(postgres_url)
        try:
            await conn.execute(
                "UPDATE tenant_default.attribute_history SET value_key = 'tampered'"
                " WHERE pk = (SELECT min(pk) FROM tenant_default.attribute_history)"
            )
        finally:
            await conn.close()

    asyncio.run(corrupt())
    checked = migrate(source, postgres_url)
    assert checked.returncode == 1, checked.stderr
    assert "attribute_history: " in checked.stderr
    assert "entities: " not in checked.stderr  # only the table that differs is named


def test_a_target_with_another_nodes_data_is_refused(source: str, postgres_url: str) -> None:
    with node(postgres_url) as other:
        answer = other.post(f"{BASE}/entities", json={"id": "urn:ngsi-ld:Bench:1", "type": "Bench"})
        assert answer.status_code == 201
    refused = migrate(source, postgres_url)
    assert refused.returncode == 1 and "holds a node's data" in refused.stderr


def test_a_target_filled_from_another_store_is_refused(
    source: str, postgres_url: str, tmp_path: Path
) -> None:
    other = f"sqlite:///{tmp_path}/other.db"
    asyncio.run(bulk(other, 10, 1))
    stopped = migrate(other, postgres_url, "--stop-after", "1")
    assert "run it again to go on" in stopped.stderr, stopped.stderr
    refused = migrate(source, postgres_url)
    assert refused.returncode == 1 and "not of this store" in refused.stderr, refused.stderr


@pytest.fixture
def hundred_thousand(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = f"sqlite:///{tmp_path_factory.mktemp('big')}/big.db"
    asyncio.run(bulk(url, 100_000, 2))
    yield url


@pytest.mark.bulk
def test_a_hundred_thousand_entities_with_history_are_copied_and_verified(
    hundred_thousand: str, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    done = migrate(hundred_thousand, postgres_url)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert re.search(r"attribute_history +200,000 rows .* same", done.stderr), done.stderr
    assert re.search(r"entities +100,000 rows .* same", done.stderr), done.stderr
    with capsys.disabled():  # the figure docs/operations.md quotes
        print(f"\nkizuna migrate: 100,000 entities with 200,000 history rows in {took:.1f} s")
        print(done.stderr.strip().splitlines()[-1])
    with node(postgres_url) as new:
        answer = new.get(f"{BASE}/entities/urn:ngsi-ld:Streetlight:bulk-99999")
        assert answer.status_code == 200
