"""Counts and times every HTTP request by its route template, method and status.

The label is the template the router matched (``/ngsi-ld/v1/entities/{entityId}``), never the
path: an id in a label would make one series per entity. The routers leave the matched route
in the scope; the templates of all routes, mount prefixes included, are worked out once here.
Requests no route matched are ``unmatched``, and methods outside HTTP's own are ``other``, so
that a client cannot create series. The children of each label set are kept, so a request
costs two dictionary lookups and two updates.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kizuna.metrics import HTTP_DURATION, HTTP_REQUESTS

UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def templates(routes: Iterable[BaseRoute], prefix: str = "") -> dict[int, str]:
    """id(route) -> its full template, for every endpoint under ``routes`` (routes are not
    hashable: they compare by value)."""
    found: dict[int, str] = {}
    for route in routes:
        path = prefix + getattr(route, "path", "")
        if isinstance(route, Mount):
            found.update(templates(route.routes, path))
        else:
            found[id(route)] = path or "/"
    return found


class RequestMetrics:
    def __init__(self, app: ASGIApp, routes: Iterable[BaseRoute]) -> None:
        self.app = app
        self.templates = templates(routes)
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._timers: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app fails before answering

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            route = self.templates.get(id(scope.get("route")), UNMATCHED)
            method = scope["method"] if scope["method"] in METHODS else "other"
            timer = self._timers.get((route, method))
            if timer is None:
                timer = self._timers[(route, method)] = HTTP_DURATION.labels(route, method)
            counter = self._counters.get((route, method, status))
            if counter is None:
                counter = self._counters[(route, method, status)] = HTTP_REQUESTS.labels(
                    route, method, str(status)
                )
            counter.inc()
            timer.observe(time.perf_counter() - started)
