"""Which subscriptions a committed entity change concerns, decided inside the write transaction.

The tenant's subscriptions are compiled once (entity selectors, watched attribute IRIs, ``q``
resolved through the @context it was written with, geoQ, scopeQ) and cached per tenant. The
cache is keyed by the store's subscription version, read inside the write transaction, so a
subscription committed by any process before a write is always seen by that write. The store's
change feed (:data:`kizuna.store.ChangeListener`) calls :meth:`SubscriptionCache.invalidate` as
well, so that the compiled copies of a changed tenant are dropped at once in every process.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import orjson

from kizuna import query as ql
from kizuna.access.ownership import reader_of
from kizuna.access.subject import Subject
from kizuna.jsonld.contexts import ContextRegistry
from kizuna.ngsild.model import SYSTEM_MEMBERS
from kizuna.patterns import compile_pattern
from kizuna.store import AccessFilter, Entity, EntityQuery, WriteTransaction
from kizuna.times import epoch

log = logging.getLogger("kizuna.notify")
_CORE = frozenset({"id", "type", "scope", "@context"} | SYSTEM_MEMBERS)
# One notification per change and subscription: the most specific trigger that fired.
TRIGGER_ORDER = (
    "entityCreated",
    "entityDeleted",
    "attributeCreated",
    "attributeUpdated",
    "attributeDeleted",
    "entityUpdated",
)


@dataclass(slots=True)
class Selector:
    entity_id: str | None
    pattern: Any  # a compiled RE2 pattern (kizuna.patterns), or None
    types: ql.TypeExpr

    def matches(self, entity: Entity) -> bool:
        if self.entity_id is not None and entity["id"] != self.entity_id:
            return False
        if self.pattern is not None and self.pattern.search(entity["id"]) is None:
            return False
        return self.types.matches(entity.get("type", []))


@dataclass(slots=True)
class Compiled:
    """A subscription ready for matching: everything resolved to IRIs and parsed once."""

    id: str
    triggers: frozenset[str]
    selectors: list[Selector] | None
    watched: frozenset[str] | None
    q: ql.QExpr | None
    geoq: ql.GeoQuery | None
    scope: ql.ScopeExpr | None
    expires: float | None
    active: bool
    show_changes: bool
    owner: Subject  # it notifies only what its owner may read
    # Subscriptions with the same entity selection (entities, q, geoQ, scopeQ) share one
    # evaluation per change, and those with the same watched attributes and triggers one trigger.
    select_key: bytes = b""

    def live(self, now: float) -> bool:
        return self.active and (self.expires is None or self.expires > now)

    def store_query(self, access: AccessFilter | None) -> EntityQuery:
        """The entities this subscription selects, as a store query: its types (and ids, when
        every EntityInfo names one) narrow through the store's indexes, so a subscription on a
        type that matches nothing reads nothing; the rest is checked on what they find."""
        types = ids = None
        if self.selectors is not None:
            types = sorted(set().union(*(s.types.names() for s in self.selectors)))
            if all(s.entity_id is not None for s in self.selectors):
                ids = sorted({s.entity_id for s in self.selectors if s.entity_id is not None})
        return EntityQuery(types=types, ids=ids, predicate=self.selects, access=access)

    def selects(self, entity: Entity) -> bool:
        if self.selectors is not None and not any(s.matches(entity) for s in self.selectors):
            return False
        if self.q is not None and not ql.matches(self.q, entity):
            return False
        if self.scope is not None and not self.scope.matches(entity):
            return False
        if self.geoq is not None:
            instances = entity.get(self.geoq.geoproperty) or []
            if not any(isinstance(i.get("value"), dict) and self.geoq.matches(i["value"]) for i in instances):
                return False
        return True

    def trigger_for(self, change: Change) -> str | None:
        if change.before is None:
            fired = {"entityCreated"}
            if self.watched is None or self.watched & change.created:
                fired.add("attributeCreated")
        elif change.after is None:
            # The attributes of a deleted entity are deleted with it (ETSI 046_22_12).
            fired = {"entityDeleted"}
            if self.watched is None or self.watched & change.deleted:
                fired.add("attributeDeleted")
        else:
            fired = set()
            w = self.watched
            created = change.created if w is None else change.created & w
            updated = change.updated if w is None else change.updated & w
            gone = change.deleted | change.partly_deleted.keys()
            deleted = gone if w is None else gone & w
            if created:
                fired.add("attributeCreated")
            if updated:
                fired.add("attributeUpdated")
            if deleted:
                fired.add("attributeDeleted")
            if created or updated or deleted or (w is None and change.core_changed):
                fired.add("entityUpdated")
        for trigger in TRIGGER_ORDER:
            if trigger in fired and trigger in self.triggers:
                return trigger
        return None


class Change:
    """What one write did to one entity: attribute IRIs created, updated and deleted."""

    __slots__ = ("after", "before", "core_changed", "created", "deleted", "partly_deleted", "updated")

    def __init__(self, before: Entity | None, after: Entity | None) -> None:
        self.before = before
        self.after = after
        old = _attributes(before)
        new = _attributes(after)
        self.created = frozenset(new.keys() - old.keys())
        self.deleted = frozenset(old.keys() - new.keys())
        self.updated = frozenset(k for k in new.keys() & old.keys() if new[k] != old[k])
        # Instances (by datasetId) removed from an attribute that keeps others.
        self.partly_deleted: dict[str, list[Any]] = {}
        for k in self.updated:
            kept = {i.get("datasetId") for i in new[k]}
            gone = [i for i in old[k] if i.get("datasetId") not in kept]
            if gone:
                self.partly_deleted[k] = gone
        self.core_changed = (
            before is not None
            and after is not None
            and (before.get("type") != after.get("type") or before.get("scope") != after.get("scope"))
        )


def _attributes(entity: Entity | None) -> dict[str, Any]:
    if entity is None:
        return {}
    return {k: v for k, v in entity.items() if k not in _CORE}


async def compile_subscription(sub: dict[str, Any], contexts: ContextRegistry) -> Compiled | None:
    """None for subscriptions change matching never concerns (periodic ones)."""
    if "timeInterval" in sub:
        return None
    selectors = None
    if "entities" in sub:
        selectors = [
            Selector(
                s.get("id"),
                compile_pattern(s["idPattern"]) if "idPattern" in s else None,
                ql.parse_type_expr(s["type"]),
            )
            for s in sub["entities"]
        ]
    q = None
    if "q" in sub:
        terms = await contexts.term_map(sub.get("_qContext"))
        # A q written as in a URL (``name=="Eiffel%20Tower"``, ETSI 046_05) means what it would there.
        text = unquote(sub["q"]) if "%" in sub["q"] else sub["q"]
        q = ql.parse_q(text).resolve(terms.expand)
    geoq = None
    if "geoQ" in sub:
        g = sub["geoQ"]
        geoq = ql.parse_geoq(g["georel"], g["geometry"], g["coordinates"], g.get("geoproperty"))
        if "geoproperty" not in g:
            terms = await contexts.term_map(sub.get("@context"))
            geoq = ql.GeoQuery(
                geoq.georel,
                geoq.geometry,
                terms.expand(geoq.geoproperty),
                geoq.max_distance,
                geoq.min_distance,
            )
    watched = frozenset(sub["watchedAttributes"]) if "watchedAttributes" in sub else None
    return Compiled(
        id=sub["id"],
        triggers=frozenset(sub.get("notificationTrigger", ("attributeCreated", "attributeUpdated"))),
        selectors=selectors,
        watched=watched,
        q=q,
        geoq=geoq,
        scope=ql.parse_scope_q(sub["scopeQ"]) if "scopeQ" in sub else None,
        expires=epoch(sub["expiresAt"]) if "expiresAt" in sub else None,
        active=sub.get("isActive", True) is not False,
        show_changes=bool(sub.get("notification", {}).get("showChanges")),
        owner=reader_of(sub),
        select_key=orjson.dumps(
            [sub.get(k) for k in ("entities", "q", "_qContext", "geoQ", "scopeQ")],
            option=orjson.OPT_SORT_KEYS,
        ),
    )


class SubscriptionCache:
    """Compiled subscriptions per tenant, valid for one subscription version."""

    def __init__(self, contexts: ContextRegistry) -> None:
        self.contexts = contexts
        self._tenants: dict[str, tuple[int, list[Compiled]]] = {}

    def invalidate(self, tenant: str | None = None) -> None:
        if tenant is None:
            self._tenants.clear()
        else:
            self._tenants.pop(tenant, None)

    async def for_transaction(self, tenant: str, tx: WriteTransaction) -> list[Compiled]:
        version = await tx.subscription_version()
        cached = self._tenants.get(tenant)
        if cached is not None and cached[0] == version:
            return cached[1]
        subs = await tx.subscriptions()
        compiled = []
        for sub in subs:
            try:
                c = await compile_subscription(sub, self.contexts)
            except Exception:  # a subscription that cannot be compiled must not block writes
                log.exception("subscription %s cannot be matched", sub.get("id"))
                continue
            if c is not None:
                compiled.append(c)
        self._tenants[tenant] = (version, compiled)
        return compiled


def outbox_rows(
    subs: list[Compiled], before: Entity | None, after: Entity | None
) -> list[tuple[str, str, str, bytes]]:
    """The outbox rows one entity change owes: (subscription id, entity id, trigger, payload)."""
    if not subs or (before is None and after is None):
        return []
    now = time.time()
    change: Change | None = None
    entity = after if after is not None else before
    assert entity is not None
    rows: list[tuple[str, str, str, bytes]] = []
    payloads: dict[tuple[str, bool], bytes] = {}
    selected: dict[bytes, bool] = {}
    triggered: dict[tuple[frozenset[str] | None, frozenset[str]], str | None] = {}
    for sub in subs:
        if not sub.live(now):
            continue
        chosen = selected.get(sub.select_key)
        if chosen is None:
            chosen = selected[sub.select_key] = sub.selects(entity)
        if not chosen:
            continue
        if change is None:
            change = Change(before, after)
        key_t = (sub.watched, sub.triggers)
        if key_t in triggered:
            trigger = triggered[key_t]
        else:
            trigger = triggered[key_t] = sub.trigger_for(change)
        if trigger is None:
            continue
        key = (trigger, sub.show_changes)
        payload = payloads.get(key)
        if payload is None:
            doc: dict[str, Any] = {"entity": entity}
            if after is None:
                doc["gone"] = True
            if trigger == "attributeDeleted" and before is not None:
                doc["deleted"] = {k: before[k] for k in change.deleted} | change.partly_deleted
            if sub.show_changes and before is not None:
                doc["previous"] = {k: before[k] for k in change.updated | change.deleted}
            payload = payloads[key] = orjson.dumps(doc)
        rows.append((sub.id, entity["id"], trigger, payload))
    return rows
