"""Shared fixtures: the stores every contract test runs against, and an app per test."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.testclient import TestClient

from kizuna.app import create_app
from kizuna.config import Settings
from kizuna.store import Store, open_store

DATA = Path(__file__).parent / "data"
KIZUNA = str(Path(sys.executable).parent / "kizuna")
STORE_KINDS = ["sqlite", "postgresql"]


_POSTGRES_SKIPPED: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say it at the end, where nobody misses it, when the PostgreSQL half did not run."""
    if _POSTGRES_SKIPPED:
        terminalreporter.section("PostgreSQL", sep="!", red=True, bold=True)
        terminalreporter.line(_POSTGRES_SKIPPED[0], red=True, bold=True)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[object]:
    """A throwaway PostgreSQL + PostGIS cluster for the whole session (see tests/pg_cluster.py).

    Without the binaries the PostgreSQL half is skipped locally, and fails in CI (CI=true), where
    .ci/run installs them: a CI run must never pass without having tested PostgreSQL."""
    from pg_cluster import Cluster, find_bindir

    in_ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    bindir = find_bindir()
    if bindir is None:
        reason = (
            "PostgreSQL tests NOT RUN: no /usr/lib/postgresql/*/bin/initdb with PostGIS"
            " (apt-get install postgresql postgresql-15-postgis-3)"
        )
        if in_ci:
            pytest.fail(reason, pytrace=False)
        _POSTGRES_SKIPPED.append(reason)
        pytest.skip(reason)
    cluster = Cluster(bindir)
    try:
        cluster.start()
    except Exception as exc:
        log = cluster.log_tail()
        cluster.stop()
        reason = f"PostgreSQL tests NOT RUN: could not start a cluster with {bindir}: {exc}\n{log}"
        if in_ci:
            pytest.fail(reason, pytrace=False)
        _POSTGRES_SKIPPED.append(reason)
        pytest.skip(reason)
    yield cluster
    cluster.stop()


@pytest.fixture
def postgres_url(postgres_cluster: object) -> Iterator[str]:
    """A fresh database (PostGIS and Kizuna's schema in place) for one test."""
    name = postgres_cluster.new_database()  # type: ignore[attr-defined]
    yield postgres_cluster.url(name)  # type: ignore[attr-defined]
    postgres_cluster.drop_database(name)  # type: ignore[attr-defined]


def store_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest | None = None) -> str:
    """The URL of an empty store of ``kind``: a file in ``tmp_path``, or a fresh PostgreSQL
    database that lives as long as the fixture asking (``request``)."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/kizuna.db"
    if kind == "postgresql" and request is not None:
        if request.scope == "function":
            return request.getfixturevalue("postgres_url")
        cluster = request.getfixturevalue("postgres_cluster")
        name = cluster.new_database()
        request.addfinalizer(lambda: cluster.drop_database(name))
        return cluster.url(name)
    raise AssertionError(kind)


@pytest.fixture(params=STORE_KINDS)
def any_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty store of each kind, for test modules that build their own app."""
    return store_url(request.param, tmp_path, request)


@pytest.fixture(params=STORE_KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    s = open_store(store_url(request.param, tmp_path, request))
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture(params=STORE_KINDS)
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        store=store_url(request.param, tmp_path, request),
        context_map=str(DATA / "smart-data-models" / "context-map.json"),
        max_body_bytes=256 * 1024,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def wait_healthy(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text(errors="replace")
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("kizuna serve did not become healthy within 20 s")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """``serve(*flags)`` starts ``kizuna serve`` as an operator runs it, a real process on a free
    loopback port, and returns its base URL; every process is stopped after the test. Its log
    goes to ``kizuna-<port>.log`` in ``tmp_path`` (a pipe nobody reads could fill and stall it)."""
    from notify_helpers import free_port

    processes: list[subprocess.Popen[bytes]] = []

    def start(*args: str, env: dict[str, str] | None = None) -> str:
        port = free_port()
        log = tmp_path / f"kizuna-{port}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [KIZUNA, "serve", "--port", str(port), *args],
                env={**os.environ, **(env or {})},
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
            )
        processes.append(process)
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, process, log)
        return base

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def idp_key() -> Any:
    """The signing key of the identity provider that ``secured`` trusts (see access_helpers)."""
    from access_helpers import rsa

    return rsa("node-test")


@pytest.fixture(params=STORE_KINDS)
def secured(request: pytest.FixtureRequest, tmp_path: Path, idp_key: Any) -> Iterator[TestClient]:
    """An app with ``--auth oidc`` trusting ``idp_key``'s tokens (access_helpers.bearer)."""
    from access_helpers import ISS

    jwks = tmp_path / "jwks.json"
    jwks.write_bytes(orjson.dumps({"keys": [idp_key.as_dict(private=False)]}))
    settings = Settings(
        store=store_url(request.param, tmp_path, request),
        context_map=str(DATA / "smart-data-models" / "context-map.json"),
        auth="oidc",
        oidc_issuer=ISS,
        oidc_audience="kizuna",
        oidc_jwks=str(jwks),
        outbound_allow="127.0.0.1/32",  # the tests' receivers
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client
