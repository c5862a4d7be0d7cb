"""Subscription management of clause 5.8 (create, retrieve, query, update, delete); delivery is
:mod:`kizuna.notify`.

Subscriptions are validated against clause 5.2.12 and stored in canonical form: entity types,
attribute names and the geoproperty expanded to IRIs, every other member as given. The request's
@context stays with the subscription (``@context``), so notifications can be compacted with it.
``q`` has no serialiser back from its AST, so it is stored as text together with the @context it
was written against (``_qContext``); whoever evaluates it resolves it through that context.

Derived members (``status``) and system members are computed on output by :func:`render`.
Members whose names start with ``_`` are bookkeeping and never leave the node.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from kizuna import query as ql
from kizuna.access import ownership
from kizuna.access.subject import Subject
from kizuna.errors import AlreadyExists, BadRequestData, HiddenResource, ResourceNotFound
from kizuna.jsonld.contexts import HOSTED_PATH, ContextRegistry, ContextValue
from kizuna.jsonld.terms import TermMap
from kizuna.ngsild.model import is_datetime, is_uri
from kizuna.ngsild.tenants import require_tenant
from kizuna.outbound import OutboundGate, header_names
from kizuna.store import Store
from kizuna.times import now_iso, parse_instant

Subscription = dict[str, Any]
ImplicitContextHook = Callable[[ContextValue], Awaitable[str]]

TRIGGERS = frozenset(
    {
        "entityCreated",
        "entityUpdated",
        "entityDeleted",
        "attributeCreated",
        "attributeUpdated",
        "attributeDeleted",
    }
)
DEFAULT_TRIGGERS = ["attributeCreated", "attributeUpdated"]
FORMATS = frozenset({"normalized", "keyValues", "concise", "simplified"})
ENDPOINT_SCHEMES = ("http://", "https://", "mqtt://", "mqtts://")
ENDPOINT_ACCEPT = frozenset({"application/json", "application/ld+json", "application/geo+json"})
JOINS = frozenset({"flat", "inline", "@none"})
# Entity members that pick/omit/attributes may name and that are not expanded as attributes.
CORE_MEMBERS = frozenset({"id", "type", "scope", "createdAt", "modifiedAt", "deletedAt"})
# Members a client may send back from a GET but cannot set: silently dropped.
READ_ONLY = frozenset({"status", "createdAt", "modifiedAt", "@context"})
READ_ONLY_NOTIFICATION = frozenset(
    {"status", "timesSent", "timesFailed", "lastNotification", "lastFailure", "lastSuccess"}
)
TOP_MEMBERS = frozenset(
    {
        "id",
        "type",
        "subscriptionName",
        "description",
        "entities",
        "notificationTrigger",
        "watchedAttributes",
        "timeInterval",
        "q",
        "geoQ",
        "csf",
        "isActive",
        "notification",
        "expiresAt",
        "throttling",
        "temporalQ",
        "scopeQ",
        "lang",
        "jsonldContext",
        "datasetId",
        "localOnly",
    }
)
NOTIFICATION_MEMBERS = frozenset(
    {"attributes", "sysAttrs", "format", "showChanges", "endpoint", "pick", "omit", "join", "joinLevel"}
)
ENDPOINT_MEMBERS = frozenset({"uri", "accept", "timeout", "cooldown", "receiverInfo", "notifierInfo"})


def _now() -> datetime:
    return datetime.now(UTC)


def needs_implicit_context(context: ContextValue) -> bool:
    """Clause 5.13 ImplicitlyCreated: an array of several entries, or an inline object."""
    if isinstance(context, dict):
        return True
    if isinstance(context, list):
        return len(context) > 1 or any(isinstance(item, dict) for item in context)
    return False


# -- validation ------------------------------------------------------------------------------------


def _bad(message: str) -> BadRequestData:
    return BadRequestData(f"Invalid subscription: {message}")


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise _bad(f"{where} must be a non-empty string")
    return value


def _positive(value: Any, where: str, *, integer: bool = False) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) or value <= 0:
        raise _bad(f"{where} must be a positive {'integer' if integer else 'number'}")
    return value


def _boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise _bad(f"{where} must be true or false")
    return value


def _names(value: Any, where: str, terms: TermMap, *, core: bool = False) -> list[str]:
    if not isinstance(value, list) or not value:
        raise _bad(f"{where} must be a non-empty array of names")
    names = []
    for name in value:
        _string(name, f"each item of {where}")
        names.append(name if core and name in CORE_MEMBERS else terms.expand(name))
    return names


def _type_text(expr: ql.TypeExpr, nested: bool = False) -> str:
    if isinstance(expr, ql.TypeName):
        return expr.name
    if isinstance(expr, ql.TypeAnd):
        text = ";".join(_type_text(t, True) for t in expr.terms)
        return f"({text})" if nested else text
    assert isinstance(expr, ql.TypeOr)
    return "(" + "|".join(_type_text(t, True) for t in expr.terms) + ")"


def _entities(value: Any, terms: TermMap) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise _bad("entities must be a non-empty array of entity selectors")
    selectors = []
    for item in value:
        if not isinstance(item, dict):
            raise _bad("each entity selector must be an object")
        unknown = set(item) - {"id", "idPattern", "type"}
        if unknown:
            raise _bad(f"unknown entity selector member(s) {', '.join(sorted(unknown))}")
        if "type" not in item:
            raise _bad("each entity selector needs a type")
        expr = ql.parse_type_expr(_string(item["type"], "entities[].type")).resolve(terms.expand)
        selector: dict[str, str] = {}
        if "id" in item:
            if not is_uri(item["id"]):
                raise _bad(f"entities[].id {item['id']!r} is not a URI")
            selector["id"] = item["id"]
        if "idPattern" in item:
            selector["idPattern"] = ql.check_regex(_string(item["idPattern"], "entities[].idPattern"))
        selector["type"] = _type_text(expr)
        selectors.append(selector)
    return selectors


def key_values(value: Any, where: str) -> list[dict[str, str]]:
    """A KeyValuePair array that becomes headers (``receiverInfo``, ``contextSourceInfo``):
    well-formed, and naming no header the node keeps for itself (:func:`allowed_header`)."""
    if not isinstance(value, list) or not all(
        isinstance(item, dict)
        and set(item) == {"key", "value"}
        and isinstance(item["key"], str)
        and item["key"]
        and isinstance(item["value"], str)
        for item in value
    ):
        raise BadRequestData(f"{where} must be an array of {{'key': string, 'value': string}}")
    refused = header_names((item["key"], item["value"]) for item in value)
    if refused:
        raise BadRequestData(f"{where} may not set the header(s) {', '.join(refused)}")
    return value


def _endpoint(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad("notification.endpoint is mandatory and must be an object")
    unknown = set(value) - ENDPOINT_MEMBERS
    if unknown:
        raise _bad(f"unknown endpoint member(s) {', '.join(sorted(unknown))}")
    if "uri" not in value:
        raise _bad("notification.endpoint.uri is mandatory")
    uri = value["uri"]
    if not is_uri(uri) or not uri.lower().startswith(ENDPOINT_SCHEMES) or len(uri.split("://", 1)[1]) == 0:
        raise _bad(f"notification.endpoint.uri {uri!r} must be an absolute http(s) or mqtt(s) URI")
    out: dict[str, Any] = {"uri": uri}
    if "accept" in value:
        if not isinstance(value["accept"], str) or value["accept"] not in ENDPOINT_ACCEPT:
            raise _bad(f"notification.endpoint.accept must be one of {', '.join(sorted(ENDPOINT_ACCEPT))}")
        out["accept"] = value["accept"]
    for name in ("timeout", "cooldown"):
        if name in value:
            out[name] = _positive(value[name], f"notification.endpoint.{name}")
    for name in ("receiverInfo", "notifierInfo"):
        if name in value:
            out[name] = key_values(value[name], f"notification.endpoint.{name}")
    return out


async def vet_endpoint(gate: OutboundGate, sub: Mapping[str, Any]) -> None:
    """Refuse at once (400) an endpoint the node would never deliver to: an internal address
    (see :mod:`kizuna.outbound`), rather than accept it and fail every delivery."""
    await gate.vet(sub["notification"]["endpoint"]["uri"], "notification.endpoint.uri")


def _notification(value: Any, terms: TermMap) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad("notification is mandatory and must be an object")
    value = {k: v for k, v in value.items() if k not in READ_ONLY_NOTIFICATION}
    unknown = set(value) - NOTIFICATION_MEMBERS
    if unknown:
        raise _bad(f"unknown notification member(s) {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    for name in ("attributes", "pick", "omit"):
        if name in value:
            out[name] = _names(value[name], f"notification.{name}", terms, core=True)
    if "attributes" in out and ("pick" in out or "omit" in out):
        raise _bad("notification.attributes cannot be combined with pick or omit")
    if "pick" in out and "omit" in out and set(out["pick"]) & set(out["omit"]):
        raise _bad("notification.pick and notification.omit name the same member")
    if "format" in value:
        if not isinstance(value["format"], str) or value["format"] not in FORMATS:
            raise _bad(f"notification.format must be one of {', '.join(sorted(FORMATS))}")
        out["format"] = value["format"]
    for name in ("sysAttrs", "showChanges"):
        if name in value:
            out[name] = _boolean(value[name], f"notification.{name}")
    if "join" in value:
        if not isinstance(value["join"], str) or value["join"] not in JOINS:
            raise _bad("notification.join must be flat, inline or @none")
        out["join"] = value["join"]
    if "joinLevel" in value:
        out["joinLevel"] = _positive(value["joinLevel"], "notification.joinLevel", integer=True)
    out["endpoint"] = _endpoint(value.get("endpoint"))
    return out


def _geoq(value: Any, terms: TermMap) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad("geoQ must be an object")
    unknown = set(value) - {"geometry", "coordinates", "georel", "geoproperty"}
    if unknown:
        raise _bad(f"unknown geoQ member(s) {', '.join(sorted(unknown))}")
    for name in ("geometry", "coordinates", "georel"):
        if name not in value:
            raise _bad(f"geoQ.{name} is mandatory")
    georel = _string(value["georel"], "geoQ.georel")
    geometry = _string(value["geometry"], "geoQ.geometry")
    coordinates = value["coordinates"]
    if not isinstance(coordinates, (str, list)):
        raise _bad("geoQ.coordinates must be an array or a string")
    geoproperty = value.get("geoproperty")
    if geoproperty is not None:
        _string(geoproperty, "geoQ.geoproperty")
    ql.parse_geoq(georel, geometry, coordinates, geoproperty)
    out = {"geometry": geometry, "coordinates": coordinates, "georel": georel}
    if geoproperty is not None:
        out["geoproperty"] = terms.expand(geoproperty)
    return out


def _expires_at(value: Any) -> str:
    if not is_datetime(value):
        raise _bad(f"expiresAt {value!r} is not a DateTime")
    if parse_instant(value) <= _now():
        raise _bad("expiresAt is in the past")
    return value


def parse_members(body: dict[str, Any], terms: TermMap) -> dict[str, Any]:
    """Validate and canonicalise the members present in ``body`` (a whole subscription or a
    fragment); ``None`` values are kept as deletion markers for the caller to apply."""
    unknown = set(body) - TOP_MEMBERS - READ_ONLY
    if unknown:
        raise _bad(f"unknown member(s) {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    for name, value in body.items():
        if name in READ_ONLY or name == "id":
            continue
        if value is None:
            out[name] = None
        elif name == "type":
            if value != "Subscription":
                raise _bad("type must be Subscription")
        elif name in ("subscriptionName", "description", "csf", "lang"):
            out[name] = _string(value, name)
        elif name == "entities":
            out[name] = _entities(value, terms)
        elif name == "watchedAttributes":
            out[name] = _names(value, name, terms)
        elif name == "notificationTrigger":
            if not isinstance(value, list) or not value or any(t not in TRIGGERS for t in value):
                raise _bad(f"notificationTrigger must be a non-empty array of {', '.join(sorted(TRIGGERS))}")
            out[name] = list(dict.fromkeys(value))
        elif name in ("timeInterval", "throttling"):
            out[name] = _positive(value, name)
        elif name == "q":
            ql.parse_q(_string(value, "q")).resolve(terms.expand)
            out[name] = value
        elif name == "scopeQ":
            ql.parse_scope_q(_string(value, "scopeQ"))
            out[name] = value
        elif name == "geoQ":
            out[name] = _geoq(value, terms)
        elif name in ("isActive", "localOnly"):
            out[name] = _boolean(value, name)
        elif name == "expiresAt":
            out[name] = _expires_at(value)
        elif name == "notification":
            out[name] = _notification(value, terms)
        elif name == "temporalQ":
            if not isinstance(value, dict):
                raise _bad("temporalQ must be an object")
            out[name] = value
        elif name == "jsonldContext":
            if not is_uri(value):
                raise _bad(f"jsonldContext {value!r} is not a URI")
            out[name] = value
        elif name == "datasetId":
            items = value if isinstance(value, list) else [value]
            if not items or any(not (is_uri(d) or d == "@none") for d in items):
                raise _bad("datasetId must be a URI or an array of URIs")
            out[name] = items
    return out


def check_whole(sub: Subscription) -> None:
    """The cross-member rules of clause 5.2.12 on a complete subscription."""
    if "notification" not in sub:
        raise _bad("notification is mandatory")
    if "entities" not in sub and "watchedAttributes" not in sub:
        raise _bad("entities or watchedAttributes is mandatory")
    if "timeInterval" in sub:
        if "watchedAttributes" in sub:
            raise _bad("timeInterval and watchedAttributes exclude each other")
        if "throttling" in sub:
            raise _bad("timeInterval and throttling exclude each other")
        if "entities" not in sub:
            raise _bad("a subscription with timeInterval needs entities")


# -- the service -----------------------------------------------------------------------------------


class SubscriptionService:
    """Subscriptions per tenant; knows nothing of HTTP."""

    def __init__(
        self,
        store: Store,
        contexts: ContextRegistry,
        *,
        implicit_context: ImplicitContextHook | None = None,
        on_change: Callable[[str], None] | None = None,
        settle: Callable[[str, str], Awaitable[None]] | None = None,
        gate: OutboundGate | None = None,
    ) -> None:
        """``settle(tenant, id)`` returns once the notifications of the subscription being sent
        now have their delivery state recorded (:meth:`kizuna.notify.dispatcher.Dispatcher.settle`)."""
        self.gate = gate or OutboundGate()
        self.store = store
        self.contexts = contexts
        self.implicit_context = implicit_context
        self.on_change = on_change
        self.settle = settle

    def _changed(self, tenant: str) -> None:
        if self.on_change is not None:
            self.on_change(tenant)

    async def _with_status(self, tenant: str, sub: Subscription) -> Subscription:
        """The delivery state (kept apart by the dispatcher) merged into ``notification``."""
        status = await self.store.notification_status(tenant, sub["id"])
        if status:
            shown = {k: v for k, v in status.items() if k in READ_ONLY_NOTIFICATION}
            sub = {**sub, "notification": {**sub.get("notification", {}), **shown}}
        return sub

    async def _check_jsonld_context(self, members: dict[str, Any]) -> None:
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
        if not isinstance(body, dict):
            raise BadRequestData("A subscription must be a JSON object")
        if body.get("type") != "Subscription":
            raise _bad("type must be Subscription")
        if "id" in body:
            sub_id = body["id"]
            if not is_uri(sub_id):
                raise _bad(f"id {sub_id!r} is not a URI")
        else:
            sub_id = f"urn:ngsi-ld:Subscription:{uuid.uuid4()}"
        members = {k: v for k, v in parse_members(body, terms).items() if v is not None}
        members.setdefault("notificationTrigger", list(DEFAULT_TRIGGERS))
        check_whole(members)
        await vet_endpoint(self.gate, members)
        await self._check_jsonld_context(members)
        now = now_iso()
        sub: Subscription = {"id": sub_id, "type": "Subscription", **members}
        if context is not None:
            sub["@context"] = context
        if "q" in sub:
            sub["_qContext"] = context
        sub["createdAt"] = now
        sub["modifiedAt"] = now
        sub = ownership.owned(sub, subject, reads_as)
        if await self.store.get_subscription(tenant, sub_id) is not None:
            raise AlreadyExists(f"Subscription {sub_id} already exists")
        if self.implicit_context is not None and needs_implicit_context(context):
            sub["_implicitContextId"] = await self.implicit_context(context)
        if not await self.store.insert_subscription(tenant, sub):
            raise AlreadyExists(f"Subscription {sub_id} already exists")
        self._changed(tenant)
        return sub_id

    async def retrieve(self, tenant: str, subject: Subject, sub_id: str) -> Subscription:
        """Others' subscriptions do not exist for a subject (admins see every one)."""
        _check_id(sub_id)
        await require_tenant(self.store, tenant, subject)
        sub = await self.store.get_subscription(tenant, sub_id)
        if sub is None:
            raise ResourceNotFound(f"Subscription {sub_id} not found")
        if not ownership.sees(subject, tenant, sub):
            raise HiddenResource(f"Subscription {sub_id} not found")
        return sub

    async def retrieve_with_status(self, tenant: str, subject: Subject, sub_id: str) -> Subscription:
        sub = await self.retrieve(tenant, subject, sub_id)
        if self.settle is not None:
            await self.settle(tenant, sub_id)  # a notification under way is counted (046_11/12)
        return await self._with_status(tenant, sub)

    async def query(
        self, tenant: str, subject: Subject, *, limit: int | None, offset: int
    ) -> tuple[list[Subscription], int]:
        await require_tenant(self.store, tenant, subject)
        if subject.is_admin(tenant):
            subs, total = await self.store.list_subscriptions(tenant, limit, offset)
        else:  # the subject's own, paged after choosing them (a tenant holds few subscriptions)
            every, _ = await self.store.list_subscriptions(tenant, None, 0)
            mine = [s for s in every if ownership.sees(subject, tenant, s)]
            subs, total = mine[offset : None if limit is None else offset + limit], len(mine)
        return [await self._with_status(tenant, s) for s in subs], total

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
        """Clause 5.8.2: every member of the fragment replaces the subscription's (``null``
        removes it); with ``merge_patch`` (RFC 7396) ``notification`` is merged member by member."""
        _check_id(sub_id)
        if not isinstance(fragment, dict) or not fragment:
            raise BadRequestData("A subscription fragment must be a non-empty JSON object")
        if "id" in fragment and fragment["id"] != sub_id:
            raise _bad("the fragment's id differs from the subscription's")
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
                if name in ("notification",):
                    raise _bad(f"{name} is mandatory and cannot be removed")
                sub.pop(name, None)
            else:
                sub[name] = value
        if "notificationTrigger" in members and members["notificationTrigger"] is None:
            sub["notificationTrigger"] = list(DEFAULT_TRIGGERS)
        check_whole(sub)
        if "notification" in members:
            await vet_endpoint(self.gate, sub)
        await self._check_jsonld_context(members)
        if members.get("q") is not None:
            sub["_qContext"] = context
        elif "q" in members:
            sub.pop("_qContext", None)
        sub["modifiedAt"] = now_iso()
        if not await self.store.replace_subscription(tenant, sub):
            raise ResourceNotFound(f"Subscription {sub_id} not found")
        self._changed(tenant)

    async def delete(self, tenant: str, subject: Subject, sub_id: str) -> None:
        sub = await self.retrieve(tenant, subject, sub_id)
        ownership.require_change(subject, tenant, sub, f"Subscription {sub_id}")
        if not await self.store.delete_subscription(tenant, sub_id):
            raise ResourceNotFound(f"Subscription {sub_id} not found")
        self._changed(tenant)


