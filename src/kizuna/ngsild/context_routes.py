"""The @context management endpoints of clause 5.13 (``/ngsi-ld/v1/jsonldContexts``): HTTP
in and out of :class:`~kizuna.ngsild.hosted_contexts.HostedContexts`. Listings name the node by
``--public-url``, never by the request's ``Host``."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kizuna import paths
from kizuna.jsonld.contexts import HOSTED_PATH
from kizuna.ngsild import edge
from kizuna.ngsild.hosted_contexts import HostedContexts
from kizuna.ngsild.selection import bool_param


class ContextApi:
    def __init__(self, contexts: HostedContexts, public_url: str) -> None:
        self.contexts = contexts
        self.base = public_url.rstrip("/")

    async def add(self, request: Request) -> Response:
        document = await edge.read_json(request)
        record = await self.contexts.add(edge.tenant_of(request), edge.subject_of(request), document)
        return Response(status_code=201, headers={"Location": HOSTED_PATH + record.local_id})

    async def list(self, request: Request) -> Response:
        edge.check_params(request, {"details", "kind"})
        details = bool_param(request.query_params, "details")
        records = self.contexts.listed(
            edge.tenant_of(request), edge.subject_of(request), request.query_params.get("kind")
        )
        described = [r.describe(self.base) for r in records]
        body = described if details else [d["URL"] for d in described]
        return Response(orjson.dumps(body), media_type=edge.JSON)

    async def serve(self, request: Request) -> Response:
        edge.check_params(request, {"details"})
        details = bool_param(request.query_params, "details")
        record = self.contexts.get(edge.subject_of(request), request.path_params["context_id"])
        body = record.describe(self.base) if details else record.document
        return Response(orjson.dumps(body), media_type=edge.JSON)

    async def delete(self, request: Request) -> Response:
        edge.check_params(request, {"reload"})
        reload = bool_param(request.query_params, "reload")
        tenant, subject = edge.tenant_of(request), edge.subject_of(request)
        await self.contexts.delete(tenant, subject, request.path_params["context_id"], reload=reload)
        return edge.no_content()

    def routes(self) -> list[Route]:
        path = paths.HOSTED_CONTEXTS
        return [
            Route(path, self.list, methods=["GET"]),
            Route(path, self.add, methods=["POST"]),
            Route(path + "/{context_id:path}", self.serve, methods=["GET"]),
            Route(path + "/{context_id:path}", self.delete, methods=["DELETE"]),
        ]
