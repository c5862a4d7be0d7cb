"""Temporal routes under /ngsi-ld/v1/temporal: HTTP in, :mod:`kizuna.ngsild.temporal` call, HTTP out."""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kizuna import paths
from kizuna.errors import BadRequestData, InvalidRequest, ResourceNotFound
from kizuna.jsonld.contexts import ContextRegistry
from kizuna.jsonld.terms import TermMap
from kizuna.ngsild import edge
from kizuna.ngsild.forwarding import Federation
from kizuna.ngsild.merging import InstanceChoice
from kizuna.ngsild.routes import Query, origin_of, read_query
from kizuna.ngsild.selection import (
    TEMPORAL_QUERY_BODY,
    bool_param,
    dataset_ids,
    names,
    parse_member_names,
    parse_selection,
)
from kizuna.ngsild.temporal import TemporalPage, TemporalService
from kizuna.ngsild.temporal_params import TemporalParams, parse_temporal_params
from kizuna.ngsild.temporal_render import render_temporal

_TEMPORAL = {
    "timerel",
    "timeAt",
    "endTimeAt",
    "timeproperty",
    "lastN",
    "options",
    "format",
    "aggrMethods",
    "aggrPeriodDuration",
    "attrs",
    "datasetId",
    "pick",
    "omit",
    "lang",
    "local",
    "via",
    "csf",
}
_FILTER = {"type", "id", "idPattern", "q", "scopeQ", "georel", "geometry", "coordinates", "geoproperty"}
P_RETRIEVE = frozenset(_TEMPORAL | {"type"})
P_QUERY = frozenset(_TEMPORAL | _FILTER | {"limit", "offset", "count", "orderBy", "collation"})
P_WRITE = frozenset({"local", "options"})
P_DELETE_ATTR = frozenset({"datasetId", "deleteAll", "local"})
P_NONE = frozenset({"local"})


