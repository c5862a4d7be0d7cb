"""Context source registrations (clauses 5.9/5.10) and their subscriptions (clause 5.11), no HTTP.

Registrations are validated against clause 5.2.9/5.2.10 and stored in canonical form: entity
types, ``propertyNames`` and ``relationshipNames`` expanded to IRIs, and every member the data
type does not name (a *registration property*, e.g. ``csourceProperty1``) kept as given under its
expanded name. Defaults (``mode``, ``operations``) are not stored but filled in on output, so that a
stored registration says exactly what its client said.

Discovery (clause 5.10.2) and, later, notification of csource subscriptions both decide "does this
registration match?" through one :class:`RegistrationFilter`, built from query parameters
(:meth:`RegistrationFilter.from_params`) or from a csource subscription (:meth:`from_subscription`).

Csource subscriptions are subscriptions (clause 5.2.12, ``type`` ``Subscription``) whose
entities/watchedAttributes/q/geoQ/csf select registrations instead of entities. They are
validated and rendered by :mod:`kizuna.ngsild.subscriptions`; they have no default
``notificationTrigger`` (the triggers of clause 5.11.7 are fixed). Their notifications are sent
by :mod:`kizuna.notify.csource`, told of every change through ``notifier``.

Members whose names start with ``_`` are bookkeeping and never leave the node.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from kizuna import query as ql
from kizuna.access import ownership
from kizuna.access.subject import Subject
from kizuna.errors import AlreadyExists, BadRequestData, HiddenResource, ResourceNotFound
from kizuna.jsonld.contexts import ContextRegistry, ContextValue
from kizuna.jsonld.terms import TermMap
from kizuna.ngsild.model import check_geometry, check_name, is_datetime, is_uri, parse_scope
from kizuna.ngsild.subscriptions import (
    ImplicitContextHook,
    Subscription,
    _check_id,  # TODO(lead): move to a shared module (see report)
    check_whole,
    key_values,
    needs_implicit_context,
    parse_members,
    vet_endpoint,
)
from kizuna.ngsild.tenants import require_tenant
from kizuna.outbound import OutboundGate
from kizuna.patterns import search
from kizuna.store import Store
from kizuna.times import now_iso, parse_instant

Registration = dict[str, Any]

REGISTRATION_KIND = "csourceRegistration"
SUBSCRIPTION_KIND = "csourceSubscription"
REGISTRATION_TYPE = "ContextSourceRegistration"

MODES = ("inclusive", "exclusive", "redirect", "auxiliary")
DEFAULT_MODE = "inclusive"
DEFAULT_OPERATIONS = ("federationOps",)
OPERATION_GROUPS = frozenset({"federationOps", "updateOps", "retrieveOps", "redirectionOps"})
# The operations a registration may list (each group stands for several of them).
ENTITY_WRITES = frozenset(
    {
        "createEntity",
        "updateEntity",
        "appendAttrs",
        "updateAttrs",
        "deleteAttrs",
        "deleteEntity",
        "mergeEntity",
        "replaceEntity",
        "replaceAttrs",
    }
)
BATCH_WRITES = frozenset({"createBatch", "upsertBatch", "updateBatch", "deleteBatch", "mergeBatch"})
OPERATIONS = (
    OPERATION_GROUPS
    | ENTITY_WRITES
    | BATCH_WRITES
    | frozenset(
        {
            "upsertTemporal",
            "appendAttrsTemporal",
            "deleteAttrsTemporal",
            "updateAttrsTemporal",
            "deleteAttrInstanceTemporal",
            "deleteTemporal",
            "retrieveEntity",
            "queryEntity",
            "queryBatch",
            "retrieveTemporal",
            "queryTemporal",
            "retrieveEntityTypes",
            "retrieveEntityTypeDetails",
            "retrieveEntityTypeInfo",
            "retrieveAttrTypes",
            "retrieveAttrTypeDetails",
            "retrieveAttrTypeInfo",
            "createSubscription",
            "updateSubscription",
            "retrieveSubscription",
            "querySubscription",
            "deleteSubscription",
            "retrieveEntityMap",
            "updateEntityMap",
            "deleteEntityMap",
        }
    )
)
GEO_MEMBERS = ("location", "observationSpace", "operationSpace")
# A stored subscription's geoQ names its geoproperty by IRI (see subscriptions.parse_members).
GEO_MEMBER_OF_IRI = {f"https://uri.etsi.org/ngsi-ld/{name}": name for name in GEO_MEMBERS}
INTERVAL_MEMBERS = ("observationInterval", "managementInterval")
MANDATORY = ("information", "endpoint")
# Members of clause 5.2.9 (stored under these names); anything else is a registration property.
MEMBERS = frozenset(
    {
        "id",
        "type",
        "registrationName",
        "description",
        "information",
        "tenant",
        "observationInterval",
        "managementInterval",
        *GEO_MEMBERS,
        "expiresAt",
        "endpoint",
        "contextSourceInfo",
        "scope",
        "mode",
        "operations",
        "refreshRate",
        "management",
    }
)
# Members a client may send back from a GET but cannot set: silently dropped.
READ_ONLY = frozenset(
    {
        "@context",
        "createdAt",
        "modifiedAt",
        "status",
        "timesSent",
        "timesFailed",
        "lastSuccess",
        "lastFailure",
    }
)
DELIVERY_MEMBERS = frozenset(
    {"status", "timesSent", "timesFailed", "lastNotification", "lastSuccess", "lastFailure"}
)
MANAGEMENT_MEMBERS = frozenset({"localOnly", "cacheDuration", "timeout", "cooldown"})
TIMERELS = ("before", "after", "between")
# timeproperty of a temporal query -> the registration interval it is evaluated on (clause 5.10.2)
TIME_PROPERTIES = {
    "observedAt": "observationInterval",
    "createdAt": "managementInterval",
    "modifiedAt": "managementInterval",
}


# -- validation ------------------------------------------------------------------------------------


def _bad(message: str) -> BadRequestData:
    return BadRequestData(f"Invalid context source registration: {message}")


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise _bad(f"{where} must be a non-empty string")
    return value


def _expanded_names(value: Any, where: str, terms: TermMap) -> list[str]:
    if not isinstance(value, list) or not value:
        raise _bad(f"{where} must be a non-empty array of names")
    return [terms.expand(check_name(name, f"{where} item")) for name in value]


def _entity_info(value: Any, terms: TermMap) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _bad("each item of information[].entities must be an object")
    unknown = set(value) - {"id", "idPattern", "type"}
    if unknown:
        raise _bad(f"unknown EntityInfo member(s) {', '.join(sorted(unknown))}")
    if "type" not in value:
        raise _bad("each EntityInfo needs a type")
    out: dict[str, str] = {}
    if "id" in value:
        if not is_uri(value["id"]):
            raise _bad(f"EntityInfo id {value['id']!r} is not a URI")
        out["id"] = value["id"]
    if "idPattern" in value:
        out["idPattern"] = ql.check_regex(_string(value["idPattern"], "EntityInfo idPattern"))
    out["type"] = terms.expand(check_name(value["type"], "EntityInfo type"))
    return out


def _registration_info(value: Any, terms: TermMap) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad("each item of information must be an object")
    unknown = set(value) - {"entities", "propertyNames", "relationshipNames"}
    if unknown:
        raise _bad(f"unknown RegistrationInfo member(s) {', '.join(sorted(unknown))}")
    if not value:
        raise _bad("a RegistrationInfo needs entities, propertyNames or relationshipNames")
    out: dict[str, Any] = {}
    if "entities" in value:
        entities = value["entities"]
        if not isinstance(entities, list) or not entities:
            raise _bad("information[].entities must be a non-empty array")
        out["entities"] = [_entity_info(item, terms) for item in entities]
    for name in ("propertyNames", "relationshipNames"):
        if name in value:
            out[name] = _expanded_names(value[name], f"information[].{name}", terms)
    return out


def _interval(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or "startAt" not in value or set(value) - {"startAt", "endAt"}:
        raise _bad(f"{where} must be an object with startAt and optionally endAt")
    for name, moment in value.items():
        if not is_datetime(moment):
            raise _bad(f"{where}.{name} {moment!r} is not a DateTime")
    if "endAt" in value and parse_instant(value["endAt"]) <= parse_instant(value["startAt"]):
        raise _bad(f"{where}.endAt must be after startAt")
    return dict(value)


def _management(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad("management must be an object")
    unknown = set(value) - MANAGEMENT_MEMBERS
    if unknown:
        raise _bad(f"unknown management member(s) {', '.join(sorted(unknown))}")
    if "localOnly" in value and not isinstance(value["localOnly"], bool):
        raise _bad("management.localOnly must be true or false")
    for name in ("cacheDuration", "timeout", "cooldown"):
        number = value.get(name)
        if name in value and (
            isinstance(number, bool) or not isinstance(number, (int, float)) or number <= 0
        ):
            raise _bad(f"management.{name} must be a positive number")
    return value


def _member(name: str, value: Any, terms: TermMap) -> Any:
    """One member of clause 5.2.9, validated and canonicalised."""
    if name == "information":
        if not isinstance(value, list) or not value:
            raise _bad("information must be a non-empty array of RegistrationInfo")
        return [_registration_info(item, terms) for item in value]
    if name in ("registrationName", "description", "tenant", "refreshRate"):
        return _string(value, name)
    if name == "endpoint":
        if not is_uri(value):
            raise _bad(f"endpoint {value!r} is not a URI")
        return value
    if name == "expiresAt":
        if not is_datetime(value):
            raise _bad(f"expiresAt {value!r} is not a DateTime")
        if parse_instant(value) <= datetime.now(UTC):
            raise _bad("expiresAt is in the past")
        return value
    if name in INTERVAL_MEMBERS:
        return _interval(value, name)
    if name in GEO_MEMBERS:
        try:
            check_geometry(value, name)
        except BadRequestData as error:
            raise _bad(error.detail) from None
        return value
    if name == "contextSourceInfo":
        return key_values(value, name)
    if name == "scope":
        return parse_scope(value)
    if name == "mode":
        if value not in MODES:
            raise _bad(f"mode must be one of {', '.join(MODES)}")
        return value
    if name == "operations":
        if not isinstance(value, list) or not value or not all(isinstance(op, str) for op in value):
            raise _bad("operations must be a non-empty array of operation names")
        unknown = [op for op in value if op not in OPERATIONS]
        if unknown:
            raise _bad(f"unknown operation(s) {', '.join(unknown)}")
        return list(dict.fromkeys(value))
    if name == "management":
        return _management(value)
    raise AssertionError(name)


def parse_registration_members(body: Mapping[str, Any], terms: TermMap) -> dict[str, Any]:
    """Validate and canonicalise the members of ``body`` (a whole registration or a fragment);
    registration properties come back under their expanded names, ``None`` values are kept as
    deletion markers for the caller to apply."""
    out: dict[str, Any] = {}
    for name, value in body.items():
        if name in READ_ONLY or name == "id":
            continue
        if name == "type":
            if value != REGISTRATION_TYPE:
                raise _bad(f"type must be {REGISTRATION_TYPE}")
            continue
        if name in MEMBERS:
            out[name] = None if value is None else _member(name, value, terms)
        else:
            out[terms.expand(check_name(name, "Registration property"))] = value
    return out


def check_registration(reg: Registration) -> None:
    for name in MANDATORY:
        if name not in reg:
            raise _bad(f"{name} is mandatory")


def _check_registration_id(reg_id: str) -> None:
    if not is_uri(reg_id):
        raise BadRequestData(f"Context source registration id {reg_id!r} is not a URI")


# -- matching (discovery and csource subscriptions) ------------------------------------------------


@dataclass(frozen=True, slots=True)
class EntitySelector:
    """What a query asks for of an entity: types (an expression of IRIs), ids, an id pattern."""

    types: ql.TypeExpr | None = None
    ids: frozenset[str] | None = None
    id_pattern: str | None = None

    def covers(self, info: Mapping[str, str], *, ids_settled: bool = False) -> bool:
        """Does a registration's EntityInfo fall under this selector?

        A registered ``idPattern`` is taken to cover a wanted id it matches; a type-only EntityInfo
        does not answer an id question (discovery by id asks for registrations naming that id).
        """
        if self.types is not None and not self.types.matches([info["type"]]):
            return False
        reg_id, reg_pattern = info.get("id"), info.get("idPattern")
        if self.ids is not None and not ids_settled:
            if reg_id is not None:
                if reg_id not in self.ids:
                    return False
            elif reg_pattern is None or not any(search(reg_pattern, wanted) for wanted in self.ids):
                return False
        return self.id_pattern is None or reg_id is None or search(self.id_pattern, reg_id)


@dataclass(frozen=True, slots=True)
class TimeFilter:
    timerel: str
    time_at: datetime
    end_time_at: datetime | None = None
    interval: str = "observationInterval"

    def matches(self, reg: Registration) -> bool:
        """A registration without the interval is not limited in time and always matches."""
        interval = reg.get(self.interval)
        if not isinstance(interval, dict):
            return True
        start = parse_instant(interval["startAt"])
        end = parse_instant(interval["endAt"]) if "endAt" in interval else None
        if self.timerel == "before":
            return start < self.time_at
        if self.timerel == "after":
            return end is None or end > self.time_at
        assert self.end_time_at is not None
        return start < self.end_time_at and (end is None or end > self.time_at)


@dataclass(frozen=True, slots=True)
class RegistrationFilter:
    """Which registrations a discovery query or a csource subscription selects (clause 5.12).

    A registration matches if one of its RegistrationInfo matches both the entity selectors
    (when given: an EntityInfo under one of them, or no ``entities`` at all) and the attribute
    names (when given: a common name, or no names at all), and if q, csf, the geo-query and the
    temporal query hold. ``registration_ids`` are also accepted as an answer to the ``id``
    question: the ETSI suite queries registrations by their own ids.
    """

    selectors: tuple[EntitySelector, ...] = ()
    attrs: frozenset[str] | None = None
    q: ql.QExpr | None = None
    csf: ql.QExpr | None = None
    geo: ql.GeoQuery | None = None
    time: TimeFilter | None = None
    registration_ids: frozenset[str] | None = field(default=None)

    def matches(self, reg: Registration) -> bool:
        ids_settled = self.registration_ids is not None and reg["id"] in self.registration_ids
        if not any(self._info_matches(info, ids_settled) for info in reg.get("information", ())):
            return False
        if self.q is not None or self.csf is not None:
            probe = _probe(reg)
            if self.q is not None and not ql.matches(self.q, probe):
                return False
            if self.csf is not None and not ql.matches(self.csf, probe):
                return False
        if self.geo is not None:
            geometry = reg.get(self.geo.geoproperty)
            if not isinstance(geometry, dict) or not self.geo.matches(geometry):
                return False
        return self.time is None or self.time.matches(reg)

    def _info_matches(self, info: Mapping[str, Any], ids_settled: bool) -> bool:
        if self.selectors:
            if "entities" not in info:
                # registered attributes of any entity: no answer to a question by entity id
                if not ids_settled and any(s.ids is not None for s in self.selectors):
                    return False
            elif not any(
                s.covers(e, ids_settled=ids_settled) for s in self.selectors for e in info["entities"]
            ):
                return False
        if self.attrs is not None:
            names = set(info.get("propertyNames", ())) | set(info.get("relationshipNames", ()))
            if names and not names & self.attrs:
                return False
        return True

    @classmethod
    def from_params(
        cls,
        terms: TermMap,
        *,
        ids: list[str] | None = None,
        types: str | None = None,
        id_pattern: str | None = None,
        attrs: list[str] | None = None,
        q: str | None = None,
        csf: str | None = None,
        georel: str | None = None,
        geometry: str | None = None,
        coordinates: str | None = None,
        geoproperty: str | None = None,
        timerel: str | None = None,
        time_at: str | None = None,
        end_time_at: str | None = None,
        timeproperty: str | None = None,
    ) -> RegistrationFilter:
        """The filter of a discovery query (clause 5.10.2); raises BadRequestData on bad input."""
        if not any(p is not None for p in (ids, types, id_pattern, attrs, q, csf, georel, timerel)):
            raise BadRequestData(
                "Discovering context sources needs at least one of id, type, idPattern, attrs, q, csf, "
                "a geo-query or a temporal query"
            )
        if ids is not None:
            for entity_id in ids:
                if not is_uri(entity_id):
                    raise BadRequestData(f"id {entity_id!r} is not a URI")
        selector = EntitySelector(
            types=None if types is None else ql.parse_type_expr(types).resolve(terms.expand),
            ids=None if ids is None else frozenset(ids),
            id_pattern=None if id_pattern is None else ql.check_regex(id_pattern),
        )
        use_selector = types is not None or ids is not None or id_pattern is not None
        return cls(
            selectors=(selector,) if use_selector else (),
            attrs=None if attrs is None else frozenset(terms.expand(name) for name in attrs),
            q=None if q is None else ql.parse_q(q).resolve(terms.expand),
            csf=None if csf is None else ql.parse_q(csf).resolve(terms.expand),
            geo=_geo_filter(georel, geometry, coordinates, geoproperty),
            time=_time_filter(timerel, time_at, end_time_at, timeproperty),
            registration_ids=selector.ids,
        )

    @classmethod
    def from_subscription(cls, sub: Subscription, q_terms: TermMap) -> RegistrationFilter:
        """The registrations a (canonical, stored) csource subscription is about; ``q_terms`` is
        the term map of the subscription's ``_qContext``, which its q and csf were written in."""
        q, csf = sub.get("q"), sub.get("csf")
        selectors = tuple(
            EntitySelector(
                types=ql.parse_type_expr(s["type"]),
                ids=frozenset([s["id"]]) if "id" in s else None,
                id_pattern=s.get("idPattern"),
            )
            for s in sub.get("entities", ())
        )
        geo_q = sub.get("geoQ")
        return cls(
            selectors=selectors,
            attrs=frozenset(sub["watchedAttributes"]) if "watchedAttributes" in sub else None,
            q=None if q is None else ql.parse_q(q).resolve(q_terms.expand),
            csf=None if csf is None else ql.parse_q(csf).resolve(q_terms.expand),
            geo=None
            if geo_q is None
            else _geo_filter(geo_q["georel"], geo_q["geometry"], geo_q["coordinates"], _geo_member(geo_q)),
        )


