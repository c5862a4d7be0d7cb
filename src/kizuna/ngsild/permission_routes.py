"""Permission routes under /ngsi-ld/v1/auth/permissions, in Stellio's shape: HTTP in, Grants, out.

Plain ``application/json`` without a Link header works: the built-in terms (Permission, target,
assignee, action) are Kizuna's own, and entity types in targets are expanded with the request's
@context like everywhere else (the core context without one).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kizuna import paths
from kizuna import query as ql
from kizuna.access.grants import Grants, PermissionFilter, render
from kizuna.access.permissions import Action
from kizuna.errors import BadRequestData
from kizuna.jsonld.contexts import ContextRegistry
from kizuna.ngsild import edge, selection

PATH = paths.NGSI_LD + "/auth/permissions"  # for Location and paging links; routes are relative
P_QUERY = frozenset(
    {"targetId", "targetType", "assignee", "assigner", "action", "options", "count", "limit", "offset"}
)
P_RETRIEVE = frozenset({"options"})
ID = "pid"  # the path parameter naming one permission


class PermissionApi:
    def __init__(self, grants: Grants, contexts: ContextRegistry) -> None:
        self.grants = grants
        self.contexts = contexts

    async def create(self, request: Request) -> Response:
        edge.check_params(request, frozenset())
        payload, terms = await edge.read_payload_terms(request, self.contexts)
        pid = await self.grants.create(
            edge.tenant_of(request), edge.subject_of(request), payload.body, terms.expand
        )
        return edge.created(PATH, pid)

    async def retrieve(self, request: Request) -> Response:
        media, terms, context = await edge.reading(request, self.contexts, P_RETRIEVE)
        doc = await self.grants.get(*edge.member(request, ID))
        body = render(doc, terms.compact, sys_attrs="sysAttrs" in edge.options_of(request))
        return edge.respond(body, media=media, context=context)

    async def update(self, request: Request) -> Response:
        edge.check_params(request, frozenset())
        payload, terms = await edge.read_payload_terms(request, self.contexts)
        await self.grants.update(*edge.member(request, ID), payload.body, terms.expand)
        return edge.no_content()

    async def query(self, request: Request) -> Response:
        return await self._query(request, assigned=False)

    async def assigned(self, request: Request) -> Response:
        return await self._query(request, assigned=True)

    async def _query(self, request: Request, *, assigned: bool) -> Response:
        media, terms, context = await edge.reading(request, self.contexts, P_QUERY)
        params = request.query_params
        action = Action.named(params.get("action", "admin"))
        if action is None:
            raise BadRequestData("action must be 'read', 'write', 'admin' or 'own'")
        ids = selection.names(params, "targetId")
        types = None
        if "targetType" in params:
            types = ql.parse_type_expr(params["targetType"]).resolve(terms.expand).matches
        wanted = PermissionFilter(
            target_ids=None if ids is None else frozenset(ids),
            target_types=types,
            assignee=params.get("assignee"),
            assigner=params.get("assigner"),
            action=action,
        )
        page_of = edge.page_of(request, params)
        found = await self.grants.query(
            edge.tenant_of(request), edge.subject_of(request), wanted, assigned=assigned
        )
        sys_attrs = "sysAttrs" in edge.options_of(request)
        window = found[page_of.offset : page_of.offset + page_of.limit]
        body = [render(doc, terms.compact, sys_attrs=sys_attrs) for doc in window]
        path = f"{PATH}/assigned" if assigned else PATH
        return edge.respond_page(request, body, page_of, len(found), path, media=media, context=context)

    def routes(self) -> list[Route]:
        """Relative to /ngsi-ld/v1/auth."""
        # /permissions/assigned first: the member route would take "assigned" for an id.
        return [
            Route("/permissions/assigned", self.assigned, methods=["GET"]),
            *edge.collection_routes(
                "/permissions",
                ID,
                query=self.query,
                create=self.create,
                retrieve=self.retrieve,
                update=self.update,
                delete=self.grants.delete,
            ),
        ]
