"""Subscription management (create, retrieve, query, update, delete), no HTTP, for both kinds:
entity subscriptions (clause 5.8) and context source registration subscriptions (clause 5.11).

Both are the data type of clause 5.2.12 (:mod:`kizuna.ngsild.subscription_members`) under the
same rules of ownership, so one :class:`SubscriptionService` serves them; what differs is a
:class:`SubscriptionKind` (:class:`EntitySubscriptions`, :class:`CsourceSubscriptions`): where
they are stored, the rules a kind adds, and who is told of a change. Delivery is
:mod:`kizuna.notify` (entities) and :mod:`kizuna.notify.csource` (registrations).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from kizuna import query as ql
from kizuna.access import ownership
from kizuna.access.subject import Subject
from kizuna.errors import AlreadyExists, BadRequestData, HiddenResource, ResourceNotFound
from kizuna.jsonld.contexts import ContextRegistry, ContextValue
from kizuna.jsonld.terms import TermMap
from kizuna.ngsild.csource_matching import geo_member
from kizuna.ngsild.csources import GEO_MEMBERS, SUBSCRIPTION_KIND, CsourceNotifier
from kizuna.ngsild.subscription_members import (
    CHECKS,
    DEFAULT_TRIGGERS,
    READ_ONLY_NOTIFICATION,
    Subscription,
    check_subscription_id,
    check_whole,
    invalid,
    parse_members,
    vet_endpoint,
)
from kizuna.ngsild.tenants import require_tenant
from kizuna.outbound import OutboundGate
from kizuna.store import Store
from kizuna.times import now_iso

ImplicitContextHook = Callable[[ContextValue], Awaitable[str]]


def needs_implicit_context(context: ContextValue) -> bool:
    """Clause 5.13 ImplicitlyCreated: an array of several entries, or an inline object."""
    if isinstance(context, dict):
        return True
    if isinstance(context, list):
        return len(context) > 1 or any(isinstance(item, dict) for item in context)
    return False


# -- the kinds -------------------------------------------------------------------------------------


class SubscriptionKind(Protocol):
    """What one kind of subscription brings to :class:`SubscriptionService`."""

    # The notificationTrigger of a subscription that names none; None: the kind has no default.
    default_triggers: tuple[str, ...] | None
    # The members written in the request's terms, whose @context is kept with them (_qContext).
    q_members: tuple[str, ...]
    # Whether an update refuses a fragment's wrong ``type`` before it looks the subscription up.
    checks_fragment_type: bool
    # Whether a query shows each subscription's delivery state, as a retrieval does.
    lists_delivery: bool

    async def get(self, tenant: str, sub_id: str) -> Subscription | None: ...

    async def insert(self, tenant: str, sub: Subscription) -> bool: ...

    async def replace(self, tenant: str, sub: Subscription) -> bool: ...

    async def delete(self, tenant: str, sub_id: str) -> bool: ...

    async def page(self, tenant: str, limit: int | None, offset: int) -> tuple[list[Subscription], int]:
        """A page of the tenant's subscriptions of this kind (creation order) and their total."""

    def check(self, members: Mapping[str, Any], terms: TermMap) -> None:
        """Raise BadRequestData for what the kind refuses beyond clause 5.2.12 (``members``
        as :func:`parse_members` gave them, ``None`` for a removed one)."""

    async def settle(self, tenant: str, sub_id: str) -> None:
        """Return once the delivery state of notifications being sent now is recorded."""

    def changed(self, tenant: str, sub: Subscription | None) -> None:
        """Told after ``sub`` was stored (``None``: after a subscription was deleted)."""


