"""Notifications of context source registration subscriptions (clause 5.11, payload of 5.3.2).

A csource subscription is told about the registrations it selects (entities, watchedAttributes,
q, csf, geoQ, temporalQ, through :class:`kizuna.ngsild.csource_matching.RegistrationFilter`):

- on its creation, and on every update of it, with every registration it matches now
  (``newlyMatching``; nothing is sent when none matches);
- whenever a registration is created, updated or deleted: ``newlyMatching`` when the registration
  starts to match, ``updated`` when it matched before and still does, ``noLongerMatching`` when it
  matched before and no longer does (a deleted registration no longer matches);
- with ``timeInterval``, every interval with every registration it matches (periodic).

Each notification is rendered here and queued in the notification outbox; the dispatcher
delivers it like an entity notification (in order per subscription, retried with backoff,
throttled, ``timesSent`` and the rest of the delivery state recorded), so a receiver that is down
gets it once it is back. A registration change is matched inside the transaction that writes
it, and its notifications are committed with it: the store never holds a registration whose
notifications were lost, nor notifications of a change that was rolled back. A new or updated
subscription's initial notification is queued in the transaction that writes the subscription,
likewise. Those transactions queue in commit order; periodic notifications are matched one at a
time, in the order of their rounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import orjson

from kizuna.access.ownership import owner_of, sees
from kizuna.jsonld.contexts import ContextRegistry
from kizuna.ngsild.csource_matching import RegistrationFilter, time_filter
from kizuna.ngsild.csources import REGISTRATION_KIND, SUBSCRIPTION_KIND, Registration, render_registration
from kizuna.ngsild.subscription_members import status_of
from kizuna.store import DEFAULT_TENANT, Store, WriteTransaction

log = logging.getLogger("kizuna.notify")
NOTIFICATION_TYPE = "ContextSourceNotification"
CSOURCE = "csource"  # the payload member of an outbox row that holds a csource notification


class CsourceNotifier:
    def __init__(self, store: Store, contexts: ContextRegistry, wake: Callable[[], None]) -> None:
        """``wake`` is called after notifications were committed to the outbox (the dispatcher's)."""
        self.store = store
        self.contexts = contexts
        self.wake = wake
        self._tasks: set[asyncio.Task[None]] = set()
        # Tasks take it in creation order (asyncio.Lock wakes its waiters first come, first
        # served), so periodic notifications are queued in the order of their rounds.
        self._order = asyncio.Lock()
        self._periodic_last: dict[tuple[str, str], float] = {}
        self._loop: asyncio.Task[None] | None = None

    # -- hooks of the services ----------------------------------------------------------------------

    async def registration_changed(
        self, tx: WriteTransaction, tenant: str, before: Registration | None, after: Registration | None
    ) -> None:
        """Queued in the transaction that writes the change (see
        :meth:`kizuna.ngsild.csources.RegistrationService._writing`), with the subscriptions as
        that transaction sees them: a failure here rolls the registration back too."""
        rows = []
        for sub in await tx.documents(SUBSCRIPTION_KIND):
            if status_of(sub) != "active" or "timeInterval" in sub:
                continue
            was, now = await self._matches(tenant, sub, before), await self._matches(tenant, sub, after)
            if not was and not now:
                continue
            reason = "updated" if was and now else "newlyMatching" if now else "noLongerMatching"
            reg = after if now else before
            assert reg is not None
            rows.append(await self._notification(sub, [reg], reason))
        await tx.add_outbox(rows)

    def queued(self) -> None:
        self.wake()

    async def subscription_written(self, tx: WriteTransaction, tenant: str, sub: dict[str, Any]) -> None:
        """Every registration ``sub`` selects, as the transaction that writes it reads them, queued
        in that transaction (see :meth:`kizuna.ngsild.subscriptions.CsourceSubscriptions._write`):
        a failure here leaves the subscription unwritten too."""
        if status_of(sub) != "active":
            return
        matching = [r for r in await tx.documents(REGISTRATION_KIND) if await self._matches(tenant, sub, r)]
        if matching:
            await tx.add_outbox([await self._notification(sub, matching, "newlyMatching")])

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(self._in_order(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _in_order(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            async with self._order:
                await work
        finally:
            work.close()  # a no-op once it ran; cancelled while waiting its turn, it never started

    # -- matching -------------------------------------------------------------------------------------

    async def _filter(self, sub: dict[str, Any]) -> tuple[RegistrationFilter, Any]:
        q_terms = await self.contexts.term_map(sub.get("_qContext"))
        selection = RegistrationFilter.from_subscription(sub, q_terms)
        temporal = sub.get("temporalQ")
        during = None
        if isinstance(temporal, dict) and "timerel" in temporal:
            during = time_filter(
                temporal.get("timerel"),
                temporal.get("timeAt"),
                temporal.get("endTimeAt"),
                temporal.get("timeproperty"),
            )
        return selection, during

    async def _matches(self, tenant: str, sub: dict[str, Any], reg: Registration | None) -> bool:
        """Whether ``sub`` selects ``reg``, of the registrations its owner may see now (the same
        rule as for reading registrations: their owners' and, for admins, all)."""
        if reg is None or not sees(owner_of(sub), tenant, reg):
            return False
        selection, during = await self._filter(sub)
        return selection.matches(reg) and (during is None or during.matches(reg))

    async def _send_matching(self, tenant: str, sub: dict[str, Any], reason: str) -> None:
        """Notify ``sub`` of the registrations it selects (a periodic round)."""
        try:
            if status_of(sub) != "active":
                return
            regs, _ = await self.store.list_documents(REGISTRATION_KIND, tenant)
            matching = [r for r in regs if await self._matches(tenant, sub, r)]
            if matching:
                await self._deliver(tenant, sub, matching, reason)
        except Exception:
            log.exception("csource notification of %s failed", sub.get("id"))

    async def _deliver(self, tenant: str, sub: dict[str, Any], regs: list[Registration], reason: str) -> None:
        row = await self._notification(sub, regs, reason)
        async with self.store.write(tenant) as tx:
            await tx.add_outbox([row])
        self.wake()

    async def _notification(
        self, sub: dict[str, Any], regs: list[Registration], reason: str
    ) -> tuple[str, str, str, bytes]:
        """The outbox row of one notification (clause 5.3.2), rendered now: the dispatcher sends
        its ``data`` and ``members`` as they are (see :data:`CSOURCE`). Each registration
        carries only its RegistrationInfo elements that the subscription selects."""
        context = sub.get("jsonldContext", sub.get("@context"))
        terms = await self.contexts.term_map(context)
        selection, _ = await self._filter(sub)
        sys_attrs = bool(sub.get("notification", {}).get("sysAttrs"))
        data = [
            _as_notified(render_registration(selection.relevant(r), terms, sys_attrs=sys_attrs)) for r in regs
        ]
        members = {
            "type": NOTIFICATION_TYPE,
            "triggerReason": reason,
            "id": f"urn:ngsi-ld:Notification:{uuid.uuid4()}",
        }
        payload = orjson.dumps({CSOURCE: {"data": data, "members": members}})
        return sub["id"], members["id"], reason, payload

    # -- periodic -------------------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.create_task(self._periodic(), name="kizuna-csource-periodic")

    async def stop(self) -> None:
        tasks = [*self._tasks, *([self._loop] if self._loop is not None else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _periodic(self) -> None:
        while True:
            try:
                now = time.time()
                for tenant in [DEFAULT_TENANT, *(await self.store.tenants())]:
                    subs, _ = await self.store.list_documents(SUBSCRIPTION_KIND, tenant)
                    for sub in subs:
                        interval = sub.get("timeInterval")
                        key = (tenant, sub["id"])
                        if not interval or now - self._periodic_last.get(key, 0.0) < interval:
                            continue
                        self._periodic_last[key] = now
                        self._spawn(self._send_matching(tenant, sub, "newlyMatching"))
            except Exception:
                log.exception("periodic csource notifications failed")
            await asyncio.sleep(1.0)


def _as_notified(reg: dict[str, Any]) -> dict[str, Any]:
    """Entity types of a notified registration as arrays, as the ETSI suite reads them (047_03)."""
    info = reg.get("information")
    if isinstance(info, list):
        reg["information"] = [
            {
                **item,
                "entities": [
                    {**e, "type": e["type"] if isinstance(e.get("type"), list) else [e.get("type")]}
                    for e in item.get("entities", [])
                ],
            }
            if isinstance(item, dict) and "entities" in item
            else item
            for item in info
        ]
    return reg
