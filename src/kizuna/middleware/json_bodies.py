"""Accepts request bodies only as JSON (``application/json`` or any ``+json`` type).

A browser can send ``text/plain`` or form bodies cross-origin without a preflight; an API that
parses those as JSON can be driven by any web page. Requiring a JSON media type closes that
door for the APIs that take no other.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from kizuna.errors import UnsupportedMediaType
from kizuna.problems import problem_response

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class JsonBodiesOnly:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in BODY_METHODS:
            headers = Headers(scope=scope)
            has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
            if has_body and not is_json(headers.get("content-type")):
                error = UnsupportedMediaType(f"Expected a JSON body, got {headers.get('content-type')!r}")
                await problem_response(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)
