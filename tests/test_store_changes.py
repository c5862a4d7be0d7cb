"""The Store contract for the entity change log (``store/*/changes.py``), on every store kind of
``conftest.STORE_KINDS``: every entity write leaves a change in its transaction (none when it
rolls back), read back in commit order with the entity an access decision needs, per tenant,
and pruned with a horizon."""

from __future__ import annotations

import time

import pytest

from kizuna.store import EntityQuery, Store

T = "https://uri.etsi.org/ngsi-ld/default-context/Streetlight"
STATUS = "https://uri.etsi.org/ngsi-ld/default-context/status"


def light(n: int, status: str = "ok") -> dict:
    return {
        "id": f"urn:ngsi-ld:Streetlight:{n}",
        "type": [T],
        STATUS: [{"type": "Property", "value": status}],
    }


async def test_writes_are_logged_in_commit_order_with_their_entity(store: Store) -> None:
    async with store.write("") as tx:
        await tx.insert(light(1), "alice")
        await tx.insert(light(2))
    async with store.write("") as tx:
        await tx.replace(light(1, "broken"))
        assert await tx.delete("urn:ngsi-ld:Streetlight:2")
    changes = await store.entity_changes("", 0, 100)
    assert [(c.entity_id[-1], c.op) for c in changes] == [
        ("1", "create"),
        ("2", "create"),
        ("1", "update"),
        ("2", "delete"),
    ]
    seqs = [c.seq for c in changes]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
    assert all(c.types == [T] for c in changes)
    # Creates and updates carry the entity as it is now; a delete (and what came before it) as it was.
    assert changes[0].entity is not None and changes[0].entity[STATUS][0]["value"] == "broken"
    assert changes[0].owner == "alice"
    assert changes[3].entity == light(2) and changes[1].entity == light(2)
    assert await store.entity_changes("", seqs[1], 100) == changes[2:]
    assert await store.entity_changes("", 0, 1) == changes[:1]
    assert await store.change_bounds("") == (0, seqs[-1])


async def test_a_rolled_back_write_leaves_no_change(store: Store) -> None:
    with pytest.raises(RuntimeError):
        async with store.write("") as tx:
            await tx.insert(light(1))
            raise RuntimeError("rolled back")
    assert await store.entity_changes("", 0, 100) == []
    assert await store.change_bounds("") == (0, 0)


async def test_each_tenant_has_its_own_log(store: Store) -> None:
    async with store.write("a") as tx:
        await tx.insert(light(1))
    async with store.write("b") as tx:
        await tx.insert(light(2))
        await tx.delete_matching(EntityQuery(types=[T]))
    assert [c.entity_id for c in await store.entity_changes("a", 0, 100)] == ["urn:ngsi-ld:Streetlight:1"]
    assert [c.op for c in await store.entity_changes("b", 0, 100)] == ["create", "delete"]
    assert await store.entity_changes("nobody", 0, 100) == []
    assert await store.change_bounds("nobody") == (0, 0)


async def test_pruning_forgets_old_changes_and_keeps_a_horizon(store: Store) -> None:
    async with store.write("") as tx:
        await tx.insert(light(1))
        await tx.insert(light(2))
    first = await store.entity_changes("", 0, 100)
    assert await store.prune_changes(time.time() + 1) == 2
    async with store.write("") as tx:
        await tx.insert(light(3))
    kept = await store.entity_changes("", 0, 100)
    assert [c.entity_id for c in kept] == ["urn:ngsi-ld:Streetlight:3"]
    assert kept[0].seq > first[-1].seq
    assert await store.change_bounds("") == (first[-1].seq, kept[0].seq)
    assert await store.prune_changes(time.time() - 3600) == 0


async def test_readers_following_concurrent_writers_miss_nothing_and_see_nothing_twice(store: Store) -> None:
    """Writers commit in another order than they start (PostgreSQL's pool runs them at once);
    a reader that follows the log from its cursor while they write still gets every change once."""
    import asyncio

    async def write(first: int) -> None:
        for n in range(first, first + 20):
            async with store.write("") as tx:
                await tx.insert(light(n))

    async def follow(seen: list[str], done: asyncio.Event) -> None:
        cursor = 0
        while True:
            finished = done.is_set()  # read once more after the writers ended
            batch = await store.entity_changes("", cursor, 7)
            if batch:
                cursor = batch[-1].seq
                seen.extend(c.entity_id for c in batch)
            elif finished:
                return
            await asyncio.sleep(0)

    done = asyncio.Event()
    readers = [[], []]
    following = [asyncio.create_task(follow(seen, done)) for seen in readers]
    await asyncio.gather(*(write(first) for first in range(0, 100, 20)))
    done.set()
    await asyncio.gather(*following)
    expected = sorted(f"urn:ngsi-ld:Streetlight:{n}" for n in range(100))
    for seen in readers:
        assert sorted(seen) == expected
