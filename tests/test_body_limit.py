"""Every API root bounds request bodies before any route reads them
(kizuna.middleware.body_limit): 413, nothing stored, and an unauthenticated DSP sender never
gets its body read at all."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from kizuna.app import create_app
from kizuna.config import Settings

LIMIT = 64 * 1024
TOO_BIG = b'{"id": "' + b"x" * LIMIT + b'"}'
ROOTS = [
    "/ngsi-ld/v1/entities",
    "/ngsi-ld/v1/subscriptions",
    "/ngsi-ld/v1/jsonldContexts",
    "/management/v1/datasets",
    "/dsp/catalog/request",
]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(store=f"sqlite:///{tmp_path}/limit.db", max_body_bytes=LIMIT)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def too_large(response: Any) -> None:
    assert response.status_code == 413, response.text
    assert response.json()["type"].endswith("/PayloadTooLarge")


@pytest.mark.parametrize("path", ROOTS)
def test_a_declared_length_over_the_limit_is_refused_on_every_root(node: TestClient, path: str) -> None:
    too_large(node.post(path, content=TOO_BIG, headers={"Content-Type": "application/json"}))


@pytest.mark.parametrize("path", ROOTS[:-1])  # /dsp refuses the unsigned sender first: below
def test_a_chunked_body_over_the_limit_is_refused_on_every_root(node: TestClient, path: str) -> None:
    def chunks() -> Iterator[bytes]:
        for start in range(0, len(TOO_BIG), 4096):
            yield TOO_BIG[start : start + 4096]

    too_large(node.post(path, content=chunks(), headers={"Content-Type": "application/json"}))


def test_nothing_over_the_limit_is_stored(node: TestClient) -> None:
    dataset = {"id": "big", "title": "x" * LIMIT, "entityTypes": ["Streetlight"]}
    too_large(node.post("/management/v1/datasets", json=dataset))
    assert all(d.get("id") != "big" for d in node.get("/management/v1/datasets").json())


def test_an_unauthenticated_dsp_sender_never_gets_its_body_read(tmp_path: Path) -> None:
    """Signed DSP (the default): a request without a valid token is 401 before one byte of its
    body is received."""
    app = create_app(Settings(store=f"sqlite:///{tmp_path}/dsp.db", max_body_bytes=LIMIT))
    received: list[dict[str, Any]] = []
    sent: list[dict[str, Any]] = []

    async def run() -> None:
        async def receive() -> dict[str, Any]:
            received.append({})
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/dsp/catalog/request",
            "raw_path": b"/dsp/catalog/request",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")],
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 1026),
            "state": {},
        }
        async with app.router.lifespan_context(app):
            await app(scope, receive, send)

    asyncio.run(run())
    assert sent[0]["status"] == 401
    assert received == []
