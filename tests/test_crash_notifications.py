"""Crash test: ``kill -9`` the node while updates stream, restart it, and check that every update the
client saw committed (204) was notified at least once and that no notification was invented.

``KIZUNA_CRASH_UPDATES`` sets how many updates flow (10,000 by default, as issue 4 asks; about
10 s here).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from notify_helpers import Receiver, free_port, wait_until

UPDATES = int(os.environ.get("KIZUNA_CRASH_UPDATES", "10000"))
ENTITIES = 20
CLIENTS = 4
CITY = "https://example.org/city#"


def start_node(store: Path, port: int, delivery: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KIZUNA_NOTIFY_BACKOFF_BASE": "0.05",
        "KIZUNA_NOTIFY_BACKOFF_CAP": "0.5",
        "KIZUNA_NOTIFY_POLL": "0.2",
        "KIZUNA_NOTIFY_DELIVERY": delivery,
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kizuna",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--store",
            f"sqlite:///{store}",
            "--log-level",
            "error",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def healthy() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, 20, 0.05)
    return process


def stream(base: str, values: list[int], acked: set[int], stop: threading.Event) -> None:
    """Send one update per value (the value is unique), remembering those answered 204."""
    with httpx.Client(base_url=base, timeout=5) as client:
        for value in values:
            if stop.is_set():
                return
            entity = f"urn:ngsi-ld:Streetlight:{value % ENTITIES}"
            try:
                response = client.patch(
                    f"/ngsi-ld/v1/entities/{entity}/attrs",
                    json={f"{CITY}counter": {"type": "Property", "value": value}},
                )
            except httpx.HTTPError:
                stop.set()  # the node is gone
                return
            if response.status_code == 204:
                acked.add(value)


@pytest.mark.crash
@pytest.mark.parametrize("delivery", ["inline", "process"])  # process: the kill takes its child too
def test_kill_9_mid_stream_loses_no_committed_notification(tmp_path: Path, delivery: str) -> None:
    receiver = Receiver()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    store = tmp_path / "kizuna.db"
    node = start_node(store, port, delivery)
    try:
        with httpx.Client(base_url=base) as client:
            sub = {
                "type": "Subscription",
                "entities": [{"type": f"{CITY}Streetlight"}],
                "watchedAttributes": [f"{CITY}counter"],
                "notification": {
                    "attributes": [f"{CITY}counter"],
                    "format": "keyValues",
                    "endpoint": {"uri": receiver.url},
                },
            }
            assert client.post("/ngsi-ld/v1/subscriptions", json=sub).status_code == 201
            for n in range(ENTITIES):
                entity = {"id": f"urn:ngsi-ld:Streetlight:{n}", "type": f"{CITY}Streetlight"}
                assert client.post("/ngsi-ld/v1/entities", json=entity).status_code == 201

        acked: set[int] = set()
        values = list(range(UPDATES))
        first, second = values[: UPDATES // 2], values[UPDATES // 2 :]
        stop = threading.Event()
        threads = [
            threading.Thread(target=stream, args=(base, first[i::CLIENTS], acked, stop))
            for i in range(CLIENTS)
        ]
        for t in threads:
            t.start()
        wait_until(lambda: len(acked) >= UPDATES // 4, 60, 0.001)
        node.send_signal(signal.SIGKILL)  # kill -9 mid-stream, requests in flight
        node.wait(10)
        for t in threads:
            t.join(30)
        killed_after = len(acked)

        node = start_node(store, port, delivery)
        stop = threading.Event()
        threads = [
            threading.Thread(target=stream, args=(base, second[i::CLIENTS], acked, stop))
            for i in range(CLIENTS)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not stop.is_set(), "the restarted node stopped answering"

        def notified() -> set[int]:
            return {
                e["https://example.org/city#counter"]
                for e in receiver.entities()
                if "https://example.org/city#counter" in e
            }

        wait_until(lambda: acked <= notified(), 60, 0.1)
        seen = notified()
        assert acked <= seen, f"{len(acked - seen)} committed updates were never notified"
        assert seen <= set(values), "a notification reported an update nobody made"
        assert killed_after < UPDATES // 2  # the kill did land mid-stream
    finally:
        node.kill()
        node.wait(10)
        receiver.close()
