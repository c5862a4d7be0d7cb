"""``GET /console/events``: a tenant's entity changes as Server-Sent Events (docs/console.md).

The route reads the request (tenant, @context, types, ``Last-Event-ID``) and hands the stream
to :class:`EventStream`, which writes each event compacted with the request's @context, a
comment when there is nothing to say, and ends the response after the stream's lifetime.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import orjson
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from kizuna.console.events import Change, ChangeStream, ChangeStreams, Event
from kizuna.errors import BadRequestData, NotAcceptable
from kizuna.jsonld.contexts import ContextRegistry
from kizuna.jsonld.terms import TermMap
from kizuna.media import negotiate
from kizuna.ngsild.edge import check_params, subject_of, tenant_of
from kizuna.ngsild.model import check_name
from kizuna.ngsild.render import View, render_entity
from kizuna.times import iso_millis

EVENT_STREAM = "text/event-stream"
PARAMS = frozenset({"type", "tenant", "context"})
SEND_TIMEOUT = 10.0  # seconds one write to a client may take before it is dropped as too slow
RETRY_MS = 1000  # how soon a browser reconnects after the stream ends
log = logging.getLogger("kizuna.console")


class ConsoleEventsApi:
    def __init__(
        self, streams: ChangeStreams, contexts: ContextRegistry, *, lifetime: float, heartbeat: float
    ) -> None:
        self.streams = streams
        self.contexts = contexts
        self.lifetime = lifetime
        self.heartbeat = heartbeat

    async def events(self, request: Request) -> EventStream:
        check_params(request, PARAMS)
        accept = request.headers.get("accept")
        if accept and negotiate(accept, [EVENT_STREAM]) is None:
            raise NotAcceptable(f"The event stream is {EVENT_STREAM}, not any of: {accept}")
        terms = await self.contexts.term_map(request.query_params.get("context"))
        names = request.query_params.getlist("type")
        types = frozenset(terms.expand(check_name(t, "Entity type")) for t in names) or None
        stream = await self.streams.open(
            tenant_of(request, param="tenant"), subject_of(request), types, last_event_id(request)
        )
        return EventStream(stream, terms, lifetime=self.lifetime, heartbeat=self.heartbeat)

    def routes(self) -> list[Route]:
        return [Route("/events", self.events, methods=["GET"])]


def last_event_id(request: Request) -> int | None:
    """The ``Last-Event-ID`` a reconnecting EventSource sends: the id of the last event it got."""
    raw = request.headers.get("last-event-id")
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 19:
        raise BadRequestData(f"Last-Event-ID {raw!r} is not an id this stream sent")
    return int(raw)


def frame(event: Event, terms: TermMap) -> bytes:
    """One event in the text/event-stream format (its data is one line of JSON)."""
    if isinstance(event, Change):
        data: dict[str, object] = {
            "id": event.entity_id,
            "type": [terms.compact(t) for t in event.types],
            "op": event.op,
            "at": iso_millis(event.at),
        }
        if event.entity is not None:
            data["entity"] = render_entity(event.entity, terms, View())
        name = "change"
    else:
        data = {"reason": "the changes since Last-Event-ID are no longer kept: read the entities again"}
        name = "reload"
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.seq, name.encode(), orjson.dumps(data))


class EventStream:
    """The response: runs until the client goes, the lifetime ends, or a write to the client
    takes longer than :data:`SEND_TIMEOUT` (a slow client is dropped; it reconnects and resumes
    from the log, nothing is buffered for it)."""

    def __init__(self, stream: ChangeStream, terms: TermMap, *, lifetime: float, heartbeat: float) -> None:
        self.stream = stream
        self.terms = terms
        self.lifetime = lifetime
        self.heartbeat = heartbeat

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        pump = asyncio.create_task(self._pump(send))
        gone = asyncio.create_task(_disconnected(receive))
        try:
            await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, gone):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self.stream.close()

    async def _pump(self, send: Send) -> None:
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),  # proxies such as nginx pass each event on at once
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.lifetime
        chunk = b"retry: %d\n: stream open\n\n" % RETRY_MS
        try:
            while True:
                await asyncio.wait_for(
                    send({"type": "http.response.body", "body": chunk, "more_body": True}), SEND_TIMEOUT
                )
                left = deadline - loop.time()
                if left <= 0:
                    break
                events = await self.stream.next(min(self.heartbeat, left))
                chunk = b"".join(frame(event, self.terms) for event in events) or b": heartbeat\n\n"
        except TimeoutError:
            log.warning("dropped a console event stream of tenant %r: too slow a reader", self.stream.tenant)
            return
        except Exception:
            log.exception("a console event stream of tenant %r failed", self.stream.tenant)
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
