"""The temporal representation of entities (clauses 4.5.x, 5.6.11-5.6.16, 5.7.3-5.7.4): no HTTP.

History is kept by the store as one row per attribute instance (see ``attribute_history`` in
:mod:`kizuna.store.sqlite`); every instance is a canonical instance of :mod:`kizuna.ngsild.model`
plus its ``instanceId``. Aggregations are computed by the store in SQL, per period bucket.

Choices the standard leaves open, written down:

- ``timerel=before`` selects t < timeAt, ``after`` t > timeAt, ``between`` timeAt <= t < endTimeAt.
- Aggregation periods start at timeAt (after/between) or else at the first instance of each
  series; ``aggrPeriodDuration`` counts a year as 365 days and a month as 30 days; PT0 (or no
  duration) aggregates the whole range into one period.
- ``stddev`` is the sample standard deviation (0 for a single value); numeric aggregates skip
  non-numeric values (booleans count as 0/1); totalCount/distinctCount count every instance.
- Deletion records (value NGSI-LD Null with ``deletedAt``) are only returned with
  ``timeproperty=deletedAt``.
- ``lastN`` keeps the N most recent instances of each attribute (all datasetIds together).
- Instance limit (clause 6.3.10): an answer holds at most ``instance_limit`` instances of each
  attribute (``--temporal-instance-limit``, default 10: the ETSI suite, 020_13/020_14/021_15,
  expects 20 instances of an attribute to be cut and 5 not). Past it the answer is 206 with
  ``Content-Range: date-time <start>-<end>/<lastN or *>`` and every attribute of every entity
  returned is cut at the same time, the earliest truncation (the latest with lastN, which reads
  newest first); ``start`` is the query's own bound in that direction (timeAt, endTimeAt) or else
  the first instance returned. A lastN the limit does not cut is a complete answer (200, 021_03).
  An attribute the cut empties stays, as ``[]`` (020_14, 021_15).
- Creating or updating with an instance observed at the same time as a recorded one of the same
  attribute and datasetId replaces that instance (ETSI 008_01, as peers do).
- A new temporal entity whose entity does not exist also creates the entity, with the latest
  instance of each attribute and datasetId, as the ETSI suite (020_17-020_20) and peers expect,
  though clause 5.6.11 leaves it open; no notification is sent for it. Deleting the scope through
  the entity API records a deletion record ``{"type": "Property", "value": []}`` under ``scope``.
- In temporalValues, LanguageProperty, JsonProperty and VocabProperty values are wrapped in their
  member (``[{"languageMap": {...}}, time]``), as the ETSI suite (020_12, 020_15, 020_16) expects.
- Unknown ``options`` or ``format`` values make the request invalid (InvalidRequest, 021_20);
  pick and omit naming the same member is BadRequestData; a retrieval that pick/omit leave empty
  is 404 (020_23). ``orderBy`` (v1.9) sorts the matching entities by their core members and history.
- ``--history-retention`` (e.g. ``90d``) deletes, periodically, instances whose observedAt (else
  createdAt) is older, and temporal entities left without history.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kizuna import query as ql
from kizuna.access.policy import AccessPolicy
from kizuna.access.subject import Subject
from kizuna.errors import AccessDenied, BadRequestData, NotAuthenticated, ResourceNotFound
from kizuna.jsonld.terms import TermMap
from kizuna.ngsild import model
from kizuna.ngsild.merging import InstanceChoice
from kizuna.ngsild.temporal_params import InstanceRange, TemporalParams, parse_datetime, time_of
from kizuna.ngsild.tenants import require_tenant
from kizuna.store import AggregateSeries, Entity, HistoryQuery, Store
from kizuna.times import now_iso
from kizuna.turns import let_others_run

Instance = dict[str, Any]
INSTANCE_PREFIX = "urn:ngsi-ld:attribute:instance:"
INSTANCE_LIMIT = 10
READ_CHUNK = 200  # temporal entities read (aggregated) at once by a query


# -- parameters ------------------------------------------------------------------------------------


# -- input: the temporal representation ------------------------------------------------------------


def parse_temporal_attributes(body: dict[str, Any], terms: TermMap, now: str) -> dict[str, list[Instance]]:
    """Attributes of a temporal representation: each is an array of instances (or one instance)."""
    attributes: dict[str, list[Instance]] = {}
    for name, raw in body.items():
        if name in model.ENTITY_MEMBERS or name in ("@id", "@type"):
            continue
        iri = terms.expand(model.check_name(name))
        items = raw if isinstance(raw, list) and raw and all(isinstance(i, dict) for i in raw) else [raw]
        attributes[iri] = [model.parse_instance(iri, item, terms, now) for item in items]
    return attributes


def parse_temporal_entity(
    body: Any, terms: TermMap, now: str
) -> tuple[str, list[str] | None, list[str] | None, dict[str, list[Instance]]]:
    if not isinstance(body, dict):
        raise BadRequestData("A temporal entity must be a JSON object")
    entity_id = model.check_entity_id(body.get("id", body.get("@id")))
    raw_type = body.get("type", body.get("@type"))
    types = model.expand_types(raw_type, terms) if raw_type is not None else None
    scope = model.parse_scope(body["scope"]) if "scope" in body else None
    return entity_id, types, scope, parse_temporal_attributes(body, terms, now)


def current_state(
    entity_id: str, types: list[str], scope: list[str] | None, attributes: dict[str, list[Instance]], now: str
) -> Entity:
    """The entity a new temporal entity stands for: of each attribute and datasetId, the instance
    observed last (the last given when none has observedAt)."""
    entity: Entity = {"id": entity_id, "type": list(types)}
    if scope is not None:
        entity["scope"] = scope
    entity["createdAt"] = entity["modifiedAt"] = now
    for iri, instances in attributes.items():
        latest: dict[str | None, Instance] = {}
        for instance in instances:
            key = instance.get("datasetId")
            held = latest.get(key)
            if held is None or instance.get("observedAt", "") >= held.get("observedAt", ""):
                latest[key] = instance
        entity[iri] = list(latest.values())
    return entity


# -- the service -----------------------------------------------------------------------------------


@dataclass(slots=True)
class TemporalEntity:
    """One entity's temporal evolution as read: its core members and the selected history."""

    core: Entity
    attributes: dict[str, list[Instance]] = field(default_factory=dict)
    aggregates: list[AggregateSeries] = field(default_factory=list)
    kinds: dict[str, str] = field(default_factory=dict)
    cut: float | None = None  # where the instance limit truncated this entity's history

    def merged(self) -> Entity:
        """Core members and history together, as q, geoQ and orderBy look at them."""
        return {**self.core, **self.attributes}


