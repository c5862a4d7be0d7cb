"""``GET /console/map``: the map's rows (:mod:`.map_points`) for the tenant the request names."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kizuna.console.map_points import map_points
from kizuna.jsonld.contexts import ContextRegistry
from kizuna.ngsild.edge import check_params, subject_of, tenant_of
from kizuna.ngsild.entities import EntityService


class ConsoleMapApi:
    def __init__(self, entities: EntityService, contexts: ContextRegistry) -> None:
        self.entities = entities
        self.contexts = contexts

    async def rows(self, request: Request) -> Response:
        """Types compacted with the core @context, as the event stream and the NGSI-LD API
        name them to a client that sends none, so the page matches its rows to both."""
        check_params(request, frozenset({"tenant"}))
        points = await map_points(self.entities, tenant_of(request, param="tenant"), subject_of(request))
        terms = await self.contexts.term_map(None)
        points.types = [terms.compact(t) for t in points.types]
        return Response(orjson.dumps(points.document()), media_type="application/json")

    def routes(self) -> list[Route]:
        """Relative to ``/console``, behind the authentication of every API."""
        return [Route("/map", self.rows, methods=["GET"])]
