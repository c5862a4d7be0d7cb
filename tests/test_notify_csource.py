"""Context source notifications (clause 5.11.7) as the CsourceNotifier decides them."""

from __future__ import annotations

import asyncio
from typing import Any

from kizuna.access.ownership import owned
from kizuna.access.subject import NODE
from kizuna.jsonld.contexts import ContextRegistry
from kizuna.ngsild.csources import REGISTRATION_KIND
from kizuna.notify.csource import CsourceNotifier

VEHICLE = "https://uri.etsi.org/ngsi-ld/default-context/Vehicle"


def registration(name: str, modified_at: str) -> dict[str, Any]:
    return owned(
        {
            "id": f"urn:ngsi-ld:ContextSourceRegistration:{name}",
            "type": "ContextSourceRegistration",
            "information": [{"entities": [{"type": VEHICLE}]}],
            "endpoint": "http://source.example",
            "createdAt": modified_at,
            "modifiedAt": modified_at,
        },
        NODE,
    )


class Registrations:
    """The one store call the notifier makes for a new subscription: the tenant's registrations."""

    def __init__(self, regs: list[dict[str, Any]]) -> None:
        self.regs = regs

    async def list_documents(self, kind: str, tenant: str) -> tuple[list[dict[str, Any]], int]:
        assert kind == REGISTRATION_KIND
        return self.regs, len(self.regs)


async def test_a_new_subscription_is_told_of_the_registrations_stored_before_it_only() -> None:
    """A registration stored after the subscription (before the notifier read the list) is
    told by its own change; listing it here too notified it twice."""
    earlier = registration("earlier", "2026-12-07T10:00:00.000Z")
    later = registration("later", "2026-12-07T10:00:02.000Z")
    sent: list[list[str]] = []

    async def send(tenant: str, sub: dict[str, Any], data: list[dict[str, Any]], _: dict[str, Any]) -> bool:
        sent.append([item["id"] for item in data])
        return True

    notifier = CsourceNotifier(Registrations([earlier, later]), ContextRegistry(), send)  # type: ignore[arg-type]
    subscription = owned(
        {
            "id": "urn:ngsi-ld:Subscription:vehicles",
            "type": "Subscription",
            "entities": [{"type": VEHICLE}],
            "notification": {"endpoint": {"uri": "http://receiver.example"}},
            "createdAt": "2026-12-07T10:00:01.000Z",
            "modifiedAt": "2026-12-07T10:00:01.000Z",
        },
        NODE,
    )
    notifier.subscription_changed("", subscription)
    await asyncio.wait_for(asyncio.gather(*notifier._tasks), 5)
    assert sent == [[earlier["id"]]]