def _geo_member(geo_q: Mapping[str, Any]) -> str | None:
    geoproperty = geo_q.get("geoproperty")
    return None if geoproperty is None else GEO_MEMBER_OF_IRI.get(geoproperty, geoproperty)


def _probe(reg: Registration) -> dict[str, Any]:
    """The registration as an entity whose attributes are its registration properties, for q/csf."""
    probe: dict[str, Any] = {"id": reg["id"]}
    for name, value in reg.items():
        if name not in MEMBERS and not name.startswith(("_", "@")) and name not in READ_ONLY:
            probe[name] = {"type": "Property", "value": value}
    return probe


def _geo_filter(
    georel: str | None, geometry: str | None, coordinates: Any, geoproperty: str | None
) -> ql.GeoQuery | None:
    given = [p is not None for p in (georel, geometry, coordinates)]
    if not any(given):
        if geoproperty is not None:
            raise BadRequestData("geoproperty needs georel, geometry and coordinates")
        return None
    if not all(given):
        raise BadRequestData("A geo-query needs georel, geometry and coordinates together")
    if geoproperty is not None and geoproperty not in GEO_MEMBERS:
        raise BadRequestData(f"geoproperty of a registration must be one of {', '.join(GEO_MEMBERS)}")
    assert georel is not None and geometry is not None
    return ql.parse_geoq(georel, geometry, coordinates, geoproperty)


