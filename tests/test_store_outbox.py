"""The Store contract for subscriptions and the notification outbox (``store/*/outbox.py``), on
every store kind of ``conftest.STORE_KINDS``: what the dispatcher relies on to deliver each
notification at least once, in order, by exactly one process."""

from __future__ import annotations

import time

import orjson

from kizuna.store import Store

S1, S2, S3 = (f"urn:ngsi-ld:Subscription:{n}" for n in (1, 2, 3))


def subscription(sub_id: str, **members: object) -> dict:
    return {"id": sub_id, "type": "Subscription", **members}


async def queue(store: Store, tenant: str, sub_id: str, count: int) -> None:
    async with store.write(tenant) as tx:
        await tx.add_outbox(
            [(sub_id, f"urn:ngsi-ld:E:{n}", "create", orjson.dumps({"n": n})) for n in range(count)]
        )


async def test_subscriptions_round_trip_in_creation_order_and_bump_the_version(store: Store) -> None:
    assert await store.subscription_version("t") == 0  # a tenant that does not exist yet
    assert await store.insert_subscription("t", subscription(S1, n=1))
    created = await store.subscription_version("t")
    assert created > 0
    assert await store.get_subscription("t", S1) == subscription(S1, n=1)
    assert await store.get_subscription("", S1) is None  # tenants apart
    assert await store.replace_subscription("t", subscription(S1, n=2))
    replaced = await store.subscription_version("t")
    assert replaced > created
    assert (await store.get_subscription("t", S1))["n"] == 2
    assert not await store.replace_subscription("t", subscription("urn:ngsi-ld:Subscription:none"))
    assert not await store.replace_subscription("nowhere", subscription(S1))
    assert await store.subscription_version("t") == replaced  # nothing changed: no bump
    for sub_id in (S2, S3):
        assert await store.insert_subscription("t", subscription(sub_id))
    page, total = await store.list_subscriptions("t", 2, 1)
    assert ([s["id"] for s in page], total) == ([S2, S3], 3)
    every, total = await store.list_subscriptions("t", None, 0)
    assert ([s["id"] for s in every], total) == ([S1, S2, S3], 3)
    assert await store.list_subscriptions("nowhere", None, 0) == ([], 0)
    async with store.write("t") as tx:  # the transaction sees the same, on its own connection
        assert await tx.subscription_version() == await store.subscription_version("t")
        assert [s["id"] for s in await tx.subscriptions()] == [S1, S2, S3]
    assert await store.delete_subscription("t", S2)
    assert not await store.delete_subscription("t", S2)
    assert await store.get_subscription("t", S2) is None
    assert await store.subscription_version("t") > replaced


async def test_the_outbox_hands_out_rows_in_commit_order_until_delivered(store: Store) -> None:
    for sub_id in (S1, S2):
        assert await store.insert_subscription("t", subscription(sub_id))
    before = time.time()
    await queue(store, "t", S1, 3)
    await queue(store, "t", S2, 1)
    assert sorted(await store.outbox_subscriptions()) == [("t", S1), ("t", S2)]
    head = await store.outbox_head("t", S1, 2)
    assert [(r.tenant, r.subscription_id, r.entity_id, r.trigger, r.payload) for r in head] == [
        ("t", S1, "urn:ngsi-ld:E:0", "create", {"n": 0}),
        ("t", S1, "urn:ngsi-ld:E:1", "create", {"n": 1}),
    ]
    assert head[0].seq < head[1].seq
    assert all(before - 1 <= r.created_at <= time.time() + 1 for r in head)
    await store.ack_outbox("t", S1, head[0].seq)  # delivered
    await store.ack_outbox("t", S1, head[0].seq - 1)  # a cursor never moves back
    assert [r.entity_id for r in await store.outbox_head("t", S1, 10)] == [
        "urn:ngsi-ld:E:1",
        "urn:ngsi-ld:E:2",
    ]
    await store.drop_outbox("t", S1)  # what a dispatcher gives up on
    assert await store.outbox_head("t", S1, 10) == []
    assert await store.outbox_subscriptions() == [("t", S2)]
    # A rolled-back transaction queues nothing.
    try:
        async with store.write("t") as tx:
            await tx.add_outbox([(S1, "urn:ngsi-ld:E:9", "update", b"{}")])
            raise RuntimeError("refused half-way")
    except RuntimeError:
        pass
    assert await store.outbox_head("t", S1, 10) == []


async def test_one_row_per_change_serves_every_subscription_and_goes_once_all_have_passed(
    store: Store,
) -> None:
    for sub_id in (S1, S2, S3):
        assert await store.insert_subscription("t", subscription(sub_id))
    shared, own = orjson.dumps({"shared": True}), orjson.dumps({"own": True})
    for n in range(3):  # each change notifies all three, S3 with a payload of its own
        async with store.write("t") as tx:
            e = f"urn:ngsi-ld:E:{n}"
            await tx.add_outbox(
                [(S1, e, "update", shared), (S2, e, "update", shared), (S3, e, "create", own)]
            )
    assert (await store.vitals("t", [])).outbox_rows == 3  # one row per change, not per subscription
    assert sorted(await store.outbox_subscriptions()) == [("t", S1), ("t", S2), ("t", S3)]
    heads = {sub_id: await store.outbox_head("t", sub_id, 10) for sub_id in (S1, S2, S3)}
    assert [r.seq for r in heads[S1]] == [r.seq for r in heads[S2]] == [r.seq for r in heads[S3]]
    assert [(r.trigger, r.payload) for r in heads[S3]] == [("create", {"own": True})] * 3
    assert [(r.subscription_id, r.payload) for r in heads[S2]] == [(S2, {"shared": True})] * 3
    await store.ack_outbox("t", S1, heads[S1][-1].seq)  # S1 is done: the rows stay for the others
    assert await store.outbox_head("t", S1, 10) == []
    assert (await store.vitals("t", [])).outbox_rows == 3
    await store.ack_outbox("t", S2, heads[S2][0].seq)
    assert (await store.vitals("t", [])).outbox_rows == 3  # S3 has not passed the first yet
    await store.ack_outbox("t", S3, heads[S3][1].seq)
    assert (await store.vitals("t", [])).outbox_rows == 2  # every subscription passed the first
    assert await store.delete_subscription("t", S2)  # a deleted subscription holds nothing back
    assert (await store.vitals("t", [])).outbox_rows == 1
    assert sorted(await store.outbox_subscriptions()) == [("t", S3)]
    assert await store.insert_subscription("t", subscription(S2))  # the id again: owed only new changes
    assert await store.outbox_head("t", S2, 10) == []
    async with store.write("t") as tx:
        await tx.add_outbox([(S2, "urn:ngsi-ld:E:9", "create", own)])
    assert [r.entity_id for r in await store.outbox_head("t", S2, 10)] == ["urn:ngsi-ld:E:9"]


