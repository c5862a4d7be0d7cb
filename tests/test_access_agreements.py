"""Data-space agreements as permissions: held only for reads under the agreement itself."""

from __future__ import annotations

from kizuna.access.audit import AuditTrail
from kizuna.access.grants import Grants, agreement_permission_id
from kizuna.access.permissions import Action
from kizuna.access.policy import AccessPolicy
from kizuna.access.subject import Subject, participant
from kizuna.store import EntityQuery, Store

COHORT = "https://example.org/CohortRecord"
STAFF = "https://example.org/Staff"
POLICY = "https://uri.etsi.org/ngsi-ld/default-context/specificAccessPolicy"
RIKEN = "did:web:riken.example"


def entity(n: int, kind: str, **extra: list) -> dict:
    return {
        "id": f"urn:ngsi-ld:{kind.rsplit('/', 1)[-1]}:{n}",
        "type": [kind],
        "createdAt": "2026-12-06T00:00:00.000Z",
        "modifiedAt": "2026-12-06T00:00:00.000Z",
        **extra,
    }


async def readable(store: Store, policy: AccessPolicy, subject: Subject) -> list[str]:
    guard = await policy.guard("", subject)
    found = await store.query_entities("", EntityQuery(access=guard.filter(Action.READ)))
    assert all(guard.held(e, None) is not None for e in found.entities), "filter and held agree"
    return sorted(e["id"] for e in found.entities)


async def test_an_agreement_grants_its_types_to_reads_under_it_only(store: Store) -> None:
    async with store.write("") as tx:
        await tx.insert(entity(1, COHORT))
        await tx.insert(entity(2, COHORT))
        await tx.insert(entity(3, STAFF, **{POLICY: [{"type": "Property", "value": "read"}]}), owner=RIKEN)
    policy = AccessPolicy(store)
    grants = Grants(store, policy, AuditTrail(store))
    under = participant(RIKEN, "urn:agreement:1")

    assert await readable(store, policy, under) == []
    await grants.grant_agreement("", "urn:agreement:1", RIKEN, [COHORT])
    await grants.grant_agreement("", "urn:agreement:1", RIKEN, [COHORT])  # idempotent
    assert len([p for p in await policy.permissions("") if p.agreement]) == 1
    # Under the agreement: its types, and neither what the participant owns nor what a
    # specificAccessPolicy opens to authenticated subjects.
    assert await readable(store, policy, under) == [
        "urn:ngsi-ld:CohortRecord:1",
        "urn:ngsi-ld:CohortRecord:2",
    ]
    # The same participant id with any other credential, or under another agreement: not at all.
    assert await readable(store, policy, Subject(RIKEN)) == ["urn:ngsi-ld:Staff:3"]
    assert await readable(store, policy, participant(RIKEN, "urn:agreement:2")) == []

    await grants.revoke_agreement("", "urn:agreement:1")
    assert await readable(store, policy, under) == []
    events, _ = await store.read_audit(subject="urn:kizuna:node")
    assert [(e.operation, e.target) for e in events] == [
        ("permission.create", agreement_permission_id("urn:agreement:1")),
        ("permission.delete", agreement_permission_id("urn:agreement:1")),
    ]


async def test_a_push_subscription_is_the_nodes_but_notifies_as_the_consumer_under_its_agreement() -> None:
    from kizuna.access.ownership import owned, owner_of, reader_of
    from kizuna.access.subject import NODE
    from kizuna.jsonld.contexts import ContextRegistry
    from kizuna.ngsild.matching import compile_subscription

    body = {"id": "urn:kizuna:dsp-push:1", "type": "Subscription", "entities": [{"type": COHORT}]}
    push = owned(body, NODE, participant(RIKEN, "urn:agreement:1"))
    assert owner_of(push) == NODE  # only the node's connector changes or deletes it
    assert reader_of(push) == participant(RIKEN, "urn:agreement:1")
    compiled = await compile_subscription(push, ContextRegistry())
    assert compiled is not None and compiled.owner == participant(RIKEN, "urn:agreement:1")
    assert reader_of(owned(body, NODE)) == NODE
    # Only an agreement's participant bounds a subscription's reads; any other subject is ignored.
    assert reader_of(owned(body, NODE, Subject(RIKEN))) == NODE
