"""The road network, its traffic and its accidents.

Segments are the bundled corridors (motorways, main roads) cut into pieces, plus local streets
drawn at random inside the districts until the scale's count is reached. Flow follows
``calendar.traffic_demand``; speed falls with the volume/capacity ratio by the BPR curve
(``free / (1 + (v/c)^4)``: half the free speed at capacity), and further in rain, fog or ice
and where an accident blocks a lane.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from kizuna.sim import calendar, geography
from kizuna.sim.draws import poisson
from kizuna.sim.geography import Point
from kizuna.sim.ngsi import Changes, Entity, emit, entity, geo, iso, point, prop, rel


@dataclass(slots=True)
class Segment:
    id: str
    name: str
    line: list[Point]
    speed: int  # maximumAllowedSpeed, km/h
    lanes: int
    length: float  # metres
    busy: float  # this segment's share of the city's demand curve
    accidents: int = 0  # accidents under way on it


@dataclass(slots=True)
class Accident:
    id: str
    segment: int
    at: Point
    clears_at: datetime


def network(rng: random.Random, count: int, piece_m: float) -> list[Segment]:
    """``count`` segments: the corridors cut into ``piece_m`` pieces, then local streets."""
    segments: list[Segment] = []
    for corridor in geography.data()["road_corridors"]:
        line = [(p[0], p[1]) for p in corridor["points"]]
        total = geography.length(line)
        pieces = max(1, round(total / piece_m))
        for i in range(pieces):
            a = geography.along(line, total * i / pieces)
            b = geography.along(line, total * (i + 1) / pieces)
            segments.append(_segment(rng, len(segments), f"{corridor['name']} {i + 1}", [a, b], corridor))
    districts = geography.districts()
    while len(segments) < count:
        district = districts[len(segments) % len(districts)]
        west, south, east, north = district.bounds()
        start = (rng.uniform(west, east), rng.uniform(south, north))
        if not district.contains(start):
            continue
        end = geography.offset(start, rng.uniform(-400, 400), rng.uniform(-400, 400))
        street = {"speed": 30 if rng.random() < 0.6 else 50, "lanes": 1}
        name = f"{district.name} street {len(segments)}"
        segments.append(_segment(rng, len(segments), name, [start, end], street))
    return segments[:count]


def _segment(rng: random.Random, n: int, name: str, line: list[Point], kind: dict) -> Segment:
    return Segment(
        f"urn:ngsi-ld:RoadSegment:duisburg-{n:04d}",
        name,
        line,
        int(kind["speed"]),
        int(kind["lanes"]),
        geography.length(line),
        rng.uniform(0.55, 1.1),
    )


class Roads:
    """Traffic on every segment and the accidents that happen on them."""

    def __init__(self, rng: random.Random, segments: list[Segment], accidents_per_hour: float) -> None:
        self.rng = rng
        self.segments = segments
        self.accidents_per_hour = accidents_per_hour
        self.accidents: list[Accident] = []
        self.counted = 0  # accidents so far, for their ids

    def entities(self, now: datetime) -> list[Entity]:
        out: list[Entity] = []
        for s in self.segments:
            line = geo({"type": "LineString", "coordinates": [[round(x, 6), round(y, 6)] for x, y in s.line]})
            out.append(
                entity(
                    s.id,
                    "RoadSegment",
                    name=prop(s.name),
                    location=line,
                    startPoint=prop({"type": "Point", "coordinates": list(s.line[0])}),
                    endPoint=prop({"type": "Point", "coordinates": list(s.line[-1])}),
                    totalLaneNumber=prop(s.lanes * 2),
                    maximumAllowedSpeed=prop(s.speed),
                    length=prop(round(s.length / 1000, 3), unit="KMT"),
                    allowedVehicleType=prop(["car", "bus", "lorry", "van", "motorcycle"]),
                    status=prop("open", now),
                )
            )
            out.append(
                entity(
                    _flow_id(s),
                    "TrafficFlowObserved",
                    location=line,
                    refRoadSegment=rel(s.id),
                    laneDirection=prop("forward"),
                    intensity=prop(0, now),
                    averageVehicleSpeed=prop(float(s.speed), now),
                    occupancy=prop(0.0, now),
                    congested=prop(False, now),
                )
            )
        return out

    def step(self, now: datetime, minutes: float, slowdown: float, changes: Changes) -> None:
        """Traffic for the minute ending at ``now``; ``slowdown`` is the weather's speed factor."""
        self._accidents(now, minutes, changes)
        demand = calendar.traffic_demand(now)
        for s in self.segments:
            capacity = (1800 if s.speed >= 100 else 800) * s.lanes / (1 + s.accidents)
            flow = max(0.0, demand * s.busy * (1800 if s.speed >= 100 else 800) * s.lanes)
            flow *= self.rng.uniform(0.9, 1.1)
            ratio = flow / capacity
            speed = s.speed * slowdown / (1 + ratio**4)
            occupancy = min(0.95, 0.45 * ratio + 0.4 * max(0.0, ratio - 0.8))
            emit(
                changes,
                _flow_id(s),
                "TrafficFlowObserved",
                intensity=prop(round(flow / 60), now),
                averageVehicleSpeed=prop(round(speed, 1), now, "KMH"),
                occupancy=prop(round(occupancy, 2), now),
                congested=prop(speed < 0.5 * s.speed, now),
                dateObservedFrom=prop(iso(now - timedelta(minutes=1))),
                dateObservedTo=prop(iso(now)),
            )

    def _accidents(self, now: datetime, minutes: float, changes: Changes) -> None:
        for accident in [a for a in self.accidents if a.clears_at <= now]:
            self.accidents.remove(accident)
            self.segments[accident.segment].accidents -= 1
            emit(changes, accident.id, "RoadAccident", status=prop("solved", now))
        for _ in range(poisson(self.rng, self.accidents_per_hour * minutes / 60)):
            n = self.rng.randrange(len(self.segments))
            segment = self.segments[n]
            at = geography.along(segment.line, self.rng.uniform(0, segment.length))
            self.counted += 1
            accident = Accident(
                f"urn:ngsi-ld:RoadAccident:duisburg-{self.counted:05d}",
                n,
                at,
                now + timedelta(minutes=self.rng.uniform(20, 90)),
            )
            self.accidents.append(accident)
            segment.accidents += 1
            emit(
                changes,
                accident.id,
                "RoadAccident",
                location=point(at),
                accidentDate=prop(iso(now)),
                description=prop(f"Collision on {segment.name}"),
                address=prop({"streetAddress": segment.name, "addressLocality": "Duisburg"}),
                status=prop("onGoing", now),
            )


def _flow_id(s: Segment) -> str:
    return s.id.replace("RoadSegment", "TrafficFlowObserved")
