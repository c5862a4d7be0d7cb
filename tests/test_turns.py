"""Long requests take turns: other work on the event loop runs while they are under way.

Deterministic stand-ins for what ``bench/stalls.py`` measures: the loop's progress is observed
directly (a regular expression that waits for the loop, a counter between chunks), never
timed.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from kizuna.ngsild.entities import WRITE_CHUNK, BatchResult, in_chunks
from kizuna.store import EntityQuery
from kizuna.store.sqlite import SqliteStore, connection

T_LIGHT = "https://smartdatamodels.org/dataModel.Streetlighting/Streetlight"


async def test_a_batch_is_written_in_chunks_with_the_loop_free_between() -> None:
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    chunks: list[tuple[int, int]] = []  # (size, ticks seen when the chunk was written)

    async def write(items: list[int]) -> BatchResult:
        chunks.append((len(items), ticks))
        return BatchResult(success=list(items))

    running = asyncio.create_task(ticker())
    items = list(range(2 * WRITE_CHUNK + 50))
    result = await in_chunks(items, write)
    stop.set()
    await running
    assert result.success == items  # every entity, in order
    assert [size for size, _ in chunks] == [WRITE_CHUNK, WRITE_CHUNK, 50]
    seen = [at for _, at in chunks]
    assert seen[0] < seen[1] < seen[2], "the loop ran other work between two chunks"


async def test_a_small_batch_is_one_chunk() -> None:
    calls: list[list[int]] = []

    async def write(items: list[int]) -> BatchResult:
        calls.append(items)
        return BatchResult(success=list(items))

    await in_chunks(list(range(WRITE_CHUNK)), write)
    assert calls == [list(range(WRITE_CHUNK))]


@pytest.fixture
async def file_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A SQLite file store whose ``regexp`` blocks its thread until the test releases it."""
    released = threading.Event()

    def waiting_regexp(pattern: str, value: str | None) -> bool:
        if not released.wait(5):
            raise TimeoutError("the regular expression ran on the event loop")
        return value is not None and pattern in value

    monkeypatch.setattr(connection, "_regexp", waiting_regexp)
    store = SqliteStore(str(tmp_path / "turns.db"))
    await store.open()
    async with store.write("") as tx:
        await tx.insert({"id": "urn:ngsi-ld:Streetlight:1", "type": [T_LIGHT]})
    try:
        yield store, released
    finally:
        released.set()
        await store.close()


async def test_an_entity_query_leaves_the_loop_to_others(file_store) -> None:
    store, released = file_store
    query = asyncio.create_task(store.query_entities("", EntityQuery(id_pattern="Streetlight")))
    await asyncio.sleep(0.01)  # the query is under way, waiting for the regular expression
    assert not query.done()
    released.set()  # only code on the loop gets here while the query runs
    result = await asyncio.wait_for(query, 5)
    assert [e["id"] for e in result.entities] == ["urn:ngsi-ld:Streetlight:1"]
