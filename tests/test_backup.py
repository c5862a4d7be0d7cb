"""``kizuna backup`` and ``kizuna restore`` (kizuna/store/backup.py) on both stores, with real
nodes: a backup taken while a node writes is the store as of one commit, and a backup of a
quiet node restores into a fresh store entity by entity, history and subscriptions included."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from conftest import KIZUNA, STORE_KINDS

API = "/ngsi-ld/v1"
COUNTERS = 20


def fresh_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest, name: str) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/{name}.db"
    cluster = request.getfixturevalue("postgres_cluster")
    database = cluster.new_database()
    request.addfinalizer(lambda: cluster.drop_database(database))
    return cluster.url(database)


def kizuna(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([KIZUNA, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def counter(n: int) -> str:
    return f"urn:ngsi-ld:Counter:{n:02d}"


def counts(base: str) -> dict[str, tuple[int, int]]:
    """Each counter's value and the number of instances of it in its history."""
    found: dict[str, tuple[int, int]] = {}
    for n in range(COUNTERS):
        value = httpx.get(f"{base}{API}/entities/{counter(n)}", params={"options": "keyValues"})
        history = httpx.get(f"{base}{API}/temporal/entities/{counter(n)}", params={"attrs": "count"})
        assert value.status_code == 200 and history.status_code == 200, (value.text, history.text)
        instances = history.json()["count"]
        found[counter(n)] = (
            value.json()["count"],
            len(instances if isinstance(instances, list) else [instances]),
        )
    return found


def everything(base: str) -> tuple[object, object, object]:
    """What a restore must give back: entities with system attributes, their whole history,
    and the subscriptions."""
    entities = httpx.get(
        f"{base}{API}/entities", params={"type": "Counter", "options": "sysAttrs", "limit": 100}
    )
    history = httpx.get(
        f"{base}{API}/temporal/entities",
        params={"type": "Counter", "timerel": "after", "timeAt": "2000-01-01T00:00:00Z", "limit": 100},
    )
    subscriptions = httpx.get(f"{base}{API}/subscriptions")
    for answer in (entities, history, subscriptions):
        assert answer.status_code == 200, answer.text
    key = lambda item: item["id"]  # noqa: E731
    return (
        sorted(entities.json(), key=key),
        sorted(history.json(), key=key),
        sorted(subscriptions.json(), key=key),
    )


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_backup_while_writing_and_restore(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest, serve: Callable[..., str]
) -> None:
    source = fresh_store(kind, tmp_path, request, "source")
    limit = ("--temporal-instance-limit", "1000")
    base = serve("--store", source, *limit)
    created = httpx.post(
        f"{base}{API}/entityOperations/create",
        json=[
            {"id": counter(n), "type": "Counter", "count": {"type": "Property", "value": 0}}
            for n in range(COUNTERS)
        ],
    )
    assert created.status_code == 201, created.text
    for name in ("a", "b"):
        subscription = {
            "id": f"urn:ngsi-ld:Subscription:{name}",
            "type": "Subscription",
            "entities": [{"type": "Counter"}],
            "notification": {"endpoint": {"uri": "http://127.0.0.1:9/nobody"}},
            "isActive": False,  # its delivery state stays as it is, on both nodes compared
        }
        assert httpx.post(f"{base}{API}/subscriptions", json=subscription).status_code == 201

    stop, rounds = threading.Event(), [0]

    def write() -> None:  # each round adds one to every counter, one request (and commit) each
        with httpx.Client(base_url=base) as client:
            while not stop.is_set():
                for n in range(COUNTERS):
                    patch = {"count": {"type": "Property", "value": rounds[0] + 1}}
                    assert client.patch(f"{API}/entities/{counter(n)}/attrs", json=patch).status_code == 204
                rounds[0] += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        while rounds[0] < 3:  # under way: the backup below cannot fall between two runs of writes
            writer.join(0.05)
            assert writer.is_alive()
        kizuna("backup", "--store", source, str(tmp_path / "busy.backup"))
    finally:
        stop.set()
        writer.join()
    assert rounds[0] >= 3

    busy = fresh_store(kind, tmp_path, request, "busy")
    kizuna("restore", "--store", busy, str(tmp_path / "busy.backup"))
    restored = counts(serve("--store", busy, *limit))
    # One commit's state: every counter's value has all its instances, and the copy was taken
    # between the first and the last round of writes.
    assert all(instances == value + 1 for value, instances in restored.values()), restored
    assert 0 < max(value for value, _ in restored.values()) < rounds[0] + 1

    kizuna("backup", "--store", source, str(tmp_path / "quiet.backup"))
    quiet = fresh_store(kind, tmp_path, request, "quiet")
    kizuna("restore", "--store", quiet, str(tmp_path / "quiet.backup"))
    assert everything(serve("--store", quiet, *limit)) == everything(base)

    refused = subprocess.run(
        [KIZUNA, "restore", "--store", quiet, str(tmp_path / "quiet.backup")], capture_output=True, text=True
    )
    assert refused.returncode != 0 and "restore" in refused.stderr
