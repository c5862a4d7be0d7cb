"""Running nodes on loopback for the dataspace tests."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn

from kizuna.app import create_app
from kizuna.config import Settings
from kizuna.dataspace.core import TRANSFER, Records
from kizuna.dataspace.sealing import Sealer
from kizuna.store import open_store

DSPACE = "https://w3id.org/dspace/2025/1/context.jsonld"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(app: Any, port: int) -> Iterator[str]:
    """An ASGI app served by uvicorn in a thread on 127.0.0.1:port."""
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not server.started:
        if time.time() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def node(settings: Settings) -> Iterator[str]:
    with serve(create_app(settings), settings.port) as url:
        yield url


def start_negotiation(
    http: Any, consumer: str, provider: str, offer: dict[str, Any], counter_party: str | None = None
) -> str:
    """The id of the negotiation ``consumer`` starts for ``offer`` at ``provider``'s DSP endpoint.

    ``http`` is whatever client the test holds (the ``httpx`` module, or a client carrying an
    admin's credentials); the 201 is checked here so that a refused start fails where it happens.
    """
    body: dict[str, Any] = {"counterPartyAddress": f"{provider}/dsp", "offer": offer}
    if counter_party is not None:
        body["counterPartyId"] = counter_party
    started = http.post(f"{consumer}/management/v1/negotiations", json=body)
    assert started.status_code == 201, started.text
    return started.json()["id"]


def wait_for(fetch: Any, predicate: Any, timeout: float = 10.0) -> Any:
    deadline = time.time() + timeout
    while True:
        value = fetch()
        if predicate(value):
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out; last value {value!r}")
        time.sleep(0.05)


def get_json(url: str, **kwargs: Any) -> Any:
    response = httpx.get(url, timeout=10, **kwargs)
    response.raise_for_status()
    return response.json()


def consumer_token(store_url: str, key_file: str, transfer_id: str) -> str:
    """The provider's token as the consumer node keeps it (its API never shows it, its store
    holds it sealed with a key derived from ``key_file``), for tests that play a consumer
    calling a provider's data plane directly."""

    async def read() -> str:
        store = open_store(store_url)
        await store.open()
        try:
            record = await Records(store).get(TRANSFER, transfer_id)
        finally:
            await store.close()
        assert record is not None
        (sealed,) = [
            p["value"] for p in record["dataAddress"]["endpointProperties"] if p["name"] == "authorization"
        ]
        token = Sealer.from_key_file(key_file).open(sealed, transfer_id)
        assert token is not None, "the token must be sealed with the consumer's key"
        return token

    return asyncio.run(read())
