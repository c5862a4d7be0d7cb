"""What sending a notification costs the delivering process: CPU seconds of ``HttpSender.send``.

``--tasks`` tasks (one per subscription being delivered) each POST ``--posts`` notifications of
``--entities`` street lights to a receiver in another process (a bare asyncio server answering
204, so that its CPU is not counted), over loopback. It prints the sender's CPU seconds and
POSTs per CPU second for each ``--rounds``; run it with ``PYTHONPATH`` on two checkouts to
compare their senders (the CPU time, not the wall time, is the figure on a loaded machine).

    .venv/bin/python bench/senders.py [--tasks 100] [--posts 20] [--entities 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import time

from kizuna.notify.senders import HttpSender, Message
from kizuna.outbound import OutboundGate


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while head := await reader.readuntil(b"\r\n\r\n"):
        lines = head.lower().split(b"\r\n")
        length = next(int(line.split(b":", 1)[1]) for line in lines if line.startswith(b"content-length"))
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")


def _receive(sock: socket.socket) -> None:
    async def serve() -> None:
        server = await asyncio.start_server(_tolerant, sock=sock, backlog=1024)
        await server.serve_forever()

    async def _tolerant(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _answer(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    asyncio.run(serve())


def notification(entities: int) -> dict[str, object]:
    lights = [
        {"id": f"urn:ngsi-ld:Streetlight:{n}", "type": "Streetlight", "counter": n, "status": "ok"}
        for n in range(entities)
    ]
    return {"id": "urn:ngsi-ld:Notification:x", "type": "Notification", "subscriptionId": "s", "data": lights}


async def round_of(url: str, tasks: int, posts: int, body: dict[str, object]) -> float:
    sender = HttpSender(OutboundGate.for_node("127.0.0.0/8", open_loopback_node=False))
    message = Message(url, body, {"Content-Type": "application/json"}, 10.0)

    async def task() -> None:
        for _ in range(posts):
            await sender.send(message)

    started = time.process_time()
    try:
        await asyncio.gather(*(task() for _ in range(tasks)))
    finally:
        await sender.close()
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--posts", type=int, default=20)
    parser.add_argument("--entities", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    receiver = multiprocessing.Process(target=_receive, args=(sock,), daemon=True)
    receiver.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/notify"
    body = notification(args.entities)
    print(f"kizuna sender bench: {args.tasks} tasks x {args.posts} POSTs of {args.entities} entities")
    try:
        for n in range(args.rounds):
            cpu = asyncio.run(round_of(url, args.tasks, args.posts, body))
            print(f"round {n + 1}: {cpu:.2f} s CPU, {args.tasks * args.posts / cpu:.0f} POSTs per CPU second")
    finally:
        receiver.terminate()


if __name__ == "__main__":
    main()
