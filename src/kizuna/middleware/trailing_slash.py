"""Serves ``/entities/`` and ``/entities`` alike, without redirects."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


class TrailingSlash:
    """Serve ``/entities/`` and ``/entities`` alike, without redirects (clients and the ETSI suite
    use both; a 307 would turn a POST into a second round trip or a failure)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if len(path) > 1 and path.endswith("/"):
                scope = {**scope, "path": path.rstrip("/") or "/"}
        await self.app(scope, receive, send)
