"""A real node for the simulator and risk tests: ``kizuna serve`` on a loopback port with a temp
SQLite store and the Smart Data Models @contexts mapped to local files."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import DATA, KIZUNA, wait_healthy
from kizuna.sim.ngsi import CONTEXTS
from notify_helpers import free_port

API = "/ngsi-ld/v1"


def link(entity_type: str) -> dict[str, str]:
    return {"Link": f'<{CONTEXTS[entity_type]}>; rel="http://www.w3.org/ns/json-ld#context"'}


@contextmanager
def node(tmp: Path, *flags: str) -> Iterator[str]:
    """The node; ``flags`` are more ``kizuna serve`` flags."""
    port = free_port()
    log = tmp / f"kizuna-{port}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                *(KIZUNA, "serve", "--port", str(port), "--store", f"sqlite:///{tmp}/kizuna.db"),
                *("--context-map", str(DATA / "smart-data-models" / "context-map.json")),
                *("--temporal-instance-limit", "5000", "--log-level", "warning"),
                *flags,
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=os.environ,
            cwd=tmp,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, process, log)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)
