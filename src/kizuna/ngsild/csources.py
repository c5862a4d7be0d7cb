"""Context source registrations (clauses 5.9/5.10), no HTTP: validation, storage, output.

Registrations are validated against clause 5.2.9/5.2.10 and stored in canonical form: entity
types, ``propertyNames`` and ``relationshipNames`` expanded to IRIs, and every member the data
type does not name (a *registration property*, e.g. ``csourceProperty1``) kept as given under its
expanded name. Defaults (``mode``, ``operations``) are not stored but filled in on output, so that a
stored registration says exactly what its client said.

Which registrations a query selects is :mod:`kizuna.ngsild.csource_matching`; subscriptions to
registrations (clause 5.11) are served by :class:`kizuna.ngsild.subscriptions.SubscriptionService`
with :class:`kizuna.ngsild.subscriptions.CsourceSubscriptions`. Both kinds of change are told to
a :class:`CsourceNotifier`, which sends the csource notifications (:mod:`kizuna.notify.csource`).

Members whose names start with ``_`` are bookkeeping and never leave the node.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from kizuna.access import ownership
from kizuna.access.subject import Subject
from kizuna.errors import AlreadyExists, BadRequestData, HiddenResource, ResourceNotFound
from kizuna.jsonld.contexts import ContextValue
from kizuna.jsonld.terms import TermMap
from kizuna.ngsild.checks import Checks
from kizuna.ngsild.model import check_geometry, check_name, is_datetime, is_uri, parse_scope
from kizuna.ngsild.subscription_members import Subscription, key_values
from kizuna.ngsild.tenants import require_tenant
from kizuna.outbound import OutboundGate
from kizuna.store import Store, WriteTransaction
from kizuna.times import now_iso, parse_instant

if TYPE_CHECKING:  # csource_matching reads this module's members: only the type goes this way
    from kizuna.ngsild.csource_matching import RegistrationFilter

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
# Type and attribute discovery (clause 5.7.5-5.7.10), forwarded as in clause 4.3.6.
DISCOVERY = frozenset(
    {
        "retrieveEntityTypes",
        "retrieveEntityTypeDetails",
        "retrieveEntityTypeInfo",
        "retrieveAttrTypes",
        "retrieveAttrTypeDetails",
        "retrieveAttrTypeInfo",
    }
)
OPERATIONS = (
    OPERATION_GROUPS
    | ENTITY_WRITES
    | BATCH_WRITES
    | DISCOVERY
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
MANAGEMENT_MEMBERS = frozenset({"localOnly", "cacheDuration", "timeout", "cooldown"})


# -- validation ------------------------------------------------------------------------------------


CHECKS = Checks("Invalid context source registration")
_bad = CHECKS.bad


def _expanded_names(value: Any, where: str, terms: TermMap) -> list[str]:
    if not isinstance(value, list) or not value:
        raise _bad(f"{where} must be a non-empty array of names")
    return [terms.expand(check_name(name, f"{where} item")) for name in value]


def _entity_info(value: Any, terms: TermMap) -> dict[str, str]:
    return CHECKS.entity_selector(
        value,
        "EntityInfo",
        "EntityInfo ",
        not_object="each item of information[].entities must be an object",
        type_of=lambda name: terms.expand(check_name(name, "EntityInfo type")),
    )


def _registration_info(value: Any, terms: TermMap) -> dict[str, Any]:
    CHECKS.members(
        value,
        {"entities", "propertyNames", "relationshipNames"},
        "RegistrationInfo",
        not_object="each item of information must be an object",
    )
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
    CHECKS.members(value, MANAGEMENT_MEMBERS, "management", not_object="management must be an object")
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
        return CHECKS.string(value, name)
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
    """The whole registration, after a create or an update: an update may make a registration
    exclusive, or take an exclusive registration's attribute names away."""
    for name in MANDATORY:
        if name not in reg:
            raise _bad(f"{name} is mandatory")
    # Clause 4.3.6.3: "An exclusive registration shall always relate to specific Attributes found
    # on a single Entity"; a whole entity can be registered by a redirect registration only.
    if mode_of(reg) == "exclusive" and any(
        "propertyNames" not in info and "relationshipNames" not in info for info in reg["information"]
    ):
        raise _bad("an exclusive registration must name the attributes of each RegistrationInfo")


