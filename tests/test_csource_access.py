"""Registrations, csource subscriptions and hosted @contexts under access control (``--auth
oidc``, both stores): the creator's and the admins', nobody else's."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from access_helpers import bearer

REGISTRATIONS = "/ngsi-ld/v1/csourceRegistrations"
CSOURCE_SUBSCRIPTIONS = "/ngsi-ld/v1/csourceSubscriptions"
CONTEXTS = "/ngsi-ld/v1/jsonldContexts"
CORE = {"Content-Type": "application/json"}

REGISTRATION = {
    "id": "urn:ngsi-ld:ContextSourceRegistration:riken",
    "type": "ContextSourceRegistration",
    "information": [{"entities": [{"type": "CohortRecord"}]}],
    "endpoint": "http://127.0.0.1:9/riken",
}
CSOURCE_SUBSCRIPTION = {
    "id": "urn:ngsi-ld:Subscription:csource-1",
    "type": "Subscription",
    "entities": [{"type": "CohortRecord"}],
    "notification": {"endpoint": {"uri": "http://127.0.0.1:9/notify"}},
}


def test_registrations_and_csource_subscriptions_are_their_creators(
    secured: TestClient, idp_key: Any
) -> None:
    alice = bearer(idp_key, "kizuna-creator", sub="alice")
    bob = bearer(idp_key, "kizuna-creator", sub="bob")
    admin = bearer(idp_key, "kizuna-admin", sub="root")
    for path, body, one in (
        (REGISTRATIONS, REGISTRATION, f"{REGISTRATIONS}/{REGISTRATION['id']}"),
        (
            CSOURCE_SUBSCRIPTIONS,
            CSOURCE_SUBSCRIPTION,
            f"{CSOURCE_SUBSCRIPTIONS}/{CSOURCE_SUBSCRIPTION['id']}",
        ),
    ):
        assert secured.post(path, json=body, headers=CORE).status_code == 401
        assert secured.post(path, json=body, headers=bearer(idp_key, sub="reader") | CORE).status_code == 403
        assert secured.post(path, json=body, headers=alice | CORE).status_code == 201, path
        assert secured.get(one, headers=alice).status_code == 200
        assert secured.get(one, headers=admin).status_code == 200
        assert secured.get(one, headers=bob).status_code == 404
        assert (
            secured.patch(one, json={"endpoint": "http://127.0.0.1:9/x"}, headers=bob | CORE).status_code
            == 404
        )
        assert secured.delete(one, headers=bob).status_code == 404
        params = {"count": "true"} | ({"type": "CohortRecord"} if path == REGISTRATIONS else {})
        listed = secured.get(path, params=params, headers=bob)
        assert listed.json() == [] and listed.headers["NGSILD-Results-Count"] == "0"
        assert [r["id"] for r in secured.get(path, params=params, headers=alice).json()] == [body["id"]]
        assert secured.delete(one, headers=alice).status_code == 204


def test_hosted_contexts_are_added_by_creators_and_removed_by_them_or_admins(
    secured: TestClient, idp_key: Any
) -> None:
    document = {"@context": {"CohortRecord": "https://example.org/CohortRecord"}}
    alice = bearer(idp_key, "kizuna-creator", sub="alice")
    assert secured.post(CONTEXTS, json=document, headers=CORE).status_code == 401
    added = [secured.post(CONTEXTS, json=document, headers=alice | CORE) for _ in range(2)]
    assert [a.status_code for a in added] == [201, 201]
    first, second = (a.headers["Location"] for a in added)
    assert secured.get(first).status_code == 200  # served to anyone: clients resolve it by URL
    bob = bearer(idp_key, "kizuna-creator", sub="bob")
    assert secured.delete(first, headers=bob).status_code == 403
    assert secured.delete(first).status_code == 401
    assert secured.delete(f"{first}?reload=true", headers=alice).status_code == 403  # admins reload
    assert secured.delete(first, headers=alice).status_code == 204
    assert secured.get(first).status_code == 404
    assert secured.delete(second, headers=bearer(idp_key, "kizuna-admin")).status_code == 204


def test_csource_notifications_tell_only_of_registrations_the_subscriber_may_see(
    secured: TestClient, idp_key: Any
) -> None:
    from notify_helpers import Receiver, wait_until

    alice = bearer(idp_key, "kizuna-creator", sub="alice")
    bob = bearer(idp_key, "kizuna-creator", sub="bob")
    admin = bearer(idp_key, "kizuna-admin", sub="root")
    alices, admins = Receiver(), Receiver()
    try:

        def register(who: dict[str, str], name: str) -> str:
            body = {**REGISTRATION, "id": f"urn:ngsi-ld:ContextSourceRegistration:{name}"}
            assert secured.post(REGISTRATIONS, json=body, headers=who | CORE).status_code == 201
            return body["id"]

        def subscribe(who: dict[str, str], name: str, receiver: Receiver) -> None:
            body = {
                **CSOURCE_SUBSCRIPTION,
                "id": f"urn:ngsi-ld:Subscription:{name}",
                "notification": {"endpoint": {"uri": receiver.url, "accept": "application/json"}},
            }
            assert secured.post(CSOURCE_SUBSCRIPTIONS, json=body, headers=who | CORE).status_code == 201

        bobs_first = register(bob, "bob-1")
        subscribe(alice, "alice", alices)
        subscribe(admin, "admin", admins)
        bobs_second = register(bob, "bob-2")
        alices_own = register(alice, "alice-1")

        def notified(receiver: Receiver) -> set[str]:
            return {item["id"] for body in receiver.bodies for item in body["data"]}

        wait_until(lambda: {bobs_first, bobs_second, alices_own} <= notified(admins), 10)
        wait_until(lambda: alices_own in notified(alices), 10)
        assert notified(alices) == {alices_own}
    finally:
        alices.close()
        admins.close()


def test_a_subscription_the_node_manages_is_changed_by_nobody_else_of_either_kind(
    secured: TestClient, idp_key: Any
) -> None:
    """A subject who may see a subscription but not change it (here an admin, and one the node's
    connector owns) gets 403 on PATCH and DELETE, for csource subscriptions as for entity ones."""
    from kizuna.access.ownership import owned
    from kizuna.access.subject import NODE

    admin = bearer(idp_key, "kizuna-admin", sub="root")
    store = secured.app.state.store  # type: ignore[attr-defined]
    stamp = {"createdAt": "2024-01-01T00:00:00Z", "modifiedAt": "2024-01-01T00:00:00Z"}
    portal = secured.portal
    assert portal is not None
    csource = owned({**CSOURCE_SUBSCRIPTION, **stamp}, NODE)
    entity = owned({**CSOURCE_SUBSCRIPTION, "id": "urn:ngsi-ld:Subscription:entity-1", **stamp}, NODE)
    assert portal.call(store.insert_document, "csourceSubscription", "", csource)
    assert portal.call(store.insert_subscription, "", entity)
    for path, sub_id in ((CSOURCE_SUBSCRIPTIONS, csource["id"]), ("/ngsi-ld/v1/subscriptions", entity["id"])):
        one = f"{path}/{sub_id}"
        assert secured.get(one, headers=admin).status_code == 200, one
        moved = secured.patch(
            one, json={"notification": {"endpoint": {"uri": "http://127.0.0.1:9/x"}}}, headers=admin | CORE
        )
        assert moved.status_code == 403, one
        assert "managed by the node's connector" in moved.json()["detail"]
        assert secured.delete(one, headers=admin).status_code == 403, one
        assert secured.get(one, headers=admin).status_code == 200, one
