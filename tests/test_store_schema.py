"""Numbered, forward-only schema migrations, as each store applies them when it opens.

Parametrised over both stores. An upgrade is played in one process by appending a migration to
the store's list (the code of the next release) and removing it again (the code of the release
before): a store is then one migration behind the code, or one ahead of it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from starlette.testclient import TestClient

from conftest import store_url
from kizuna.app import create_app
from kizuna.config import Settings
from kizuna.store import SchemaTooNew, Store, open_store
from kizuna.store.postgres import schema as pg_schema
from kizuna.store.sqlite import schema as sqlite_schema

LIGHT = {"id": "urn:ngsi-ld:Streetlight:1", "type": ["https://example.org/Streetlight"]}


class NextRelease:
    """The migrations of a release one step ahead of this code, for one store kind."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind = kind
        self.url = url
        self.added: list[tuple[list, tuple]] = []

    def add(self, name: str = "probe", good: bool = True) -> None:
        """Append one migration to each of the kind's lists: a table ``name`` (PostgreSQL: also a
        column ``name`` in each tenant's entities), or a syntax error unless ``good``."""
        sql = f"CREATE TABLE {name} (x INTEGER)" if good else "CREATE TABLE no such thing"
        if self.kind == "sqlite":
            steps = sqlite_schema.MIGRATIONS
            self._append(steps, (steps[-1][0] + 1, f"a {name} table", sql))
            return
        steps = pg_schema.GLOBAL_MIGRATIONS
        self._append(steps, (steps[-1][0] + 1, f"a {name} table", sql.replace(name, f"kizuna.{name}")))
        tenant = pg_schema.TENANT_MIGRATIONS
        self._append(tenant, (tenant[-1][0] + 1, f"ALTER TABLE {{s}}.entities ADD COLUMN {name} integer"))

    def _append(self, steps: list, step: tuple) -> None:
        steps.append(step)
        self.added.append((steps, step))

    def undo(self) -> None:
        """Back to this release's code (the store keeps whatever was applied)."""
        while self.added:
            steps, step = self.added.pop()
            steps.remove(step)

    async def probes(self) -> list[str]:
        """Where the probe migrations took effect: tables, and tenants with the probe column."""
        if self.kind == "sqlite":
            db = sqlite3.connect(self.url.removeprefix("sqlite:///"))
            try:
                rows = db.execute(
                    "SELECT name FROM sqlite_master WHERE sql LIKE 'CREATE TABLE % (x INTEGER)'"
                ).fetchall()
            finally:
                db.close()
            return [row[0] for row in rows]
        conn = await asyncpg.connect(self.url)
        try:
            tables = await conn.fetch(
                "SELECT 'kizuna.' || table_name FROM information_schema.columns"
                " WHERE table_schema = 'kizuna' AND column_name = 'x' ORDER BY 1"
            )
            tenants = await conn.fetch(
                "SELECT c.column_name, t.name FROM kizuna.tenants t JOIN information_schema.columns c"
                " ON c.table_schema = t.schema_name AND c.table_name = 'entities'"
                " WHERE c.ordinal_position > 5 ORDER BY 1, 2"
            )
        finally:
            await conn.close()
        return [row[0] for row in tables] + [f"{row[0]} of tenant {row[1]!r}" for row in tenants]


@pytest.fixture(params=["sqlite", "postgresql"])
def release(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NextRelease]:
    """A store URL that no node opened yet, and the means to play the next release's code."""
    url = store_url(request.param, tmp_path, request)
    if request.param == "postgresql":
        asyncio.run(_unmigrated(url))
    next_release = NextRelease(request.param, url)
    yield next_release
    next_release.undo()