def _time_filter(
    timerel: str | None, time_at: str | None, end_time_at: str | None, timeproperty: str | None
) -> TimeFilter | None:
    if timerel is None:
        if time_at is not None or end_time_at is not None or timeproperty is not None:
            raise BadRequestData("timeAt, endTimeAt and timeproperty need timerel")
        return None
    if timerel not in TIMERELS:
        raise BadRequestData(f"timerel must be one of {', '.join(TIMERELS)}")
    if time_at is None or not is_datetime(time_at):
        raise BadRequestData("timerel needs timeAt as a DateTime")
    if timerel == "between":
        if end_time_at is None or not is_datetime(end_time_at):
            raise BadRequestData("timerel=between needs endTimeAt as a DateTime")
    elif end_time_at is not None:
        raise BadRequestData("endTimeAt is only allowed with timerel=between")
    interval = TIME_PROPERTIES.get(timeproperty or "observedAt")
    if interval is None:
        raise BadRequestData(f"timeproperty must be one of {', '.join(TIME_PROPERTIES)}")
    return TimeFilter(
        timerel,
        parse_instant(time_at),
        None if end_time_at is None else parse_instant(end_time_at),
        interval,
    )


# -- the services ----------------------------------------------------------------------------------


class CsourceNotifier(Protocol):
    """Told of every stored change, to notify context source subscriptions (clause 5.11.7).

    :class:`kizuna.notify.csource.CsourceNotifier` is the one the node runs; the notify
    package sits above this one, so the services know it only by this shape."""

    def registration_changed(
        self, tenant: str, before: Registration | None, after: Registration | None
    ) -> None: ...

    def subscription_changed(self, tenant: str, sub: Subscription) -> None: ...