def _check_id(sub_id: str) -> None:
    if not is_uri(sub_id):
        raise BadRequestData(f"Subscription id {sub_id!r} is not a URI")


# -- output ----------------------------------------------------------------------------------------


def status_of(sub: Subscription, now: datetime | None = None) -> str:
    expires = sub.get("expiresAt")
    if expires is not None and parse_instant(expires) <= (now or _now()):
        return "expired"
    if sub.get("isActive") is False:
        return "paused"
    return "active"


def _compact_names(names: list[str], terms: TermMap) -> list[str]:
    return [n if n in CORE_MEMBERS else terms.compact(n) for n in names]


def _compact_type(text: str, terms: TermMap) -> str:
    return _type_text(ql.parse_type_expr(text).resolve(terms.compact))


def without_password(uri: str) -> str:
    """An endpoint URI as it is shown: a password in it (``mqtt://user:pw@host/t``) is the
    subscriber's secret, used to deliver and never served back."""
    scheme, sep, rest = uri.partition("://")
    authority, slash, path = rest.partition("/")
    user, at, host = authority.rpartition("@")
    if not sep or not at or ":" not in user:
        return uri
    return f"{scheme}://{user.split(':', 1)[0]}:***@{host}{slash}{path}"


def render(
    sub: Subscription, terms: TermMap, *, sys_attrs: bool = False, base_url: str = ""
) -> dict[str, Any]:
    """The subscription as a client using ``terms`` sees it (clause 5.2.12 with derived members)."""
    out: dict[str, Any] = {}
    for name, value in sub.items():
        if name.startswith("_") or name in ("@context", "createdAt", "modifiedAt"):
            continue
        if name == "entities":
            value = [{**s, "type": _compact_type(s["type"], terms)} for s in value]
        elif name == "watchedAttributes":
            value = _compact_names(value, terms)
        elif name == "geoQ" and "geoproperty" in value:
            value = {**value, "geoproperty": terms.compact(value["geoproperty"])}
        elif name == "notification":
            value = dict(value)
            for member in ("attributes", "pick", "omit"):
                if member in value:
                    value[member] = _compact_names(value[member], terms)
            if "endpoint" in value:
                value["endpoint"] = {**value["endpoint"], "uri": without_password(value["endpoint"]["uri"])}
        out[name] = value
    implicit = sub.get("_implicitContextId")
    if "jsonldContext" not in out and implicit is not None:
        out["jsonldContext"] = base_url.rstrip("/") + HOSTED_PATH + implicit
    out["status"] = status_of(sub)
    if sys_attrs:
        out["createdAt"] = sub["createdAt"]
        out["modifiedAt"] = sub["modifiedAt"]
    return out
