"""Notifications over plain HTTP/1.1 on kept-alive asyncio connections.

A notification is one POST whose answer matters only by its status, yet httpx/httpcore took most
of the delivering process (a py-spy profile: 47% under ``HttpSender.send``, most of it in the
pool's bookkeeping, the per-request socket checks and the request and response models around
two socket writes), more than reading, rendering and acknowledging the rows. Here a request is
one write of its bytes and the answer is read up to the end of its body; connections are kept
per address, as many as are in use at once (one per subscription being delivered).

The address is the one :meth:`OutboundGate.resolve` checked, with the name in ``Host``.
HTTPS stays with httpx (its trust store and TLS handling)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from kizuna.errors import DeliveryError
from kizuna.outbound import OutboundGate

IDLE_PER_ADDRESS = 128  # idle connections kept per (address, port); more are closed
MAX_HEADER_LINES = 100  # in an answer, before it is given up as not HTTP
MAX_BODY = 1024 * 1024  # an answer's body read to keep its connection; a longer one closes it
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")  # a header name (RFC 9110 5.1)
PATH_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))  # kept as is; the rest percent-encoded


class BadAnswer(ConnectionError):
    """What came back is not an HTTP/1.x answer this client reads."""


@dataclass(slots=True)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def usable(self) -> bool:
        return not (self.reader.at_eof() or self.writer.is_closing())

    def close(self) -> None:
        self.writer.close()


def request_bytes(uri: str, headers: Mapping[str, str], body: bytes) -> tuple[str, int, bytes]:
    """(host, port, the POST's bytes) for an ``http://`` URI; DeliveryError for a URI or a header
    that cannot be sent (a header value must not end the line it is on)."""
    try:
        parts = urlsplit(uri)
        host, port = parts.hostname, parts.port
    except ValueError:
        raise DeliveryError(f"{uri} is not a valid URL") from None
    if not host:
        raise DeliveryError(f"{uri} names no host")
    path = quote(parts.path or "/", safe=PATH_SAFE)
    if parts.query:
        path += "?" + quote(parts.query, safe=PATH_SAFE)
    name = f"[{host}]" if ":" in host else host
    lines = [f"POST {path} HTTP/1.1", f"Host: {name}" if port in (None, 80) else f"Host: {name}:{port}"]
    for key, value in headers.items():
        if not TOKEN.match(key) or any(c in value for c in "\r\n\0"):
            raise DeliveryError(f"header {key!r} cannot be sent")
        lines.append(f"{key}: {value}")
    lines.append(f"Content-Length: {len(body)}")
    return host, port or 80, ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """The status of the answer and whether its connection can carry the next request; the body
    is read (and dropped) to its end. Interim (1xx) answers are skipped."""
    while True:
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionError("closed before answering")
        version, _, rest = status_line.partition(b" ")
        if not version.startswith(b"HTTP/1.") or not rest[:3].isdigit():
            raise BadAnswer("not an HTTP/1.x answer")
        status = int(rest[:3])
        fields: dict[bytes, bytes] = {}
        for _ in range(MAX_HEADER_LINES):
            line = await reader.readline()
            if line in (b"\r\n", b"\n"):
                break
            if not line.endswith(b"\n"):
                raise BadAnswer("the answer's head ended early")
            key, _, value = line.partition(b":")
            fields[key.strip().lower()] = value.strip().lower()
        else:
            raise BadAnswer("too many header lines")
        if status >= 200:
            break
    connection = fields.get(b"connection", b"")
    keep = (b"keep-alive" in connection) if version == b"HTTP/1.0" else (b"close" not in connection)
    if b"chunked" in fields.get(b"transfer-encoding", b""):
        await _read_chunks(reader)
    elif b"content-length" in fields:
        try:
            length = int(fields[b"content-length"])
        except ValueError:
            raise BadAnswer("a Content-Length that is not a number") from None
        if length > MAX_BODY:
            return status, False
        await reader.readexactly(length)
    elif status not in (204, 304):
        keep = False  # the body runs to the end of the connection
    return status, keep


async def _read_chunks(reader: asyncio.StreamReader) -> None:
    total = 0
    while True:
        size_line = await reader.readline()
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BadAnswer("a chunk size that is not a number") from None
        if size == 0:
            break
        total += size
        if total > MAX_BODY:
            raise BadAnswer("an answer longer than this client reads")
        await reader.readexactly(size + 2)
    for _ in range(MAX_HEADER_LINES):  # trailers, up to the empty line
        if await reader.readline() in (b"\r\n", b"\n", b""):
            return
    raise BadAnswer("too many trailer lines")


class PlainHttp:
    """POSTs to ``http://`` endpoints; each call raises or returns the answer's status."""

    def __init__(self, gate: OutboundGate) -> None:
        self.gate = gate
        self._idle: dict[tuple[str, int], list[_Connection]] = {}

    async def post(self, uri: str, headers: Mapping[str, str], body: bytes, timeout: float) -> int:
        host, port, request = request_bytes(uri, headers, body)
        async with asyncio.timeout(timeout):
            address = await self.gate.resolve(host, port)
            key = (address, port)
            idle = self._idle.get(key)
            while idle:  # one the server closed while it was idle has seen its end by now
                connection = idle.pop()
                if connection.usable():
                    return await self._exchange(key, connection, request)
                connection.close()
            reader, writer = await asyncio.open_connection(address, port)
            return await self._exchange(key, _Connection(reader, writer), request)

    async def _exchange(self, key: tuple[str, int], connection: _Connection, request: bytes) -> int:
        try:
            connection.writer.write(request)
            await connection.writer.drain()
            status, keep = await read_answer(connection.reader)
        except BaseException:  # an error, a timeout or a cancellation: the answer's state is unknown
            connection.close()
            raise
        idle = self._idle.setdefault(key, [])
        if keep and len(idle) < IDLE_PER_ADDRESS:
            idle.append(connection)
        else:
            connection.close()
        return status

    async def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
