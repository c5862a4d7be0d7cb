"""How risky each road segment is now, from what the city reports: pure, no I/O.

Each factor is a probability-like score in [0, 1] already scaled by its weight, and they
combine as independent hazards (noisy-OR): ``risk = 1 - prod(1 - f)``. One strong factor
dominates, several moderate ones add up, and the result never leaves [0, 1]. docs/risk.md
gives the weights and why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from kizuna.sim import geography, sun
from kizuna.sim.geography import Point

ACCIDENT = 0.6  # an accident on or next to the segment
ACCIDENT_NEAR_M, ACCIDENT_FAR_M = 50.0, 300.0
ACCIDENT_FRESH, ACCIDENT_STALE = timedelta(hours=1), timedelta(hours=3)
LIGHTS_OUT = 0.4  # reached with three lights out after dark
LIGHT_NEAR_M = 40.0  # a light this close to the segment lights it
DARK_BELOW = -4.0  # sun elevation (degrees) under which unlit roads are dark
CONGESTION = 0.25
SLOW = 0.3  # reached at 20 % of the allowed speed
ICE, RAIN, FOG = 0.5, 0.15, 0.3
FOG_VISIBILITY_M = 1000.0


@dataclass(slots=True)
class Segment:
    id: str
    line: list[Point]
    speed_limit: float
    lights: set[str] = field(default_factory=set)
    speed: float | None = None
    congested: bool = False


@dataclass(slots=True)
class Accident:
    at: Point
    when: datetime
    ongoing: bool


@dataclass(slots=True)
class Station:
    at: Point
    temperature: float | None = None
    precipitation: float = 0.0
    humidity: float = 0.0
    visibility: float | None = None


class RiskModel:
    """The inputs of every segment's risk, as the latest notifications left them."""

    def __init__(self) -> None:
        self.segments: dict[str, Segment] = {}
        self.accidents: dict[str, Accident] = {}
        self.lights: dict[str, tuple[Point, bool]] = {}  # id -> (where, out?)
        self.stations: dict[str, Station] = {}
        self.clock: datetime | None = None  # the latest observation's time: the city's now
        self.grid: dict[tuple[int, int], list[str]] = {}  # ~500 m cells -> segments crossing them

    def observe(self, when: datetime | None) -> None:
        if when is not None and (self.clock is None or when > self.clock):
            self.clock = when

    def add_segment(self, segment: Segment) -> None:
        self.segments[segment.id] = segment
        xs, ys = zip(*(_cell(p) for p in segment.line), strict=True)
        for x in range(min(xs) - 1, max(xs) + 2):
            for y in range(min(ys) - 1, max(ys) + 2):
                self.grid.setdefault((x, y), []).append(segment.id)
        for light_id, (at, _) in self.lights.items():
            if geography.to_line(at, segment.line) <= LIGHT_NEAR_M:
                segment.lights.add(light_id)

    def light(self, light_id: str, at: Point | None, out: bool) -> set[str]:
        """A light's state; the segments it lights (whose risk may change)."""
        known = self.lights.get(light_id)
        where = at or (known[0] if known else None)
        if where is None:
            return set()
        self.lights[light_id] = (where, out)
        lit = self.near(where, LIGHT_NEAR_M)
        for segment_id in lit:
            self.segments[segment_id].lights.add(light_id)
        return lit

    def near(self, at: Point, metres: float) -> set[str]:
        """Segments within ``metres`` (at most ~500 m) of ``at``."""
        candidates = self.grid.get(_cell(at), [])
        return {i for i in candidates if geography.to_line(at, self.segments[i].line) <= metres}

    def assess(self, segment_id: str) -> tuple[float, dict[str, float]]:
        """The segment's risk level and each factor's share, rounded for display."""
        s = self.segments[segment_id]
        now = self.clock or datetime.now().astimezone()
        factors = {
            "accident": self._accident(s, now),
            "lightsOut": self._lights(s, now),
            "congestion": CONGESTION if s.congested else 0.0,
            "slowTraffic": self._slow(s),
            **self._weather(s),
        }
        level = 1 - math.prod(1 - f for f in factors.values())
        return round(level, 3), {k: round(v, 3) for k, v in factors.items()}

    def _accident(self, s: Segment, now: datetime) -> float:
        worst = 0.0
        for a in self.accidents.values():
            age = now - a.when
            if not a.ongoing or age > ACCIDENT_STALE or age < -ACCIDENT_STALE:
                continue
            d = geography.to_line(a.at, s.line)
            near = _ramp(d, ACCIDENT_NEAR_M, ACCIDENT_FAR_M)
            fresh = _ramp(age.total_seconds(), ACCIDENT_FRESH.total_seconds(), ACCIDENT_STALE.total_seconds())
            worst = max(worst, ACCIDENT * near * fresh)
        return worst

    def _lights(self, s: Segment, now: datetime) -> float:
        if not s.lights:
            return 0.0
        middle = geography.along(s.line, geography.length(s.line) / 2)
        if sun.elevation(now, middle[1], middle[0]) >= DARK_BELOW:
            return 0.0
        out = sum(1 for light in s.lights if self.lights[light][1])
        return LIGHTS_OUT * min(1.0, out / 3)

    def _slow(self, s: Segment) -> float:
        if s.speed is None or s.speed_limit <= 0:
            return 0.0
        ratio = s.speed / s.speed_limit
        return SLOW * max(0.0, min(1.0, (0.6 - ratio) / 0.4))

    def _weather(self, s: Segment) -> dict[str, float]:
        if not self.stations:
            return {}
        start = s.line[0]
        w = min(self.stations.values(), key=lambda st: geography.distance(st.at, start))
        wet = w.precipitation > 0 or w.humidity >= 0.95
        out = {}
        if w.temperature is not None and w.temperature <= 1.0 and wet:
            out["ice"] = ICE
        elif w.precipitation > 0:
            out["rain"] = RAIN * min(1.0, 0.5 + w.precipitation / 8)
        if w.visibility is not None and w.visibility < FOG_VISIBILITY_M:
            out["lowVisibility"] = FOG * (1 - w.visibility / FOG_VISIBILITY_M)
        return out


def _cell(p: Point) -> tuple[int, int]:
    return int(p[0] / 0.007), int(p[1] / 0.0045)


def _ramp(x: float, full: float, none: float) -> float:
    """1 up to ``full``, 0 from ``none``, linear in between."""
    if x <= full:
        return 1.0
    return max(0.0, (none - x) / (none - full))
