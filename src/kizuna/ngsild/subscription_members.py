"""The subscription data type of clause 5.2.12, for both kinds (entity subscriptions of clause
5.8, context source registration subscriptions of clause 5.11): validated on the way in,
rendered on the way out. The operations on them are :mod:`kizuna.ngsild.subscriptions`.

Subscriptions are stored in canonical form: entity types, attribute names and the geoproperty
expanded to IRIs, every other member as given. The request's @context stays with the
subscription (``@context``), so notifications can be compacted with it. ``q`` has no serialiser
back from its AST, so it is stored as text together with the @context it was written against
(``_qContext``); whoever evaluates it resolves it through that context.

Derived members (``status``) and system members are computed on output by :func:`render`.
Members whose names start with ``_`` are bookkeeping and never leave the node.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kizuna import query as ql
from kizuna.errors import BadRequestData
from kizuna.jsonld.contexts import HOSTED_PATH
from kizuna.jsonld.terms import TermMap
from kizuna.ngsild.checks import Checks
from kizuna.ngsild.model import is_datetime, is_uri
from kizuna.outbound import OutboundGate, header_names
from kizuna.times import parse_instant

Subscription = dict[str, Any]

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


# -- validation ------------------------------------------------------------------------------------


CHECKS = Checks("Invalid subscription")  # in the words the ETSI suite expects (clause 5.2.12)
invalid = CHECKS.bad


def _names(value: Any, where: str, terms: TermMap, *, core: bool = False) -> list[str]:
    if not isinstance(value, list) or not value:
        raise invalid(f"{where} must be a non-empty array of names")
    names = []
    for name in value:
        CHECKS.string(name, f"each item of {where}")
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
        raise invalid("entities must be a non-empty array of entity selectors")

    def type_of(text: Any) -> str:
        return _type_text(ql.parse_type_expr(CHECKS.string(text, "entities[].type")).resolve(terms.expand))

    return [
        CHECKS.entity_selector(
            item,
            "entity selector",
            "entities[].",
            not_object="each entity selector must be an object",
            type_of=type_of,
        )
        for item in value
    ]


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
    CHECKS.members(
        value,
        ENDPOINT_MEMBERS,
        "endpoint",
        not_object="notification.endpoint is mandatory and must be an object",
    )
    if "uri" not in value:
        raise invalid("notification.endpoint.uri is mandatory")
    uri = value["uri"]
    if not is_uri(uri) or not uri.lower().startswith(ENDPOINT_SCHEMES) or len(uri.split("://", 1)[1]) == 0:
        raise invalid(f"notification.endpoint.uri {uri!r} must be an absolute http(s) or mqtt(s) URI")
    out: dict[str, Any] = {"uri": uri}
    if "accept" in value:
        out["accept"] = CHECKS.choice(value["accept"], "notification.endpoint.accept", ENDPOINT_ACCEPT)
    for name in ("timeout", "cooldown"):
        if name in value:
            out[name] = CHECKS.positive(value[name], f"notification.endpoint.{name}")
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
        raise invalid("notification is mandatory and must be an object")
    value = {k: v for k, v in value.items() if k not in READ_ONLY_NOTIFICATION}
    CHECKS.members(value, NOTIFICATION_MEMBERS, "notification", not_object="notification must be an object")
    out: dict[str, Any] = {}
    for name in ("attributes", "pick", "omit"):
        if name in value:
            out[name] = _names(value[name], f"notification.{name}", terms, core=True)
    if "attributes" in out and ("pick" in out or "omit" in out):
        raise invalid("notification.attributes cannot be combined with pick or omit")
    if "pick" in out and "omit" in out and set(out["pick"]) & set(out["omit"]):
        raise invalid("notification.pick and notification.omit name the same member")
    if "format" in value:
        out["format"] = CHECKS.choice(value["format"], "notification.format", FORMATS)
    for name in ("sysAttrs", "showChanges"):
        if name in value:
            out[name] = CHECKS.boolean(value[name], f"notification.{name}")
    if "join" in value:
        out["join"] = CHECKS.choice(
            value["join"], "notification.join", JOINS, "notification.join must be flat, inline or @none"
        )
    if "joinLevel" in value:
        out["joinLevel"] = CHECKS.positive(value["joinLevel"], "notification.joinLevel", integer=True)
    out["endpoint"] = _endpoint(value.get("endpoint"))
    return out


def _geoq(value: Any, terms: TermMap) -> dict[str, Any]:
    CHECKS.members(
        value,
        {"geometry", "coordinates", "georel", "geoproperty"},
        "geoQ",
        not_object="geoQ must be an object",
    )
    for name in ("geometry", "coordinates", "georel"):
        if name not in value:
            raise invalid(f"geoQ.{name} is mandatory")
    georel = CHECKS.string(value["georel"], "geoQ.georel")
    geometry = CHECKS.string(value["geometry"], "geoQ.geometry")
    coordinates = value["coordinates"]
    if not isinstance(coordinates, (str, list)):
        raise invalid("geoQ.coordinates must be an array or a string")
    geoproperty = value.get("geoproperty")
    if geoproperty is not None:
        CHECKS.string(geoproperty, "geoQ.geoproperty")
    ql.parse_geoq(georel, geometry, coordinates, geoproperty)
    out = {"geometry": geometry, "coordinates": coordinates, "georel": georel}
    if geoproperty is not None:
        out["geoproperty"] = terms.expand(geoproperty)
    return out


def _expires_at(value: Any) -> str:
    if not is_datetime(value):
        raise invalid(f"expiresAt {value!r} is not a DateTime")
    if parse_instant(value) <= _now():
        raise invalid("expiresAt is in the past")
    return value


def parse_members(body: dict[str, Any], terms: TermMap) -> dict[str, Any]:
    """Validate and canonicalise the members present in ``body`` (a whole subscription or a
    fragment); ``None`` values are kept as deletion markers for the caller to apply."""
    unknown = set(body) - TOP_MEMBERS - READ_ONLY
    if unknown:
        raise invalid(f"unknown member(s) {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    for name, value in body.items():
        if name in READ_ONLY or name == "id":
            continue
        if value is None:
            out[name] = None
        elif name == "type":
            if value != "Subscription":
                raise invalid("type must be Subscription")
        elif name in ("subscriptionName", "description", "csf", "lang"):
            out[name] = CHECKS.string(value, name)
        elif name == "entities":
            out[name] = _entities(value, terms)
        elif name == "watchedAttributes":
            out[name] = _names(value, name, terms)
        elif name == "notificationTrigger":
            if not isinstance(value, list) or not value or any(t not in TRIGGERS for t in value):
                raise invalid(
                    f"notificationTrigger must be a non-empty array of {', '.join(sorted(TRIGGERS))}"
                )
            out[name] = list(dict.fromkeys(value))
        elif name in ("timeInterval", "throttling"):
            out[name] = CHECKS.positive(value, name)
        elif name == "q":
            ql.parse_q(CHECKS.string(value, "q")).resolve(terms.expand)
            out[name] = value
        elif name == "scopeQ":
            ql.parse_scope_q(CHECKS.string(value, "scopeQ"))
            out[name] = value
        elif name == "geoQ":
            out[name] = _geoq(value, terms)
        elif name in ("isActive", "localOnly"):
            out[name] = CHECKS.boolean(value, name)
        elif name == "expiresAt":
            out[name] = _expires_at(value)
        elif name == "notification":
            out[name] = _notification(value, terms)
        elif name == "temporalQ":
            if not isinstance(value, dict):
                raise invalid("temporalQ must be an object")
            out[name] = value
        elif name == "jsonldContext":
            if not is_uri(value):
                raise invalid(f"jsonldContext {value!r} is not a URI")
            out[name] = value
        elif name == "datasetId":
            items = value if isinstance(value, list) else [value]
            if not items or any(not (is_uri(d) or d == "@none") for d in items):
                raise invalid("datasetId must be a URI or an array of URIs")
            out[name] = items
    return out


def check_whole(sub: Subscription) -> None:
    """The cross-member rules of clause 5.2.12 on a complete subscription."""
    if "notification" not in sub:
        raise invalid("notification is mandatory")
    if "entities" not in sub and "watchedAttributes" not in sub:
        raise invalid("entities or watchedAttributes is mandatory")
    if "timeInterval" in sub:
        if "watchedAttributes" in sub:
            raise invalid("timeInterval and watchedAttributes exclude each other")
        if "throttling" in sub:
            raise invalid("timeInterval and throttling exclude each other")
        if "entities" not in sub:
            raise invalid("a subscription with timeInterval needs entities")


def check_subscription_id(sub_id: str) -> None:
    """A subscription id in a path must be a URI (400 before the store is asked)."""
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
