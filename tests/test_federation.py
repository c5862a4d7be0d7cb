"""Three real nodes federated (issue 14, the EU-Japan partnership): "duisburg" holds street
lights, "kanagawa" road segments, and a third node that registers both as context sources
answers entity and temporal queries over all of them, partially while one is down, and fully
again once it is back on the same port and store.

Each node is ``kizuna serve`` as an operator runs it, on a free loopback port with its own
SQLite file (``--auth none`` on loopback: forwarding to loopback is allowed, docs/security.md).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import KIZUNA, wait_healthy
from notify_helpers import free_port, wait_until

BASE = "/ngsi-ld/v1"
SRC = str(Path(__file__).resolve().parents[1] / "src")  # this checkout's kizuna, not an installed one
TYPES = "StreetLight,RoadSegment"


@dataclass
class Node:
    """One ``kizuna serve`` process; :meth:`start` again brings it back on its port and store."""

    name: str
    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.directory / f"{self.name}.log"

    def start(self) -> None:
        path = os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                [
                    KIZUNA,
                    "serve",
                    "--port",
                    str(self.port),
                    "--store",
                    f"sqlite:///{self.directory}/{self.name}.db",
                ],
                env={**os.environ, "PYTHONPATH": path},
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
            )
        wait_healthy(self.url, self.process, self.log)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Callable[[str], Node]]:
    made: list[Node] = []

    def node(name: str) -> Node:
        started = Node(name, tmp_path)
        made.append(started)
        started.start()
        return started

    yield node
    for started in made:
        started.stop()


def entity(entity_id: str, entity_type: str, name: str, value: Any, at: str) -> dict[str, Any]:
    return {
        "id": entity_id,
        "type": entity_type,
        name: {"type": "Property", "value": value, "observedAt": at},
    }


def put(node: Node, entity_id: str, entity_type: str, name: str, readings: list[tuple[str, Any]]) -> None:
    """Create the entity with its first reading, then update it with the others: the node
    records each as an instance of the attribute's history."""
    (at, value), *later = readings
    created = httpx.post(f"{node.url}{BASE}/entities", json=entity(entity_id, entity_type, name, value, at))
    assert created.status_code == 201, created.text
    for at, value in later:
        update = {name: {"type": "Property", "value": value, "observedAt": at}}
        done = httpx.patch(f"{node.url}{BASE}/entities/{entity_id}/attrs", json=update)
        assert done.status_code == 204, done.text


def register(federator: Node, source: Node, types: list[str]) -> str:
    body = {
        "type": "ContextSourceRegistration",
        "information": [{"entities": [{"type": t} for t in types]}],
        "endpoint": source.url,
    }
    response = httpx.post(f"{federator.url}{BASE}/csourceRegistrations", json=body)
    assert response.status_code == 201, response.text
    return response.headers["Location"].rsplit("/", 1)[-1]


def query(federator: Node) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"{federator.url}{BASE}/entities", params={"type": TYPES, "options": "keyValues"})
    return response.status_code, {e["id"]: e for e in response.json()}


def temporal(federator: Node) -> dict[str, list[tuple[str, Any]]]:
    """The federator's temporal query: each entity's instances of its one attribute, in order."""
    response = httpx.get(f"{federator.url}{BASE}/temporal/entities", params={"type": TYPES})
    assert response.status_code == 200, response.text
    series = {}
    for found in response.json():
        (name,) = (k for k in found if k not in ("id", "type"))
        instances = found[name] if isinstance(found[name], list) else [found[name]]
        series[found["id"]] = [(i["observedAt"], i["value"]) for i in instances]
    return series


LIGHT = "urn:ngsi-ld:StreetLight:duisburg:ruhrort-1"
ROAD = "urn:ngsi-ld:RoadSegment:kanagawa:yokohama-7"
LIGHT_READINGS = [
    ("2026-12-01T18:00:00Z", "on"),
    ("2026-12-01T23:00:00Z", "dimmed"),
    ("2026-12-02T07:00:00Z", "off"),
]
ROAD_READINGS = [("2026-12-02T01:00:00Z", 40), ("2026-12-02T02:00:00Z", 55), ("2026-12-02T03:00:00Z", 12)]


def test_a_federator_answers_for_an_eu_and_a_jp_node(nodes: Callable[[str], Node]) -> None:
    duisburg, kanagawa, federator = nodes("duisburg"), nodes("kanagawa"), nodes("federator")
    put(duisburg, LIGHT, "StreetLight", "powerState", LIGHT_READINGS)
    put(kanagawa, ROAD, "RoadSegment", "averageSpeed", ROAD_READINGS)
    register(federator, duisburg, ["StreetLight"])
    jp_registration = register(federator, kanagawa, ["RoadSegment"])

    status, found = query(federator)
    assert status == 200
    assert found == {
        LIGHT: {"id": LIGHT, "type": "StreetLight", "powerState": "off"},
        ROAD: {"id": ROAD, "type": "RoadSegment", "averageSpeed": 12},
    }
    assert temporal(federator) == {LIGHT: LIGHT_READINGS, ROAD: ROAD_READINGS}

    # Kanagawa goes down: the federator still answers, with Duisburg's part, and names the
    # source that failed (by its registration) in its log, as it does for every failing read.
    kanagawa.stop()
    status, found = query(federator)
    assert (status, list(found)) == (200, [LIGHT])
    assert temporal(federator) == {LIGHT: LIGHT_READINGS}
    assert wait_until(
        lambda: f"context source {jp_registration}" in federator.log.read_text(errors="replace")
    )

    # Back on the same port and store: the whole answer again.
    kanagawa.start()
    wait_until(lambda: len(query(federator)[1]) == 2, timeout=20)
    assert temporal(federator) == {LIGHT: LIGHT_READINGS, ROAD: ROAD_READINGS}
