"""`kizuna serve` as an operator runs it: a real process on a loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

KIZUNA = str(Path(sys.executable).parent / "kizuna")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else "exited"
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("kizuna serve did not become healthy within 20 s")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., str]]:
    processes: list[subprocess.Popen[bytes]] = []

    def start(*args: str, env: dict[str, str] | None = None) -> str:
        port = free_port()
        process = subprocess.Popen(
            [KIZUNA, "serve", "--port", str(port), *args],
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=tmp_path,
        )
        processes.append(process)
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, process)
        return base

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=10)


def test_serve_creates_and_reads_entities_on_a_sqlite_file(serve: Callable[..., str], tmp_path: Path) -> None:
    db = tmp_path / "city.db"
    base = serve("--store", f"sqlite:///{db}")
    entity = {"id": "urn:ngsi-ld:Streetlight:zoo-1", "type": "Streetlight", "status": "ok"}
    assert httpx.post(base + "/ngsi-ld/v1/entities", json=entity).status_code == 201
    got = httpx.get(
        base + "/ngsi-ld/v1/entities/urn:ngsi-ld:Streetlight:zoo-1", params={"options": "keyValues"}
    )
    assert got.json() == entity
    assert db.exists()


def test_flags_have_environment_twins(serve: Callable[..., str], tmp_path: Path) -> None:
    db = tmp_path / "from-env.db"
    base = serve(env={"KIZUNA_STORE": f"sqlite:///{db}", "KIZUNA_MAX_BODY_BYTES": "100"})
    too_big = httpx.post(
        base + "/ngsi-ld/v1/entities", json={"id": "urn:x:1", "type": "T", "description": "x" * 200}
    )
    assert too_big.status_code == 413
    assert db.exists()


def test_two_workers_share_one_store(serve: Callable[..., str], tmp_path: Path) -> None:
    base = serve("--store", f"sqlite:///{tmp_path}/shared.db", "--workers", "2")
    with httpx.Client(base_url=base) as client:
        for n in range(20):
            entity = {"id": f"urn:ngsi-ld:Streetlight:{n}", "type": "Streetlight"}
            assert client.post("/ngsi-ld/v1/entities", json=entity).status_code == 201
    # New connections land on either worker; every write is visible through every one.
    for n in range(20):
        assert httpx.get(f"{base}/ngsi-ld/v1/entities/urn:ngsi-ld:Streetlight:{n}").status_code == 200
