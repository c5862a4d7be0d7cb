"""``GET /metrics``: on the main port behind the admins-only check, or on ``--metrics-port``.

A separate port is for a scraper on the node's own network that holds no credentials: it serves
nothing but the metrics, on ``--metrics-host`` (loopback unless told otherwise). Each worker
serves it on the same port (``SO_REUSEPORT``), so it answers while any worker lives, and with
several workers every answer adds up the counts of all (:mod:`kizuna.metrics`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator, Sequence

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kizuna import metrics
from kizuna.dataspace import negotiation, transfer
from kizuna.dataspace.core import NEGOTIATION, TENANT, TRANSFER
from kizuna.store import Store

PATH = "/metrics"
DSP_STATES = {NEGOTIATION: negotiation.STATES, TRANSFER: transfer.STATES}


class MetricsApi:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def scrape(self, request: Request) -> Response:
        metrics.pool_used(self.store.pool_usage())
        vitals = await self.store.vitals(TENANT, list(DSP_STATES))
        return Response(metrics.exposition(vitals, DSP_STATES, time.time()), media_type=metrics.CONTENT_TYPE)

    def route(self, middleware: Sequence[Middleware] = ()) -> Route:
        return Route(PATH, self.scrape, methods=["GET"], middleware=middleware)


class _QuietServer(uvicorn.Server):
    """Runs inside the node's own event loop: the node's server owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class MetricsServer:
    """The ``--metrics-port`` listener, started and stopped with the node's lifespan."""

    def __init__(self, api: MetricsApi, host: str, port: int) -> None:
        app = Starlette(routes=[api.route()])
        self.host, self.port = host, port
        self._server = _QuietServer(
            # No log configuration: this server shares the process's logging with the node's.
            uvicorn.Config(
                app, lifespan="off", log_config=None, log_level=None, access_log=False, server_header=False
            )
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # one per worker, one port
        try:
            sock.bind((self.host.strip("[]"), self.port))
        except OSError as error:
            sock.close()
            raise SystemExit(f"kizuna: cannot serve metrics on {self.host}:{self.port}: {error}") from None
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="kizuna-metrics")

    async def stop(self) -> None:
        if self._task is not None:
            self._server.should_exit = True
            await self._task
            self._task = None