async def _unmigrated(url: str) -> None:
    """The test databases come migrated (tests/pg_cluster.py); these tests want none yet."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP SCHEMA kizuna CASCADE; DROP SCHEMA tenant_default CASCADE")
    finally:
        await conn.close()


async def opened(url: str) -> Store:
    store = open_store(url)
    await store.open()
    return store


async def test_a_new_store_gets_the_latest_schema(release: NextRelease) -> None:
    store = await opened(release.url)
    try:
        assert await store.schema_mismatch() is None
        async with store.write("duisburg") as tx:
            await tx.insert(LIGHT)
    finally:
        await store.close()
    store = await opened(release.url)  # opening again applies nothing and loses nothing
    try:
        assert await store.schema_mismatch() is None
        assert await store.get_entity("duisburg", LIGHT["id"]) == LIGHT
    finally:
        await store.close()


async def test_a_store_behind_the_code_is_upgraded_keeping_its_data(release: NextRelease) -> None:
    store = await opened(release.url)
    async with store.write("duisburg") as tx:
        await tx.insert(LIGHT)
    release.add()
    try:
        # The process that opened the store before the upgrade sees it behind its code.
        assert "schema is at version" in (await store.schema_mismatch() or "")
        upgraded = await opened(release.url)
        try:
            assert await upgraded.schema_mismatch() is None
            assert await upgraded.get_entity("duisburg", LIGHT["id"]) == LIGHT
        finally:
            await upgraded.close()
    finally:
        await store.close()
    expected = (
        ["probe"]
        if release.kind == "sqlite"
        else ["kizuna.probe", "probe of tenant ''", "probe of tenant 'duisburg'"]
    )
    assert await release.probes() == expected


async def test_a_store_ahead_of_the_code_is_refused(release: NextRelease) -> None:
    release.add()
    store = await opened(release.url)
    async with store.write("duisburg") as tx:
        await tx.insert(LIGHT)
    release.undo()
    try:
        # A process of the older release still running is told it is behind: not ready.
        assert "this release's at" in (await store.schema_mismatch() or "")
        with pytest.raises(SchemaTooNew, match="newer than this release knows"):
            await opened(release.url)
    finally:
        await store.close()
    release.add()  # the newer release still opens it, with its data
    store = await opened(release.url)
    try:
        assert await store.get_entity("duisburg", LIGHT["id"]) == LIGHT
    finally:
        await store.close()


async def test_each_migration_commits_on_its_own(release: NextRelease) -> None:
    """A migration that fails leaves those before it applied; the fixed release goes on from there."""
    release.add("probe")
    release.add("broken", good=False)
    with pytest.raises(asyncpg.PostgresSyntaxError if release.kind == "postgresql" else sqlite3.Error):
        await opened(release.url)
    assert (await release.probes())[0] in ("probe", "kizuna.probe")
    release.undo()
    release.add("probe")
    release.add("fixed")
    store = await opened(release.url)
    try:
        assert await store.schema_mismatch() is None
    finally:
        await store.close()
    found = await release.probes()
    assert len([name for name in found if "fixed" in name]) == (1 if release.kind == "sqlite" else 2)


async def test_processes_opening_together_migrate_once(release: NextRelease) -> None:
    release.add()
    stores = [open_store(release.url) for _ in range(3)]
    await asyncio.gather(*(store.open() for store in stores))
    try:
        for store in stores:
            assert await store.schema_mismatch() is None
    finally:
        for store in stores:
            await store.close()


def test_ready_is_503_once_a_newer_release_migrated_the_store(release: NextRelease) -> None:
    with TestClient(create_app(Settings(store=release.url)), raise_server_exceptions=False) as client:
        assert client.get("/health/ready").status_code == 200
        release.add()
        asyncio.run(_open_and_close(release.url))  # the newer release starts and migrates
        release.undo()  # this node still runs the older code
        answer = client.get("/health/ready")
        assert answer.status_code == 503, answer.text
        assert "schema version" in answer.json()["detail"]
        assert client.get("/health/live").status_code == 200


async def _open_and_close(url: str) -> None:
    await (await opened(url)).close()