@dataclass(slots=True)
class TemporalFilter:
    """Which temporal entities a query selects: store-side narrowing plus entity predicates."""

    types: list[str] | None = None
    ids: list[str] | None = None
    id_pattern: str | None = None
    predicate: Callable[[Entity], bool] | None = None
    require_attributes: bool = False
    order_by: ql.OrderBy | None = None


@dataclass(slots=True)
class TemporalPage:
    """A page of temporal entities: ``total`` if counted, whether more follow, and the instance
    range when the instance limit truncated the history (206 Partial Content)."""

    entities: list[TemporalEntity]
    total: int | None = None
    more: bool = False
    range: InstanceRange | None = None


class TemporalService:
    """Histories are read as the entities are: a subject reads the history of an entity it may
    read now. Writing history directly (this API's writes) is for admins: it rewrites the past."""

    def __init__(self, store: Store, policy: AccessPolicy, *, instance_limit: int = INSTANCE_LIMIT) -> None:
        self.store = store
        self.policy = policy
        self.instance_limit = instance_limit

    async def _require_admin(self, tenant: str, subject: Subject) -> None:
        if subject.is_admin(tenant):
            return
        if not subject.authenticated:
            raise NotAuthenticated("Writing temporal history needs credentials")
        raise AccessDenied("Writing temporal history directly needs the kizuna-admin role")

    # -- provision -------------------------------------------------------------------------------

    async def create_or_update(
        self, tenant: str, subject: Subject, body: Any, terms: TermMap
    ) -> tuple[str, bool]:
        """POST /temporal/entities (clause 5.6.11): True if the temporal entity was created."""
        await self._require_admin(tenant, subject)
        now = now_iso()
        entity_id, types, scope, attributes = parse_temporal_entity(body, terms, now)
        async with self.store.write(tenant) as tx:
            current = await tx.temporal_entity(entity_id)
            if current is None and types is None:
                raise BadRequestData("Entity type is missing")
            all_types = types or current["type"]  # type: ignore[index]
            created = await tx.touch_temporal_entity(entity_id, all_types, scope, now)
            for iri, instances in attributes.items():
                for instance in instances:
                    await self._record(tenant, tx, entity_id, all_types, iri, instance)
            if created and await tx.get(entity_id) is None:
                await tx.insert(current_state(entity_id, all_types, scope, attributes, now))
        return entity_id, created

    async def _record(
        self, tenant: str, tx: Any, entity_id: str, types: list[str], iri: str, instance: Instance
    ) -> None:
        """Append an instance, or replace the one of the same datasetId observed at the same time."""
        observed = instance.get("observedAt")
        if observed is not None:
            at = parse_datetime(observed, "observedAt")
            dataset = frozenset({instance.get("datasetId")})
            same = HistoryQuery(attributes=[iri], start=at, end=at + 0.0005, dataset_ids=dataset)
            for _, existing in await self.store.read_history(tenant, entity_id, same):
                instance["createdAt"] = existing.get("createdAt", instance.get("createdAt"))
                await tx.update_history_instance(entity_id, iri, existing["instanceId"], instance)
                return
        await tx.append_history(entity_id, types, iri, instance)

    async def append_attributes(
        self, tenant: str, subject: Subject, entity_id: str, body: Any, terms: TermMap
    ) -> None:
        """POST /temporal/entities/{id}/attrs (clause 5.6.12)."""
        await self._require_admin(tenant, subject)
        model.check_entity_id(entity_id)
        if not isinstance(body, dict):
            raise BadRequestData("The attributes fragment must be a JSON object")
        if "id" in body and body["id"] != entity_id:
            raise BadRequestData("The fragment's id does not match the entity id in the path")
        now = now_iso()
        types = model.expand_types(body["type"], terms) if "type" in body else []
        attributes = parse_temporal_attributes(body, terms, now)
        await require_tenant(self.store, tenant, subject, writing=True)
        async with self.store.write(tenant) as tx:
            current = await tx.temporal_entity(entity_id)
            if current is None:
                raise ResourceNotFound(f"Temporal entity {entity_id} does not exist")
            scope = model.parse_scope(body["scope"]) if "scope" in body else None
            await tx.touch_temporal_entity(entity_id, types, scope, now)
            for iri, instances in attributes.items():
                for instance in instances:
                    await self._record(tenant, tx, entity_id, current["type"], iri, instance)

    async def delete_entity(self, tenant: str, subject: Subject, entity_id: str) -> None:
        """DELETE /temporal/entities/{id} (clause 5.6.16).

        The entity goes with its history: a temporal create makes the entity (as peers and the
        ETSI suite expect), so the temporal delete removes it too, and deleting twice through
        both APIs (the suite's delete_temporal_on_core_delete) leaves nothing behind."""
        await self._require_admin(tenant, subject)
        model.check_entity_id(entity_id)
        await require_tenant(self.store, tenant, subject, writing=True)
        async with self.store.write(tenant) as tx:
            if await tx.temporal_entity(entity_id) is None:
                raise ResourceNotFound(f"Temporal entity {entity_id} does not exist")
            await tx.delete_history(entity_id)
            await tx.delete(entity_id)

    async def delete_attribute(
        self, tenant: str, subject: Subject, entity_id: str, name: str, terms: TermMap, which: InstanceChoice
    ) -> None:
        """DELETE /temporal/entities/{id}/attrs/{attrId} (clause 5.6.13)."""
        await self._require_admin(tenant, subject)
        model.check_entity_id(entity_id)
        iri = terms.expand(model.check_name(name))
        which.check()
        await require_tenant(self.store, tenant, subject, writing=True)
        async with self.store.write(tenant) as tx:
            if await tx.temporal_entity(entity_id) is None:
                raise ResourceNotFound(f"Temporal entity {entity_id} does not exist")
            if not await tx.delete_history(entity_id, iri, which.dataset_id, all_datasets=which.every):
                raise ResourceNotFound(f"Temporal entity {entity_id} has no history of attribute {name}")

    async def modify_instance(
        self,
        tenant: str,
        subject: Subject,
        entity_id: str,
        name: str,
        instance_id: str,
        body: Any,
        terms: TermMap,
    ) -> None:
        """PATCH /temporal/entities/{id}/attrs/{attrId}/{instanceId} (clause 5.6.14)."""
        await self._require_admin(tenant, subject)
        iri, _ = self._instance_target(entity_id, name, instance_id, terms)
        if not isinstance(body, dict) or not body:
            raise BadRequestData("The attribute instance fragment must be a non-empty JSON object")
        if not model._looks_like_instance(body) and len(body) == 1:
            ((key, inner),) = body.items()
            if terms.expand(key) != iri or not isinstance(inner, dict):
                raise BadRequestData(f"The fragment names attribute {key}, not {name}")
            body = inner
        now = now_iso()
        await require_tenant(self.store, tenant, subject, writing=True)
        async with self.store.write(tenant) as tx:
            current = await self._instance(tenant, entity_id, iri, name, instance_id)
            raw = {k: v for k, v in body.items() if k != "instanceId"}
            if "type" not in raw and not any(m in raw for m in model.KIND_OF_MEMBER):
                raw = {**{k: v for k, v in current.items() if k in model.KIND_OF_MEMBER}, **raw}
            instance = model.parse_instance(iri, {"type": current["type"], **raw}, terms, now)
            if "datasetId" in current and "datasetId" not in instance:
                instance["datasetId"] = current["datasetId"]
            instance["createdAt"] = current.get("createdAt", now)
            if not await tx.update_history_instance(entity_id, iri, instance_id, instance):
                raise ResourceNotFound(f"Attribute {name} has no instance {instance_id}")

    async def delete_instance(
        self, tenant: str, subject: Subject, entity_id: str, name: str, instance_id: str, terms: TermMap
    ) -> None:
        """DELETE /temporal/entities/{id}/attrs/{attrId}/{instanceId} (clause 5.6.15)."""
        await self._require_admin(tenant, subject)
        iri, _ = self._instance_target(entity_id, name, instance_id, terms)
        await require_tenant(self.store, tenant, subject, writing=True)
        async with self.store.write(tenant) as tx:
            await self._instance(tenant, entity_id, iri, name, instance_id)
            if not await tx.delete_history_instance(entity_id, iri, instance_id):
                raise ResourceNotFound(f"Attribute {name} has no instance {instance_id}")

    def _instance_target(
        self, entity_id: str, name: str, instance_id: str, terms: TermMap
    ) -> tuple[str, str]:
        model.check_entity_id(entity_id)
        iri = terms.expand(model.check_name(name))
        if not model.is_uri(instance_id):
            raise BadRequestData(f"instanceId must be a URI, not {instance_id!r}")
        return iri, instance_id

    async def _instance(self, tenant: str, entity_id: str, iri: str, name: str, instance_id: str) -> Instance:
        if await self.store.get_temporal_entity(tenant, entity_id) is None:
            raise ResourceNotFound(f"Temporal entity {entity_id} does not exist")
        found: Instance | None = None
        seen = False
        for timeproperty in ("observedAt", "deletedAt"):
            for _, instance in await self.store.read_history(
                tenant, entity_id, HistoryQuery(attributes=[iri], timeproperty=timeproperty)
            ):
                seen = True
                if instance["instanceId"] == instance_id:
                    found = instance
        if not seen:
            raise ResourceNotFound(f"Temporal entity {entity_id} has no history of attribute {name}")
        if found is None:
            raise ResourceNotFound(f"Attribute {name} has no instance {instance_id}")
        return found

    # -- consumption -----------------------------------------------------------------------------

    async def retrieve(
        self, tenant: str, subject: Subject, entity_id: str, params: TemporalParams
    ) -> TemporalEntity:
        """GET /temporal/entities/{id} (clause 5.7.3)."""
        model.check_entity_id(entity_id)
        await require_tenant(self.store, tenant, subject)
        core = await self.store.get_temporal_entity(tenant, entity_id)
        guard = await self.policy.guard(tenant, subject)
        if core is None or not await self.policy.readable_ids(guard, [entity_id]):
            raise ResourceNotFound(f"Temporal entity {entity_id} does not exist")
        entity = await self._read(tenant, core, params)
        wanted = params.history.attributes
        # Only an empty read asks whether the entity has any of the attributes at all.
        if wanted is not None and not (entity.attributes or entity.aggregates):
            known = set(await self.store.history_attributes(tenant, entity_id))
            if not known & set(wanted):
                raise ResourceNotFound(f"Temporal entity {entity_id} has none of the attributes asked for")
        return TemporalPage([entity], range=self._cut([entity], params))

    async def query(
        self,
        tenant: str,
        subject: Subject,
        selection: TemporalFilter,
        params: TemporalParams,
        *,
        limit: int,
        offset: int,
        count: bool,
    ) -> TemporalPage:
        """GET /temporal/entities and POST /temporal/entityOperations/query (clause 5.7.4)."""
        await require_tenant(self.store, tenant, subject)
        cores = await self.store.query_temporal_entities(
            tenant, selection.types, selection.ids, selection.id_pattern
        )
        guard = await self.policy.guard(tenant, subject)
        if not guard.unrestricted:  # before paging, so that pages and counts are of what it may read
            readable = await self.policy.readable_ids(guard, [core["id"] for core in cores])
            cores = [core for core in cores if core["id"] in readable]
        # Without orderBy or count, reading stops one entity past the page (to know of a next one).
        everything = count or selection.order_by is not None
        # q, geoQ and orderBy look at the latest instances, also of aggregated entities.
        latest = selection.predicate is not None or selection.order_by is not None
        matched: list[TemporalEntity] = []
        position = 0
        while position < len(cores) and (everything or len(matched) <= offset + limit):
            # Read as many as could still be needed, at most a chunk at a time.
            wanted = len(cores) if everything else offset + limit + 1 - len(matched)
            chunk = cores[position : position + min(wanted, READ_CHUNK)]
            if position:
                await let_others_run()  # between two chunks of a long read
            position += len(chunk)
            for entity in await self._read_many(tenant, chunk, params, latest=latest):
                if selection.require_attributes and not (entity.attributes or entity.aggregates):
                    continue
                if selection.predicate is not None and not selection.predicate(entity.merged()):
                    continue
                matched.append(entity)
                if not everything and len(matched) > offset + limit:
                    break
        if selection.order_by is not None:
            by_id = {entity.core["id"]: entity for entity in matched}
            matched = [by_id[e["id"]] for e in selection.order_by.sort([e.merged() for e in matched])]
        page = matched[offset : offset + limit]
        return TemporalPage(
            page,
            total=len(matched) if count else None,
            more=len(matched) > offset + limit,
            range=self._cut(page, params),
        )

    async def _read_many(
        self, tenant: str, cores: list[Entity], params: TemporalParams, *, latest: bool = False
    ) -> list[TemporalEntity]:
        """:meth:`_read` of several entities; aggregations of all of them in one store call.
        ``latest``: aggregated entities also get the latest instance of each attribute."""
        if params.form != "aggregatedValues":
            bounded = self._bounded(params.history)
            found = await self.store.read_histories(tenant, [core["id"] for core in cores], bounded)
            return [self._limited(core, found.get(core["id"], []), params) for core in cores]
        history = params.history
        aggregated = await self.store.aggregate_histories(
            tenant,
            [core["id"] for core in cores],
            history,
            params.aggr_methods,
            params.aggr_period,
            params.aggr_origin,
        )
        entities = {core["id"]: TemporalEntity(core) for core in cores}
        for series in aggregated:
            entity = entities[series.entity_id]
            entity.aggregates.append(series)
            if series.kind is not None:
                entity.kinds.setdefault(series.attribute, series.kind)
        if latest:
            # The instances q, geoQ and orderBy look at: the latest of each attribute.
            newest = HistoryQuery(**{**_fields(history), "last_n": 1})
            found = await self.store.read_histories(tenant, list(entities), newest)
            for entity_id, rows in found.items():
                entity = entities[entity_id]
                for iri, instance in rows:
                    entity.attributes.setdefault(iri, []).append(instance)
                    entity.kinds.setdefault(iri, instance["type"])
        return list(entities.values())

    async def _read(self, tenant: str, core: Entity, params: TemporalParams) -> TemporalEntity:
        return (await self._read_many(tenant, [core], params))[0]

    def _bounded(self, history: HistoryQuery) -> HistoryQuery:
        """The history query with the instance limit (clause 6.3.10) applied: one more than the
        limit tells what was truncated."""
        bounded = HistoryQuery(**_fields(history))
        if history.last_n is not None:
            bounded.last_n = min(history.last_n, self.instance_limit + 1)
        else:
            bounded.first_n = self.instance_limit + 1
        return bounded

    def _limited(
        self, core: Entity, rows: list[tuple[str, Instance]], params: TemporalParams
    ) -> TemporalEntity:
        """An entity from the instances :meth:`_bounded` read, cut to the instance limit."""
        entity = TemporalEntity(core)
        for iri, instance in rows:
            entity.attributes.setdefault(iri, []).append(instance)
            entity.kinds.setdefault(iri, instance["type"])
        self._limit(entity, params)
        return entity

    def _limit(self, entity: TemporalEntity, params: TemporalParams) -> None:
        """Cut each attribute's instances (oldest first) to the instance limit, noting in
        ``entity.cut`` where the earliest (latest, with lastN) cut fell."""
        limit = self.instance_limit
        newest = params.history.last_n is not None
        timeproperty = params.history.timeproperty
        for iri, instances in entity.attributes.items():
            if len(instances) <= limit:
                continue
            # Instances come oldest first: lastN keeps the newest ones, otherwise the oldest.
            kept = instances[-limit:] if newest else instances[:limit]
            entity.attributes[iri] = kept
            bound = _seconds(kept[0 if newest else -1], timeproperty)
            if entity.cut is None or (bound > entity.cut if newest else bound < entity.cut):
                entity.cut = bound

    def limited(self, entities: list[TemporalEntity], params: TemporalParams) -> InstanceRange | None:
        """The instance limit (clause 6.3.10) on histories merged from several nodes (a
        federated read): each node cut its own, the merged whole is cut again the same way;
        the range of the answer, or None if nothing was cut."""
        for entity in entities:
            self._limit(entity, params)
        return self._cut(entities, params)

    def _cut(self, entities: list[TemporalEntity], params: TemporalParams) -> InstanceRange | None:
        """Cut every entity's history at the earliest truncation (latest with lastN), so the
        answer covers one time range for all attributes; the range, or None if nothing was cut."""
        newest = params.history.last_n is not None
        cuts = [e.cut for e in entities if e.cut is not None]
        if not cuts:
            return None
        cut = max(cuts) if newest else min(cuts)
        timeproperty = params.history.timeproperty
        times: list[float] = []
        for entity in entities:
            for iri, instances in entity.attributes.items():
                timed = [(_seconds(i, timeproperty), i) for i in instances]
                kept = [(t, i) for t, i in timed if (t >= cut if newest else t <= cut)]
                entity.attributes[iri] = [i for _, i in kept]
                times += [t for t, _ in kept]
        # The range runs in the direction of reading: from the query's own bound if it has one.
        if newest:
            bound = {"before": params.time_at, "between": params.end_time_at}.get(params.timerel or "")
            start = max(times, default=cut) if bound is None else bound
            return InstanceRange(start, cut, params.history.last_n)
        bound = params.time_at if params.timerel in ("after", "between") else None
        return InstanceRange(min(times, default=cut) if bound is None else bound, cut, None)


def _fields(history: HistoryQuery) -> dict[str, Any]:
    return {name: getattr(history, name) for name in HistoryQuery.__slots__}


def _seconds(instance: Instance, timeproperty: str) -> float:
    return parse_datetime(time_of(instance, timeproperty), timeproperty)
