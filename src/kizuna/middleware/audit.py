"""Writes every refusal to the audit trail, whichever layer refused.

Refusals come from the authentication middleware, from :mod:`~kizuna.middleware.admins_only`,
from the services and from the data plane; watching the answers at the outermost layer records
each of them once, without any of those places having to remember. Answers are 401 and 403,
and the refusals a status does not show (a resource hidden behind 404, the entities refused in
a batch's 207), which :func:`kizuna.problems.note_refusals` leaves in the request's state.
The subject is the one :mod:`~kizuna.middleware.authentication` put into the request's state
(anonymous when the credentials themselves were refused). Seeing every decision once, it also
counts them (``kizuna_auth_decisions_total``): denied as recorded here, allowed when a request
an authentication layer let in was refused nothing.
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kizuna.access.audit import DENIED, AuditTrail
from kizuna.metrics import AUTH_ALLOWED, AUTH_DENIED
from kizuna.ngsild.edge import TENANT_HEADER
from kizuna.problems import REFUSALS_STATE
from kizuna.request_headers import header
from kizuna.store import DEFAULT_TENANT

REFUSALS = frozenset({401, 403})
_DETAIL_BYTES = 4096  # a ProblemDetails body; anything longer is not one of ours


class AuditRefusals:
    def __init__(self, app: ASGIApp, trail: AuditTrail) -> None:
        self.app = app
        self.trail = trail

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})  # shared with the layers inside, which fill it
        # Read before the routers inside rewrite root_path in this same scope.
        path, method = scope["path"], scope["method"]
        query = scope.get("query_string", b"").decode("latin-1")
        tenant = header(scope, TENANT_HEADER, DEFAULT_TENANT)
        status = 0
        body = b""

        async def watch(message: Message) -> None:
            nonlocal status, body
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and status in REFUSALS:
                body = (body + message.get("body", b""))[:_DETAIL_BYTES]
            await send(message)

        await self.app(scope, receive, watch)
        subject, operation = state.get("subject"), f"{method} {path}"
        hidden = state.get(REFUSALS_STATE, ())
        if status in REFUSALS or hidden:
            AUTH_DENIED.inc()
        elif subject is not None:  # authenticated (or anonymous) and let through
            AUTH_ALLOWED.inc()
        if status in REFUSALS:
            target = f"{path}?{query}" if query else path
            await self.trail.record(subject, tenant, operation, target, DENIED, _why(status, body))
        for target, why in hidden:
            await self.trail.record(subject, tenant, operation, target, DENIED, why)


def _why(status: int, body: bytes) -> str:
    try:
        problem = orjson.loads(body)
    except orjson.JSONDecodeError:
        return str(status)
    if not isinstance(problem, dict):
        return str(status)
    return f"{status} {problem.get('type', '')}: {problem.get('detail') or problem.get('title', '')}".strip()
