"""NGSI-LD routes under /ngsi-ld/v1: HTTP in, service call, HTTP out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any, NamedTuple
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kizuna import paths, problems
from kizuna.access.subject import Subject
from kizuna.errors import BadRequestData, InvalidRequest, NgsiLdError, ResourceNotFound
from kizuna.jsonld.contexts import ContextRegistry, ContextValue
from kizuna.jsonld.terms import TermMap
from kizuna.ngsild import edge
from kizuna.ngsild.entities import BatchResult, EntityService
from kizuna.ngsild.forwarding import Federation
from kizuna.ngsild.forwarding_calls import WARNINGS_STATE, Forwarded, Origin
from kizuna.ngsild.joins import linked_entities
from kizuna.ngsild.merging import InstanceChoice, UpdateResult, check_appended
from kizuna.ngsild.paging import read_page
from kizuna.ngsild.render import render_entity, to_geojson_feature
from kizuna.ngsild.selection import (
    ENTITY_QUERY_BODY,
    bool_param,
    parse_purge,
    parse_selection,
    parse_types,
    parse_view,
    query_body_params,
)
from kizuna.request_headers import header

# Query parameters each operation accepts (clause 6); anything else is an InvalidRequest.
_VIEW = {
    "attrs",
    "pick",
    "omit",
    "options",
    "format",
    "lang",
    "datasetId",
    "geometryProperty",
    "local",
    "join",
    "joinLevel",
    "containedBy",
    "entityMap",
    "expandValues",
    "jsonKeys",
    "via",
    "csf",
}
_FILTER = {
    "type",
    "id",
    "idPattern",
    "q",
    "scopeQ",
    "georel",
    "geometry",
    "coordinates",
    "geoproperty",
    "local",
    "csf",
}
P_CREATE = frozenset({"local", "options"})
P_RETRIEVE = frozenset(_VIEW | {"type"})
P_QUERY = frozenset(_VIEW | _FILTER | {"limit", "offset", "count", "orderBy", "collation"})
P_PURGE = frozenset(_FILTER | {"keep", "drop", "attrs"})
P_WRITE = frozenset({"options", "local"})
P_DELETE_ATTR = frozenset({"datasetId", "deleteAll", "local"})
P_NONE = frozenset({"local"})
_BATCH_PATHS = {
    "createBatch": "create",
    "upsertBatch": "upsert",
    "updateBatch": "update",
    "mergeBatch": "merge",
    "deleteBatch": "delete",
}


class NgsiLdApi:
    """Holds what the routes share; one per application."""

    def __init__(
        self,
        entities: EntityService,
        contexts: ContextRegistry,
        *,
        federation: Federation,
    ):
        self.entities = entities
        self.federation = federation
        self.contexts = contexts

    async def _payload(
        self, request: Request, *, merge_patch: bool = False
    ) -> tuple[Any, TermMap, edge.Payload]:
        payload, terms = await edge.read_payload_terms(request, self.contexts, merge_patch=merge_patch)
        return payload.body, terms, payload

    async def _read_terms(self, request: Request) -> tuple[TermMap, str | None]:
        return await edge.link_terms(request, self.contexts)

    # -- entities --------------------------------------------------------------------------------

    async def create_entity(self, request: Request) -> Response:
        edge.check_params(request, P_CREATE)
        body, terms, _ = await self._payload(request)
        if not isinstance(body, dict):
            raise InvalidRequest("An entity must be a JSON object")
        tenant = edge.tenant_of(request)
        entity_id = body.get("id")
        entity_id = entity_id if isinstance(entity_id, str) else ""
        _, forwarded = await self.federation.write(
            tenant,
            "createEntity",
            entity_id,
            origin_of(request),
            lambda part: self.entities.create(tenant, edge.subject_of(request), part, terms),
            method="POST",
            path=f"{paths.NGSI_LD}/entities",
            body=body,
            expand=terms.expand,
        )
        created = Response(status_code=201, headers={"Location": _entity_path(entity_id)})
        return _entity_response(entity_id, forwarded, created)

    async def retrieve_entity(self, request: Request) -> Response:
        edge.check_params(request, P_RETRIEVE)
        media = edge.accepted_type(request, geo=True)
        terms, context = await self._read_terms(request)
        params = request.query_params
        view = parse_view(params, terms, edge.options_of(request))
        types = parse_types(params, terms)
        tenant = edge.tenant_of(request)
        entity_id = request.path_params["entity_id"]
        entity = await self.federation.retrieve(tenant, entity_id, types, origin_of(request, context))
        if view.attrs is not None and not view.attrs & entity.keys():
            raise ResourceNotFound(f"Entity {entity_id} has none of the attributes asked for")
        if media == edge.GEO_JSON:
            rendered = render_entity(entity, terms, view)
            geoproperty = terms.expand(params.get("geometryProperty", "location"))
            return edge.respond(
                to_geojson_feature(entity, rendered, terms, geoproperty), media=edge.GEO_JSON, context=context
            )
        linked, flat = await linked_entities(self.entities, tenant, edge.subject_of(request), [entity], view)
        rendered = render_entity(entity, terms, view, linked, view.join_level)
        if not rendered:
            # Clause 4.21: a pick that matches nothing, or an omit of everything, leaves no entity.
            raise ResourceNotFound(f"Nothing of entity {entity_id} is left after pick and omit")
        if view.join == "flat" and flat:
            # With no linked entity found, the answer is the entity alone, not a list (ETSI 018_14).
            body = [rendered, *(render_entity(e, terms, v) for e, v in flat)]
            return edge.respond(body, media=media, context=context)
        return edge.respond(rendered, media=media, context=context)

    async def query_entities(self, request: Request) -> Response:
        edge.check_params(request, P_QUERY)
        media = edge.accepted_type(request, geo=True)
        return await self._query(request, await read_query(request, self.contexts), media)

    async def post_query(self, request: Request) -> Response:
        edge.check_params(request, P_QUERY)
        media = edge.accepted_type(request, geo=True)
        query = await read_query(request, self.contexts, ENTITY_QUERY_BODY)
        return await self._query(request, query, media)

    async def _query(self, request: Request, query: Query, media: str) -> Response:
        params, terms, context, origin = query
        tenant = edge.tenant_of(request)
        view = parse_view(params, terms, edge.options_of(request))
        selection = parse_selection(params, terms)
        page = edge.page_of(request, params)
        batch = origin.body is not None
        found = await read_page(
            lambda query: self.federation.query(tenant, query, origin, batch=batch), selection, page
        )
        headers = {"NGSILD-Results-Count": str(found.total)} if page.count else {}
        pages: list[str] = []
        if request.method == "GET":
            # Clause 6.3.13: Link rel="prev"/"next" for the pages around this one.
            pages = edge.page_links(request, request.url.path, page.limit, page.offset, found.known(page))
        if media == edge.GEO_JSON:
            geoproperty = terms.expand(params.get("geometryProperty", "location"))
            features = [
                to_geojson_feature(e, render_entity(e, terms, view), terms, geoproperty)
                for e in found.entities
            ]
            return edge.respond(
                {"type": "FeatureCollection", "features": features},
                media=edge.GEO_JSON,
                context=context,
                headers=headers,
                links=pages,
            )
        linked, flat = await linked_entities(
            self.entities, tenant, edge.subject_of(request), found.entities, view
        )
        # An entity that pick/omit leaves empty is not part of the answer (clause 4.21).
        rendered = [
            r for e in found.entities if (r := render_entity(e, terms, view, linked, view.join_level))
        ]
        if view.join == "flat":
            rendered.extend(render_entity(e, terms, v) for e, v in flat)
        return edge.respond(rendered, media=media, context=context, headers=headers, links=pages)

    async def delete_entity(self, request: Request) -> Response:
        edge.check_params(request, P_NONE | {"type"})
        tenant, entity_id = edge.tenant_of(request), request.path_params["entity_id"]
        _, forwarded = await self.federation.write(
            tenant,
            "deleteEntity",
            entity_id,
            origin_of(request),
            lambda _: self.entities.delete(tenant, edge.subject_of(request), entity_id),
            method="DELETE",
            path=_entity_path(entity_id),
        )
        return _entity_response(entity_id, forwarded, edge.no_content())

    async def replace_entity(self, request: Request) -> Response:
        entity_id, _, forwarded = await self._entity_write(
            request, "replaceEntity", "PUT", self.entities.replace
        )
        return _entity_response(entity_id, forwarded, edge.no_content())

    async def merge_entity(self, request: Request) -> Response:
        entity_id, _, forwarded = await self._entity_write(
            request, "mergeEntity", "PATCH", self.entities.merge, merge_patch=True
        )
        return _entity_response(entity_id, forwarded, edge.no_content())

    async def _entity_write(
        self,
        request: Request,
        operation: str,
        method: str,
        apply: Callable[[str, Subject, str, Any, TermMap], Awaitable[Any]],
        *,
        suffix: str = "",
        merge_patch: bool = False,
    ) -> tuple[str, Any, Forwarded]:
        """A write of one entity's body here (``apply(tenant, subject, id, part, terms)``) and at the
        context sources registered for it; the entity id, the local result and what was forwarded."""
        edge.check_params(request, P_WRITE)
        body, terms, _ = await self._payload(request, merge_patch=merge_patch)
        tenant, entity_id = edge.tenant_of(request), request.path_params["entity_id"]
        result, forwarded = await self.federation.write(
            tenant,
            operation,
            entity_id,
            origin_of(request),
            lambda part: apply(tenant, edge.subject_of(request), entity_id, part, terms),
            method=method,
            path=_entity_path(entity_id) + suffix,
            body=body,
            expand=terms.expand,
        )
        return entity_id, result, forwarded

    async def purge_entities(self, request: Request) -> Response:
        """DELETE /entities: delete what the filters select, or with keep/drop only some attributes."""
        edge.check_params(request, P_PURGE)
        terms, _ = await self._read_terms(request)
        purge = parse_purge(request.query_params, terms)
        query = purge.selection.entity_query()
        tenant = edge.tenant_of(request)
        await self.federation.purge(
            tenant,
            query,
            origin_of(request),
            lambda: self.entities.purge(
                tenant, edge.subject_of(request), query, keep=purge.keep, drop=purge.drop
            ),
        )
        return edge.no_content()

    async def missing_entity_id(self, request: Request) -> Response:
        raise BadRequestData("The entity id in the path is empty")

    # -- attributes ------------------------------------------------------------------------------

    async def append_attributes(self, request: Request) -> Response:
        overwrite = "noOverwrite" not in edge.options_of(request)

        def append(
            tenant: str, subject: Subject, entity_id: str, part: Any, terms: TermMap
        ) -> Awaitable[UpdateResult]:
            return self.entities.append_attributes(
                tenant, subject, entity_id, part, terms, overwrite=overwrite
            )

        _, result, forwarded = await self._entity_write(
            request, "appendAttrs", "POST", append, suffix="/attrs/"
        )
        combined = _with_forwarded(result, forwarded)
        check_appended(combined)
        return _update_response(combined)

    async def update_attributes(self, request: Request) -> Response:
        _, result, forwarded = await self._entity_write(
            request, "updateEntity", "PATCH", self.entities.update_attributes, suffix="/attrs/"
        )
        return _update_response(_with_forwarded(result, forwarded))

    async def partial_update_attribute(self, request: Request) -> Response:
        return await self._attribute_write(
            request, "updateAttrs", "PATCH", self.entities.partial_update_attribute, merge_patch=True
        )

    async def replace_attribute(self, request: Request) -> Response:
        return await self._attribute_write(request, "replaceAttrs", "PUT", self.entities.replace_attribute)

    async def _attribute_write(
        self,
        request: Request,
        operation: str,
        method: str,
        apply: Callable[[str, Subject, str, str, Any, TermMap], Awaitable[Any]],
        *,
        merge_patch: bool = False,
    ) -> Response:
        """A write of one attribute here (``apply(tenant, subject, id, attr, part, terms)``) and at the
        context sources registered for it."""
        edge.check_params(request, P_WRITE)
        body, terms, _ = await self._payload(request, merge_patch=merge_patch)
        tenant, entity_id = edge.tenant_of(request), request.path_params["entity_id"]
        attr = request.path_params["attr"]
        _, forwarded = await self.federation.write(
            tenant,
            operation,
            entity_id,
            origin_of(request),
            lambda part: apply(tenant, edge.subject_of(request), entity_id, attr, part, terms),
            method=method,
            path=_attribute_path(entity_id, attr),
            body=body,
            attrs=[terms.expand(attr)],
        )
        return _attribute_response(terms.expand(attr), forwarded)

    async def delete_attribute(self, request: Request) -> Response:
        edge.check_params(request, P_DELETE_ATTR)
        terms, _ = await self._read_terms(request)
        tenant, entity_id, attr = (
            edge.tenant_of(request),
            request.path_params["entity_id"],
            request.path_params["attr"],
        )
        which = InstanceChoice(
            request.query_params.get("datasetId"), bool_param(request.query_params, "deleteAll")
        )
        _, forwarded = await self.federation.write(
            tenant,
            "deleteAttrs",
            entity_id,
            origin_of(request),
            lambda _: self.entities.delete_attribute(
                tenant,
                edge.subject_of(request),
                entity_id,
                attr,
                terms,
                which,
            ),
            method="DELETE",
            path=_attribute_path(entity_id, attr),
            attrs=[terms.expand(attr)],
        )
        return _attribute_response(terms.expand(attr), forwarded)

    # -- batch operations ------------------------------------------------------------------------

    async def _batch_items(self, request: Request) -> list[tuple[Any, TermMap | NgsiLdError]]:
        edge.check_params(request, P_WRITE)
        payload = await edge.read_payload(request)
        edge.input_limits(request).check_batch(payload.body)
        return await edge.terms_for_items(self.contexts, payload, edge.is_json_ld(request))

    async def batch_create(self, request: Request) -> Response:
        items = await self._batch_items(request)
        result = await self._write_batch(request, "createBatch", items, self.entities.batch_create)
        return _batch_response(request, result, created_status=201)

    async def batch_upsert(self, request: Request) -> Response:
        items = await self._batch_items(request)
        options = edge.options_of(request)
        if "replace" in options and "update" in options:
            raise BadRequestData("options=replace and options=update exclude each other")
        replace = "update" not in options
        result = await self._write_batch(
            request, "upsertBatch", items, self.entities.batch_upsert, replace=replace
        )
        if not result.errors and result.created:
            return edge.respond(result.created, status=201)
        return _batch_response(request, result, created_status=204)

    async def batch_update(self, request: Request) -> Response:
        items = await self._batch_items(request)
        overwrite = "noOverwrite" not in edge.options_of(request)
        result = await self._write_batch(
            request, "updateBatch", items, self.entities.batch_update, overwrite=overwrite
        )
        return _batch_response(request, result, created_status=204)

    async def batch_merge(self, request: Request) -> Response:
        items = await self._batch_items(request)
        result = await self._write_batch(request, "mergeBatch", items, self.entities.batch_merge)
        return _batch_response(request, result, created_status=204)

    async def batch_delete(self, request: Request) -> Response:
        edge.check_params(request, P_WRITE)
        payload = await edge.read_payload(request)
        edge.input_limits(request).check_batch(payload.body)
        tenant, ids = edge.tenant_of(request), payload.body
        if not isinstance(ids, list) or not ids:
            result = await self.entities.batch_delete(tenant, edge.subject_of(request), ids)  # refuses it
        else:
            result = await self._batch(
                request,
                "deleteBatch",
                [(entity_id, None) for entity_id in ids],
                lambda kept: self.entities.batch_delete(
                    tenant, edge.subject_of(request), [entity_id for entity_id, _ in kept]
                ),
            )
        return _batch_response(request, result, created_status=204)

    async def _write_batch(
        self,
        request: Request,
        operation: str,
        items: list[tuple[Any, TermMap | NgsiLdError]],
        write: Callable[..., Awaitable[BatchResult]],
        **options: bool,
    ) -> BatchResult:
        """``write`` is the EntityService batch method: given the caller and the entities this
        node keeps (the others are forwarded), with the operation's ``options``."""
        tenant, subject = edge.tenant_of(request), edge.subject_of(request)
        return await self._batch(
            request, operation, items, lambda kept: write(tenant, subject, kept, **options)
        )

    async def _batch(
        self,
        request: Request,
        operation: str,
        items: list[tuple[Any, Any]],
        local: Callable[[list[tuple[Any, Any]]], Awaitable[BatchResult]],
    ) -> BatchResult:
        path = f"{paths.NGSI_LD}/entityOperations/{_BATCH_PATHS[operation]}"
        return await self.federation.batch(
            edge.tenant_of(request), operation, origin_of(request), items, local, path=path
        )

    def routes(self) -> list[Route]:
        e = "/entities"
        ops = "/entityOperations"
        return [
            Route(e, self.query_entities, methods=["GET"]),
            Route(e, self.create_entity, methods=["POST"]),
            Route(e, self.purge_entities, methods=["DELETE"]),
            Route(e + "/{entity_id}", self.retrieve_entity, methods=["GET"]),
            Route(e + "/{entity_id}", self.delete_entity, methods=["DELETE"]),
            Route(e + "/{entity_id}", self.replace_entity, methods=["PUT"]),
            Route(e + "/{entity_id}", self.merge_entity, methods=["PATCH"]),
            Route(e + "/{entity_id}/attrs", self.append_attributes, methods=["POST"]),
            Route(e + "/{entity_id}/attrs", self.update_attributes, methods=["PATCH"]),
            Route(e + "/{entity_id}/attrs/{attr}", self.partial_update_attribute, methods=["PATCH"]),
            Route(e + "/{entity_id}/attrs/{attr}", self.replace_attribute, methods=["PUT"]),
            Route(e + "/{entity_id}/attrs/{attr}", self.delete_attribute, methods=["DELETE"]),
            Route(ops + "/create", self.batch_create, methods=["POST"]),
            Route(ops + "/upsert", self.batch_upsert, methods=["POST"]),
            Route(ops + "/update", self.batch_update, methods=["POST"]),
            Route(ops + "/merge", self.batch_merge, methods=["POST"]),
            Route(ops + "/delete", self.batch_delete, methods=["POST"]),
            Route(ops + "/query", self.post_query, methods=["POST"]),
            Route(e, self.missing_entity_id, methods=["PUT", "PATCH"]),
            Route(e + "//attrs", self.missing_entity_id, methods=["POST", "PATCH"]),
            Route(e + "//attrs/{attr}", self.missing_entity_id, methods=["PATCH", "PUT", "DELETE"]),
        ]