class EntitySubscriptions:
    """Entity subscriptions (clause 5.8), in the store's subscription tables beside the outbox
    that the dispatcher fills and delivers (:mod:`kizuna.notify.dispatcher`)."""

    default_triggers: tuple[str, ...] | None = tuple(DEFAULT_TRIGGERS)
    q_members = ("q",)
    checks_fragment_type = False
    lists_delivery = True

    def __init__(
        self,
        store: Store,
        *,
        on_change: Callable[[str], None] | None = None,
        settle: Callable[[str, str], Awaitable[None]] | None = None,
    ) -> None:
        """``on_change(tenant)`` drops what is kept of the tenant's subscriptions in memory
        (:class:`kizuna.ngsild.matching.SubscriptionCache`); ``settle(tenant, id)`` is
        :meth:`kizuna.notify.dispatcher.Dispatcher.settle`."""
        self.store = store
        self.on_change = on_change
        self._settle = settle

    async def get(self, tenant: str, sub_id: str) -> Subscription | None:
        return await self.store.get_subscription(tenant, sub_id)

    async def insert(self, tenant: str, sub: Subscription) -> bool:
        return await self.store.insert_subscription(tenant, sub)

    async def replace(self, tenant: str, sub: Subscription) -> bool:
        return await self.store.replace_subscription(tenant, sub)

    async def delete(self, tenant: str, sub_id: str) -> bool:
        return await self.store.delete_subscription(tenant, sub_id)

    async def page(self, tenant: str, limit: int | None, offset: int) -> tuple[list[Subscription], int]:
        return await self.store.list_subscriptions(tenant, limit, offset)

    def check(self, members: Mapping[str, Any], terms: TermMap) -> None:
        """Entity subscriptions add nothing to clause 5.2.12."""

    async def settle(self, tenant: str, sub_id: str) -> None:
        """A notification under way is counted in the state a GET shows (ETSI 046_11/12)."""
        if self._settle is not None:
            await self._settle(tenant, sub_id)

    def changed(self, tenant: str, sub: Subscription | None) -> None:
        if self.on_change is not None:
            self.on_change(tenant)


class CsourceSubscriptions:
    """Context source registration subscriptions (clause 5.11), kept as store documents. Their
    entities/watchedAttributes/q/geoQ/csf select registrations instead of entities (through
    :class:`kizuna.ngsild.csource_matching.RegistrationFilter`); they have no default
    ``notificationTrigger`` (the triggers of clause 5.11.7 are fixed)."""

    default_triggers: tuple[str, ...] | None = None
    q_members = ("q", "csf")
    checks_fragment_type = True
    lists_delivery = False

    def __init__(
        self,
        store: Store,
        *,
        notifier: CsourceNotifier | None = None,
        settle: Callable[[str, str], Awaitable[None]] | None = None,
    ) -> None:
        """``notifier`` queues what a subscription matches when it is created or updated, in the
        transaction that writes it; ``settle`` is :meth:`kizuna.notify.dispatcher.Dispatcher.settle`,
        which delivers them."""
        self.store = store
        self.notifier = notifier
        self._settle = settle

    async def get(self, tenant: str, sub_id: str) -> Subscription | None:
        return await self.store.get_document(SUBSCRIPTION_KIND, tenant, sub_id)

    async def insert(self, tenant: str, sub: Subscription) -> bool:
        return await self._write(tenant, sub, new=True)

    async def replace(self, tenant: str, sub: Subscription) -> bool:
        return await self._write(tenant, sub, new=False)

    async def _write(self, tenant: str, sub: Subscription, *, new: bool) -> bool:
        """The subscription and its initial notification in one transaction: a failure between
        the two leaves neither, so a subscription the node answered 201 or 204 for has been told
        of every registration it matched then."""
        async with self.store.write(tenant) as tx:
            store = tx.insert_document if new else tx.replace_document
            written = await store(SUBSCRIPTION_KIND, sub)
            if written and self.notifier is not None:
                await self.notifier.subscription_written(tx, tenant, sub)
        if written and self.notifier is not None:
            self.notifier.queued()
        return written

    async def delete(self, tenant: str, sub_id: str) -> bool:
        return await self.store.delete_document(SUBSCRIPTION_KIND, tenant, sub_id)

    async def page(self, tenant: str, limit: int | None, offset: int) -> tuple[list[Subscription], int]:
        return await self.store.list_documents(SUBSCRIPTION_KIND, tenant, limit, offset)

    def check(self, members: Mapping[str, Any], terms: TermMap) -> None:
        """A geoQ is about one of a registration's geo members; csf filters registration
        properties, so it must parse as a q."""
        geo_q = members.get("geoQ")
        if geo_q is not None and geo_member(geo_q) not in (None, *GEO_MEMBERS):
            raise BadRequestData(
                f"geoQ.geoproperty of a csource subscription must be one of {', '.join(GEO_MEMBERS)}"
            )
        if members.get("csf") is not None:
            ql.parse_q(members["csf"]).resolve(terms.expand)

    async def settle(self, tenant: str, sub_id: str) -> None:
        if self._settle is not None:
            await self._settle(tenant, sub_id)

    def changed(self, tenant: str, sub: Subscription | None) -> None:
        """Nothing to tell: the notifier had a written subscription in its transaction
        (:meth:`_write`), and reads the subscriptions as it goes, so a deleted one is gone."""


