"""The Store contract: what every store implementation promises the services.

Parametrised over every store kind in ``conftest.STORE_KINDS``, so a new implementation
(PostgreSQL) proves itself by passing this file unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from kizuna.store import AccessFilter, AuditEvent, EntityQuery, HistoryQuery, Store, open_store

T_LIGHT = "https://smartdatamodels.org/dataModel.Streetlighting/Streetlight"
T_GROUP = "https://smartdatamodels.org/dataModel.Streetlighting/StreetlightGroup"
STATUS = "https://smartdatamodels.org/dataModel.Streetlighting/status"


def light(n: int, *types: str) -> dict:
    return {
        "id": f"urn:ngsi-ld:Streetlight:{n}",
        "type": list(types or (T_LIGHT,)),
        "createdAt": "2026-11-22T10:00:00.000Z",
        "modifiedAt": "2026-11-22T10:00:00.000Z",
        STATUS: [{"type": "Property", "value": "ok" if n % 2 else "faulty"}],
    }


async def test_write_then_read_round_trips_the_document(store: Store) -> None:
    async with store.write("duisburg") as tx:
        await tx.insert(light(1))
    assert await store.get_entity("duisburg", "urn:ngsi-ld:Streetlight:1") == light(1)
    assert await store.get_entity("", "urn:ngsi-ld:Streetlight:1") is None


async def test_tenants_come_into_being_on_first_write(store: Store) -> None:
    assert await store.has_tenant("")  # the default tenant always exists
    assert not await store.has_tenant("kanagawa")
    async with store.write("kanagawa") as tx:
        await tx.insert(light(1))
    assert await store.has_tenant("kanagawa")
    assert "kanagawa" in await store.tenants()


async def test_a_failed_transaction_leaves_nothing_behind(store: Store) -> None:
    with pytest.raises(RuntimeError):
        async with store.write("t") as tx:
            await tx.insert(light(1))
            raise RuntimeError("the service refused the request half-way")
    assert await store.get_entity("t", "urn:ngsi-ld:Streetlight:1") is None
    assert not await store.has_tenant("t")


async def test_replace_and_delete(store: Store) -> None:
    async with store.write("") as tx:
        await tx.insert(light(1))
    changed = {**light(1, T_GROUP), STATUS: [{"type": "Property", "value": "off"}]}
    async with store.write("") as tx:
        assert await tx.get("urn:ngsi-ld:Streetlight:1") == light(1)
        await tx.replace(changed)
    assert await store.get_entity("", "urn:ngsi-ld:Streetlight:1") == changed
    # The type index follows the replacement.
    by_old_type = await store.query_entities("", EntityQuery(types=[T_LIGHT]))
    assert by_old_type.entities == []
    async with store.write("") as tx:
        assert await tx.delete("urn:ngsi-ld:Streetlight:1")
        assert not await tx.delete("urn:ngsi-ld:Streetlight:1")
    assert await store.get_entity("", "urn:ngsi-ld:Streetlight:1") is None


async def test_queries_select_by_type_id_pattern_and_predicate_in_insertion_order(store: Store) -> None:
    async with store.write("") as tx:
        for n in range(1, 8):
            await tx.insert(light(n, T_LIGHT) if n != 4 else light(n, T_GROUP))
    lights = await store.query_entities("", EntityQuery(types=[T_LIGHT], count=True))
    assert [e["id"][-1] for e in lights.entities] == ["1", "2", "3", "5", "6", "7"]
    assert lights.total == 6
    both = await store.query_entities("", EntityQuery(types=[T_LIGHT, T_GROUP]))
    assert len(both.entities) == 7
    ids = await store.query_entities("", EntityQuery(ids=["urn:ngsi-ld:Streetlight:2", "urn:x:none"]))
    assert [e["id"] for e in ids.entities] == ["urn:ngsi-ld:Streetlight:2"]
    pattern = await store.query_entities("", EntityQuery(id_pattern=r"Streetlight:[67]$"))
    assert [e["id"] for e in pattern.entities] == ["urn:ngsi-ld:Streetlight:6", "urn:ngsi-ld:Streetlight:7"]
    faulty = await store.query_entities(
        "",
        EntityQuery(
            types=[T_LIGHT], predicate=lambda e: e[STATUS][0]["value"] == "faulty", count=True, limit=1
        ),
    )
    assert [e["id"] for e in faulty.entities] == ["urn:ngsi-ld:Streetlight:2"]
    assert faulty.total == 2


async def test_a_type_count_follows_creates_type_changes_deletes_rollbacks_and_tenants(store: Store) -> None:
    async def counts(tenant: str) -> tuple[int | None, int | None]:
        found = [
            (await store.query_entities(tenant, EntityQuery(types=[t], count=True, limit=0))).total
            for t in (T_LIGHT, T_GROUP)
        ]
        return found[0], found[1]

    assert await counts("") == (0, 0)
    async with store.write("") as tx:
        for n in range(1, 6):
            await tx.insert(light(n))
        await tx.insert(light(6, T_LIGHT, T_GROUP))
    async with store.write("other") as tx:
        await tx.insert(light(1))
    assert await counts("") == (6, 1)
    assert await counts("other") == (1, 0)
    async with store.write("") as tx:
        await tx.replace(light(1, T_GROUP))  # a type change
        await tx.replace(light(2))  # no change
        assert await tx.delete("urn:ngsi-ld:Streetlight:3")
    assert await counts("") == (4, 2)
    with pytest.raises(RuntimeError):
        async with store.write("") as tx:
            await tx.insert(light(7))
            assert await tx.delete("urn:ngsi-ld:Streetlight:4")
            raise RuntimeError("rolled back")
    assert await counts("") == (4, 2)
    async with store.write("") as tx:
        await tx.delete_matching(EntityQuery(types=[T_GROUP]))
    assert await counts("") == (3, 0)
    assert await counts("other") == (1, 0)
    listed = await store.query_entities("", EntityQuery(types=[T_LIGHT], count=True))
    assert listed.total == len(listed.entities) == 3


async def test_paging_is_stable(store: Store) -> None:
    async with store.write("") as tx:
        for n in range(10):
            await tx.insert(light(n))
    pages = []
    for offset in range(0, 10, 3):
        page = await store.query_entities("", EntityQuery(types=[T_LIGHT], limit=3, offset=offset))
        pages += [e["id"] for e in page.entities]
    assert pages == [f"urn:ngsi-ld:Streetlight:{n}" for n in range(10)]


async def test_delete_matching_removes_only_what_the_query_selects(store: Store) -> None:
    async with store.write("") as tx:
        for n in range(1, 5):
            await tx.insert(light(n))
        await tx.insert(light(9, T_GROUP))
    async with store.write("") as tx:
        deleted = await tx.delete_matching(
            EntityQuery(types=[T_LIGHT], predicate=lambda e: e[STATUS][0]["value"] == "ok")
        )
    assert sorted(e["id"] for e in deleted) == ["urn:ngsi-ld:Streetlight:1", "urn:ngsi-ld:Streetlight:3"]
    remaining = [e["id"] async for e in store.iter_entities("")]
    assert remaining == [
        "urn:ngsi-ld:Streetlight:2",
        "urn:ngsi-ld:Streetlight:4",
        "urn:ngsi-ld:Streetlight:9",
    ]


async def test_hosted_contexts_persist(store: Store) -> None:
    await store.save_hosted_context("abc", {"@context": {"A": "urn:a"}}, 12.5)
    await store.save_hosted_context("mine", {"@context": {"B": "urn:b"}}, 13.5, "alice", "kanagawa")
    assert await store.hosted_contexts() == [
        ("abc", {"@context": {"A": "urn:a"}}, 12.5, None, ""),
        ("mine", {"@context": {"B": "urn:b"}}, 13.5, "alice", "kanagawa"),
    ]
    await store.delete_hosted_context("mine")
    await store.delete_hosted_context("abc")
    assert await store.hosted_contexts() == []


async def test_stores_on_one_database_hear_the_changes_each_other_commits(any_store_url: str) -> None:
    """The change feed that keeps processes' caches true: ``--workers`` on one SQLite file, or
    processes on one PostgreSQL database. A write that changes nothing is not announced."""
    one, two = open_store(any_store_url), open_store(any_store_url)
    heard: list[tuple[str, str]] = []
    two.listen(lambda topic, key: heard.append((topic, key)))
    await one.open()
    await two.open()
    try:
        sub = {"id": "urn:ngsi-ld:Subscription:1", "type": "Subscription"}
        await one.save_hosted_context("abc", {"@context": {"A": "urn:a"}}, 1.0)
        assert await one.insert_subscription("duisburg", sub)
        assert not await one.insert_subscription("duisburg", sub)  # taken: nothing changed
        assert await one.delete_subscription("duisburg", sub["id"])
        await one.delete_hosted_context("abc")
        await one.announce("registrations", "duisburg")  # what a service puts on the feed
        for _ in range(100):
            if len(heard) >= 5:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.6)  # anything more would have arrived by now
        assert heard == [
            ("contexts", "abc"),
            ("subscriptions", "duisburg"),
            ("subscriptions", "duisburg"),
            ("contexts", "abc"),
            ("registrations", "duisburg"),
        ]
    finally:
        await one.close()
        await two.close()


async def test_a_change_queued_for_notification_is_heard_by_the_other_stores(any_store_url: str) -> None:
    """What wakes a delivery process (``--notify-delivery process``) when a worker queues rows."""
    one, two = open_store(any_store_url), open_store(any_store_url)
    heard: list[str] = []
    two.listen(lambda topic, key: heard.append(topic))
    await one.open()
    await two.open()
    try:
        async with one.write("t") as tx:
            await tx.add_outbox([("urn:ngsi-ld:Subscription:1", "urn:ngsi-ld:E:1", "update", b"{}")])
        deadline = time.monotonic() + 5
        while "outbox" not in heard and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert "outbox" in heard
    finally:
        await one.close()
        await two.close()


async def test_swap_document_is_a_compare_and_set_on_the_version(store: Store) -> None:
    assert await store.insert_document("k", "", {"id": "d", "n": 0})
    # No version member counts as version 0.
    assert not await store.swap_document("k", "", {"id": "d", "n": 9, "version": 2}, 1)
    assert await store.swap_document("k", "", {"id": "d", "n": 1, "version": 1}, 0)
    assert await store.get_document("k", "", "d") == {"id": "d", "n": 1, "version": 1}
    # A writer that read version 0 lost the race: nothing is overwritten.
    assert not await store.swap_document("k", "", {"id": "d", "n": 2, "version": 1}, 0)
    assert await store.swap_document("k", "", {"id": "d", "n": 2, "version": 2}, 1)
    assert (await store.get_document("k", "", "d"))["n"] == 2
    # A NUL character (a counterparty's text) is a character like any other.
    assert await store.swap_document("k", "", {"id": "d", "n": "a\u0000b", "version": 3}, 2)
    assert await store.swap_document("k", "", {"id": "d", "n": 3, "version": 4}, 3)
    assert (await store.get_document("k", "", "d"))["n"] == 3
    # Missing documents, other kinds and other tenants are not swapped.
    assert not await store.swap_document("k", "", {"id": "none", "version": 1}, 0)
    assert not await store.swap_document("other", "", {"id": "d", "version": 3}, 2)
    assert not await store.swap_document("k", "t", {"id": "d", "version": 3}, 2)


async def test_documents_written_in_a_transaction_commit_or_roll_back_with_its_outbox(store: Store) -> None:
    """Registrations are written in the transaction that queues their csource notifications."""
    async with store.write("t") as tx:
        assert await tx.insert_document("k", {"id": "a", "n": 1})
        assert not await tx.insert_document("k", {"id": "a", "n": 9})
        assert await tx.insert_document("k", {"id": "b"})
        assert await tx.replace_document("k", {"id": "a", "n": 2})
        assert not await tx.replace_document("k", {"id": "none"})
        assert await tx.delete_document("k", "b")
        assert not await tx.delete_document("k", "b")
        assert await tx.documents("k") == [{"id": "a", "n": 2}]
        await tx.add_outbox([("sub", "a", "newlyMatching", b"{}")])
    assert await store.get_document("k", "t", "a") == {"id": "a", "n": 2}
    with pytest.raises(RuntimeError):
        async with store.write("t") as tx:
            assert await tx.insert_document("k", {"id": "c"})
            assert await tx.delete_document("k", "a")
            await tx.add_outbox([("sub", "c", "newlyMatching", b"{}")])
            raise RuntimeError("rolled back")
    assert await store.list_documents("k", "t") == ([{"id": "a", "n": 2}], 1)
    assert [row.entity_id for row in await store.outbox_head("t", "sub", 10)] == ["a"]
    # Another tenant's documents are not this transaction's.
    async with store.write("u") as tx:
        assert await tx.documents("k") == []


async def test_of_two_writes_storing_a_document_and_reading_the_other_kind_one_sees_the_other(
    store: Store,
) -> None:
    """A registration and a csource subscription written at once (each stores its document,
    then reads the other kind to notify): without this, neither saw the other on PostgreSQL and
    the registration was notified to that subscription by neither."""
    first_read, second_read = asyncio.Event(), asyncio.Event()
    seen: dict[str, list[str]] = {}

    async def first() -> None:
        async with store.write("t") as tx:
            assert await tx.insert_document("subscription", {"id": "s"})
            seen["first"] = [d["id"] for d in await tx.documents("registration")]
            first_read.set()
            # Commit once the second has read, or after a while if it cannot before this commits.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(second_read.wait(), 2)

    async def second() -> None:
        await first_read.wait()
        async with store.write("t") as tx:
            assert await tx.insert_document("registration", {"id": "r"})
            seen["second"] = [d["id"] for d in await tx.documents("subscription")]
            second_read.set()

    async with store.write("t") as tx:  # the tenant exists: creating it is no lock of its own
        assert await tx.insert_document("other", {"id": "o"})
    await asyncio.wait_for(asyncio.gather(first(), second()), 30)
    assert seen == {"first": [], "second": ["s"]}


async def test_concurrent_swaps_count_every_increment_once(store: Store) -> None:
    import asyncio

    assert await store.insert_document("k", "", {"id": "counter", "count": 0})

    async def increment() -> int:
        attempts = 0
        while True:
            attempts += 1
            doc = await store.get_document("k", "", "counter")
            version = doc.get("version", 0)
            bumped = {**doc, "count": doc["count"] + 1, "version": version + 1}
            if await store.swap_document("k", "", bumped, version):
                return attempts
            await asyncio.sleep(0)

    await asyncio.gather(*(increment() for _ in range(20)))
    assert (await store.get_document("k", "", "counter"))["count"] == 20


async def test_delivery_state_is_kept_for_entity_and_csource_subscriptions(store: Store) -> None:
    status = {"timesSent": 1, "status": "failed"}
    # An entity subscription and a context source registration subscription (a document).
    assert await store.insert_subscription("", {"id": "urn:ngsi-ld:Subscription:e"})
    assert await store.insert_document("csourceSubscription", "", {"id": "urn:ngsi-ld:Subscription:c"})
    for sub_id in ("urn:ngsi-ld:Subscription:e", "urn:ngsi-ld:Subscription:c"):
        await store.save_notification_status("", sub_id, status)
        assert await store.notification_status("", sub_id) == status
    # Nothing is kept for a subscription that does not exist (it may have just been deleted).
    await store.save_notification_status("", "urn:ngsi-ld:Subscription:gone", status)
    assert await store.notification_status("", "urn:ngsi-ld:Subscription:gone") is None


async def test_histories_of_several_entities_in_one_read(store: Store) -> None:
    speed = "https://uri.etsi.org/ngsi-ld/default-context/speed"

    def instance(value: int, minute: int) -> dict:
        at = f"2026-11-22T10:{minute:02d}:00.000Z"
        return {"type": "Property", "value": value, "observedAt": at, "createdAt": at, "modifiedAt": at}

    async with store.write("") as tx:
        for n, entity_id in enumerate(("urn:ngsi-ld:Vehicle:a", "urn:ngsi-ld:Vehicle:b")):
            for minute in range(3):
                await tx.append_history(entity_id, ["Vehicle"], speed, instance(10 * n + minute, minute))
    ids = ["urn:ngsi-ld:Vehicle:a", "urn:ngsi-ld:Vehicle:b", "urn:ngsi-ld:Vehicle:none"]
    last = await store.read_histories("", ids, HistoryQuery(last_n=2))
    assert {k: [i["value"] for _, i in v] for k, v in last.items()} == {
        "urn:ngsi-ld:Vehicle:a": [1, 2],
        "urn:ngsi-ld:Vehicle:b": [11, 12],
    }
    first = await store.read_histories("", ids, HistoryQuery(first_n=1))
    assert {k: [i["value"] for _, i in v] for k, v in first.items()} == {
        "urn:ngsi-ld:Vehicle:a": [0],
        "urn:ngsi-ld:Vehicle:b": [10],
    }
    every = await store.read_histories("", ids[:1], HistoryQuery())
    assert [(a, i["value"]) for a, i in every["urn:ngsi-ld:Vehicle:a"]] == [
        (speed, 0),
        (speed, 1),
        (speed, 2),
    ]
    assert all(
        i["instanceId"].startswith("urn:ngsi-ld:attribute:instance:")
        for _, i in every["urn:ngsi-ld:Vehicle:a"]
    )


# -- access filters: what a subject may see, decided inside the query ----------------------------

POLICY = "https://uri.etsi.org/ngsi-ld/default-context/specificAccessPolicy"


async def _owned_lights(store: Store) -> None:
    async with store.write("") as tx:
        for n in range(1, 7):
            entity = light(n, T_GROUP if n == 5 else T_LIGHT)
            if n == 3:
                entity["scope"] = ["/duisburg/zoo"]
            if n == 4:
                entity[POLICY] = [{"type": "Property", "value": "read"}]
            await tx.insert(entity, owner="alice" if n <= 2 else None)


def _numbers(entities: list[dict]) -> list[int]:
    return [int(e["id"].rsplit(":", 1)[1]) for e in entities]


@pytest.mark.parametrize(
    ("access", "expected"),
    [
        (AccessFilter(), []),
        (AccessFilter(owners=frozenset({"alice"})), [1, 2]),
        (AccessFilter(ids=frozenset({"urn:ngsi-ld:Streetlight:6"})), [6]),
        (AccessFilter(types=frozenset({T_GROUP})), [5]),
        (AccessFilter(scoped=((frozenset(), frozenset({"/duisburg/zoo"})),)), [3]),
        (AccessFilter(scoped=((frozenset({T_GROUP}), frozenset({"@none"})),)), [5]),
        (AccessFilter(scoped=((frozenset({T_LIGHT}), frozenset({"/elsewhere"})),)), []),
        (AccessFilter(policy_attributes=(POLICY,), policies=frozenset({"read", "write"})), [4]),
        (AccessFilter(policy_attributes=(POLICY,), policies=frozenset({"write"})), []),
        (
            AccessFilter(
                owners=frozenset({"alice"}), types=frozenset({T_GROUP}), ids=frozenset({light(6)["id"]})
            ),
            [1, 2, 5, 6],
        ),
    ],
)
async def test_an_access_filter_narrows_pages_and_counts(
    store: Store, access: AccessFilter, expected: list[int]
) -> None:
    await _owned_lights(store)
    everything = await store.query_entities("", EntityQuery(access=access, count=True))
    assert (_numbers(everything.entities), everything.total) == (expected, len(expected))
    # Through each index a query may be driven by, and with a page cut from the filtered whole.
    for query in (
        EntityQuery(types=[T_LIGHT, T_GROUP], access=access, count=True, limit=1, offset=1),
        EntityQuery(ids=[light(n)["id"] for n in range(1, 7)], access=access, count=True, limit=1, offset=1),
        EntityQuery(attrs=[STATUS], access=access, count=True, limit=1, offset=1),
        EntityQuery(id_pattern="^urn:ngsi-ld:Street", access=access, count=True, limit=1, offset=1),
    ):
        page = await store.query_entities("", query)
        assert (_numbers(page.entities), page.total) == (expected[1:2], len(expected)), query


async def test_the_owner_is_kept_across_replacements(store: Store) -> None:
    async with store.write("") as tx:
        await tx.insert(light(1), owner="alice")
        await tx.insert(light(2))
    async with store.write("") as tx:
        await tx.replace({**light(1), STATUS: [{"type": "Property", "value": "off"}]})
        assert await tx.owner(light(1)["id"]) == "alice"
        assert await tx.owner(light(2)["id"]) is None
        assert await tx.owner("urn:ngsi-ld:Streetlight:404") is None
    owned = await store.get_owned_entity("", light(1)["id"])
    assert owned is not None and owned[1] == "alice" and owned[0][STATUS][0]["value"] == "off"
    assert await store.get_owned_entity("", light(2)["id"]) == (
        await store.get_entity("", light(2)["id"]),
        None,
    )
    assert await store.get_owned_entity("", "urn:ngsi-ld:Streetlight:404") is None
    assert await store.get_owned_entity("nowhere", light(1)["id"]) is None
    async with store.write("") as tx:  # a type added by a replacement is the owner's too
        await tx.replace({**light(1), "type": [T_LIGHT, T_GROUP]})
    alices = EntityQuery(types=[T_GROUP], access=AccessFilter(owners=frozenset({"alice"})), count=True)
    found = await store.query_entities("", alices)
    assert (_numbers(found.entities), found.total) == ([1], 1)


async def test_delete_matching_deletes_only_what_the_filter_lets_through(store: Store) -> None:
    await _owned_lights(store)
    async with store.write("") as tx:
        doomed = await tx.delete_matching(
            EntityQuery(types=[T_LIGHT], access=AccessFilter(owners=frozenset({"alice"})))
        )
    assert sorted(_numbers(doomed)) == [1, 2]
    left = await store.query_entities("", EntityQuery(types=[T_LIGHT, T_GROUP], count=True))
    assert left.total == 4


async def test_the_audit_trail_is_read_by_subject_tenant_and_time_and_never_pruned(store: Store) -> None:
    events = [
        AuditEvent(100.0, "alice", "", "permission.create", "urn:p:1", "done", "read for bob"),
        AuditEvent(200.0, "", "city", "GET /ngsi-ld/v1/entities", "/ngsi-ld/v1/entities", "denied"),
        AuditEvent(300.0, "alice", "city", "dataset.delete", "urn:d:1", "done"),
    ]
    for event in events:
        await store.append_audit(event)
    assert await store.read_audit() == (events, 3)
    assert await store.read_audit(subject="alice") == ([events[0], events[2]], 2)
    assert await store.read_audit(subject="alice", tenant="city") == ([events[2]], 1)
    assert await store.read_audit(since=200.0, limit=1) == ([events[1]], 2)
    assert await store.read_audit(since=200.0, limit=1, offset=1) == ([events[2]], 2)

    await store.prune_history(before=10_000.0)
    assert (await store.read_audit())[1] == 3
