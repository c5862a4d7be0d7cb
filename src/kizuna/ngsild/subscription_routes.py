"""Subscription routes: HTTP in, service, HTTP out. One :class:`SubscriptionApi` per kind, the
same operations under their own path: entity subscriptions (clauses 6.10/6.11, ``SUBSCRIPTIONS``)
and context source registration subscriptions (clauses 6.12/6.13, ``CSOURCE_SUBSCRIPTIONS``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kizuna import paths
from kizuna.jsonld.contexts import ContextRegistry
from kizuna.ngsild import edge
from kizuna.ngsild.subscription_members import render
from kizuna.ngsild.subscriptions import SubscriptionService

SUBSCRIPTIONS = "/subscriptions"
CSOURCE_SUBSCRIPTIONS = "/csourceSubscriptions"
ID = "subscription_id"  # the path parameter naming one subscription

P_CREATE = frozenset()
P_RETRIEVE = frozenset({"options"})
P_QUERY = frozenset({"options", "limit", "offset", "count"})
P_WRITE = frozenset()


class SubscriptionApi:
    """Holds what the routes of one kind of subscription share; one per kind and application."""

    def __init__(
        self,
        subscriptions: SubscriptionService,
        contexts: ContextRegistry,
        *,
        path: str,
    ) -> None:
        """``path`` is the collection the kind is served under (``SUBSCRIPTIONS``, ...)."""
        self.path = path
        self.subscriptions = subscriptions
        self.contexts = contexts

    async def create(self, request: Request) -> Response:
        edge.check_params(request, P_CREATE)
        payload, terms = await edge.read_payload_terms(request, self.contexts)
        sub_id = await self.subscriptions.create(
            edge.tenant_of(request), edge.subject_of(request), payload.body, terms, payload.context
        )
        return edge.created(paths.NGSI_LD + self.path, sub_id)

    async def retrieve(self, request: Request) -> Response:
        media, terms, context = await edge.reading(request, self.contexts, P_RETRIEVE)
        options = edge.options_of(request)
        sub = await self.subscriptions.retrieve_with_status(*edge.member(request, ID))
        body = render(sub, terms, sys_attrs="sysAttrs" in options, base_url=str(request.base_url))
        return edge.respond(body, media=media, context=context)

    async def query(self, request: Request) -> Response:
        media, terms, context = await edge.reading(request, self.contexts, P_QUERY)
        options = edge.options_of(request)
        page = edge.page_of(request)
        subs, total = await self.subscriptions.query(
            edge.tenant_of(request), edge.subject_of(request), limit=page.limit, offset=page.offset
        )
        base_url = str(request.base_url)
        body = [render(s, terms, sys_attrs="sysAttrs" in options, base_url=base_url) for s in subs]
        return edge.respond_page(
            request, body, page, total, paths.NGSI_LD + self.path, media=media, context=context
        )

    async def update(self, request: Request) -> Response:
        edge.check_params(request, P_WRITE)
        payload, terms = await edge.read_payload_terms(request, self.contexts, merge_patch=True)
        await self.subscriptions.update(
            *edge.member(request, ID),
            payload.body,
            terms,
            payload.context,
            merge_patch=request.headers.get("content-type", "").split(";")[0].strip().lower()
            == edge.MERGE_PATCH,
        )
        return edge.no_content()

    def routes(self) -> list[Route]:
        return edge.collection_routes(
            self.path,
            ID,
            query=self.query,
            create=self.create,
            retrieve=self.retrieve,
            update=self.update,
            delete=self.subscriptions.delete,
        )
