"""Errors as HTTP answers: what kizuna/problems.py adds to the ProblemDetails it writes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from kizuna.app import create_app
from kizuna.config import Settings


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    path: Path = tmp_path_factory.mktemp("problems") / "kizuna.db"
    with TestClient(create_app(Settings(store=f"sqlite:///{path}")), raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("OPTIONS", "/ngsi-ld/v1/entities", "DELETE, GET, HEAD, PATCH, POST, PUT"),
        ("POST", "/ngsi-ld/v1/entities/urn:ngsi-ld:X:1", "DELETE, GET, HEAD, PATCH, PUT"),
        ("PUT", "/ngsi-ld/v1/subscriptions", "GET, HEAD, POST"),
        ("PUT", "/management/v1/datasets", "GET, HEAD, POST"),
        ("POST", "/health", "GET, HEAD"),
    ],
)
def test_405_allows_every_method_of_the_path(
    client: TestClient, method: str, path: str, allowed: str
) -> None:
    """RFC 9110: a 405 lists the methods the resource takes, of all its routes (the node
    declares one route per method), not only those of the first."""
    answer = client.request(method, path)
    assert answer.status_code == 405, answer.text
    assert answer.headers["allow"] == allowed
    assert answer.json()["status"] == 405
