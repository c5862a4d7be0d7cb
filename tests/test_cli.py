"""`kizuna serve` as an operator runs it: a real process on a loopback port."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest

from conftest import KIZUNA, wait_healthy
from notify_helpers import free_port, wait_until


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


def test_serve_on_a_reachable_interface_without_auth_refuses_to_start(tmp_path: Path) -> None:
    done = subprocess.run(
        [KIZUNA, "serve", "--host", "0.0.0.0", "--port", "1", "--store", f"sqlite:///{tmp_path}/x.db"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "--auth oidc" in done.stderr and "--auth none" in done.stderr
    assert not (tmp_path / "x.db").exists(), "it must refuse before opening anything"


def test_apikey_create_list_revoke(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/keys.db"

    def kizuna(*args: str) -> str:
        done = subprocess.run([KIZUNA, "apikey", *args, "--store", store], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    created = orjson.loads(
        kizuna(
            "create",
            "--subject",
            "gateway-7",
            "--role",
            "kizuna-creator",
            "--tenant",
            "duisburg",
            "--expires",
            "90d",
        )
    )
    assert created["key"].startswith(f"kz_{created['id']}_")
    listed = [orjson.loads(line) for line in kizuna("list").splitlines()]
    assert [(k["id"], k["subject"], k["roles"], k["tenant"], k["revoked"]) for k in listed] == [
        (created["id"], "gateway-7", ["kizuna-creator"], "duisburg", None)
    ]
    assert 80 * 86400 < listed[0]["expires"] - listed[0]["created"] < 100 * 86400
    assert created["key"] not in kizuna("list") and "digest" not in listed[0]
    kizuna("revoke", created["id"])
    assert orjson.loads(kizuna("list"))["revoked"] is not None
    missing = subprocess.run(
        [KIZUNA, "apikey", "revoke", "nope", "--store", store], capture_output=True, text=True
    )
    assert missing.returncode != 0 and "no API key" in missing.stderr


def test_serve_under_granian_runs_the_same_app(serve: Callable[..., str], tmp_path: Path) -> None:
    db = tmp_path / "granian.db"
    base = serve("--store", f"sqlite:///{db}", "--http-server", "granian", "--max-body-bytes", "1000")
    entity = {"id": "urn:ngsi-ld:Streetlight:zoo-2", "type": "Streetlight", "status": "ok"}
    with httpx.Client(base_url=base) as client:
        assert client.post("/ngsi-ld/v1/entities", json=entity).status_code == 201
        got = client.get(
            "/ngsi-ld/v1/entities/urn:ngsi-ld:Streetlight:zoo-2", params={"options": "keyValues"}
        )
        assert got.json() == entity
        assert got.headers["content-type"] == "application/json"
        # The body limit holds under this server's ASGI messages too.
        big = {"id": "urn:x:2", "type": "T", "description": "x" * 2000}
        too_big = client.post("/ngsi-ld/v1/entities", json=big)
        assert too_big.status_code == 413
        assert too_big.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/PayloadTooLarge"
        missing = client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Streetlight:none")
        assert missing.status_code == 404
        assert missing.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/ResourceNotFound"


@pytest.mark.parametrize("flags", [("--http-server", "granian"), ("--workers", "2")])
def test_no_worker_outlives_a_killed_node(flags: tuple[str, ...], tmp_path: Path) -> None:
    """Granian serves even one worker from a child process, uvicorn several: after a kill -9 of
    `kizuna serve` an orphaned worker went on answering on the port and writing to the store."""
    port = free_port()
    base, log = f"http://127.0.0.1:{port}", tmp_path / "kizuna.log"
    with log.open("wb") as sink:
        node = subprocess.Popen(
            [KIZUNA, "serve", "--port", str(port), "--store", f"sqlite:///{tmp_path}/k.db", *flags],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_healthy(base, node, log)
        node.send_signal(signal.SIGKILL)
        node.wait(10)

        def refused() -> bool:
            try:
                httpx.get(base + "/health", timeout=1)
            except httpx.TransportError:
                return True
            return False

        wait_until(refused, 10, 0.05)
    finally:
        node.kill()
