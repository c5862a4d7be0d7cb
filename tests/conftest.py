"""Shared fixtures: the stores every contract test runs against, and an app per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from kizuna.app import create_app
from kizuna.config import Settings
from kizuna.store import Store, open_store

DATA = Path(__file__).parent / "data"
STORE_KINDS = ["sqlite"]


def store_url(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/kizuna.db"
    raise AssertionError(kind)


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    s = open_store(store_url(request.param, tmp_path))
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture(params=STORE_KINDS)
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        store=store_url(request.param, tmp_path),
        context_map=str(DATA / "smart-data-models" / "context-map.json"),
        max_body_bytes=256 * 1024,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client
