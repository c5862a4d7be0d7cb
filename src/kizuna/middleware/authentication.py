"""Ties each request to a subject before any route runs; credentials that fail answer 401 here.

The subject lands in ``request.state.subject``; routes pass it to the services, which decide.
The DSP endpoints are not behind this middleware: their callers are participants proving
themselves with signed DSP tokens, and the data plane's bearer tokens are transfer tokens.
"""

from __future__ import annotations

from starlette.datastructures import QueryParams
from starlette.types import ASGIApp, Receive, Scope, Send

from kizuna.access.authenticator import Authenticator
from kizuna.errors import NgsiLdError
from kizuna.ngsild.edge import TENANT_HEADER
from kizuna.problems import problem_response
from kizuna.request_headers import header
from kizuna.store import DEFAULT_TENANT

API_KEY_HEADER = "x-api-key"


class Authentication:
    """``tenant_header`` names the header the API under it reads the tenant from (NGSI v2's is
    ``Fiware-Service``): credentials are checked for the tenant the request acts in, so a key
    bound to one tenant, or a token of one tenant's issuer, proves nothing in another. Without
    that header, ``tenant_param`` names the query parameter that may carry it (the console's
    event stream: a browser's EventSource cannot set headers)."""

    def __init__(
        self,
        app: ASGIApp,
        authenticator: Authenticator,
        tenant_header: str = TENANT_HEADER,
        tenant_param: str | None = None,
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.tenant_header = tenant_header
        self.tenant_param = tenant_param

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tenant = header(scope, self.tenant_header, DEFAULT_TENANT)
        if not tenant and self.tenant_param:
            tenant = QueryParams(scope["query_string"]).get(self.tenant_param, DEFAULT_TENANT)
        try:
            subject = await self.authenticator.subject(
                header(scope, "authorization"), header(scope, API_KEY_HEADER), tenant
            )
        except NgsiLdError as error:
            await problem_response(error)(scope, receive, send)
            return
        # In place: the audit middleware outside reads the subject of the answers it records.
        scope.setdefault("state", {})["subject"] = subject
        await self.app(scope, receive, send)
