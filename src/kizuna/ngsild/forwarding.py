"""Distributed operations (GS CIM 009 clause 4.3.6): entity reads and writes across context sources.

A context source registration (clause 5.2.9) says that a source holds some entities or
attributes. When one matches a request, the request goes to the source too, per the
registration's ``mode``:

- ``inclusive`` (the default): the source adds to the node. Reads merge both; for one attribute
  instance (same ``datasetId``) held on both sides the more recent ``observedAt`` wins. Writes
  happen here and at the source.
- ``exclusive`` and ``redirect``: the source is the authority for what it registers (the named
  attributes, or the whole entity): reads take its instances over local ones, writes of what
  it registers go to it only (redirect registrations are expected to register whole entities).
- ``auxiliary``: the source only fills gaps in reads and never takes writes.

Only registrations whose ``operations`` allow the operation take part (``retrieveEntity``,
``queryEntity`` for ``GET /entities``, ``queryBatch`` for ``POST /entityOperations/query``,
``retrieveTemporal`` and ``queryTemporal`` for the temporal reads (GET and POST), the six
type and attribute discovery operations (``retrieveEntityTypes`` ... ``retrieveAttrTypeInfo``,
merged by :mod:`kizuna.ngsild.discovery`), the clause 5.6 write and batch operations),
directly or through an operation group. Temporal histories merge
attribute by attribute, instances in time order (:func:`merge_history`); ``aggregatedValues``
stays local, since aggregates of several histories cannot be combined. ``local=true``
never forwards. Every forwarded request carries the client's @context (``Link``) and a ``Via``
header naming this node (clause 6.3.18); a request that already names it has looped and is
refused with ``LoopDetected`` (508).

Sources are asked concurrently, each within a short timeout. A read leaves out a source that
fails (logged), since the client asked the node, not the source; a write reports it (207, the
error naming the registration). Read answers become canonical with the @context the source
names (body or ``Link``), else the one the request went with, so everything after this module
sees expanded IRIs only. The node's own share of a write runs first; if it fails, nothing is
forwarded.

Registrations are kept per tenant for ``cache_seconds``, and dropped when any process changes one
(at once in this process, through the store's change feed in the others), so a request that
matches no registration costs a dict lookup, not a store read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import httpx
import orjson

from kizuna import paths
from kizuna.access.subject import Subject
from kizuna.errors import AlreadyExists, InternalError, LoopDetected, NgsiLdError, ResourceNotFound
from kizuna.jsonld.contexts import ContextRegistry, ContextValue
from kizuna.jsonld.terms import TermMap
from kizuna.metrics import FORWARDED
from kizuna.ngsild import csources, model
from kizuna.ngsild.entities import BatchResult, EntityService, in_chunks
from kizuna.ngsild.forwarding_calls import (
    LINK_REL,
    NOT_USABLE,
    SOURCE_ERROR,
    UNREACHED,
    Answer,
    Call,
    Forwarded,
    Origin,
    SourceWarning,
    forwarded_params,
    link_of,
    remote_error,
    types_of,
    write_params,
)
from kizuna.ngsild.forwarding_plan import (
    Target,
    allows,
    any_of,
    merge,
    merge_histories,
    plan_write,
    targets_for,
)
from kizuna.ngsild.merging import attributes_of
from kizuna.ngsild.temporal import (
    TemporalEntity,
    TemporalFilter,
    TemporalPage,
    TemporalService,
    parse_temporal_entity,
)
from kizuna.ngsild.temporal_params import TemporalParams
from kizuna.outbound import (
    DEFAULT_PORTS,
    PASS_THROUGH,
    UNREACHABLE,
    OutboundGate,
    Refused,
    allowed_header,
    summary,
)
from kizuna.store import Entity, EntityQuery, QueryResult, Store
from kizuna.times import now_iso

log = logging.getLogger("kizuna.forwarding")
T = TypeVar("T")


class Federation:
    """Entity reads and writes over this node and the context sources registered with it."""

    def __init__(
        self,
        entities: EntityService,
        store: Store,
        contexts: ContextRegistry,
        *,
        node: str,
        timeout: float = 3.0,
        cache_seconds: float = 1.0,
        gate: OutboundGate | None = None,
        own_addresses: Iterable[str] = (),
        temporal: TemporalService | None = None,
    ) -> None:
        self.entities = entities
        self.temporal = temporal
        self.store = store
        self.contexts = contexts
        self.via = f"1.1 {node}"  # this node in Via headers (clause 6.3.18)
        self.node = node
        self.timeout = timeout
        self.cache_seconds = cache_seconds
        self._registrations: dict[str, tuple[float, list[csources.Registration]]] = {}
        self._client: httpx.AsyncClient | None = None
        self._gate = gate or OutboundGate()
        # host:port forms this node answers at: a registration naming one is never forwarded to.
        self._own = frozenset(a.lower() for a in (node, *own_addresses))

    # -- registrations ---------------------------------------------------------------------------

    def registrations_changed(self, tenant: str | None = None) -> None:
        """Forget the cached registrations of ``tenant`` (all tenants with ``None``)."""
        if tenant is None:
            self._registrations.clear()
        else:
            self._registrations.pop(tenant, None)

    async def _regs(self, tenant: str) -> list[csources.Registration]:
        """The tenant's registrations, read again after ``cache_seconds`` (other processes may
        have changed them) or at once after a change in this process."""
        cached = self._registrations.get(tenant)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.cache_seconds:
            return cached[1]
        regs, _ = await self.store.list_documents(csources.REGISTRATION_KIND, tenant)
        self._registrations[tenant] = (now, regs)
        return regs

    def _check_loop(self, origin: Origin) -> None:
        """Clause 6.3.18: a request whose Via names this node came back through a loop."""
        if origin.via and any(hop.strip() == self.via for hop in origin.via.split(",")):
            raise LoopDetected(f"The request has already passed through this node ({self.node})")

    # -- the operations --------------------------------------------------------------------------

    async def retrieve(self, tenant: str, entity_id: str, types: list[str] | None, origin: Origin) -> Entity:
        """Clause 5.7.1 across the node and the sources registered for the entity."""
        self._check_loop(origin)
        regs = [] if origin.local else await self._regs(tenant)
        if not regs:
            return await self.entities.retrieve(tenant, origin.subject, entity_id, types)
        model.check_entity_id(entity_id)
        type_expr = None if types is None else any_of(types)
        targets = targets_for(regs, "retrieveEntity", ids=[entity_id], types=type_expr)
        if not targets:
            return await self.entities.retrieve(tenant, origin.subject, entity_id, types)
        params = forwarded_params(origin.params)
        path = f"{paths.NGSI_LD}/entities/{quote(entity_id, safe=':')}"
        answers = await asyncio.gather(
            self._local_entity(tenant, origin.subject, entity_id),
            *(self._fetch(Call(t, "GET", path, origin, params)) for t in targets),
        )
        entity = answers[0]
        for target, answer in zip(targets, answers[1:], strict=True):
            for remote in answer:
                if remote["id"] == entity_id:
                    entity = self._merged(entity, remote, target)
        if entity is None or (types is not None and not set(types) & set(entity.get("type", ()))):
            raise ResourceNotFound(f"Entity {entity_id} does not exist")
        return entity

    async def query(
        self, tenant: str, query: EntityQuery, origin: Origin, *, batch: bool = False
    ) -> QueryResult:
        """Clause 5.7.2 (``batch``: clause 5.7.3's POST form) across the node and the sources."""
        self._check_loop(origin)
        regs = [] if origin.local else await self._regs(tenant)
        if not regs:
            return await self.entities.query(tenant, origin.subject, query)
        types = None if not query.types else any_of(query.types)
        targets = targets_for(
            regs,
            "queryBatch" if batch else "queryEntity",
            ids=query.ids,
            types=types,
            id_pattern=query.id_pattern,
            attrs=query.attrs,
        )
        if not targets:
            return await self.entities.query(tenant, origin.subject, query)
        # Every source answers in its own order: page over the merged whole.
        local_query = replace(query, offset=0, count=False)
        if query.limit is not None:
            local_query.limit = query.offset + query.limit
        calls = await self._query_calls(targets, origin, batch, "", self._fetch)
        local, *answers = await asyncio.gather(
            self.entities.query(tenant, origin.subject, local_query), *calls
        )
        merged: dict[str, Entity] = {e["id"]: e for e in local.entities}
        for target, answer in zip(targets, answers, strict=True):
            for remote in answer:
                merged[remote["id"]] = self._merged(merged.get(remote["id"]), remote, target)
        everything = list(merged.values())
        end = None if query.limit is None else query.offset + query.limit
        return QueryResult(everything[query.offset : end], len(everything) if query.count else None)

    async def discover(
        self,
        tenant: str,
        operation: str,
        path: str,
        origin: Origin,
        *,
        types: Sequence[str] | None = None,
        attrs: Sequence[str] | None = None,
    ) -> list[tuple[Any, TermMap]]:
        """Clause 5.7.5-5.7.10 across the sources: the same discovery request (``path``, the
        client's parameters) to every source registered for ``operation`` (and, for one type or
        attribute, registered for it), each answer with the terms of its @context. A source that
        fails is left out and warned about, as for an entity read; the caller merges."""
        self._check_loop(origin)
        regs = [] if origin.local else await self._regs(tenant)
        type_expr = None if types is None else any_of(types)
        targets = targets_for(regs, operation, types=type_expr, attrs=attrs)
        params = forwarded_params(origin.params)
        answers = await asyncio.gather(*(self._get(Call(t, "GET", path, origin, params)) for t in targets))
        return [
            (data, await self.contexts.term_map(context))
            for data, context in (answer for answer in answers if answer is not None)
            if data != []
        ]

    async def temporal_retrieve(
        self, tenant: str, entity_id: str, params: TemporalParams, origin: Origin
    ) -> TemporalPage:
        """Clause 5.7.3 across the node and the sources registered for the entity (operation
        ``retrieveTemporal``), merged as :meth:`retrieve` merges, instance by instance
        (:func:`merge_history`). 404 only when neither the node nor a source has it."""
        temporal = self._temporal_service()
        targets = await self._temporal_targets(tenant, params, origin, "retrieveTemporal", ids=[entity_id])
        if not targets:
            return await temporal.retrieve(tenant, origin.subject, entity_id, params)
        model.check_entity_id(entity_id)
        path = f"{paths.NGSI_LD}/temporal/entities/{quote(entity_id, safe=':')}"
        params_out = forwarded_params(origin.params)
        local, *answers = await asyncio.gather(
            self._local_history(tenant, origin.subject, entity_id, params),
            *(self._fetch_temporal(Call(t, "GET", path, origin, params_out)) for t in targets),
        )
        page = local or TemporalPage([])
        merged = {e.core["id"]: e for e in page.entities}
        merge_histories(merged, targets, answers, params, keep=lambda e: e.core["id"] == entity_id)
        if entity_id not in merged:
            raise ResourceNotFound(f"Temporal entity {entity_id} does not exist")
        entities = [merged[entity_id]]
        return TemporalPage(entities, range=temporal.limited(entities, params) or page.range)

    async def temporal_query(
        self,
        tenant: str,
        selection: TemporalFilter,
        params: TemporalParams,
        origin: Origin,
        *,
        limit: int,
        offset: int,
        count: bool,
        batch: bool = False,
    ) -> TemporalPage:
        """Clause 5.7.4 (``batch``: POST /temporal/entityOperations/query) across the node and
        the sources (operation ``queryTemporal``), merged entity by entity and instance by
        instance, then paged over the whole, as :meth:`query` pages."""
        temporal = self._temporal_service()
        types = None if not selection.types else any_of(selection.types)
        targets = await self._temporal_targets(
            tenant,
            params,
            origin,
            "queryTemporal",
            ids=selection.ids,
            types=types,
            id_pattern=selection.id_pattern,
            attrs=params.history.attributes,
        )
        if not targets:
            return await temporal.query(
                tenant, origin.subject, selection, params, limit=limit, offset=offset, count=count
            )
        calls = await self._query_calls(targets, origin, batch, "/temporal", self._fetch_temporal)
        # Every source answers in its own order: page over the merged whole.
        local, *answers = await asyncio.gather(
            temporal.query(
                tenant, origin.subject, selection, params, limit=offset + limit, offset=0, count=count
            ),
            *calls,
        )
        merged = {e.core["id"]: e for e in local.entities}
        known = set(merged)
        merge_histories(merged, targets, answers, params)
        everything = list(merged.values())
        total = None
        if count:  # the node counted its own; the sources add the entities it does not hold
            total = (local.total or 0) + len(set(merged) - known)
        page = everything[offset : offset + limit]
        return TemporalPage(
            page,
            total=total,
            more=local.more or len(everything) > offset + limit,
            range=temporal.limited(page, params) or local.range,
        )

    async def write(
        self,
        tenant: str,
        operation: str,
        entity_id: str,
        origin: Origin,
        local: Callable[[Any], Awaitable[T]],
        *,
        method: str,
        path: str,
        body: Any = None,
        attrs: Sequence[str] | None = None,
        expand: Callable[[str], str] | None = None,
    ) -> tuple[T | None, Forwarded]:
        """One write of clause 5.6 on ``entity_id`` across the node and the sources.

        ``body`` (the client's, compact) is split by attribute (:func:`plan_write`); ``attrs`` names
        the attribute of a body-less operation, ``expand`` turns the body's names into IRIs. The
        node's share runs first, through ``local`` (given the body left for it). If it fails for
        the node's own state (the entity or attribute exists already, or not at all), the sources
        still get theirs: each holds its own copy (clause 4.3.6.2), and the answer lists every
        failure. A request that is wrong everywhere (a 400) is forwarded nowhere. ``local`` is
        not called when the sources take everything."""
        self._check_loop(origin)
        regs = [] if origin.local else await self._regs(tenant)
        plan = None
        if any(allows(reg, operation) for reg in regs):
            types = types_of(body, expand) or await self._local_types(tenant, entity_id)
            plan = plan_write(regs, operation, entity_id, body, expand, attrs, types)
        if plan is None:
            return await local(body), Forwarded()
        forwarded = Forwarded(local=plan.local is not None)
        result = None
        if plan.local is not None:
            try:
                result = await local(plan.local.body)
            except (AlreadyExists, ResourceNotFound) as error:
                if not plan.remote:
                    raise
                forwarded.local = False
                forwarded.local_error = (plan.local.names, error)
        params = write_params(origin)
        answers = await asyncio.gather(
            *(
                self._send(Call(share.target, method, path, origin, params, share.body))
                for share in plan.remote
            )
        )
        for share, answer in zip(plan.remote, answers, strict=True):
            reg_id = share.target.reg["id"]
            if answer.problem is None:
                forwarded.done.append((reg_id, share.names))
            else:
                forwarded.failed.append((reg_id, share.names, remote_error(answer.problem, reg_id)))
        return result, forwarded

    async def purge(
        self, tenant: str, query: EntityQuery, origin: Origin, local: Callable[[], Awaitable[None]]
    ) -> None:
        """DELETE /entities (clause 5.6.21) here and at the sources registered for what it selects
        that take deletes (auxiliary ones never take writes). The purge has no partial answer: a
        source that fails is logged, as a failing source is left out of a read."""
        self._check_loop(origin)
        regs = [] if origin.local else await self._regs(tenant)
        types = None if not query.types else any_of(query.types)
        targets = [
            target
            for target in targets_for(
                regs, "deleteEntity", ids=query.ids, types=types, id_pattern=query.id_pattern
            )
            if target.mode != "auxiliary"
        ]
        await local()
        params = forwarded_params(origin.params)
        answers = await asyncio.gather(
            *(
                self._send(Call(target, "DELETE", f"{paths.NGSI_LD}/entities", origin, params))
                for target in targets
            )
        )
        for target, answer in zip(targets, answers, strict=True):
            if answer.problem is not None:
                log.warning("context source %s refused the purge: %s", target.reg["id"], answer.problem)

    async def batch(
        self,
        tenant: str,
        operation: str,
        origin: Origin,
        items: Sequence[tuple[Any, Any]],
        local: Callable[[list[tuple[Any, Any]]], Awaitable[BatchResult]],
        *,
        path: str,
    ) -> BatchResult:
        """A batch operation (clauses 5.6.7-5.6.10, 5.6.17) across the node and the sources.

        Each entity of the batch is split as a single write would be (:func:`plan_write`); each
        source then gets one batch request with its shares of every entity, and the node runs
        what is left of the batch through ``local``, a transaction per chunk (:func:`in_chunks`).
        An item is an entity with its TermMap (or the error its @context gave), or for a batch
        delete an entity id.
        The outcome is the node's BatchResult with each source's added: an entity a source
        failed is an error naming the registration."""
        self._check_loop(origin)
        regs = [] if origin.local else await self._regs(tenant)
        if not regs:
            return await in_chunks(list(items), local)
        kept: list[tuple[Any, Any]] = []
        remote: dict[str, tuple[Target, list[Any], list[str]]] = {}
        for item, terms in items:
            entity_id = item.get("id") if isinstance(item, dict) else item
            expand = terms.expand if isinstance(terms, TermMap) and isinstance(item, dict) else None
            plan = None
            if isinstance(entity_id, str) and model.is_uri(entity_id):
                body = item if expand else None
                plan = plan_write(regs, operation, entity_id, body, expand, None, types_of(body, expand))
            if plan is None:
                kept.append((item, terms))
                continue
            if plan.local is not None:
                kept.append((plan.local.body if expand else item, terms))
            for share in plan.remote:
                group = remote.setdefault(share.target.reg["id"], (share.target, [], []))
                group[1].append(share.body if expand else item)
                group[2].append(entity_id)
        result = await in_chunks(kept, local) if kept else BatchResult()
        groups = list(remote.values())
        params = write_params(origin)
        answers = await asyncio.gather(
            *(self._send(Call(target, "POST", path, origin, params, bodies)) for target, bodies, _ in groups)
        )
        failed_ids = {entity_id for entity_id, _ in result.errors}
        for (target, _, ids), answer in zip(groups, answers, strict=True):
            refusals = answer.refusals()
            for entity_id in ids:
                problem = answer.problem if refusals is None else refusals.get(entity_id)
                if problem is not None:
                    result.errors.append((entity_id, remote_error(problem, target.reg["id"])))
                    failed_ids.add(entity_id)
        done = {entity_id for _, _, ids in groups for entity_id in ids} - failed_ids
        result.success.extend(sorted(done - set(result.success)))
        result.success = [entity_id for entity_id in result.success if entity_id not in failed_ids]
        return result

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- helpers ---------------------------------------------------------------------------------

    async def _local_types(self, tenant: str, entity_id: str) -> list[str] | None:
        """The types of the entity as this node holds it, to match registrations by type when
        the request does not say them (``None``: not here, or not an entity id)."""
        if not model.is_uri(entity_id):
            return None
        entity = await self.store.get_entity(tenant, entity_id)
        return None if entity is None else entity.get("type")

    async def _local_entity(self, tenant: str, subject: Subject, entity_id: str) -> Entity | None:
        try:
            return await self.entities.retrieve(tenant, subject, entity_id)
        except ResourceNotFound:
            return None

    def _merged(self, entity: Entity | None, remote: Entity, target: Target) -> Entity:
        """``remote`` merged into ``entity``, keeping only what the registration covers."""
        if target.names:
            remote = {k: v for k, v in remote.items() if k not in attributes_of(remote) or k in target.names}
        if entity is None:
            return remote
        merge(entity, remote, target.mode)
        return entity

    def _temporal_service(self) -> TemporalService:
        if self.temporal is None:
            raise InternalError("This node was built without a temporal service to federate")
        return self.temporal

    async def _temporal_targets(
        self,
        tenant: str,
        params: TemporalParams,
        origin: Origin,
        operation: str,
        **question: Any,
    ) -> list[Target]:
        """The registrations a temporal read goes to. Aggregated values stay local: the
        periods of several nodes' histories cannot be combined from their aggregates."""
        self._check_loop(origin)
        if origin.local or params.form == "aggregatedValues":
            return []
        regs = await self._regs(tenant)
        return targets_for(regs, operation, **question) if regs else []

    async def _local_history(
        self, tenant: str, subject: Subject, entity_id: str, params: TemporalParams
    ) -> TemporalPage | None:
        temporal = self._temporal_service()
        try:
            return await temporal.retrieve(tenant, subject, entity_id, params)
        except ResourceNotFound:
            return None

    async def _query_calls(
        self,
        targets: Sequence[Target],
        origin: Origin,
        batch: bool,
        api: str,
        fetch: Callable[[Call], Awaitable[T]],
    ) -> list[Awaitable[T]]:
        """A query's call to each source, of the entity API (``api`` "") or the temporal one
        ("/temporal"): a POSTed query goes on as posted, a GET with the client's filters and
        what the source's registration restricts it to."""
        calls = []
        for target in targets:
            if batch:
                path = f"{paths.NGSI_LD}{api}/entityOperations/query"
                call = Call(target, "POST", path, origin, body=origin.body)
            else:
                params = forwarded_params(origin.params) + await self._restrictions(target, origin)
                call = Call(target, "GET", f"{paths.NGSI_LD}{api}/entities", origin, params)
            calls.append(fetch(call))
        return calls

    async def _restrictions(self, target: Target, origin: Origin) -> list[tuple[str, str]]:
        """What a query adds for a source that only holds some entities or attributes: their ids
        and attribute names, in the client's terms (the request goes with the client's @context)."""
        given = {name for name, _ in origin.params}
        extra: list[tuple[str, str]] = []
        if target.ids and "id" not in given:
            extra.append(("id", ",".join(target.ids)))
        if target.names and "attrs" not in given:
            terms = await self.contexts.term_map(origin.link)
            extra.append(("attrs", ",".join(sorted(terms.compact(n) for n in target.names))))
        return extra

    async def _fetch(self, call: Call) -> list[Entity]:
        """Ask one source; its entities in canonical form, or none if it fails (logged)."""
        answer = await self._get(call)
        return [] if answer is None else await self._canonical(*answer, model.parse_entity, "entity")

    async def _fetch_temporal(self, call: Call) -> list[TemporalEntity]:
        """Ask one source for temporal entities; theirs in canonical form, none if it fails."""
        answer = await self._get(call)
        return (
            [] if answer is None else await self._canonical(*answer, _temporal_of_source, "temporal entity")
        )

    async def _get(self, call: Call) -> tuple[Any, ContextValue] | None:
        """One read of one source: its answer's JSON and the @context to read it with (the one it
        names, else the request's); ``[]`` for 404, ``None`` if it fails (logged, and told to
        the client as a :class:`SourceWarning`). 206 is an answer: a temporal one the source's
        instance limit cut (the merged answer is cut again by this node's limit,
        :meth:`TemporalService.limited`)."""
        try:
            response = await self._request(call)
            if response.status_code == 404:
                return [], None
            if response.status_code not in (200, 206):
                return self._failed(call, SOURCE_ERROR, f"answered {response.status_code}")
            data = orjson.loads(response.content)
            return data, link_of(response.headers.get("link")) or call.origin.link
        except Refused as refused:
            return self._failed(call, NOT_USABLE, f"not asked: {refused}")
        except orjson.JSONDecodeError:
            return self._failed(call, NOT_USABLE, "answered no JSON")
        except NgsiLdError as error:
            return self._failed(call, SOURCE_ERROR, str(error))
        except UNREACHABLE as error:
            return self._failed(call, UNREACHED, f"did not answer: {summary(error)}")

    def _failed(self, call: Call, code: int, why: str) -> None:
        reg_id = call.target.reg["id"]
        log.warning("context source %s (%s) failed: %s", reg_id, call.url, why)
        call.origin.warnings.append(SourceWarning(code, reg_id, f"The context source {why}"))

    async def _canonical(
        self, data: Any, context: ContextValue, parse: Callable[[dict[str, Any], TermMap, str], T], what: str
    ) -> list[T]:
        """A source's answer (an entity or a list) in canonical form, each item parsed with the
        terms of its own @context (else the answer's); invalid items are left out (logged): one
        bad entity of a source does not spoil the rest of the answer."""
        items = data if isinstance(data, list) else [data]
        now = now_iso()
        out = []
        for item in items:
            if not isinstance(item, dict):
                continue
            terms = await self.contexts.term_map(item.get("@context", context))
            try:
                out.append(parse(item, terms, now))
            except NgsiLdError as error:
                log.warning("context source answered an invalid %s: %s", what, error)
        return out

    async def _send(self, call: Call) -> Answer:
        """Forward one write and say how the source took it."""
        try:
            response = await self._request(call)
        except UNREACHABLE as error:
            log.warning("context source %s (%s) failed: %s", call.target.reg["id"], call.url, error)
            return Answer({"status": 504, "title": f"The context source did not answer: {summary(error)}"})
        if 200 <= response.status_code < 300 and response.status_code != 207:
            return Answer(None)
        try:
            content = orjson.loads(response.content) if response.content else {}
        except orjson.JSONDecodeError:
            content = {}
        problem = {"status": response.status_code, "title": "The context source refused the operation"}
        if response.status_code != 207 and isinstance(content, dict):
            problem.update(content)
        return Answer(problem, content if response.status_code == 207 else None)

    async def _request(self, call: Call) -> httpx.Response:
        """One request to a registration's source, as every forwarded request is made; never
        to this node itself (a loop the Via header would only catch one hop later)."""
        url = call.url
        parts = urlsplit(url)
        netloc = parts.netloc.rpartition("@")[2].lower()
        if parts.port is None:
            netloc = f"{netloc}:{DEFAULT_PORTS.get(parts.scheme, 80)}"
        reg = call.target.reg
        if netloc in self._own:
            FORWARDED.labels(reg["id"], "refused").inc()
            raise Refused(f"{parts.netloc} is this node")
        try:
            response = await self._http().request(
                call.method,
                url,
                headers=self._headers(reg, call.origin, call.body),
                content=None if call.body is None else orjson.dumps(call.body),
                timeout=self._timeout(reg),
            )
        except Refused:
            FORWARDED.labels(reg["id"], "refused").inc()
            raise
        except UNREACHABLE:
            FORWARDED.labels(reg["id"], "unreachable").inc()
            raise
        FORWARDED.labels(reg["id"], f"{response.status_code // 100}xx").inc()
        return response

    def _headers(self, reg: csources.Registration, origin: Origin, body: Any) -> dict[str, str]:
        """The client's @context, the Via chain with this node, and what the registration asks
        for: its tenant and its contextSourceInfo key-values (clause 5.2.9) as headers. A value
        ``urn:ngsi-ld:request`` passes on the client's header of that name (its Authorization,
        say, for a source that checks who asks); headers that frame the request or name the
        sender (Host, Via, ...) are the node's, whatever the registration says."""
        headers = {"Accept": "application/json"}
        if origin.link is not None:
            headers["Link"] = f'<{origin.link}>; {LINK_REL}; type="application/ld+json"'
        for pair in reg.get("contextSourceInfo", ()):
            name, value = pair["key"], pair["value"]
            if not allowed_header(name, value):
                continue
            if value == PASS_THROUGH:
                passed = origin.headers.get(name)
                if passed is not None:
                    headers[name] = passed
            else:
                headers[name] = value
        headers["Via"] = self._via(origin)
        if reg.get("tenant"):
            headers["NGSILD-Tenant"] = reg["tenant"]
        if body is not None:
            headers["Content-Type"] = origin.content_type
        return headers

    def _timeout(self, reg: csources.Registration) -> float:
        """The registration's management.timeout (milliseconds, clause 5.2.9), else the node's."""
        timeout = reg.get("management", {}).get("timeout")
        return self.timeout if timeout is None else timeout / 1000

    def _via(self, origin: Origin) -> str:
        return self.via if not origin.via else f"{origin.via}, {self.via}"

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = self._gate.client(timeout=self.timeout)
        return self._client


def _temporal_of_source(item: dict[str, Any], terms: TermMap, now: str) -> TemporalEntity:
    """A source's temporal entity (normalized: every form this node renders is made from
    instances; the client's ``format`` and ``options`` are never forwarded) in canonical form,
    each instance keeping the source's instanceId and system times."""
    entity_id, types, scope, attributes = parse_temporal_entity(item, terms, now)
    core: Entity = {"id": entity_id, "type": types or []}
    if scope is not None:
        core["scope"] = scope
    core["createdAt"] = core["modifiedAt"] = now
    entity = TemporalEntity(core)
    for name, raw in item.items():
        iri = terms.expand(name) if name not in model.ENTITY_MEMBERS else None
        instances = attributes.get(iri) if iri is not None else None
        if not instances:
            continue
        raws = raw if isinstance(raw, list) else [raw]
        for instance, given in zip(instances, raws, strict=False):
            for member in ("instanceId", "createdAt", "modifiedAt", "deletedAt"):
                if isinstance(given, dict) and isinstance(given.get(member), str):
                    instance[member] = given[member]
        entity.attributes[iri] = instances
        entity.kinds[iri] = instances[0]["type"]
    return entity