def _check_registration_id(reg_id: str) -> None:
    if not is_uri(reg_id):
        raise BadRequestData(f"Context source registration id {reg_id!r} is not a URI")


# -- the services ----------------------------------------------------------------------------------


class CsourceNotifier(Protocol):
    """Told of every change, to notify context source subscriptions (clause 5.11.7).

    :class:`kizuna.notify.csource.CsourceNotifier` is the one the node runs; the notify
    package sits above this one, so the services know it only by this shape."""

    async def registration_changed(
        self, tx: WriteTransaction, tenant: str, before: Registration | None, after: Registration | None
    ) -> None:
        """Queue the notifications of a registration change in the transaction that writes it,
        so that the registration and its notifications commit together or not at all."""

    def queued(self) -> None:
        """After that transaction committed: the notifications may go."""

    async def subscription_written(self, tx: WriteTransaction, tenant: str, sub: Subscription) -> None:
        """Queue the initial notification of a new or updated subscription in the transaction
        that writes it, so that the subscription and that notification commit together."""


class RegistrationService:
    """Context source registrations per tenant (clause 5.9) and their discovery (clause 5.10)."""

    def __init__(
        self,
        store: Store,
        *,
        gate: OutboundGate,
        notifier: CsourceNotifier | None = None,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        """``gate`` is the node's one outbound gate: it judges the endpoints a registration names."""
        self.store, self.gate = store, gate
        self.notifier = notifier
        # told the tenant after each change, so that forwarding never uses a stale copy here
        self.on_change = on_change

    @asynccontextmanager
    async def _writing(
        self, tenant: str, before: Registration | None, after: Registration | None
    ) -> AsyncIterator[WriteTransaction]:
        """One transaction for the change the caller writes in it and the csource notifications
        of that change; then the caches and the other processes are told."""
        async with self.store.write(tenant) as tx:
            yield tx
            if self.notifier is not None:
                await self.notifier.registration_changed(tx, tenant, before, after)
        if self.notifier is not None:
            self.notifier.queued()
        if self.on_change is not None:
            self.on_change(tenant)
        await self.store.announce("registrations", tenant)  # to the other processes

    async def create(
        self, tenant: str, subject: Subject, body: Any, terms: TermMap, context: ContextValue
    ) -> str:
        ownership.require_creator(subject, tenant, "context source registrations")
        reg_id = CHECKS.new_resource_id(body, REGISTRATION_TYPE, "context source registration")
        members = {k: v for k, v in parse_registration_members(body, terms).items() if v is not None}
        reg: Registration = {"id": reg_id, "type": REGISTRATION_TYPE, **members}
        check_registration(reg)
        await self.gate.vet(reg["endpoint"], "endpoint")
        if context is not None:
            reg["@context"] = context
        reg["createdAt"] = reg["modifiedAt"] = now_iso()
        reg = ownership.owned(reg, subject)
        async with self._writing(tenant, None, reg) as tx:
            if not await tx.insert_document(REGISTRATION_KIND, reg):
                raise AlreadyExists(f"Context source registration {reg_id} already exists")
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
        async with self._writing(tenant, before, reg) as tx:
            if not await tx.replace_document(REGISTRATION_KIND, reg):
                raise ResourceNotFound(f"Context source registration {reg_id} not found")

    async def delete(self, tenant: str, subject: Subject, reg_id: str) -> None:
        before = await self.retrieve(tenant, subject, reg_id)
        async with self._writing(tenant, before, None) as tx:
            if not await tx.delete_document(REGISTRATION_KIND, reg_id):
                raise ResourceNotFound(f"Context source registration {reg_id} not found")


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
