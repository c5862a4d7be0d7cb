"""The plain HTTP/1.1 notification client (``kizuna.notify.http1``) against a scripted loopback
server: what it sends, which answers it reads to their end and keeps the connection after, and
what fails a delivery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from kizuna.errors import DeliveryError
from kizuna.notify.http1 import request_bytes
from kizuna.notify.senders import HttpSender, Message
from kizuna.outbound import OutboundGate

GATE = OutboundGate.for_node("127.0.0.0/8", open_loopback_node=False)


@dataclass
class Script:
    """Answers the requests it reads with ``answers`` in turn (raw bytes; b"" closes the
    connection without answering), counting connections and keeping what it read."""

    answers: list[bytes]
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
                self.requests.append(head + await reader.readexactly(length))
                answer = self.answers.pop(0)
                if not answer:
                    break
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


@pytest.fixture
async def served() -> AsyncIterator[tuple[Script, str]]:
    script = Script([])
    server = await asyncio.start_server(script.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield script, f"http://127.0.0.1:{port}/notify?x=1"
    finally:
        server.close()


async def post(sender: HttpSender, url: str, headers: dict[str, str] | None = None) -> int:
    headers = headers or {"Content-Type": "application/json"}
    return await sender.send(Message(url, {"data": [1]}, headers, 2.0))


async def test_answers_of_every_framing_are_read_and_the_connection_kept(served: tuple[Script, str]) -> None:
    script, url = served
    script.answers = [
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
    ]
    sender = HttpSender(GATE)
    try:
        assert [await post(sender, url) for _ in range(5)] == [204, 200, 201, 202, 204]
    finally:
        await sender.close()
    assert script.connections == 2  # one until the answer that said close, one after
    first = script.requests[0]
    assert first.startswith(b"POST /notify?x=1 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"Content-Type: application/json\r\n" in first and first.endswith(b'{"data":[1]}')


async def test_a_non_2xx_or_no_answer_fails_the_delivery(served: tuple[Script, str]) -> None:
    script, url = served
    script.answers = [
        b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n",
        b"",
        b"SSH-2.0-OpenSSH\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
    ]
    sender = HttpSender(GATE)
    try:
        for reason in ("HTTP 503", "could not be reached", "could not be reached"):
            with pytest.raises(DeliveryError, match=reason):
                await post(sender, url)
        assert await post(sender, url) == 204
    finally:
        await sender.close()
    # The 503 was a whole answer: its connection carried the next request. The one closed
    # without an answer and the one that spoke no HTTP are not used again.
    assert script.connections == 3


async def test_a_header_that_would_end_its_line_is_never_sent(served: tuple[Script, str]) -> None:
    script, url = served
    sender = HttpSender(GATE)
    try:
        with pytest.raises(DeliveryError, match="cannot be sent"):
            await post(sender, url, {"X-Note": "a\r\nX-Injected: 1"})
    finally:
        await sender.close()
    assert script.requests == []


def test_the_request_names_the_host_as_the_url_does() -> None:
    assert request_bytes("http://[::1]/n", {}, b"")[:2] == ("::1", 80)
    assert b"Host: [::1]\r\n" in request_bytes("http://[::1]/n", {}, b"")[2]
    assert b"POST /a%20b?q=%C3%A9 HTTP/1.1" in request_bytes("http://h:81/a b?q=\u00e9", {}, b"")[2]
