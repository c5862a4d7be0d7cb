"""The Store contract for the figures ``/metrics`` reads (``store/*/vitals.py``), on every store
kind of ``conftest.STORE_KINDS``: the outbox's depth and age, document states, write timing."""

from __future__ import annotations

import time

from kizuna.store import Store

NEGOTIATION, TRANSFER, OTHER = "dsp.negotiation", "dsp.transfer", "dsp.agreement"


async def test_an_empty_store_has_no_outbox_and_no_states(store: Store) -> None:
    vitals = await store.vitals("", [NEGOTIATION, TRANSFER])
    assert (vitals.outbox_rows, vitals.oldest_outbox, vitals.states) == (0, None, {})
    assert (await store.vitals("nowhere", [NEGOTIATION])).states == {}
    assert (await store.vitals("", [])).states == {}


async def test_the_outbox_depth_and_its_oldest_row_across_tenants(store: Store) -> None:
    before = time.time()
    for tenant, count in (("", 2), ("t", 3)):
        async with store.write(tenant) as tx:
            await tx.add_outbox(
                [("urn:ngsi-ld:Subscription:1", f"urn:ngsi-ld:E:{n}", "create", b"{}") for n in range(count)]
            )
    after = time.time()
    vitals = await store.vitals("", [])
    assert vitals.outbox_rows == 5
    assert vitals.oldest_outbox is not None and before - 1 <= vitals.oldest_outbox <= after
    oldest = vitals.oldest_outbox
    head = await store.outbox_head("", "urn:ngsi-ld:Subscription:1", 10)
    await store.ack_outbox("", "urn:ngsi-ld:Subscription:1", head[-1].seq)
    vitals = await store.vitals("", [])
    assert vitals.outbox_rows == 3
    assert vitals.oldest_outbox is not None and vitals.oldest_outbox >= oldest


async def test_documents_are_counted_by_kind_and_state_in_one_tenant(store: Store) -> None:
    docs = [
        (NEGOTIATION, "", "n1", "REQUESTED"),
        (NEGOTIATION, "", "n2", "REQUESTED"),
        (NEGOTIATION, "", "n3", "FINALIZED"),
        (NEGOTIATION, "", "n4", None),  # before its first state: not counted
        (TRANSFER, "", "t1", "STARTED"),
        (OTHER, "", "a1", "FINALIZED"),  # a kind not asked for
        (NEGOTIATION, "elsewhere", "n5", "REQUESTED"),  # another tenant
    ]
    for kind, tenant, doc_id, state in docs:
        note = "a\u0000b" if doc_id == "n2" else ""  # a NUL in a document spoils no scrape
        assert await store.insert_document(kind, tenant, {"id": doc_id, "state": state, "note": note})
    vitals = await store.vitals("", [NEGOTIATION, TRANSFER])
    assert vitals.states == {
        (NEGOTIATION, "REQUESTED"): 2,
        (NEGOTIATION, "FINALIZED"): 1,
        (TRANSFER, "STARTED"): 1,
    }
    assert (await store.vitals("elsewhere", [NEGOTIATION])).states == {(NEGOTIATION, "REQUESTED"): 1}
    assert await store.swap_document(NEGOTIATION, "", {"id": "n1", "state": "FINALIZED", "version": 1}, 0)
    assert (await store.vitals("", [NEGOTIATION])).states == {
        (NEGOTIATION, "REQUESTED"): 1,
        (NEGOTIATION, "FINALIZED"): 2,
    }


async def test_every_write_transaction_is_timed_committed_or_not(store: Store) -> None:
    took: list[float] = []
    store.time_writes(took.append)
    async with store.write("") as tx:
        await tx.insert({"id": "urn:ngsi-ld:E:1", "type": ["urn:T"]})
    try:
        async with store.write("") as tx:
            await tx.insert({"id": "urn:ngsi-ld:E:2", "type": ["urn:T"]})
            raise RuntimeError("rolled back")
    except RuntimeError:
        pass
    assert len(took) == 2 and all(0 < seconds < 10 for seconds in took)
    assert await store.get_entity("", "urn:ngsi-ld:E:2") is None


async def test_the_pool_usage_is_none_or_within_the_pool(store: Store) -> None:
    usage = store.pool_usage()
    assert usage is None or (usage[0] >= 1 and 0 <= usage[1] <= usage[0]), usage
    async with store.write(""):
        during = store.pool_usage()
        assert during is None or during[1] >= 1, during
    assert (usage is None) == (during is None)