class _Documents:
    def __init__(
        self,
        store: Store,
        contexts: ContextRegistry,
        *,
        notifier: CsourceNotifier | None = None,
        gate: OutboundGate | None = None,
    ) -> None:
        self.gate = gate or OutboundGate()  # what endpoints may name (kizuna.outbound)
        self.store = store
        self.contexts = contexts
        self.notifier = notifier


class RegistrationService(_Documents):
    """Context source registrations per tenant (clause 5.9) and their discovery (clause 5.10)."""

    def __init__(
        self,
        store: Store,
        contexts: ContextRegistry,
        *,
        notifier: CsourceNotifier | None = None,
        on_change: Callable[[str], None] | None = None,
        gate: OutboundGate | None = None,
    ) -> None:
        super().__init__(store, contexts, notifier=notifier, gate=gate)
        # told the tenant after each change, so that forwarding never uses a stale copy here
        self.on_change = on_change

    async def _changed(self, tenant: str, before: Registration | None, after: Registration | None) -> None:
        if self.notifier is not None:
            self.notifier.registration_changed(tenant, before, after)
        if self.on_change is not None:
            self.on_change(tenant)
        await self.store.announce("registrations", tenant)  # to the other processes

    async def create(
        self, tenant: str, subject: Subject, body: Any, terms: TermMap, context: ContextValue
    ) -> str:
        ownership.require_creator(subject, tenant, "context source registrations")
        if not isinstance(body, dict):
            raise BadRequestData("A context source registration must be a JSON object")
        if body.get("type") != REGISTRATION_TYPE:
            raise _bad(f"type must be {REGISTRATION_TYPE}")
        if "id" in body:
            reg_id = body["id"]
            if not is_uri(reg_id):
                raise _bad(f"id {reg_id!r} is not a URI")
        else:
            reg_id = f"urn:ngsi-ld:ContextSourceRegistration:{uuid.uuid4()}"
        members = {k: v for k, v in parse_registration_members(body, terms).items() if v is not None}
        reg: Registration = {"id": reg_id, "type": REGISTRATION_TYPE, **members}
        check_registration(reg)
        await self.gate.vet(reg["endpoint"], "endpoint")
        if context is not None:
            reg["@context"] = context
        reg["createdAt"] = reg["modifiedAt"] = now_iso()
        reg = ownership.owned(reg, subject)
        if not await self.store.insert_document(REGISTRATION_KIND, tenant, reg):
            raise AlreadyExists(f"Context source registration {reg_id} already exists")
        await self._changed(tenant, None, reg)
        return reg_id

    async def retrieve(self, tenant: str, subject: Subject, reg_id: str) -> Registration:
        """Others' registrations do not exist for a subject (admins see every one)."""
        _check_registration_id(reg_id)
        await require_tenant(self.store, tenant, subject)
        reg = await self.store.get_document(REGISTRATION_KIND, tenant, reg_id)
        if reg is None:
            raise ResourceNotFound(f"Context source registration {reg_id} not found")
        if not ownership.sees(subject, tenant, reg):
            raise HiddenResource(f"Context source registration {reg_id} not found")
        return reg

    async def query(
        self,
        tenant: str,
        subject: Subject,
        selection: RegistrationFilter,
        *,
        limit: int | None,
        offset: int,
    ) -> tuple[list[Registration], int]:
        await require_tenant(self.store, tenant, subject)
        everything, _ = await self.store.list_documents(REGISTRATION_KIND, tenant)
        matching = [
            reg for reg in everything if ownership.sees(subject, tenant, reg) and selection.matches(reg)
        ]
        end = None if limit is None else offset + limit
        return matching[offset:end], len(matching)

    async def update(self, tenant: str, subject: Subject, reg_id: str, fragment: Any, terms: TermMap) -> None:
        """Clause 5.9.3: every member of the fragment replaces the registration's (``null``
        removes it, except for the mandatory ones)."""
        _check_registration_id(reg_id)
        if not isinstance(fragment, dict) or not fragment:
            raise BadRequestData("A registration fragment must be a non-empty JSON object")
        if "id" in fragment and fragment["id"] != reg_id:
            raise _bad("the fragment's id differs from the registration's")
        members = parse_registration_members(fragment, terms)
        reg = await self.retrieve(tenant, subject, reg_id)
        before = dict(reg)
        for name, value in members.items():
            if value is None:
                if name in MANDATORY:
                    raise _bad(f"{name} is mandatory and cannot be removed")
                reg.pop(name, None)
            else:
                reg[name] = value
        check_registration(reg)
        if "endpoint" in members:
            await self.gate.vet(reg["endpoint"], "endpoint")
        reg["modifiedAt"] = now_iso()
        if not await self.store.replace_document(REGISTRATION_KIND, tenant, reg):
            raise ResourceNotFound(f"Context source registration {reg_id} not found")
        await self._changed(tenant, before, reg)

    async def delete(self, tenant: str, subject: Subject, reg_id: str) -> None:
        before = await self.retrieve(tenant, subject, reg_id)
        if not await self.store.delete_document(REGISTRATION_KIND, tenant, reg_id):
            raise ResourceNotFound(f"Context source registration {reg_id} not found")
        await self._changed(tenant, before, None)


