"""Temporal routes under /ngsi-ld/v1/temporal: HTTP in, :mod:`kizuna.ngsild.temporal` call, HTTP out."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kizuna.errors import BadRequestData, InvalidRequest, ResourceNotFound
from kizuna.jsonld.contexts import ContextRegistry
from kizuna.jsonld.terms import TermMap
from kizuna.ngsild import edge
from kizuna.ngsild import query as ql
from kizuna.ngsild.model import is_uri
from kizuna.ngsild.temporal import (
    TemporalFilter,
    TemporalPage,
    TemporalParams,
    TemporalService,
    parse_temporal_params,
    render_temporal,
)

BASE = "/ngsi-ld/v1/temporal"
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
    def __init__(
        self, service: TemporalService, contexts: ContextRegistry, *, max_body: int, limits: tuple[int, int]
    ) -> None:
        self.service = service
        self.contexts = contexts
        self.max_body = max_body
        self.default_limit, self.max_limit = limits

    async def _payload(self, request: Request) -> tuple[Any, TermMap, Any]:
        payload, terms = await edge.read_payload_terms(request, self.contexts, self.max_body)
        return payload.body, terms, payload.context

    async def _read_terms(self, request: Request) -> tuple[TermMap, str | None]:
        return await edge.link_terms(request, self.contexts)

    def _params(self, request: Request, params: dict[str, str], terms: TermMap) -> TemporalParams:
        raw = request.query_params.getlist("options")
        options = {item.strip() for value in raw for item in value.split(",") if item.strip()}
        attrs = _names(params.get("attrs"), "attrs")
        dataset_ids = _names(params.get("datasetId"), "datasetId")
        return parse_temporal_params(
            params,
            options,
            attrs=None if attrs is None else [terms.expand(a) for a in attrs],
            dataset_ids=None
            if dataset_ids is None
            else frozenset(None if d == "@none" else d for d in dataset_ids),
        )

    def _pick_omit(self, request: Request, terms: TermMap) -> tuple[frozenset[str] | None, frozenset[str]]:
        pick, omit = edge.names_param(request, "pick"), edge.names_param(request, "omit")
        if (pick is not None or omit is not None) and request.query_params.get("attrs"):
            raise BadRequestData("pick/omit and attrs exclude each other")
        both = set(pick or ()) & set(omit or ())
        if both:
            raise BadRequestData(f"{', '.join(sorted(both))} is both picked and omitted")

        def expand(names: list[str]) -> frozenset[str]:
            return frozenset(n if n in ("id", "type", "scope") else terms.expand(n) for n in names)

        return (None if pick is None else expand(pick)), (frozenset() if omit is None else expand(omit))

    # -- provision -------------------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        edge.check_params(request, P_WRITE)
        body, terms, _ = await self._payload(request)
        if not isinstance(body, dict):
            raise InvalidRequest("A temporal entity must be a JSON object")
        entity_id, created = await self.service.create_or_update(edge.tenant_of(request), body, terms)
        if created:
            location = f"{BASE}/entities/{quote(entity_id, safe=':')}"
            return Response(status_code=201, headers={"Location": location})
        return edge.no_content()

    async def append(self, request: Request) -> Response:
        edge.check_params(request, P_WRITE)
        body, terms, _ = await self._payload(request)
        await self.service.append_attributes(
            edge.tenant_of(request), request.path_params["entity_id"], body, terms
        )
        return edge.no_content()

    async def delete_entity(self, request: Request) -> Response:
        edge.check_params(request, P_NONE | {"type"})
        await self.service.delete_entity(edge.tenant_of(request), request.path_params["entity_id"])
        return edge.no_content()

    async def delete_attribute(self, request: Request) -> Response:
        edge.check_params(request, P_DELETE_ATTR)
        terms, _ = await self._read_terms(request)
        await self.service.delete_attribute(
            edge.tenant_of(request),
            request.path_params["entity_id"],
            request.path_params["attr"],
            terms,
            dataset_id=request.query_params.get("datasetId"),
            delete_all=edge.bool_param(request, "deleteAll"),
        )
        return edge.no_content()

    async def modify_instance(self, request: Request) -> Response:
        edge.check_params(request, P_NONE)
        body, terms, _ = await self._payload(request)
        await self.service.modify_instance(
            edge.tenant_of(request),
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
        pick, omit = self._pick_omit(request, terms)
        page = await self.service.retrieve(edge.tenant_of(request), request.path_params["entity_id"], params)
        rendered = render_temporal(page.entities[0], terms, params, pick=pick, omit=omit)
        if not rendered:
            raise ResourceNotFound("pick and omit leave nothing of the temporal entity")
        return _respond(rendered, page, media=media, context=context)

    async def query(self, request: Request) -> Response:
        edge.check_params(request, P_QUERY)
        media = edge.accepted_type(request)
        terms, context = await self._read_terms(request)
        return await self._query(request, dict(request.query_params), terms, context, media)

    async def post_query(self, request: Request) -> Response:
        edge.check_params(request, P_QUERY)
        media = edge.accepted_type(request)
        body, terms, context = await self._payload(request)
        if not isinstance(body, dict) or body.get("type") != "Query":
            raise BadRequestData("The body of a query must be an object of type Query")
        params = dict(request.query_params)
        for name in ("q", "scopeQ", "lang"):
            if isinstance(body.get(name), str):
                params[name] = body[name]
        if isinstance(body.get("attrs"), list):
            params["attrs"] = ",".join(body["attrs"])
        entities = body.get("entities") or []
        if not isinstance(entities, list) or not all(isinstance(e, dict) for e in entities):
            raise BadRequestData("entities must be an array of EntitySelectors")
        types = [e["type"] for e in entities if isinstance(e.get("type"), str)]
        if types:
            params["type"] = ",".join(types)
        ids = [e["id"] for e in entities if "id" in e]
        if ids:
            params["id"] = ",".join(ids)
        patterns = [e["idPattern"] for e in entities if "idPattern" in e]
        if patterns:
            params["idPattern"] = patterns[0]
        temporal_q = body.get("temporalQ") or {}
        if not isinstance(temporal_q, dict):
            raise BadRequestData("temporalQ must be an object")
        for name in ("timerel", "timeAt", "endTimeAt", "timeproperty", "lastN"):
            if name in temporal_q:
                params[name] = str(temporal_q[name])
        geo_q = body.get("geoQ")
        if isinstance(geo_q, dict):
            params["georel"] = str(geo_q.get("georel", ""))
            params["geometry"] = str(geo_q.get("geometry", ""))
            coordinates = geo_q.get("coordinates", "")
            params["coordinates"] = coordinates if isinstance(coordinates, str) else _json(coordinates)
            if "geoproperty" in geo_q:
                params["geoproperty"] = str(geo_q["geoproperty"])
        return await self._query(request, params, terms, context, media)

    async def _query(
        self, request: Request, params: dict[str, str], terms: TermMap, context: Any, media: str
    ) -> Response:
        tenant = edge.tenant_of(request)
        temporal = self._params(request, params, terms)
        pick, omit = self._pick_omit(request, terms)
        selection = self._selection(params, terms, local=edge.bool_param(request, "local"))
        count = edge.bool_param(request, "count")
        limit = edge.int_param(request, "limit", self.default_limit, maximum=self.max_limit)
        offset = edge.int_param(request, "offset", 0)
        if limit == 0 and not count:
            raise BadRequestData("limit=0 is only allowed together with count=true")
        page = await self.service.query(tenant, selection, temporal, limit=limit, offset=offset, count=count)
        headers = {"NGSILD-Results-Count": str(page.total)} if page.total is not None else {}
        known = page.total if page.total is not None else offset + len(page.entities) + page.more
        links = edge.page_links(request, request.url.path, limit, offset, known)
        rendered = [render_temporal(e, terms, temporal, pick=pick, omit=omit) for e in page.entities]
        return _respond(rendered, page, media=media, context=context, headers=headers, links=links)

    def _selection(self, params: dict[str, str], terms: TermMap, *, local: bool) -> TemporalFilter:
        selection = TemporalFilter()
        predicates = []
        type_text = params.get("type")
        if type_text:
            expr = ql.parse_type_expr(type_text).resolve(terms.expand)
            simple = expr.as_simple_list()
            selection.types = simple if simple is not None else sorted(expr.names())
            if simple is None:
                predicates.append(lambda e, expr=expr: expr.matches(e.get("type", [])))
        if params.get("id"):
            ids = [i.strip() for i in params["id"].split(",")]
            for entity_id in ids:
                if not is_uri(entity_id):
                    raise BadRequestData(f"id {entity_id!r} is not a URI")
            selection.ids = ids
        if params.get("idPattern"):
            selection.id_pattern = ql.check_regex(params["idPattern"])
        if params.get("orderBy"):
            selection.order_by = ql.parse_order_by(params["orderBy"]).resolve(terms.expand)
        q_text, scope_text, georel = params.get("q"), params.get("scopeQ"), params.get("georel")
        if not local and not any((type_text, params.get("attrs"), q_text, scope_text, georel)):
            raise BadRequestData("A temporal query needs at least one of type, attrs, q, scopeQ or geoQ")
        if params.get("attrs") or params.get("timerel"):
            selection.require_attributes = True
        if q_text:
            q = ql.parse_q(q_text).resolve(terms.expand)
            predicates.append(lambda e, q=q: ql.matches(q, e))
        if scope_text:
            predicates.append(ql.parse_scope_q(scope_text).matches)
        if georel:
            geo = ql.parse_geoq(
                georel, params.get("geometry", ""), params.get("coordinates", ""), params.get("geoproperty")
            )
            prop = terms.expand(params.get("geoproperty") or "location")
            predicates.append(
                lambda e, geo=geo, prop=prop: any(
                    geo.matches(i["value"]) for i in e.get(prop, ()) if isinstance(i.get("value"), dict)
                )
            )
        if predicates:
            selection.predicate = lambda e: all(p(e) for p in predicates)
        return selection

    def routes(self) -> list[Route]:
        e = f"{BASE}/entities"
        one = e + "/{entity_id}"
        return [
            Route(e, self.query, methods=["GET"]),
            Route(e, self.create, methods=["POST"]),
            Route(f"{BASE}/entityOperations/query", self.post_query, methods=["POST"]),
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


def _names(raw: str | None, name: str) -> list[str] | None:
    if raw is None:
        return None
    names = [item.strip() for item in raw.split(",")]
    if not all(names):
        raise BadRequestData(f"Parameter {name} has an empty item")
    return names


def _json(value: Any) -> str:
    import orjson

    return orjson.dumps(value).decode()
