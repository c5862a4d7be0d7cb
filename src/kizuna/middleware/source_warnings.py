"""Tells the client, in ``NGSILD-Warning`` (clause 6.3.17), which context sources failed their
share of a forwarded read that still succeeded."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kizuna.ngsild.forwarding_calls import WARNINGS_STATE, SourceWarning

HEADER = b"ngsild-warning"


class SourceWarnings:
    """Gives each request an empty list of :class:`SourceWarning` and, if forwarding filled it
    by the time the answer starts, adds them as one header: the failures happen deep in the
    services, and every read route would otherwise have to carry them back by hand."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        warnings: list[SourceWarning] = []
        scope.setdefault("state", {})[WARNINGS_STATE] = warnings

        async def send_warned(message: Message) -> None:
            if message["type"] == "http.response.start" and warnings:
                value = ", ".join(w.header() for w in warnings).encode("latin-1")
                message = {**message, "headers": [*message.get("headers", ()), (HEADER, value)]}
            await send(message)

        await self.app(scope, receive, send_warned)
