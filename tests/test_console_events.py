"""``GET /console/events`` on real ``kizuna serve`` processes, on both stores: a write shows on an
open stream within a second; a reconnect with ``Last-Event-ID`` gets exactly what it missed,
in order; a subject sees nothing of entities it may not read; a write through a second process
on the same PostgreSQL database reaches a stream on the first; streams past the bound get 503."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from access_helpers import ISS, bearer

ENTITIES = "/ngsi-ld/v1/entities"
EVENTS = "/console/events"
SDM_CONTEXT = (
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Streetlighting/master/context.jsonld"
)


def light(n: int, status: str = "ok", **extra: Any) -> dict[str, Any]:
    return {
        "id": f"urn:ngsi-ld:Streetlight:{n}",
        "type": "Streetlight",
        "status": {"type": "Property", "value": status},
        **extra,
    }


class Stream:
    """One open event stream, read as a browser's EventSource reads it (comments skipped)."""

    def __init__(self, client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> None:
        self.client, self.url, self.headers = client, url, headers
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.comments: list[str] = []
        self.ended = asyncio.Event()
        self.response: httpx.Response | None = None

    async def __aenter__(self) -> Stream:
        request = self.client.build_request("GET", self.url, headers=self.headers)
        self.response = await self.client.send(request, stream=True)
        if self.response.status_code != 200:
            await self.response.aread()
            raise AssertionError(f"{self.response.status_code}: {self.response.text}")
        self._reader = asyncio.create_task(self._read())
        await self._until(lambda: "stream open" in self.comments, 5)
        return self

    async def __aexit__(self, *_: object) -> None:
        self._reader.cancel()
        assert self.response is not None
        await self.response.aclose()

    async def _read(self) -> None:
        assert self.response is not None
        event: dict[str, Any] = {}
        async for line in self.response.aiter_lines():
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
            elif line == "":
                if "data" in event:
                    event["data"] = orjson.loads(event["data"])
                    await self.events.put(event)
                event = {}
            else:
                field, _, value = line.partition(": ")
                event[field] = value
        self.ended.set()

    async def _until(self, check: Callable[[], bool], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not check():
            assert time.monotonic() < deadline, f"not within {seconds} s: {self.comments}"
            await asyncio.sleep(0.01)

    async def next(self, seconds: float = 5.0) -> dict[str, Any]:
        return await asyncio.wait_for(self.events.get(), seconds)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as c:
        yield c


def stream(client: httpx.AsyncClient, base: str, *types: str, **headers: str) -> Stream:
    query = "&".join(f"type={t}" for t in types)
    return Stream(client, f"{base}{EVENTS}?{query}", {"Accept": "text/event-stream", **headers})


async def test_a_write_appears_on_an_open_stream_within_a_second(
    serve: Callable[..., str], any_store_url: str, client: httpx.AsyncClient
) -> None:
    base = serve("--store", any_store_url)
    async with stream(client, base, "Streetlight") as events:
        written = time.monotonic()
        assert (await client.post(base + ENTITIES, json=light(1))).status_code == 201
        event = await events.next(1.0)
        assert time.monotonic() - written < 1.0
    assert event["event"] == "change"
    assert int(event["id"]) > 0
    data = event["data"]
    assert (data["id"], data["type"], data["op"]) == ("urn:ngsi-ld:Streetlight:1", ["Streetlight"], "create")
    assert data["entity"]["status"] == {"type": "Property", "value": "ok"}
    assert data["at"].endswith("Z")


async def test_a_reconnect_gets_exactly_the_changes_it_missed_in_order(
    serve: Callable[..., str], any_store_url: str, client: httpx.AsyncClient
) -> None:
    base = serve("--store", any_store_url)
    async with stream(client, base) as events:
        assert (await client.post(base + ENTITIES, json=light(1))).status_code == 201
        seen = (await events.next())["id"]

    # Written while no stream is open: a create, an update, another entity, a delete.
    patch = {"status": {"type": "Property", "value": "broken"}}
    assert (await client.post(base + ENTITIES, json=light(2))).status_code == 201
    url = f"{base}{ENTITIES}/urn:ngsi-ld:Streetlight:1/attrs"
    assert (await client.patch(url, json=patch)).status_code == 204
    assert (await client.post(base + ENTITIES, json=light(3))).status_code == 201
    assert (await client.delete(f"{base}{ENTITIES}/urn:ngsi-ld:Streetlight:3")).status_code == 204

    async with stream(client, base, **{"Last-Event-ID": seen}) as events:
        missed = [(await events.next())["data"] for _ in range(4)]
        # Nothing else was queued before what is written now.
        assert (await client.post(base + ENTITIES, json=light(4))).status_code == 201
        after = (await events.next())["data"]
    assert [(d["id"], d["op"]) for d in missed] == [
        ("urn:ngsi-ld:Streetlight:2", "create"),
        ("urn:ngsi-ld:Streetlight:1", "update"),
        ("urn:ngsi-ld:Streetlight:3", "create"),
        ("urn:ngsi-ld:Streetlight:3", "delete"),
    ]
    assert missed[1]["entity"]["status"]["value"] == "broken"
    assert "entity" not in missed[3]
    assert (after["id"], after["op"]) == ("urn:ngsi-ld:Streetlight:4", "create")


async def test_a_subject_sees_nothing_of_entities_it_may_not_read(
    serve: Callable[..., str], any_store_url: str, client: httpx.AsyncClient, idp_key: Any, tmp_path: Path
) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_bytes(orjson.dumps({"keys": [idp_key.as_dict(private=False)]}))
    base = serve(
        "--store", any_store_url, "--auth", "oidc", "--oidc-issuer", ISS,
        "--oidc-audience", "kizuna", "--oidc-jwks", str(jwks),
    )  # fmt: skip
    admin = bearer(idp_key, "kizuna-admin", sub="admin")
    bob = bearer(idp_key, "kizuna-creator", sub="bob")
    async with stream(client, base, **bob) as events:
        # The admin's entity, changed and deleted: hidden from bob, whole.
        assert (await client.post(base + ENTITIES, json=light(1), headers=admin)).status_code == 201
        patch = {"status": {"type": "Property", "value": "broken"}}
        url = f"{base}{ENTITIES}/urn:ngsi-ld:Streetlight:1"
        assert (await client.patch(url + "/attrs", json=patch, headers=admin)).status_code == 204
        assert (await client.delete(url, headers=admin)).status_code == 204
        # Then bob's own: the first thing bob's stream shows.
        assert (await client.post(base + ENTITIES, json=light(2), headers=bob)).status_code == 201
        first = (await events.next())["data"]
    assert (first["id"], first["op"]) == ("urn:ngsi-ld:Streetlight:2", "create")

    # The admin's stream, from the start, shows them all.
    async with stream(client, base, **{**admin, "Last-Event-ID": "0"}) as events:
        seen = [(await events.next())["data"]["op"] for _ in range(4)]
    assert seen == ["create", "update", "delete", "create"]


async def test_a_write_through_another_process_reaches_the_stream(
    serve: Callable[..., str], postgres_url: str, client: httpx.AsyncClient
) -> None:
    first, second = serve("--store", postgres_url), serve("--store", postgres_url)
    async with stream(client, first, "Streetlight") as events:
        written = time.monotonic()
        assert (await client.post(second + ENTITIES, json=light(7))).status_code == 201
        event = await events.next(1.0)
        assert time.monotonic() - written < 1.0
    assert (event["data"]["id"], event["data"]["op"]) == ("urn:ngsi-ld:Streetlight:7", "create")


async def test_streams_past_the_bound_get_503_with_retry_after(
    serve: Callable[..., str], tmp_path: Path, client: httpx.AsyncClient
) -> None:
    base = serve("--store", f"sqlite:///{tmp_path}/k.db", "--console-max-streams", "2")
    async with stream(client, base), stream(client, base):
        refused = await client.get(base + EVENTS, headers={"Accept": "text/event-stream"})
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "10"
        assert refused.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/ServiceUnavailable"
    # Closed streams free their places.
    async with stream(client, base) as events:
        assert (await client.post(base + ENTITIES, json=light(1))).status_code == 201
        assert (await events.next())["data"]["op"] == "create"


async def test_types_and_context_name_the_entities_in_the_request_terms(
    serve: Callable[..., str], tmp_path: Path, client: httpx.AsyncClient
) -> None:
    base = serve(
        "--store",
        f"sqlite:///{tmp_path}/k.db",
        "--context-map",
        str(Path(__file__).parent / "data" / "smart-data-models" / "context-map.json"),
    )
    url = f"{base}{EVENTS}?type=Streetlight&context={SDM_CONTEXT}"
    async with Stream(client, url, {"Accept": "text/event-stream"}) as events:
        other = {"id": "urn:ngsi-ld:Bench:1", "type": "Bench", "status": {"type": "Property", "value": "ok"}}
        headers = {"Link": f'<{SDM_CONTEXT}>; rel="http://www.w3.org/ns/json-ld#context"'}
        # A Streetlight of the core context's default vocabulary is another type.
        assert (await client.post(base + ENTITIES, json=light(9))).status_code == 201
        assert (await client.post(base + ENTITIES, json=other, headers=headers)).status_code == 201
        assert (await client.post(base + ENTITIES, json=light(1), headers=headers)).status_code == 201
        data = (await events.next())["data"]
    assert (data["id"], data["type"]) == ("urn:ngsi-ld:Streetlight:1", ["Streetlight"])
    assert "status" in data["entity"]


async def test_a_quiet_stream_beats_and_ends_after_its_lifetime(
    serve: Callable[..., str], tmp_path: Path, client: httpx.AsyncClient
) -> None:
    base = serve(
        "--store", f"sqlite:///{tmp_path}/k.db",
        "--console-heartbeat", "0.1", "--console-stream-lifetime", "1",
    )  # fmt: skip
    async with stream(client, base) as events:
        await asyncio.wait_for(events.ended.wait(), 5)
    assert "heartbeat" in events.comments
    head = await client.head(base + EVENTS)  # answered at once: no stream held open for it
    assert head.status_code == 200 and head.headers["content-type"].startswith("text/event-stream")


async def test_a_resume_from_before_the_retention_is_told_to_reload(
    serve: Callable[..., str], tmp_path: Path, client: httpx.AsyncClient
) -> None:
    base = serve("--store", f"sqlite:///{tmp_path}/k.db", "--change-retention", "1s")
    assert (await client.post(base + ENTITIES, json=light(1))).status_code == 201
    assert (await client.post(base + ENTITIES, json=light(2))).status_code == 201
    deadline = time.monotonic() + 10
    while True:  # until the pruner (every second) forgets the first change
        async with stream(client, base, **{"Last-Event-ID": "0"}) as events:
            event = await events.next()
        if event["event"] == "reload":
            break
        assert time.monotonic() < deadline, "the change log was not pruned"
        await asyncio.sleep(0.1)  # the interval of the poll; the deadline bounds the wait
    assert int(event["id"]) >= 2
    assert (await client.get(base + EVENTS, headers={"Last-Event-ID": "x"})).status_code == 400
