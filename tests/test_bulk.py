"""``kizuna import`` and ``kizuna export`` (kizuna/bulk.py) against real nodes: what is refused is
reported by line with its reason and the rest committed; an export imports back as it was."""

from __future__ import annotations

import io
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson

from conftest import KIZUNA
from kizuna import bulk

API = "/ngsi-ld/v1"


def light(n: int) -> dict[str, object]:
    return {
        "id": f"urn:ngsi-ld:Streetlight:b{n:05d}",
        "type": "Streetlight",
        "powerState": {"type": "Property", "value": "on" if n % 2 else "off"},
        "location": {
            "type": "GeoProperty",
            "value": {"type": "Point", "coordinates": [6.7 + n * 1e-5, 51.4]},
        },
    }


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([KIZUNA, *args], input=stdin, capture_output=True, timeout=120)


def lights_of(base: str) -> list[dict[str, object]]:
    answer = httpx.get(
        f"{base}{API}/entities", params={"type": "Streetlight", "limit": 1000, "count": "true"}
    )
    assert answer.status_code == 200, answer.text
    found, total = answer.json(), int(answer.headers["NGSILD-Results-Count"])
    while len(found) < total:
        page = httpx.get(
            f"{base}{API}/entities", params={"type": "Streetlight", "limit": 1000, "offset": len(found)}
        )
        found += page.json()
    return sorted(found, key=lambda e: str(e["id"]))


def test_json_lines_and_arrays_are_read_in_pieces() -> None:
    text = b'{"id":"urn:a","type":"T"}\n\nnot json\n[1]\n{"id":"urn:b","type":"T"}'
    assert [(n, type(e).__name__) for n, e in bulk.read_entities(io.BytesIO(text))] == [
        (1, "dict"),
        (3, "ValueError"),
        (4, "ValueError"),
        (5, "dict"),
    ]
    array = '  [{"id":"urn:ä","x":{"value":"]},["}}, 5,\n{"id":"urn:€"}]'.encode()
    for size in (1, 2, 3, 7, 1 << 16):  # every cut, through multi-byte characters too
        bulk._CHUNK = size
        try:
            read = list(bulk.read_entities(io.BytesIO(array)))
        finally:
            bulk._CHUNK = 1 << 16
        assert [n for n, _ in read] == [1, 2, 3]
        assert read[0][1] == {"id": "urn:ä", "x": {"value": "]},["}} and read[2][1] == {"id": "urn:€"}
        assert isinstance(read[1][1], ValueError)


def test_import_reports_what_is_refused_and_commits_the_rest(
    tmp_path: Path, serve: Callable[..., str]
) -> None:
    base = serve("--store", f"sqlite:///{tmp_path}/a.db")
    lines = [orjson.dumps(light(n)) for n in range(2500)]
    lines.insert(100, b"{not json")  # line 101
    lines.insert(1200, orjson.dumps({"id": "not a uri", "type": "Streetlight"}))  # line 1201
    (tmp_path / "lights.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    done = run("import", "--url", base, str(tmp_path / "lights.jsonl"))
    assert done.returncode == 2, done.stderr
    report = done.stderr.decode()
    assert (
        "line 101: not JSON" in report and "line 1201:" in report and "2500 committed, 2 rejected" in report
    )
    assert len(lights_of(base)) == 2500

    exported = run("export", "--url", base, "--type", "Streetlight")
    assert exported.returncode == 0, exported.stderr
    assert len(exported.stdout.splitlines()) == 2500 and b"2500 entities" in exported.stderr

    other = serve("--store", f"sqlite:///{tmp_path}/b.db")
    again = run("import", "--url", other, "-", stdin=exported.stdout)
    assert again.returncode == 0 and b"2500 committed, 0 rejected" in again.stderr, again.stderr
    assert lights_of(other) == lights_of(base)


def test_a_json_array_imports_and_an_absent_node_is_an_error(
    tmp_path: Path, serve: Callable[..., str]
) -> None:
    base = serve("--store", f"sqlite:///{tmp_path}/a.db")
    (tmp_path / "lights.json").write_bytes(orjson.dumps([light(n) for n in range(10)]))
    done = run("import", "--url", base, str(tmp_path / "lights.json"))
    assert done.returncode == 0 and b"10 committed, 0 rejected" in done.stderr, done.stderr
    assert len(lights_of(base)) == 10
    gone = run("import", "--url", "http://127.0.0.1:9", str(tmp_path / "lights.json"))
    assert gone.returncode == 1 and b"cannot reach the node" in gone.stderr