class CsourceSubscriptionService(_Documents):
    """Context source registration subscriptions per tenant (clause 5.11)."""

    def __init__(
        self,
        store: Store,
        contexts: ContextRegistry,
        *,
        implicit_context: ImplicitContextHook | None = None,
        notifier: CsourceNotifier | None = None,
        gate: OutboundGate | None = None,
    ) -> None:
        super().__init__(store, contexts, notifier=notifier, gate=gate)
        self.implicit_context = implicit_context

    async def _check_members(self, members: Mapping[str, Any], terms: TermMap) -> None:
        geo_q = members.get("geoQ")
        if geo_q is not None and _geo_member(geo_q) not in (None, *GEO_MEMBERS):
            raise BadRequestData(
                f"geoQ.geoproperty of a csource subscription must be one of {', '.join(GEO_MEMBERS)}"
            )
        if members.get("csf") is not None:
            ql.parse_q(members["csf"]).resolve(terms.expand)  # csf filters registration properties
        if members.get("notification") is not None:
            await vet_endpoint(self.gate, members)
        url = members.get("jsonldContext")
        if url is not None:
            await self.contexts.term_map(url)  # 503 LdContextNotAvailable if it cannot be had

    async def create(
        self, tenant: str, subject: Subject, body: Any, terms: TermMap, context: ContextValue
    ) -> str:
        ownership.require_creator(subject, tenant, "subscriptions")
        if not isinstance(body, dict):
            raise BadRequestData("A subscription must be a JSON object")
        if body.get("type") != "Subscription":
            raise BadRequestData("Invalid subscription: type must be Subscription")
        if "id" in body:
            sub_id = body["id"]
            if not is_uri(sub_id):
                raise BadRequestData(f"Invalid subscription: id {sub_id!r} is not a URI")
        else:
            sub_id = f"urn:ngsi-ld:Subscription:{uuid.uuid4()}"
        members = {k: v for k, v in parse_members(body, terms).items() if v is not None}
        check_whole(members)
        await self._check_members(members, terms)
        sub: Subscription = {"id": sub_id, "type": "Subscription", **members}
        if context is not None:
            sub["@context"] = context
        if "q" in sub or "csf" in sub:
            sub["_qContext"] = context
        sub["createdAt"] = sub["modifiedAt"] = now_iso()
        sub = ownership.owned(sub, subject)
        if await self.store.get_document(SUBSCRIPTION_KIND, tenant, sub_id) is not None:
            raise AlreadyExists(f"Subscription {sub_id} already exists")
        if self.implicit_context is not None and needs_implicit_context(context):
            sub["_implicitContextId"] = await self.implicit_context(context)
        if not await self.store.insert_document(SUBSCRIPTION_KIND, tenant, sub):
            raise AlreadyExists(f"Subscription {sub_id} already exists")
        if self.notifier is not None:
            self.notifier.subscription_changed(tenant, sub)
        return sub_id

    async def retrieve(self, tenant: str, subject: Subject, sub_id: str) -> Subscription:
        _check_id(sub_id)
        await require_tenant(self.store, tenant, subject)
        sub = await self.store.get_document(SUBSCRIPTION_KIND, tenant, sub_id)
        if sub is None:
            raise ResourceNotFound(f"Subscription {sub_id} not found")
        if not ownership.sees(subject, tenant, sub):
            raise HiddenResource(f"Subscription {sub_id} not found")
        return sub

    async def retrieve_with_status(self, tenant: str, subject: Subject, sub_id: str) -> Subscription:
        """The subscription with its delivery state (timesSent, status, ...) under notification."""
        sub = await self.retrieve(tenant, subject, sub_id)
        status = await self.store.notification_status(tenant, sub_id)
        if status:
            shown = {k: v for k, v in status.items() if k in DELIVERY_MEMBERS}
            sub = {**sub, "notification": {**sub.get("notification", {}), **shown}}
        return sub

    async def query(
        self, tenant: str, subject: Subject, *, limit: int | None, offset: int
    ) -> tuple[list[Subscription], int]:
        await require_tenant(self.store, tenant, subject)
        if subject.is_admin(tenant):
            return await self.store.list_documents(SUBSCRIPTION_KIND, tenant, limit, offset)
        every, _ = await self.store.list_documents(SUBSCRIPTION_KIND, tenant)
        mine = [s for s in every if ownership.sees(subject, tenant, s)]
        return mine[offset : None if limit is None else offset + limit], len(mine)

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
        """Clause 5.11.3, as :meth:`SubscriptionService.update` for entity subscriptions."""
        _check_id(sub_id)
        if not isinstance(fragment, dict) or not fragment:
            raise BadRequestData("A subscription fragment must be a non-empty JSON object")
        if "id" in fragment and fragment["id"] != sub_id:
            raise BadRequestData("Invalid subscription: the fragment's id differs from the subscription's")
        if "type" in fragment and fragment["type"] != "Subscription":
            raise BadRequestData("Invalid subscription: type must be Subscription")
        sub = await self.retrieve(tenant, subject, sub_id)
        ownership.require_change(subject, tenant, sub, f"Subscription {sub_id}")
        if merge_patch and isinstance(fragment.get("notification"), dict):
            current = dict(sub.get("notification", {}))
            for name, value in fragment["notification"].items():
                if name == "endpoint" and isinstance(value, dict):
                    value = {
                        k: v for k, v in {**current.get("endpoint", {}), **value}.items() if v is not None
                    }
                if value is None:
                    current.pop(name, None)
                else:
                    current[name] = value
            fragment = {**fragment, "notification": current}  # stored names are IRIs: expansion is identity
        members = parse_members(fragment, terms)
        for name, value in members.items():
            if value is None:
                if name == "notification":
                    raise BadRequestData(
                        "Invalid subscription: notification is mandatory and cannot be removed"
                    )
                sub.pop(name, None)
            else:
                sub[name] = value
        check_whole(sub)
        await self._check_members(members, terms)
        if members.get("q") is not None or members.get("csf") is not None:
            sub["_qContext"] = context
        elif "q" not in sub and "csf" not in sub:
            sub.pop("_qContext", None)
        sub["modifiedAt"] = now_iso()
        if not await self.store.replace_document(SUBSCRIPTION_KIND, tenant, sub):
            raise ResourceNotFound(f"Subscription {sub_id} not found")
        if self.notifier is not None:
            self.notifier.subscription_changed(tenant, sub)

    async def delete(self, tenant: str, subject: Subject, sub_id: str) -> None:
        sub = await self.retrieve(tenant, subject, sub_id)
        ownership.require_change(subject, tenant, sub, f"Subscription {sub_id}")
        if not await self.store.delete_document(SUBSCRIPTION_KIND, tenant, sub_id):
            raise ResourceNotFound(f"Subscription {sub_id} not found")


# -- output ----------------------------------------------------------------------------------------


def mode_of(reg: Registration) -> str:
    return reg.get("mode", DEFAULT_MODE)


def operations_of(reg: Registration) -> list[str]:
    return list(reg.get("operations", DEFAULT_OPERATIONS))


def _compact_info(info: Mapping[str, Any], terms: TermMap) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in info.items():
        if name == "entities":
            value = [{**e, "type": terms.compact(e["type"])} for e in value]
        else:
            value = [terms.compact(n) for n in value]
        out[name] = value
    return out


def render_registration(reg: Registration, terms: TermMap, *, sys_attrs: bool = False) -> dict[str, Any]:
    """The registration as a client using ``terms`` sees it (clause 5.2.9, defaults filled in)."""
    out: dict[str, Any] = {}
    for name, value in reg.items():
        if name.startswith("_") or name in READ_ONLY:
            continue
        if name == "information":
            value = [_compact_info(info, terms) for info in value]
        elif name not in MEMBERS:
            name = terms.compact(name)
        out[name] = value
    out["mode"] = mode_of(reg)
    out["operations"] = operations_of(reg)
    if sys_attrs:
        out["createdAt"] = reg["createdAt"]
        out["modifiedAt"] = reg["modifiedAt"]
    return out