# -- the service -----------------------------------------------------------------------------------


class SubscriptionService:
    """Subscriptions of one kind per tenant; knows nothing of HTTP."""

    def __init__(
        self,
        store: Store,
        contexts: ContextRegistry,
        kind: SubscriptionKind,
        *,
        gate: OutboundGate,
        implicit_context: ImplicitContextHook | None = None,
    ) -> None:
        """``gate`` is the node's one outbound gate: it judges the endpoints a subscription names."""
        self.store, self.contexts, self.gate = store, contexts, gate
        self.kind = kind
        self.implicit_context = implicit_context

    async def _with_status(self, tenant: str, sub: Subscription) -> Subscription:
        """The delivery state (kept apart by the dispatcher) merged into ``notification``."""
        status = await self.store.notification_status(tenant, sub["id"])
        if status:
            shown = {k: v for k, v in status.items() if k in READ_ONLY_NOTIFICATION}
            sub = {**sub, "notification": {**sub.get("notification", {}), **shown}}
        return sub

    async def _check(self, members: dict[str, Any], terms: TermMap, *, endpoint: bool) -> None:
        """The kind's rules, then what needs the network: the endpoint, the jsonldContext."""
        self.kind.check(members, terms)
        if endpoint:
            await vet_endpoint(self.gate, members)
        url = members.get("jsonldContext")
        if url is not None:
            await self.contexts.term_map(url)  # 503 LdContextNotAvailable if it cannot be had

    async def create(
        self,
        tenant: str,
        subject: Subject,
        body: Any,
        terms: TermMap,
        context: ContextValue,
        *,
        reads_as: Subject | None = None,
    ) -> str:
        """A new subscription, owned by ``subject``: it notifies what its owner may read (or
        ``reads_as``: see :func:`kizuna.access.ownership.owned`)."""
        ownership.require_creator(subject, tenant, "subscriptions")
        sub_id = CHECKS.new_resource_id(body, "Subscription", "subscription")
        members = {k: v for k, v in parse_members(body, terms).items() if v is not None}
        if self.kind.default_triggers is not None:
            members.setdefault("notificationTrigger", list(self.kind.default_triggers))
        check_whole(members)
        await self._check(members, terms, endpoint=True)
        now = now_iso()
        sub: Subscription = {"id": sub_id, "type": "Subscription", **members}
        if context is not None:
            sub["@context"] = context
        if any(name in sub for name in self.kind.q_members):
            sub["_qContext"] = context
        sub["createdAt"] = now
        sub["modifiedAt"] = now
        sub = ownership.owned(sub, subject, reads_as)
        if await self.kind.get(tenant, sub_id) is not None:
            raise AlreadyExists(f"Subscription {sub_id} already exists")
        if self.implicit_context is not None and needs_implicit_context(context):
            sub["_implicitContextId"] = await self.implicit_context(context)
        if not await self.kind.insert(tenant, sub):
            raise AlreadyExists(f"Subscription {sub_id} already exists")
        self.kind.changed(tenant, sub)
        return sub_id

    async def retrieve(self, tenant: str, subject: Subject, sub_id: str) -> Subscription:
        """Others' subscriptions do not exist for a subject (admins see every one)."""
        check_subscription_id(sub_id)
        await require_tenant(self.store, tenant, subject)
        sub = await self.kind.get(tenant, sub_id)
        if sub is None:
            raise ResourceNotFound(f"Subscription {sub_id} not found")
        if not ownership.sees(subject, tenant, sub):
            raise HiddenResource(f"Subscription {sub_id} not found")
        return sub

    async def retrieve_with_status(self, tenant: str, subject: Subject, sub_id: str) -> Subscription:
        """The subscription with its delivery state (timesSent, status, ...) under notification."""
        sub = await self.retrieve(tenant, subject, sub_id)
        await self.kind.settle(tenant, sub_id)
        return await self._with_status(tenant, sub)

    async def query(
        self, tenant: str, subject: Subject, *, limit: int | None, offset: int
    ) -> tuple[list[Subscription], int]:
        await require_tenant(self.store, tenant, subject)
        if subject.is_admin(tenant):
            subs, total = await self.kind.page(tenant, limit, offset)
        else:  # the subject's own, paged after choosing them (a tenant holds few subscriptions)
            every, _ = await self.kind.page(tenant, None, 0)
            mine = [s for s in every if ownership.sees(subject, tenant, s)]
            subs, total = mine[offset : None if limit is None else offset + limit], len(mine)
        if self.kind.lists_delivery:
            subs = [await self._with_status(tenant, s) for s in subs]
        return subs, total

    async def update(
        self,
        tenant: str,
        subject: Subject,
        sub_id: str,
        fragment: Any,
        terms: TermMap,
        context: ContextValue,
        *,
        merge_patch: bool = False,
    ) -> None:
        """Clauses 5.8.2 and 5.11.3: every member of the fragment replaces the subscription's
        (``null`` removes it); with ``merge_patch`` (RFC 7396) ``notification`` is merged member
        by member."""
        check_subscription_id(sub_id)
        if not isinstance(fragment, dict) or not fragment:
            raise BadRequestData("A subscription fragment must be a non-empty JSON object")
        if "id" in fragment and fragment["id"] != sub_id:
            raise invalid("the fragment's id differs from the subscription's")
        if self.kind.checks_fragment_type and "type" in fragment and fragment["type"] != "Subscription":
            raise invalid("type must be Subscription")
        sub = await self.retrieve(tenant, subject, sub_id)
        ownership.require_change(subject, tenant, sub, f"Subscription {sub_id}")
        if merge_patch and isinstance(fragment.get("notification"), dict):
            current = dict(sub.get("notification", {}))
            for name, value in fragment["notification"].items():
                if name == "endpoint" and isinstance(value, dict):
                    endpoint = dict(current.get("endpoint", {}))
                    endpoint.update(value)
                    value = {k: v for k, v in endpoint.items() if v is not None}
                if value is None:
                    current.pop(name, None)
                else:
                    current[name] = value
            # The stored params hold IRIs; expanding an IRI again is the identity.
            fragment = {**fragment, "notification": current}
        members = parse_members(fragment, terms)
        for name, value in members.items():
            if value is None:
                if name == "notification":
                    raise invalid(f"{name} is mandatory and cannot be removed")
                sub.pop(name, None)
            else:
                sub[name] = value
        defaults = self.kind.default_triggers
        if (
            defaults is not None
            and "notificationTrigger" in members
            and members["notificationTrigger"] is None
        ):
            sub["notificationTrigger"] = list(defaults)
        check_whole(sub)
        await self._check(members, terms, endpoint="notification" in members)
        q_members = self.kind.q_members
        if any(members.get(name) is not None for name in q_members):
            sub["_qContext"] = context
        elif not any(name in sub for name in q_members):
            sub.pop("_qContext", None)
        sub["modifiedAt"] = now_iso()
        if not await self.kind.replace(tenant, sub):
            raise ResourceNotFound(f"Subscription {sub_id} not found")
        self.kind.changed(tenant, sub)

    async def delete(self, tenant: str, subject: Subject, sub_id: str) -> None:
        sub = await self.retrieve(tenant, subject, sub_id)
        ownership.require_change(subject, tenant, sub, f"Subscription {sub_id}")
        if not await self.kind.delete(tenant, sub_id):
            raise ResourceNotFound(f"Subscription {sub_id} not found")
        self.kind.changed(tenant, None)
