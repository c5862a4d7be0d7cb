"""Refuses cross-origin browser requests, so that a web page cannot drive an API from a browser.

Browsers send ``Origin`` (and ``Sec-Fetch-Site``) with cross-origin requests, and a "simple"
cross-origin POST is sent before any CORS check could stop it: answering it at all is CSRF, even
on loopback. Machine clients send neither header and pass. No CORS headers are ever granted.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from kizuna.errors import AccessDenied
from kizuna.problems import problem_response


def _own_origin(scope: Scope, headers: Headers) -> str:
    return f"{scope.get('scheme', 'http')}://{headers.get('host', '')}"


class SameOriginOnly:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            cross = headers.get("sec-fetch-site") in ("cross-site", "same-site")
            if cross or (origin is not None and origin != _own_origin(scope, headers)):
                error = AccessDenied(f"Cross-origin requests are not served here (Origin: {origin})")
                await problem_response(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)