async def test_a_subscriptions_rows_are_found_behind_more_than_a_batch_of_others(store: Store) -> None:
    """Rows are read by their targets' hash, the targets of a new hash once: a read whose whole
    batch names other subscriptions must read on, and targets with the same subscriptions but
    other triggers are other targets."""
    for sub_id in (S1, S2):
        assert await store.insert_subscription("t", subscription(sub_id))
    await queue(store, "t", S1, 5)
    a, b = orjson.dumps({"a": 1}), orjson.dumps({"b": 1})
    for trigger_1, trigger_2 in (("create", "update"), ("update", "create")):
        async with store.write("t") as tx:
            await tx.add_outbox(
                [(S1, "urn:ngsi-ld:E:x", trigger_1, a), (S2, "urn:ngsi-ld:E:x", trigger_2, b)]
            )
    head = await store.outbox_head("t", S2, 2)
    assert [(r.trigger, r.payload) for r in head] == [("update", {"b": 1}), ("create", {"b": 1})]
    await store.ack_outbox("t", S2, head[-1].seq)
    assert await store.outbox_head("t", S2, 2) == []
    rows = await store.outbox_head("t", S1, 10)
    assert [r.trigger for r in rows] == ["create"] * 6 + ["update"]
    assert (await store.vitals("t", [])).outbox_rows == 7  # S1 has passed none
    await store.ack_outbox("t", S1, rows[4].seq)
    assert (await store.vitals("t", [])).outbox_rows == 2
    await store.ack_outbox("t", S1, rows[-1].seq)
    assert (await store.vitals("t", [])).outbox_rows == 0
    assert await store.outbox_subscriptions() == []


async def test_a_delivery_moves_the_cursor_and_saves_the_state_together(store: Store) -> None:
    assert await store.insert_subscription("t", subscription(S1))
    await queue(store, "t", S1, 2)
    head = await store.outbox_head("t", S1, 10)
    await store.ack_outbox("t", S1, head[0].seq, {"timesSent": 1, "status": "ok"})
    assert [r.entity_id for r in await store.outbox_head("t", S1, 10)] == ["urn:ngsi-ld:E:1"]
    assert await store.notification_status("t", S1) == {"timesSent": 1, "status": "ok"}
    await queue(store, "t", S2, 1)  # S2 is no subscription: its state is not kept
    await store.ack_outbox("t", S2, (await store.outbox_head("t", S2, 1))[0].seq, {"timesSent": 1})
    assert await store.notification_status("t", S2) is None
    assert await store.outbox_head("t", S2, 1) == []


async def test_leases_are_claimed_once_renewed_released_and_taken_over_when_expired(store: Store) -> None:
    keys = [("t", S1), ("t", S2)]
    assert await store.lease_subscriptions("one", [], 100.0, 110.0) == []
    assert await store.lease_subscriptions("one", keys, 100.0, 110.0) == keys  # claimed
    assert await store.lease_subscriptions("two", keys, 105.0, 115.0) == []  # held, not expired
    assert await store.lease_owners() == ["one"]
    assert await store.lease_subscriptions("one", keys[:1], 105.0, 120.0) == keys[:1]  # its own
    await store.renew_leases("one", 130.0)
    assert await store.lease_subscriptions("two", keys, 125.0, 140.0) == []  # renewed to 130
    assert await store.lease_subscriptions("two", keys, 131.0, 140.0) == keys  # expired: taken over
    assert await store.lease_owners() == ["two"]
    await store.release_leases("two")
    assert await store.lease_owners() == []
    assert await store.lease_subscriptions("one", keys, 132.0, 150.0) == keys  # free again: retried
    await store.drop_outbox("t", S1)  # forgets the lease with the rows
    assert await store.lease_subscriptions("two", keys, 133.0, 160.0) == [("t", S1)]
    assert sorted(await store.lease_owners()) == ["one", "two"]


async def test_deleting_a_subscription_forgets_its_rows_lease_and_delivery_state(store: Store) -> None:
    assert await store.insert_subscription("t", subscription(S1))
    await queue(store, "t", S1, 2)
    assert await store.lease_subscriptions("one", [("t", S1)], 1.0, 2.0) == [("t", S1)]
    await store.save_notification_status("t", S1, {"timesSent": 2})
    assert await store.notification_status("t", S1) == {"timesSent": 2}
    assert await store.delete_subscription("t", S1)
    assert await store.outbox_subscriptions() == []
    assert await store.lease_owners() == []
    assert await store.notification_status("t", S1) is None
