"""The dispatcher: delivers the notification outbox, at least once, in order per subscription.

Each write transaction queues its notifications in the store's outbox (see
:mod:`kizuna.ngsild.matching`); nothing is sent from the request path. The dispatcher, started
with the application, takes a lease on each subscription with pending rows and runs one task per
subscription: it reads the oldest rows, builds the notification (clause 5.3.1), sends it with a
timeout, and deletes the rows only once the subscriber took them. A failure is retried after an
exponential backoff with a cap; rows stay in the store meanwhile, so a restart (even ``kill -9``)
resumes where delivery stopped. A slow or dead subscriber holds only its own task.

Context source notifications (:mod:`kizuna.notify.csource`) share the outbox: a row holds one
such notification, rendered when it was queued, and the same worker delivers it.

Periodic subscriptions (``timeInterval``) are not change-driven: a separate loop sends them the
current state of the matching entities every interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from kizuna.access.permissions import Action
from kizuna.access.policy import AccessPolicy
from kizuna.config import Settings
from kizuna.errors import DeliveryError
from kizuna.jsonld.contexts import CORE_CONTEXT_URL, HOSTED_PATH, ContextRegistry
from kizuna.jsonld.terms import TermMap
from kizuna.members import VALUE_MEMBER
from kizuna.metrics import NOTIFICATIONS_RETRIED
from kizuna.ngsild.csources import SUBSCRIPTION_KIND
from kizuna.ngsild.matching import compile_subscription
from kizuna.ngsild.render import View, linked_targets, render_entity, render_instance
from kizuna.ngsild.subscription_members import CORE_MEMBERS, status_of
from kizuna.notify.csource import CSOURCE, CsourceNotifier
from kizuna.notify.retry import Backoff
from kizuna.notify.senders import Message, Senders, channel_of
from kizuna.outbound import PASS_THROUGH, OutboundGate, allowed_header
from kizuna.processes import alive
from kizuna.store import DEFAULT_TENANT, EntityQuery, OutboxRow, Store
from kizuna.times import epoch, iso_millis, now_iso

log = logging.getLogger("kizuna.notify")
SETTLE_TIMEOUT = 1.0  # seconds a subscription read waits for a delivery under way (Dispatcher.settle)
LINK_REL = 'rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
NULL = "urn:ngsi-ld:null"
PREVIOUS_MEMBER = {
    "value": "previousValue",
    "object": "previousObject",
    "languageMap": "previousLanguageMap",
    "vocab": "previousVocab",
    "json": "previousJson",
    "valueList": "previousValueList",
    "objectList": "previousObjectList",
}


@dataclass(slots=True)
class DispatcherConfig:
    """Tuning, from the ``notify_*`` settings (``KIZUNA_NOTIFY_*``, see docs/settings.md)."""

    backoff: Backoff = field(default_factory=Backoff)
    timeout: float = 10.0  # seconds per attempt unless the endpoint sets ``timeout`` (ms)
    batch: int = 50  # outbox rows (of distinct entities) one notification may carry
    lease: float = 30.0  # seconds a process owns a subscription's delivery without renewing
    poll: float = 1.0  # seconds between outbox scans when nothing wakes the dispatcher
    delivers: bool = True  # False: another process delivers (notify_delivery "process")

    @classmethod
    def from_settings(cls, settings: Settings) -> DispatcherConfig:
        return cls(
            backoff=Backoff(base=settings.notify_backoff_base, cap=settings.notify_backoff_cap),
            timeout=settings.notify_timeout,
            batch=settings.notify_batch,
            lease=settings.notify_lease,
            poll=settings.notify_poll,
            delivers=settings.notify_delivery == "inline",
        )


# -- the notification (clause 5.3.1) --------------------------------------------------------------


def view_of(sub: dict[str, Any]) -> View:
    params = sub.get("notification", {})
    form = params.get("format", "normalized")
    if form == "simplified":
        form = "keyValues"
    attributes = params.get("attributes")
    attrs = None
    if attributes:
        attrs = frozenset(a for a in attributes if a not in CORE_MEMBERS) or None
    pick = frozenset(params["pick"]) | {"id"} if "pick" in params else None
    return View(
        form=form,
        sys_attrs=bool(params.get("sysAttrs", False)),
        lang=sub.get("lang"),
        attrs=attrs,
        pick=pick,
        omit=frozenset(params.get("omit", ())) - {"id"},
        dataset_ids=frozenset(sub["datasetId"]) if sub.get("datasetId") else None,
        join=params.get("join") if params.get("join") in ("flat", "inline") else None,
        join_level=int(params.get("joinLevel", 1)),
    )


def notification_context(sub: dict[str, Any]) -> Any:
    """The @context notifications are compacted with: ``jsonldContext`` if set, else the one the
    subscription was created with, else the core context."""
    if "jsonldContext" in sub:
        return sub["jsonldContext"]
    return sub.get("@context")


def render_row(row: OutboxRow, terms: TermMap, view: View, watched: Any = None) -> dict[str, Any]:
    """One entity of a notification. Deleted attributes (and instances) appear with the NGSI-LD
    Null of their kind, with ``deletedAt`` among the system attributes; a deleted entity appears
    as ``{id, type, deletedAt}`` plus, for attributeDeleted, its deleted watched attributes and,
    with showChanges, every attribute it had (clause 5.3.1, ETSI 046_21/22/34/37)."""
    payload = row.payload
    entity = payload["entity"]
    deleted: dict[str, list[Any]] = payload.get("deleted") or {}
    previous = payload.get("previous") if view.form != "keyValues" else None
    if row.trigger == "entityDeleted" or payload.get("gone"):
        at = iso_millis(row.created_at)
        shell: dict[str, Any] = {"id": entity["id"], "type": entity.get("type", [])}
        for member in ("createdAt", "modifiedAt"):
            if member in entity:
                shell[member] = entity[member]
        if row.trigger == "attributeDeleted":
            chosen = {k: v for k, v in deleted.items() if watched is None or k in watched}
        else:
            chosen = previous or {}
        for iri, instances in chosen.items():
            shell[iri] = [_null_instance(instances[0], at, keep_dataset=False, language_none=False)]
        out = render_entity(shell, terms, view)
        if view.form == "keyValues":
            _key_values_extras(out, shell, terms, view)
        out["deletedAt"] = at
        if previous:
            _add_previous(out, shell, previous, terms)
        return out
    if deleted:
        at = iso_millis(row.created_at)  # only here: formatting it took 5% of delivering updates
        entity = dict(entity)
        for iri, instances in deleted.items():
            if iri in entity:  # some instances (datasetIds) deleted, others kept
                entity[iri] = entity[iri] + [
                    _null_instance(i, at, keep_dataset=True, language_none=True) for i in instances
                ]
            else:
                entity[iri] = [_null_instance(instances[0], at, keep_dataset=False, language_none=True)]
    out = render_entity(entity, terms, view)
    if previous:
        _add_previous(out, entity, previous, terms)
    if view.form == "keyValues":
        _key_values_extras(out, entity, terms, view)
    return out


def _key_values_extras(out: dict[str, Any], entity: dict[str, Any], terms: TermMap, view: View) -> None:
    """keyValues: the entity's createdAt/modifiedAt with sysAttrs (ETSI 046_17), and an attribute
    with several instances as ``{"dataset": {datasetId or "@none": value}}`` (ETSI 046_22_07)."""
    if view.sys_attrs:
        for member in ("createdAt", "modifiedAt"):
            if member in entity:
                out[member] = entity[member]
    for iri, instances in entity.items():
        if not isinstance(instances, list) or len(instances) < 2 or not isinstance(instances[0], dict):
            continue
        key = terms.compact(iri)
        rendered = out.get(key)
        if isinstance(rendered, list) and len(rendered) == len(instances):
            out[key] = {
                "dataset": {i.get("datasetId", "@none"): r for i, r in zip(instances, rendered, strict=True)}
            }


def _null_instance(
    old: dict[str, Any], at: str, *, keep_dataset: bool, language_none: bool
) -> dict[str, Any]:
    kind = old.get("type", "Property")
    member = VALUE_MEMBER.get(kind, "value")
    value: Any = {"@none": NULL} if kind == "LanguageProperty" and language_none else NULL
    instance: dict[str, Any] = {"type": kind, member: value}
    if keep_dataset and "datasetId" in old:
        instance["datasetId"] = old["datasetId"]
    for system in ("createdAt", "modifiedAt"):
        if system in old:
            instance[system] = old[system]
    instance["deletedAt"] = at
    return instance


def _add_previous(
    out: dict[str, Any], entity: dict[str, Any], previous: dict[str, list[Any]], terms: TermMap
) -> None:
    """showChanges: each changed attribute instance carries its previous value."""
    for iri, old_instances in previous.items():
        key = terms.compact(iri)
        if key not in out:
            continue
        rendered = out[key] if isinstance(out[key], list) else [out[key]]
        current = entity.get(iri, [])
        for index, item in enumerate(rendered):
            if index >= len(current):
                break
            dataset_id = current[index].get("datasetId")
            old = next((o for o in old_instances if o.get("datasetId") == dataset_id), None)
            if old is None:
                continue
            member = VALUE_MEMBER.get(old["type"], "value")
            old_rendered = render_instance(old, terms, View())
            if not isinstance(item, dict):
                item = rendered[index] = {"value": item}
            item[PREVIOUS_MEMBER.get(member, "previousValue")] = old_rendered.get(member)
        out[key] = rendered[0] if len(rendered) == 1 else rendered


def build_message(
    tenant: str, sub: dict[str, Any], data: list[dict[str, Any]], base_url: str, default_timeout: float
) -> Message:
    params = sub["notification"]
    endpoint = params["endpoint"]
    accept = endpoint.get("accept", "application/json")
    context = notification_context(sub)
    body: dict[str, Any] = {
        "id": f"urn:ngsi-ld:Notification:{uuid.uuid4()}",
        "type": "Notification",
        "subscriptionId": sub["id"],
        "notifiedAt": now_iso(),
        "data": data,
    }
    headers = {"Content-Type": accept}
    if accept == "application/ld+json":
        body["@context"] = context if context is not None else CORE_CONTEXT_URL
        # Each entity of the data carries it too (clause 5.3.1, ETSI 046_14/19/20).
        single = body["@context"]
        if isinstance(single, list) and len(single) == 1:
            single = single[0]
        for item in data:
            if isinstance(item, dict):
                item["@context"] = single
    else:
        headers["Link"] = f"<{_context_url(sub, context, base_url)}>; {LINK_REL}"
    if tenant != DEFAULT_TENANT:
        headers["NGSILD-Tenant"] = tenant
    for item in endpoint.get("receiverInfo", ()):
        # Refused at creation (older subscriptions are filtered here); a notification answers
        # no request, so there is nothing to pass through.
        if item["value"] != PASS_THROUGH and allowed_header(item["key"], item["value"]):
            headers[item["key"]] = item["value"]
    timeout = endpoint["timeout"] / 1000 if "timeout" in endpoint else default_timeout
    notifier = {i["key"]: i["value"] for i in endpoint.get("notifierInfo", ())}
    return Message(endpoint["uri"], body, headers, timeout, notifier)


def _context_url(sub: dict[str, Any], context: Any, base_url: str) -> str:
    if isinstance(context, str):
        return context
    if isinstance(context, list) and len(context) == 1 and isinstance(context[0], str):
        return context[0]
    implicit = sub.get("_implicitContextId")
    if context is not None and implicit is not None:
        return base_url.rstrip("/") + HOSTED_PATH + implicit
    return CORE_CONTEXT_URL


def _batch(rows: list[OutboxRow], limit: int) -> list[OutboxRow]:
    """The head rows one notification carries: in order, stopping before an entity repeats (so
    that each notification holds one state per entity)."""
    taken: list[OutboxRow] = []
    seen: set[str] = set()
    for row in rows[:limit]:
        if row.entity_id in seen:
            break
        seen.add(row.entity_id)
        taken.append(row)
    return taken


# -- delivery ---------------------------------------------------------------------------------------


class DeliveryGate(Protocol):
    """Lets another part of the node hold back and count change notifications of its own
    subscriptions (the dataspace's push transfers count each one against an agreement)."""

    async def admit(self, tenant: str, sub: dict[str, Any]) -> bool:
        """Once per notification, before its first attempt: False holds it back (the worker
        asks again after ``poll``; deleting the subscription drops it)."""
        ...

    async def delivered(self, tenant: str, sub: dict[str, Any]) -> None:
        """After the subscriber took an admitted notification."""
        ...


class Dispatcher:
    def __init__(
        self,
        store: Store,
        contexts: ContextRegistry,
        *,
        base_url: str = "http://127.0.0.1:1026",
        config: DispatcherConfig | None = None,
        outbound: OutboundGate | None = None,
        policy: AccessPolicy | None = None,
    ) -> None:
        self.store = store
        self.policy = policy  # periodic notifications carry only what the owner may read
        self.contexts = contexts
        self.base_url = base_url
        self.config = config or DispatcherConfig()
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.senders = Senders(outbound or OutboundGate())
        self._wake = asyncio.Event()
        self._workers: dict[tuple[str, str], _Worker] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._periodic_last: dict[tuple[str, str], float] = {}
        self._periodic_busy: set[tuple[str, str]] = set()
        self._stopping = False
        # Notifications being sent now, per subscription, until their delivery state is recorded.
        self._in_flight: dict[tuple[str, str], set[asyncio.Event]] = {}
        self.csources = CsourceNotifier(store, contexts, self.wake)
        self.gate: DeliveryGate | None = None  # set by the dataspace connector

    async def subscription(self, tenant: str, sub_id: str) -> dict[str, Any] | None:
        """The subscription an outbox belongs to: an entity subscription in the store's
        subscription tables, or a csource subscription among its documents."""
        sub = await self.store.get_subscription(tenant, sub_id)
        return sub if sub is not None else await self.store.get_document(SUBSCRIPTION_KIND, tenant, sub_id)

    async def _send_once(self, tenant: str, sub: dict[str, Any], message: Message) -> None:
        """A periodic notification, sent outside the outbox: one attempt, a failure logged, the
        delivery state recorded (and waited for by :meth:`settle`)."""
        ok = True
        with self._delivering(tenant, sub["id"]):
            try:
                await self.senders.send(message)
            except DeliveryError as exc:
                ok = False
                log.warning("periodic notification of %s failed: %s", sub["id"], exc)
            await self.record(tenant, sub["id"], ok)

    def wake(self) -> None:
        """Called after a commit that queued notifications; cheap and safe from any coroutine."""
        self._wake.set()

    @contextlib.contextmanager
    def _delivering(self, tenant: str, sub_id: str) -> Iterator[None]:
        """Marks one notification of the subscription in flight, from its sending until its
        delivery state is recorded (see :meth:`settle`)."""
        key = (tenant, sub_id)
        done = asyncio.Event()
        self._in_flight.setdefault(key, set()).add(done)
        try:
            yield
        finally:
            done.set()
            pending = self._in_flight.get(key)
            if pending is not None:
                pending.discard(done)
                if not pending:
                    del self._in_flight[key]

    async def settle(self, tenant: str, sub_id: str, timeout: float = SETTLE_TIMEOUT) -> None:
        """Waits, at most ``timeout`` seconds, for the notifications of the subscription that
        this process is sending now to be answered and their delivery state recorded.

        The state is written after the subscriber answers, so a subscriber that reads its
        subscription as soon as the notification arrives (ETSI 046_11, 046_12) would otherwise
        race that write and may see the state from before. Notifications sent by another
        process are not waited for."""
        pending = [event.wait() for event in self._in_flight.get((tenant, sub_id), ())]
        if pending:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await asyncio.gather(*pending)

    async def start(self) -> None:
        """Without ``delivers`` only context source notifications are matched and queued here."""
        self.csources.start()
        if not self.config.delivers:
            return
        await self._release_dead_owners()
        self._tasks = [
            asyncio.create_task(self._scan_loop(), name="kizuna-notify-scan"),
            asyncio.create_task(self._periodic_loop(), name="kizuna-notify-periodic"),
        ]
        self._wake.set()

    async def stop(self) -> None:
        self._stopping = True
        await self.csources.stop()
        tasks = self._tasks + [w.task for w in self._workers.values() if w.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self.store.release_leases(self.owner)
        await self.senders.close()

    async def _release_dead_owners(self) -> None:
        """Leases of a process on this host that no longer runs (killed) are freed at once."""
        owners = await self.store.lease_owners()
        host = socket.gethostname()
        for owner in owners:
            name, _, rest = owner.partition(":")
            pid = rest.partition(":")[0]
            if name == host and pid.isdigit() and not alive(int(pid)):
                await self.store.release_leases(owner)

    async def _scan_loop(self) -> None:
        renewed = 0.0
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.poll):
                    await self._wake.wait()
            self._wake.clear()
            try:
                now = time.time()
                if now - renewed > self.config.lease / 3:
                    await self.store.renew_leases(self.owner, now + self.config.lease)
                    renewed = now
                keys = await self.store.outbox_subscriptions()
                idle = [k for k in keys if k not in self._workers or self._workers[k].finished]
                for key in await self.store.lease_subscriptions(
                    self.owner, idle, now, now + self.config.lease
                ):
                    worker = _Worker(self, *key)
                    self._workers[key] = worker
                    worker.start()
                for key in keys:
                    worker = self._workers.get(key)
                    if worker is not None:
                        worker.wake.set()
            except Exception:
                log.exception("notification scan failed")
            await asyncio.sleep(0.002)  # coalesce bursts of wake-ups

    # -- periodic subscriptions ---------------------------------------------------------------------

    async def _periodic_loop(self) -> None:
        while not self._stopping:
            try:
                await self._periodic_round()
            except Exception:
                log.exception("periodic notifications failed")
            await asyncio.sleep(min(1.0, self.config.poll))

    async def _periodic_round(self) -> None:
        now = time.time()
        for tenant in [DEFAULT_TENANT, *(await self.store.tenants())]:
            subs, _ = await self.store.list_subscriptions(tenant, None, 0)
            for sub in subs:
                key = (tenant, sub["id"])
                if "timeInterval" not in sub or key in self._periodic_busy or status_of(sub) != "active":
                    continue
                last = self._periodic_last.get(key)
                if last is None:
                    status = await self.store.notification_status(tenant, sub["id"]) or {}
                    last = _epoch(status.get("lastNotification")) or 0.0
                if now - last < sub["timeInterval"]:
                    continue
                if not await self.store.lease_subscriptions(self.owner, [key], now, now + self.config.lease):
                    continue
                self._periodic_last[key] = now
                self._periodic_busy.add(key)
                task = asyncio.create_task(self._periodic_send(tenant, sub))
                task.add_done_callback(lambda _t, k=key: self._periodic_busy.discard(k))

    async def _periodic_send(self, tenant: str, sub: dict[str, Any]) -> None:
        compiled = await compile_subscription(
            {k: v for k, v in sub.items() if k != "timeInterval"}, self.contexts
        )
        assert compiled is not None
        access = None
        if self.policy is not None:
            access = (await self.policy.guard(tenant, compiled.owner)).filter(Action.READ)
        result = await self.store.query_entities(tenant, compiled.store_query(access))
        if not result.entities:
            return
        terms = await self.contexts.term_map(notification_context(sub))
        view = view_of(sub)
        data = [render_entity(e, terms, view) for e in result.entities]
        message = build_message(tenant, sub, data, self.base_url, self.config.timeout)
        await self._send_once(tenant, sub, message)

    # -- status -------------------------------------------------------------------------------------

    async def record(self, tenant: str, sub_id: str, ok: bool) -> None:
        await self.store.save_notification_status(tenant, sub_id, await self.next_status(tenant, sub_id, ok))

    async def next_status(self, tenant: str, sub_id: str, ok: bool) -> dict[str, Any]:
        """Clause 5.2.12/5.2.14 delivery state after one more attempt: timesSent, timesFailed,
        lastNotification, lastSuccess, lastFailure and notification status ok/failed."""
        status = await self.store.notification_status(tenant, sub_id) or {}
        now = now_iso()
        status["timesSent"] = status.get("timesSent", 0) + 1
        status["lastNotification"] = now
        if ok:
            status["lastSuccess"] = now
            status["status"] = "ok"
            status["consecutiveFailures"] = 0
        else:
            status["timesFailed"] = status.get("timesFailed", 0) + 1
            status["lastFailure"] = now
            status["status"] = "failed"
            status["consecutiveFailures"] = status.get("consecutiveFailures", 0) + 1
        return status


class _Worker:
    """Delivers one subscription's outbox rows, one notification at a time, in commit order."""

    def __init__(self, dispatcher: Dispatcher, tenant: str, sub_id: str) -> None:
        self.d = dispatcher
        self.tenant = tenant
        self.sub_id = sub_id
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.finished = False
        self._last_sent = 0.0
        self._prepared: tuple[str, TermMap, View] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"kizuna-notify {self.sub_id}")
        self.task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.finished = True
        if not task.cancelled() and task.exception() is not None:
            log.error("notification worker for %s died", self.sub_id, exc_info=task.exception())
        self.d.wake()  # rows left over get a new worker

    async def _prepare(self, sub: dict[str, Any]) -> tuple[TermMap, View]:
        stamp = sub.get("modifiedAt", "")
        if self._prepared is None or self._prepared[0] != stamp:
            terms = await self.d.contexts.term_map(notification_context(sub))
            self._prepared = (stamp, terms, view_of(sub))
        return self._prepared[1], self._prepared[2]

    async def _render(
        self, batch: list[OutboxRow], sub: dict[str, Any], terms: TermMap, view: View
    ) -> list[dict[str, Any]]:
        watched = sub.get("watchedAttributes")
        if view.join is None:
            return [render_row(row, terms, view, watched) for row in batch]
        # Linked entities (clause 4.5.23), as they are now: inline in the data or after it (flat).
        roots = [row.payload["entity"] for row in batch if row.trigger != "entityDeleted"]
        linked: dict[str, Any] = {e["id"]: e for e in roots}
        flat: list[tuple[dict[str, Any], View]] = []
        frontier: list[tuple[dict[str, Any], View]] = [(e, view) for e in roots]
        for _ in range(max(1, view.join_level)):
            targets: dict[str, View] = {}
            for entity, entity_view in frontier:
                for target, target_view in linked_targets(entity, entity_view):
                    if target not in linked:
                        targets.setdefault(target, target_view)
            if not targets:
                break
            result = await self.d.store.query_entities(self.tenant, EntityQuery(ids=list(targets)))
            frontier = [(e, targets[e["id"]]) for e in result.entities if e["id"] in targets]
            for entity, _view in frontier:
                linked[entity["id"]] = entity
            flat.extend(frontier)
        data = []
        for row in batch:
            if view.join == "inline" and row.trigger != "entityDeleted" and not row.payload.get("deleted"):
                data.append(render_entity(row.payload["entity"], terms, view, linked, view.join_level))
            else:
                data.append(render_row(row, terms, view, watched))
        if view.join == "flat":
            data.extend(render_entity(e, terms, v) for e, v in flat)
        return data

    async def _run(self) -> None:
        store, config = self.d.store, self.d.config
        failures = 0
        admitted = False
        idle_since = time.monotonic()
        while not self.d._stopping:
            rows = await store.outbox_head(self.tenant, self.sub_id, config.batch)
            if not rows:
                if time.monotonic() - idle_since > 5 * config.lease:
                    return  # idle: the scan starts a new worker when rows come
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(config.poll):
                        await self.wake.wait()
                continue
            idle_since = time.monotonic()
            sub = await self.d.subscription(self.tenant, self.sub_id)
            if sub is None:
                await store.drop_outbox(self.tenant, self.sub_id)
                return
            throttling = sub.get("throttling")
            if throttling:
                wait = self._last_sent + throttling - time.time()
                if wait > 0:
                    # Rows queued meanwhile go out together; the subscription may be gone by then.
                    await asyncio.sleep(wait)
                    continue
            gate = self.d.gate
            if gate is not None and not admitted:
                if not await gate.admit(self.tenant, sub):
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(config.poll):
                            await self.wake.wait()
                    self.wake.clear()
                    continue
                admitted = True  # retries of this notification are not admitted (counted) again
            csource = rows[0].payload.get(CSOURCE)
            if csource is not None:  # rendered when queued, one notification per row
                batch = rows[:1]
                message = build_message(self.tenant, sub, csource["data"], self.d.base_url, config.timeout)
                message.body.update(csource["members"])
            else:
                batch = _batch(rows, config.batch)
                terms, view = await self._prepare(sub)
                data = await self._render(batch, sub, terms, view)
                message = build_message(self.tenant, sub, data, self.d.base_url, config.timeout)
            self._last_sent = time.time()
            with self.d._delivering(self.tenant, self.sub_id):
                failure: DeliveryError | None = None
                try:
                    await self.d.senders.send(message)
                except DeliveryError as exc:
                    failure = exc
                if failure is None:  # the cursor and the delivery state in one commit
                    status = await self.d.next_status(self.tenant, self.sub_id, True)
                    await store.ack_outbox(self.tenant, self.sub_id, batch[-1].seq, status)
                else:
                    await self.d.record(self.tenant, self.sub_id, False)
            if failure is not None:
                failures += 1
                NOTIFICATIONS_RETRIED[channel_of(message.uri)].inc()
                cooldown = sub["notification"]["endpoint"].get("cooldown")
                delay = config.backoff.delay(failures, cooldown / 1000 if cooldown else None)
                log.warning(
                    "notification to %s for %s failed (%s); retry %d in %.2fs",
                    message.uri,
                    self.sub_id,
                    failure,
                    failures,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            failures = 0
            if gate is not None and admitted:
                admitted = False
                await gate.delivered(self.tenant, sub)


def _epoch(text: str | None) -> float | None:
    if not text:
        return None
    return epoch(text)