class Query(NamedTuple):
    """What a query asks, read alike by the entity and the temporal API: its parameters (a
    POSTed query's body members among them), their terms, the @context and the origin."""

    params: dict[str, str]
    terms: TermMap
    context: ContextValue
    origin: Origin


async def read_query(
    request: Request, contexts: ContextRegistry, body_members: Collection[str] | None = None
) -> Query:
    """A GET query (``body_members`` None: the Link header's @context), or a POSTed one whose
    body's members ``body_members`` names stand for query parameters."""
    if body_members is None:
        terms, context = await edge.link_terms(request, contexts)
        return Query(dict(request.query_params), terms, context, origin_of(request, context))
    payload, terms = await edge.read_payload_terms(request, contexts)
    params = query_body_params(payload.body, request.query_params, body_members)
    return Query(params, terms, payload.context, origin_of(request, body=payload.body))


def origin_of(request: Request, link: str | None = None, *, body: Any = None) -> Origin:
    """What a request forwarded to context sources takes over from this one. Reads pass the
    ``link`` they resolved already (every entity retrieval builds one of these: it stays cheap);
    writes leave it to be read here."""
    reading = request.method == "GET"
    return Origin(
        subject=edge.subject_of(request),
        link=link if reading else edge.link_context(request),
        via=header(request.scope, "via"),
        params=tuple(request.query_params.multi_items()),
        local=request.query_params.get("local") == "true",
        body=body,
        content_type=edge.JSON if reading else header(request.scope, "content-type", edge.JSON),
        headers=request.headers,
        # The middleware's list, so that what forwarding adds reaches the answer's headers.
        warnings=request.scope.get("state", {}).get(WARNINGS_STATE, []),
    )


