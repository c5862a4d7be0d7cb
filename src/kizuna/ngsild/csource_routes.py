"""Routes of clauses 6.8/6.9 for context source registrations (/csourceRegistrations): HTTP in,
service, HTTP out. No forwarding. Their subscriptions (/csourceSubscriptions) are served like
entity subscriptions, by :mod:`kizuna.ngsild.subscription_routes`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kizuna import paths
from kizuna.jsonld.contexts import ContextRegistry
from kizuna.ngsild import edge
from kizuna.ngsild.csource_matching import RegistrationFilter
from kizuna.ngsild.csources import RegistrationService, render_registration
from kizuna.ngsild.selection import names

REGISTRATIONS = "/csourceRegistrations"
ID = "registration_id"  # the path parameter naming one registration

P_CREATE = frozenset()
P_RETRIEVE = frozenset({"options"})
P_WRITE = frozenset()
P_PAGE = frozenset({"options", "limit", "offset", "count"})
P_DISCOVER = P_PAGE | frozenset(
    {
        "id",
        "type",
        "idPattern",
        "attrs",
        "q",
        "csf",
        "georel",
        "geometry",
        "coordinates",
        "geoproperty",
        "timerel",
        "timeAt",
        "endTimeAt",
        "timeproperty",
    }
)


class CsourceApi:
    """Holds what the registration routes share; one per application."""

    def __init__(
        self,
        registrations: RegistrationService,
        contexts: ContextRegistry,
    ) -> None:
        self.registrations = registrations
        self.contexts = contexts

    async def create_registration(self, request: Request) -> Response:
        edge.check_params(request, P_CREATE)
        payload, terms = await edge.read_payload_terms(request, self.contexts)
        reg_id = await self.registrations.create(
            edge.tenant_of(request), edge.subject_of(request), payload.body, terms, payload.context
        )
        return edge.created(paths.NGSI_LD + REGISTRATIONS, reg_id)

    async def retrieve_registration(self, request: Request) -> Response:
        media, terms, context = await edge.reading(request, self.contexts, P_RETRIEVE)
        options = edge.options_of(request)
        reg = await self.registrations.retrieve(*edge.member(request, ID))
        body = render_registration(reg, terms, sys_attrs="sysAttrs" in options)
        return edge.respond(body, media=media, context=context)

    async def query_registrations(self, request: Request) -> Response:
        media, terms, context = await edge.reading(request, self.contexts, P_DISCOVER)
        options = edge.options_of(request)
        page = edge.page_of(request)
        params = request.query_params
        selection = RegistrationFilter.from_params(
            terms,
            ids=names(params, "id"),
            types=params.get("type"),
            id_pattern=params.get("idPattern"),
            attrs=names(params, "attrs"),
            q=params.get("q"),
            csf=params.get("csf"),
            georel=params.get("georel"),
            geometry=params.get("geometry"),
            coordinates=params.get("coordinates"),
            geoproperty=params.get("geoproperty"),
            timerel=params.get("timerel"),
            time_at=params.get("timeAt"),
            end_time_at=params.get("endTimeAt"),
            timeproperty=params.get("timeproperty"),
        )
        regs, total = await self.registrations.query(
            edge.tenant_of(request), edge.subject_of(request), selection, limit=page.limit, offset=page.offset
        )
        body = [render_registration(r, terms, sys_attrs="sysAttrs" in options) for r in regs]
        return edge.respond_page(
            request, body, page, total, paths.NGSI_LD + REGISTRATIONS, media=media, context=context
        )

    async def update_registration(self, request: Request) -> Response:
        edge.check_params(request, P_WRITE)
        payload, terms = await edge.read_payload_terms(request, self.contexts, merge_patch=True)
        await self.registrations.update(*edge.member(request, ID), payload.body, terms)
        return edge.no_content()

    def routes(self) -> list[Route]:
        return edge.collection_routes(
            REGISTRATIONS,
            ID,
            query=self.query_registrations,
            create=self.create_registration,
            retrieve=self.retrieve_registration,
            update=self.update_registration,
            delete=self.registrations.delete,
        )
