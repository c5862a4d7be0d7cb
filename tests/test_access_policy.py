"""The one decision in its two forms agrees: what a store query with a subject's AccessFilter
returns (its pages and its counts) is exactly what :meth:`Guard.held` lets the subject do to each
entity, for random entities, owners, permissions and subjects, on every store kind, whichever
index the query is driven by (none, the type, ids, the geo index)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kizuna import query as ql
from kizuna.access.permissions import (
    KIND,
    SPECIFIC_ACCESS_POLICY_IRIS,
    Action,
    Permission,
    Target,
    grantable,
    to_doc,
)
from kizuna.access.policy import AccessPolicy
from kizuna.access.subject import AUTHENTICATED, PUBLIC, Subject
from kizuna.store import EntityQuery, open_store

TYPES = ["urn:t:A", "urn:t:B", "urn:t:C"]
SCOPES = ["/x", "/y"]
LOCATION = "https://uri.etsi.org/ngsi-ld/location"
SUBJECTS = [
    Subject("alice", groups=frozenset({"team"})),
    Subject("bob"),
    Subject("carol", roles=frozenset({"kizuna-creator"})),
    Subject(None),
    Subject("root", roles=frozenset({"t0:kizuna-admin"})),
]
_tenants = itertools.count()

entities = st.lists(
    st.fixed_dictionaries(
        {
            "types": st.lists(st.sampled_from(TYPES), min_size=1, max_size=2, unique=True),
            "scope": st.sampled_from([None, *SCOPES]),
            "policy": st.sampled_from([None, "read", "write", "AUTH_READ", "AUTH_WRITE", "other"]),
            "owner": st.sampled_from([None, "alice", "bob", "carol"]),
        }
    ),
    max_size=12,
)
targets = st.one_of(
    st.builds(lambda n: Target(id=f"urn:e:{n}"), st.integers(0, 11)),
    st.builds(
        lambda types, scopes: Target(types=tuple(types), scopes=tuple(scopes)),
        st.lists(st.sampled_from(TYPES), max_size=2, unique=True),
        st.lists(st.sampled_from([*SCOPES, "@none"]), max_size=2, unique=True),
    ),
)
permissions = st.lists(
    st.builds(
        lambda target, assignee, action: (target, assignee, action),
        targets,
        st.sampled_from(["alice", "bob", "team", PUBLIC, AUTHENTICATED]),
        st.sampled_from([Action.READ, Action.WRITE, Action.ADMIN]),
    ),
    max_size=5,
)


def entity(n: int, facts: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": f"urn:e:{n}",
        "type": facts["types"],
        LOCATION: [{"type": "GeoProperty", "value": {"type": "Point", "coordinates": [6.76, 51.43]}}],
    }
    if facts["scope"] is not None:
        doc["scope"] = [facts["scope"]]
    if facts["policy"] is not None:
        doc[SPECIFIC_ACCESS_POLICY_IRIS[0]] = [{"type": "Property", "value": facts["policy"]}]
    return doc


async def check(
    url: str, facts: list[dict[str, Any]], granted: list[tuple[Target, str, Action]], page: tuple[int, int]
) -> None:
    tenant = f"t{next(_tenants)}"
    store = open_store(url)
    await store.open()
    try:
        docs = [entity(n, f) for n, f in enumerate(facts)]
        async with store.write(tenant) as tx:
            for doc, f in zip(docs, facts, strict=True):
                await tx.insert(doc, f["owner"])
        for n, (target, assignee, action) in enumerate(granted):
            p = Permission(f"urn:p:{n}", target, assignee, action)
            if grantable(p) is None:
                await store.insert_document(
                    KIND, tenant, to_doc(p, "2026-12-05T00:00:00Z", "2026-12-05T00:00:00Z")
                )
        policy = AccessPolicy(store)
        near = ql.parse_geoq("near;maxDistance==100", "Point", "[6.76,51.43]")
        limit, offset = page
        for subject in SUBJECTS:
            guard = await policy.guard(tenant, subject)
            for action in (Action.READ, Action.WRITE, Action.ADMIN):
                expected = [
                    doc["id"]
                    for doc, f in zip(docs, facts, strict=True)
                    if (held := (Action.ADMIN if guard.unrestricted else guard.held(doc, f["owner"])))
                    is not None
                    and held >= action
                ]
                for drive in (
                    {},
                    {"types": TYPES},
                    {"ids": [doc["id"] for doc in docs] or ["urn:e:none"]},
                    {"geo": near, "geoproperty": LOCATION},
                ):
                    query = EntityQuery(
                        **drive, access=guard.filter(action), count=True, limit=limit, offset=offset
                    )
                    found = await store.query_entities(tenant, query)
                    assert found.total == len(expected), (subject, action)
                    assert [e["id"] for e in found.entities] == expected[offset : offset + limit], (
                        subject,
                        action,
                    )
    finally:
        await store.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(facts=entities, granted=permissions, page=st.tuples(st.integers(1, 5), st.integers(0, 6)))
def test_queries_return_what_the_decision_allows(
    any_store_url: str,
    facts: list[dict[str, Any]],
    granted: list[tuple[Target, str, Action]],
    page: tuple[int, int],
) -> None:
    asyncio.run(check(any_store_url, facts, granted, page))