def _entity_path(entity_id: str) -> str:
    return f"{paths.NGSI_LD}/entities/{quote(entity_id, safe=':')}"


def _attribute_path(entity_id: str, attr: str) -> str:
    return f"{_entity_path(entity_id)}/attrs/{quote(attr, safe=':')}"


def _entity_response(entity_id: str, forwarded: Forwarded, success: Response) -> Response:
    """An entity operation's answer: ``success`` unless a share failed (a source's, or the
    node's while a source did its own), then 207 with what succeeded and each error (clause
    4.3.6, distributed operations)."""
    failures = [error for _, _, error in forwarded.failed]
    if forwarded.local_error is not None:
        failures.insert(0, forwarded.local_error[1])
    if not failures:
        return success
    done = forwarded.local or bool(forwarded.done)
    errors = [{"entityId": entity_id, "error": error.to_problem()} for error in failures]
    body = {"success": [entity_id] if done else [], "errors": errors}
    return edge.respond(body, status=207)


def _with_forwarded(result: UpdateResult | None, forwarded: Forwarded) -> UpdateResult:
    """The node's UpdateResult with what the context sources did of the rest added."""
    combined = result or UpdateResult()
    if forwarded.local_error is not None:
        names, error = forwarded.local_error
        combined.not_updated.extend((n, f"{error.detail} ({error.status})") for n in sorted(names))
    for _, names in forwarded.done:
        combined.updated.extend(n for n in sorted(names) if n not in combined.updated)
    for reg_id, names, error in forwarded.failed:
        reason = f"The context source of registration {reg_id} failed: {error.detail} ({error.status})"
        combined.not_updated.extend((n, reason) for n in sorted(names))
    return combined


def _attribute_response(iri: str, forwarded: Forwarded) -> Response:
    """204, or 207 with an UpdateResult if a context source failed its share of the attribute."""
    result = UpdateResult(updated=[iri] if forwarded.local else [])
    return _update_response(_with_forwarded(result, forwarded))


def _update_response(result: UpdateResult) -> Response:
    if not result.not_updated:
        return edge.no_content()
    # Attribute names are reported as IRIs, as the ETSI suite (010_04_01) expects.
    body = {
        "updated": result.updated,
        "notUpdated": [{"attributeName": iri, "reason": why} for iri, why in result.not_updated],
    }
    return edge.respond(body, status=207)


def _batch_response(request: Request, result: BatchResult, *, created_status: int) -> Response:
    problems.note_refusals(request, result.errors)
    if not result.errors:
        if created_status == 201:
            return edge.respond(result.success, status=201)
        return edge.no_content()
    body = {
        "success": result.success,
        "errors": [
            {"entityId": entity_id, "error": _error_body(error)} for entity_id, error in result.errors
        ],
    }
    return edge.respond(body, status=207)


def _error_body(error: NgsiLdError) -> dict[str, Any]:
    return error.to_problem()
