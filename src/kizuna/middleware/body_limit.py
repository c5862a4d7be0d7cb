"""Bounds every request body, on every API root, before any route reads it.

Each route used to bound its own reads, so a root that forgot (``/management/v1`` stored a
100 MB dataset) or read first and measured after (``/dsp``) held whatever a client sent in
memory. Here a declared ``Content-Length`` over ``--max-body-bytes`` is answered 413 before
the body is read at all, and a body sent without one (chunked) fails with 413 as soon as it
passes the limit: no route ever sees more than the limit.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kizuna.errors import PayloadTooLarge
from kizuna.problems import problem_response
from kizuna.request_headers import header


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = header(scope, "content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await problem_response(self._too_large())(scope, receive, send)
            return
        received = 0

        async def bounded() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large()
            return message

        await self.app(scope, bounded, send)

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"The body is larger than {self.max_bytes} bytes (--max-body-bytes)")
