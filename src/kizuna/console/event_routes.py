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
from kizuna.errors import BadRequestData, NgsiLdError, NotAcceptable
from kizuna.jsonld.contexts import ContextRegistry
from kizuna.jsonld.terms import TermMap
from kizuna.media import negotiate
from kizuna.ngsild.edge import check_params, subject_of, tenant_of
from kizuna.ngsild.model import check_name
from kizuna.ngsild.render import View, render_entity
from kizuna.times import iso_millis

EVENT_STREAM = "text/event-stream"
PARAMS = frozenset({"type", "tenant", "context"})
FRAMES_KEPT = 1024  # rendered events the streams share (see Frames)
SEND_TIMEOUT = 10.0  # seconds one write to a client may take before it is dropped as too slow
RETRY_MS = 1000  # how soon a browser reconnects after the stream ends
HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # proxies such as nginx pass each event on at once
]
log = logging.getLogger("kizuna.console")


class ConsoleEventsApi:
    def __init__(
        self, streams: ChangeStreams, contexts: ContextRegistry, *, lifetime: float, heartbeat: float
    ) -> None:
        self.streams = streams
        self.contexts = contexts
        self.lifetime = lifetime
        self.heartbeat = heartbeat
        self.frames = Frames()

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
        return EventStream(stream, terms, self.frames, lifetime=self.lifetime, heartbeat=self.heartbeat)

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


class Frames:
    """Events as sent, kept a little while: streams with the same @context send the same bytes
    for a change (what differs between subjects is whether they get it, not what it says), so
    ten tabs cost one rendering. TermMaps are kept by the registry, so one @context is one key."""

    def __init__(self) -> None:
        # the TermMap is kept with its bytes: an id is only unique while its object lives
        self._kept: dict[tuple[str, int, int], tuple[TermMap, bytes]] = {}

    def of(self, tenant: str, event: Event, terms: TermMap) -> bytes:
        if not isinstance(event, Change):
            return frame(event, terms)
        key = (tenant, event.seq, id(terms))
        found = self._kept.get(key)
        if found is None or found[0] is not terms:
            found = self._kept[key] = (terms, frame(event, terms))
            if len(self._kept) > FRAMES_KEPT:
                del self._kept[next(iter(self._kept))]
        return found[1]


class EventStream:
    """The response: runs until the client goes, the lifetime ends, or a write to the client
    takes longer than :data:`SEND_TIMEOUT` (a slow client is dropped; it reconnects and resumes
    from the log, nothing is buffered for it)."""

    def __init__(
        self, stream: ChangeStream, terms: TermMap, frames: Frames, *, lifetime: float, heartbeat: float
    ) -> None:
        self.stream = stream
        self.terms = terms
        self.frames = frames
        self.lifetime = lifetime
        self.heartbeat = heartbeat

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "HEAD":  # the headers of the stream, and no stream to hold open
            self.stream.close()
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
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
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.lifetime
        chunk = b"retry: %d\n: stream open\n\n" % RETRY_MS
        try:
            while True:
                async with asyncio.timeout(SEND_TIMEOUT):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                left = deadline - loop.time()
                if left <= 0:
                    break
                events = await self.stream.next(min(self.heartbeat, left))
                tenant = self.stream.tenant
                chunk = b"".join(self.frames.of(tenant, e, self.terms) for e in events) or b": heartbeat\n\n"
        except TimeoutError:
            log.warning("dropped a console event stream of tenant %r: too slow a reader", self.stream.tenant)
            return
        except NgsiLdError as error:  # the store went away: the client reconnects and resumes
            log.warning("ended a console event stream of tenant %r: %s", self.stream.tenant, error.detail)
            return
        except Exception:
            log.exception("a console event stream of tenant %r failed", self.stream.tenant)
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
