"""The HTTP edge of NGSI v2 (read-only): ``GET /v2/entities`` and ``GET /v2/entities/{id}``.

Headers as Orion reads them (``Fiware-Service`` is the tenant, ``Fiware-ServicePath`` only the
root), ``Fiware-Total-Count`` for ``options=count``, and every error in Orion's
``{"error", "description"}`` form rather than as ProblemDetails.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kizuna.errors import BadRequestData, NgsiLdError, NotAcceptable
from kizuna.jsonld.contexts import ContextRegistry
from kizuna.media import negotiate
from kizuna.ngsild import edge
from kizuna.ngsiv2.reads import QUERY_PARAMS, RETRIEVE_PARAMS, V2Reads, parse_page

JSON = "application/json"
SERVICE = "fiware-service"  # the tenant's header (Authentication reads it too)
SERVICE_PATH = "fiware-servicepath"
ROOT_PATHS = ("", "/", "/#")  # the root, and "/#" (everything under it, which is the root)
# Orion's error names by status; any other status keeps the NGSI-LD type's name.
ORION_ERRORS = {400: "BadRequest", 404: "NotFound", 406: "NotAcceptable", 413: "RequestEntityTooLarge"}

Endpoint = Callable[[Request], Awaitable[Response]]


def orion_errors(endpoint: Endpoint) -> Endpoint:
    async def answer(request: Request) -> Response:
        try:
            return await endpoint(request)
        except NgsiLdError as error:
            name = ORION_ERRORS.get(error.status, error.type_name)
            return _json({"error": name, "description": error.detail}, error.status)

    return answer


class NgsiV2Api:
    """``default_context`` (``--ngsiv2-context``) is the @context of a request without a
    ``Link`` header: v2 clients send none, and their names are those of the node's data."""

    def __init__(self, reads: V2Reads, contexts: ContextRegistry, default_context: str | None = None) -> None:
        self.reads = reads
        self.contexts = contexts
        self.default_context = default_context

    async def query_entities(self, request: Request) -> Response:
        tenant, terms = await self._start(request, QUERY_PARAMS)
        page_limits = request.app.state.page_limits
        page = parse_page(request.query_params, page_limits.default, page_limits.maximum)
        found = await self.reads.query(tenant, edge.subject_of(request), request.query_params, terms, page)
        headers = {"Fiware-Total-Count": str(found.total)} if found.total is not None else None
        return _json(found.entities, headers=headers)

    async def retrieve_entity(self, request: Request) -> Response:
        tenant, terms = await self._start(request, RETRIEVE_PARAMS)
        entity_id = request.path_params["entity_id"]
        subject = edge.subject_of(request)
        return _json(await self.reads.retrieve(tenant, subject, entity_id, request.query_params, terms))

    async def _start(self, request: Request, allowed: frozenset[str]) -> tuple[str, Any]:
        """The tenant and the term map of a read, once its parameters and headers hold."""
        unknown = sorted(set(request.query_params) - allowed)
        if unknown:
            raise BadRequestData(f"Unsupported parameters: {', '.join(unknown)}")
        accept = request.headers.get("accept")
        if accept and negotiate(accept, [JSON]) is None:
            raise NotAcceptable(f"Only {JSON} is served, not {accept}")
        if request.headers.get(SERVICE_PATH, "").strip() not in ROOT_PATHS:
            raise BadRequestData("Only the root service path (/) is served")
        tenant = edge.tenant_of(request, SERVICE)
        terms = await self.contexts.term_map(edge.link_context(request) or self.default_context)
        return tenant, terms

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/entities", orion_errors(self.query_entities), methods=["GET"]),
            Route("/entities/{entity_id:path}", orion_errors(self.retrieve_entity), methods=["GET"]),
        ]


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, headers=headers)