class TemporalApi:
    """Writes go to the node's TemporalService; reads through the Federation, which asks the
    context sources registered for them too (``retrieveTemporal``, ``queryTemporal``)."""

    def __init__(self, service: TemporalService, contexts: ContextRegistry, federation: Federation) -> None:
        self.service = service
        self.contexts = contexts
        self.federation = federation

    async def _payload(self, request: Request) -> tuple[Any, TermMap]:
        payload, terms = await edge.read_payload_terms(request, self.contexts)
        return payload.body, terms

    async def _read_terms(self, request: Request) -> tuple[TermMap, str | None]:
        return await edge.link_terms(request, self.contexts)

    def _params(self, request: Request, params: dict[str, str], terms: TermMap) -> TemporalParams:
        attrs = names(params, "attrs")
        return parse_temporal_params(
            params,
            edge.option_names(request),
            attrs=None if attrs is None else [terms.expand(a) for a in attrs],
            dataset_ids=dataset_ids(params),
        )

    # -- provision -------------------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        edge.check_params(request, P_WRITE)
        body, terms = await self._payload(request)
        if not isinstance(body, dict):
            raise InvalidRequest("A temporal entity must be a JSON object")
        entity_id, created = await self.service.create_or_update(
            edge.tenant_of(request), edge.subject_of(request), body, terms
        )
        if created:
            location = f"{paths.NGSI_LD}/temporal/entities/{quote(entity_id, safe=':')}"
            return Response(status_code=201, headers={"Location": location})
        return edge.no_content()

    async def append(self, request: Request) -> Response:
        edge.check_params(request, P_WRITE)
        body, terms = await self._payload(request)
        await self.service.append_attributes(
            edge.tenant_of(request), edge.subject_of(request), request.path_params["entity_id"], body, terms
        )
        return edge.no_content()

    async def delete_entity(self, request: Request) -> Response:
        edge.check_params(request, P_NONE | {"type"})
        await self.service.delete_entity(
            edge.tenant_of(request), edge.subject_of(request), request.path_params["entity_id"]
        )
        return edge.no_content()

    async def delete_attribute(self, request: Request) -> Response:
        edge.check_params(request, P_DELETE_ATTR)
        terms, _ = await self._read_terms(request)
        await self.service.delete_attribute(
            edge.tenant_of(request),
            edge.subject_of(request),
            request.path_params["entity_id"],
            request.path_params["attr"],
            terms,
            InstanceChoice(
                request.query_params.get("datasetId"), bool_param(request.query_params, "deleteAll")
            ),
        )
        return edge.no_content()

    async def modify_instance(self, request: Request) -> Response:
        edge.check_params(request, P_NONE)
        body, terms = await self._payload(request)
        await self.service.modify_instance(
            edge.tenant_of(request),
            edge.subject_of(request),
            request.path_params["entity_id"],
            request.path_params["attr"],
            request.path_params["instance_id"],
            body,
            terms,
        )
        return edge.no_content()

    async def delete_instance(self, request: Request) -> Response:
        edge.check_params(request, P_NONE)
        terms, _ = await self._read_terms(request)
        await self.service.delete_instance(
            edge.tenant_of(request),
            edge.subject_of(request),
            request.path_params["entity_id"],
            request.path_params["attr"],
            request.path_params["instance_id"],
            terms,
        )
        return edge.no_content()

    async def missing_id(self, request: Request) -> Response:
        raise BadRequestData("The entity id in the path is empty")

    async def missing_attribute(self, request: Request) -> Response:
        raise BadRequestData("The attribute name in the path is empty")

    # -- consumption -----------------------------------------------------------------------------

    async def retrieve(self, request: Request) -> Response:
        edge.check_params(request, P_RETRIEVE)
        media = edge.accepted_type(request)
        terms, context = await self._read_terms(request)
        params = self._params(request, dict(request.query_params), terms)
        pick, omit = parse_member_names(request.query_params, terms)
        page = await self.federation.temporal_retrieve(
            edge.tenant_of(request), request.path_params["entity_id"], params, origin_of(request, context)
        )
        rendered = render_temporal(page.entities[0], terms, params, pick=pick, omit=omit)
        if not rendered:
            raise ResourceNotFound("pick and omit leave nothing of the temporal entity")
        return _respond(rendered, page, media=media, context=context)

    async def query(self, request: Request) -> Response:
        edge.check_params(request, P_QUERY)
        media = edge.accepted_type(request)
        return await self._query(request, await read_query(request, self.contexts), media)

    async def post_query(self, request: Request) -> Response:
        edge.check_params(request, P_QUERY)
        media = edge.accepted_type(request)
        query = await read_query(request, self.contexts, TEMPORAL_QUERY_BODY)
        return await self._query(request, query, media)

    async def _query(self, request: Request, query: Query, media: str) -> Response:
        params, terms, context, origin = query
        tenant = edge.tenant_of(request)
        temporal = self._params(request, params, terms)
        pick, omit = parse_member_names(request.query_params, terms)
        if bool_param(params, "local"):  # unlike the entity API, the temporal one checks its value
            origin = replace(origin, local=True)  # also given in a POST query's body
        selection = parse_selection(params, terms, kind="temporal query")
        page = edge.page_of(request, params)
        found = await self.federation.temporal_query(
            tenant,
            # Entities with nothing of the attributes or the time range asked for are left out.
            selection.temporal_filter(
                require_attributes=selection.attrs is not None or temporal.time_at is not None
            ),
            temporal,
            origin,
            limit=page.limit,
            offset=page.offset,
            count=page.count,
            batch=origin.body is not None,
        )
        headers = {"NGSILD-Results-Count": str(found.total)} if found.total is not None else {}
        known = found.total if found.total is not None else page.offset + len(found.entities) + found.more
        links = edge.page_links(request, request.url.path, page.limit, page.offset, known)
        rendered = [render_temporal(e, terms, temporal, pick=pick, omit=omit) for e in found.entities]
        return _respond(rendered, found, media=media, context=context, headers=headers, links=links)

    def routes(self) -> list[Route]:
        e = "/temporal/entities"
        one = e + "/{entity_id}"
        return [
            Route(e, self.query, methods=["GET"]),
            Route(e, self.create, methods=["POST"]),
            Route("/temporal/entityOperations/query", self.post_query, methods=["POST"]),
            Route(one, self.retrieve, methods=["GET"]),
            Route(one, self.delete_entity, methods=["DELETE"]),
            Route(one + "/attrs", self.append, methods=["POST"]),
            Route(one + "/attrs/{attr}", self.delete_attribute, methods=["DELETE"]),
            Route(one + "/attrs/{attr}/{instance_id}", self.modify_instance, methods=["PATCH"]),
            Route(one + "/attrs/{attr}/{instance_id}", self.delete_instance, methods=["DELETE"]),
            Route(e + "//attrs", self.missing_id, methods=["POST"]),
            Route(e + "//attrs/{attr}", self.missing_id, methods=["DELETE"]),
            Route(e + "//attrs/{attr}/{instance_id}", self.missing_id, methods=["PATCH", "DELETE"]),
            # An empty attribute name: 400 to delete (ETSI 017_02_05), 405 to modify (016_02_06).
            Route(one + "/attrs//{instance_id}", self.missing_attribute, methods=["DELETE"]),
        ]


def _respond(data: Any, page: TemporalPage, **kwargs: Any) -> Response:
    """200, or 206 with Content-Range when the instance limit truncated the history (6.3.10)."""
    if page.range is None:
        return edge.respond(data, **kwargs)
    headers = {**(kwargs.pop("headers", None) or {}), "Content-Range": page.range.header()}
    return edge.respond(data, status=206, headers=headers, **kwargs)
