"""The risk service's HTTP side: it reads the road network, subscribes to what moves risk,
listens on loopback for notifications and writes ``RoadSegmentRisk`` entities back.

Only the public NGSI-LD API is used, as any application on Kizuna would. Recomputation is
batched: notifications mark segments dirty, and a writer task upserts the changed risks at
most every ``settle`` seconds, so a burst (every light of a cabinet at dusk) costs one write.
RoadSegmentRisk uses the core @context only (its terms fall in the default vocabulary), so a
client asks ``q=riskLevel>0.7`` without any Link header.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from datetime import datetime
from typing import Any, TextIO

import httpx
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kizuna.client import NodeError, Target, check
from kizuna.risk.model import Accident, RiskModel, Segment, Station
from kizuna.sim.ngsi import CONTEXTS, iso

API = "/ngsi-ld/v1"
CONTEXT_REL = "http://www.w3.org/ns/json-ld#context"
WEATHER = ["temperature", "precipitation", "relativeHumidity", "visibility"]
# Per type: the attributes whose change moves risk (watchedAttributes; None: any change) and
# those a notification carries (notification.attributes; None: all). At city scale a cabinet's
# 30 lights dim in steps at dusk and report power and voltage: watching only status and
# powerState keeps those writes from costing 45,000 notifications, and the projection keeps
# the rest small. Segments and accidents are few and read whole.
WATCHED: dict[
    str, tuple[list[str] | None, list[str] | None]
] = {  # segments first: the rest is placed on them
    "RoadSegment": (None, None),
    "TrafficFlowObserved": (
        ["averageVehicleSpeed", "congested"],
        ["averageVehicleSpeed", "congested", "refRoadSegment"],
    ),
    "RoadAccident": (None, None),
    "Streetlight": (["status", "powerState"], ["status", "powerState", "location"]),
    "WeatherObserved": (WEATHER, [*WEATHER, "location"]),
}


def _value(entity: dict[str, Any], name: str) -> Any:
    attr = entity.get(name)
    if isinstance(attr, list):
        attr = attr[0] if attr else None
    if not isinstance(attr, dict):
        return None
    return attr.get("value", attr.get("object"))


def _observed(entity: dict[str, Any]) -> datetime | None:
    latest = None
    for attr in entity.values():
        if isinstance(attr, dict) and isinstance(attr.get("observedAt"), str):
            when = datetime.fromisoformat(attr["observedAt"].replace("Z", "+00:00"))
            latest = when if latest is None or when > latest else latest
    return latest


def _point(entity: dict[str, Any]) -> tuple[float, float] | None:
    geometry = _value(entity, "location")
    if isinstance(geometry, dict) and geometry.get("type") == "Point":
        return float(geometry["coordinates"][0]), float(geometry["coordinates"][1])
    return None


class RiskService:
    def __init__(
        self, target: Target, listen_port: int = 0, settle: float = 0.2, out: TextIO = sys.stderr
    ) -> None:
        self.target = target
        self.port = listen_port or _free_port()
        self.settle = settle
        self.out = out
        self.model = RiskModel()
        self.dirty: set[str] = set()
        self.written: dict[str, tuple[float, dict[str, float]]] = {}
        self.wake = asyncio.Event()
        self.subscriptions: list[str] = []

    async def run(self) -> None:
        headers = {k: v for k, v in self.target.headers().items() if k != "Content-Type"}
        async with httpx.AsyncClient(base_url=self.target.url, headers=headers, timeout=30.0) as client:
            await check(client, self.target)
            server = uvicorn.Server(
                uvicorn.Config(
                    self._app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
                )
            )
            listening = asyncio.create_task(server.serve())
            try:
                for entity_type, (watched, carried) in WATCHED.items():
                    await self._subscribe(client, entity_type, watched, carried)
                    for entity in await self._all(client, entity_type):
                        self._take(entity)
                self.dirty |= set(self.model.segments)
                self.out.write(
                    f"kizuna risk: {len(self.model.segments)} road segments, notifications on"
                    f" http://127.0.0.1:{self.port}/notify\n"
                )
                self.wake.set()
                await self._write_forever(client)
            finally:
                for sub in self.subscriptions:
                    with contextlib.suppress(httpx.HTTPError):
                        await client.delete(f"{API}/subscriptions/{sub}")
                server.should_exit = True
                await listening

    def _app(self) -> Starlette:
        async def notify(request: Request) -> Response:
            body = orjson.loads(await request.body())
            for entity in body.get("data", []):
                self._take(entity)
            self.wake.set()
            return Response(status_code=204)

        return Starlette(routes=[Route("/notify", notify, methods=["POST"])])

    async def _subscribe(
        self,
        client: httpx.AsyncClient,
        entity_type: str,
        watched: list[str] | None,
        carried: list[str] | None,
    ) -> None:
        notification: dict[str, Any] = {
            "format": "normalized",
            "endpoint": {"uri": f"http://127.0.0.1:{self.port}/notify", "accept": "application/json"},
        }
        if carried is not None:
            notification["attributes"] = carried
        body: dict[str, Any] = {
            "type": "Subscription",
            "entities": [{"type": entity_type}],
            # entityCreated and entityDeleted fire whatever watchedAttributes says (clause 5.8.2)
            "notificationTrigger": ["entityCreated", "entityUpdated", "entityDeleted"],
            "notification": notification,
            "@context": [CONTEXTS[entity_type]],
        }
        if watched is not None:
            body["watchedAttributes"] = watched
        answer = await client.post(
            f"{API}/subscriptions",
            content=orjson.dumps(body),
            headers={"Content-Type": "application/ld+json"},
        )
        if answer.status_code != 201:
            raise NodeError(f"the node refused a subscription ({answer.status_code}): {answer.text[:300]}")
        self.subscriptions.append(answer.headers["location"].rsplit("/", 1)[1])

    async def _all(self, client: httpx.AsyncClient, entity_type: str) -> list[dict[str, Any]]:
        link = f'<{CONTEXTS[entity_type]}>; rel="{CONTEXT_REL}"; type="application/ld+json"'
        out: list[dict[str, Any]] = []
        while True:
            answer = await client.get(
                f"{API}/entities",
                params={"type": entity_type, "limit": 1000, "offset": len(out)},
                headers={"Link": link},
            )
            if answer.status_code != 200:
                raise NodeError(f"cannot read {entity_type} ({answer.status_code}): {answer.text[:300]}")
            page = answer.json()
            out += page
            if len(page) < 1000:
                return out

    def _take(self, entity: dict[str, Any]) -> None:
        """One entity from a query or a notification: update the inputs, mark what it moves."""
        m = self.model
        kind, entity_id = entity.get("type"), entity["id"]
        gone = "deletedAt" in entity
        m.observe(_observed(entity))
        if kind == "RoadSegment" and not gone:
            line = _value(entity, "location")
            if isinstance(line, dict) and line.get("type") == "LineString":
                coordinates = [(float(x), float(y)) for x, y in line["coordinates"]]
                m.add_segment(
                    Segment(entity_id, coordinates, float(_value(entity, "maximumAllowedSpeed") or 50))
                )
                self.dirty.add(entity_id)
        elif kind == "TrafficFlowObserved":
            segment = m.segments.get(str(_value(entity, "refRoadSegment")))
            if segment is not None:
                speed = _value(entity, "averageVehicleSpeed")
                segment.speed = None if speed is None else float(speed)
                segment.congested = bool(_value(entity, "congested"))
                self.dirty.add(segment.id)
        elif kind == "RoadAccident":
            known = m.accidents.get(entity_id)
            at = _point(entity) or (known.at if known else None)
            if gone:
                m.accidents.pop(entity_id, None)
            elif at is not None:
                date = _value(entity, "accidentDate")
                when = datetime.fromisoformat(date.replace("Z", "+00:00")) if isinstance(date, str) else None
                status = _value(entity, "status")
                ongoing = status == "onGoing" if status is not None else (known.ongoing if known else True)
                when = when or (known.when if known else m.clock or datetime.now().astimezone())
                m.accidents[entity_id] = Accident(at, when, ongoing)
            if at is not None:
                self.dirty |= m.near(at, 400)
        elif kind == "Streetlight":
            status, power = _value(entity, "status"), _value(entity, "powerState")
            known_out = m.lights.get(entity_id, (None, False))[1]
            out = (
                known_out
                if status is None and power is None
                else (status not in (None, "ok") or power == "off")
            )
            self.dirty |= m.light(entity_id, _point(entity), out and not gone)
        elif kind == "WeatherObserved":
            station = m.stations.get(entity_id) or Station(_point(entity) or (6.7623, 51.4344))
            for name, attr in (
                ("temperature", "temperature"),
                ("precipitation", "precipitation"),
                ("humidity", "relativeHumidity"),
                ("visibility", "visibility"),
            ):
                value = _value(entity, attr)
                if value is not None:
                    setattr(station, name, float(value))
            m.stations[entity_id] = station
            self.dirty |= set(m.segments)

    async def _write_forever(self, client: httpx.AsyncClient) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            await asyncio.sleep(self.settle)
            await self._write(client)

    async def _write(self, client: httpx.AsyncClient) -> None:
        dirty, self.dirty = self.dirty, set()
        batch = []
        for segment_id in sorted(dirty):
            level, factors = self.model.assess(segment_id)
            if self.written.get(segment_id) == (level, factors):
                continue
            self.written[segment_id] = (level, factors)
            segment = self.model.segments[segment_id]
            when = iso(self.model.clock) if self.model.clock else None
            batch.append(
                {
                    "id": segment_id.replace(":RoadSegment:", ":RoadSegmentRisk:"),
                    "type": "RoadSegmentRisk",
                    "refRoadSegment": {"type": "Relationship", "object": segment_id},
                    "riskLevel": {
                        "type": "Property",
                        "value": level,
                        **({"observedAt": when} if when else {}),
                    },
                    "factors": {"type": "Property", "value": factors},
                    "location": {
                        "type": "GeoProperty",
                        "value": {"type": "LineString", "coordinates": [list(p) for p in segment.line]},
                    },
                }
            )
        for first in range(0, len(batch), self.target.batch_size):
            chunk = batch[first : first + self.target.batch_size]
            answer = await client.post(
                f"{API}/entityOperations/upsert?options=update",
                content=orjson.dumps(chunk),
                headers={"Content-Type": "application/json"},
            )
            if answer.status_code not in (201, 204):
                self.out.write(
                    f"kizuna risk: the node refused risks ({answer.status_code}): {answer.text[:300]}\n"
                )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
