"""The Store contract for documents and tenants (``store/*/documents.py``, ``store/*/store.py``),
on every store kind of ``conftest.STORE_KINDS``: registrations and csource subscriptions kept as
documents of a kind, per tenant, in creation order."""

from __future__ import annotations

from kizuna.store import Store

REG = "csourceRegistration"


async def test_documents_round_trip_per_kind_and_tenant_in_creation_order(store: Store) -> None:
    assert not await store.has_tenant("t")
    for n in range(1, 4):
        assert await store.insert_document(REG, "t", {"id": f"urn:r:{n}", "n": n})
    assert await store.has_tenant("t")  # created by the first document
    assert not await store.insert_document(REG, "t", {"id": "urn:r:1", "n": 9})  # taken
    assert await store.insert_document("csourceSubscription", "t", {"id": "urn:r:1"})  # other kind
    assert await store.get_document(REG, "t", "urn:r:1") == {"id": "urn:r:1", "n": 1}
    assert await store.get_document(REG, "", "urn:r:1") is None
    assert await store.get_document(REG, "nowhere", "urn:r:1") is None
    assert await store.list_documents(REG, "t") == ([{"id": f"urn:r:{n}", "n": n} for n in (1, 2, 3)], 3)
    assert await store.list_documents(REG, "t", limit=1, offset=1) == ([{"id": "urn:r:2", "n": 2}], 3)
    assert await store.list_documents("csourceSubscription", "t") == ([{"id": "urn:r:1"}], 1)
    assert await store.list_documents(REG, "nowhere") == ([], 0)

    assert await store.replace_document(REG, "t", {"id": "urn:r:2", "n": 20})
    assert await store.get_document(REG, "t", "urn:r:2") == {"id": "urn:r:2", "n": 20}
    assert not await store.replace_document(REG, "t", {"id": "urn:r:404"})
    assert not await store.replace_document(REG, "nowhere", {"id": "urn:r:2"})
    # Replacing keeps the document's place in the listing.
    assert [d["id"] for d in (await store.list_documents(REG, "t"))[0]] == ["urn:r:1", "urn:r:2", "urn:r:3"]

    assert await store.delete_document(REG, "t", "urn:r:1")
    assert not await store.delete_document(REG, "t", "urn:r:1")
    assert not await store.delete_document(REG, "nowhere", "urn:r:1")
    assert await store.get_document(REG, "t", "urn:r:1") is None
    assert await store.get_document("csourceSubscription", "t", "urn:r:1") == {"id": "urn:r:1"}
    assert (await store.list_documents(REG, "t"))[1] == 2


async def test_tenants_are_listed_by_name_without_the_default(store: Store) -> None:
    assert await store.tenants() == []
    async with store.write("b"):
        pass
    async with store.write("a"):
        pass
    async with store.write(""):
        pass
    assert await store.tenants() == ["a", "b"]
    assert await store.has_tenant("a") and await store.has_tenant("")
