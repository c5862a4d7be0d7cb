"""Duisburg's bundled geography (data/duisburg.json) and the plane geometry the model needs.

Distances are computed on a local equirectangular projection around the city centre: over
25 km its error is far below a street light's spacing, and it keeps the model free of
dependencies.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

import orjson

Point = tuple[float, float]  # (longitude, latitude), GeoJSON order
LATITUDE = 51.4344
M_PER_DEG_LAT = 111_320.0
M_PER_DEG_LON = M_PER_DEG_LAT * math.cos(math.radians(LATITUDE))


@cache
def data() -> dict[str, Any]:
    """The bundled data file, read once."""
    return orjson.loads(files("kizuna.sim").joinpath("data/duisburg.json").read_bytes())


@dataclass(frozen=True, slots=True)
class District:
    name: str
    polygon: tuple[Point, ...]

    def bounds(self) -> tuple[float, float, float, float]:
        lons = [p[0] for p in self.polygon]
        lats = [p[1] for p in self.polygon]
        return min(lons), min(lats), max(lons), max(lats)

    def contains(self, point: Point) -> bool:
        """Ray casting: is ``point`` inside the polygon?"""
        x, y = point
        inside = False
        ring = self.polygon
        for (x1, y1), (x2, y2) in itertools.pairwise(ring):
            if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
                inside = not inside
        return inside


def districts() -> list[District]:
    return [District(d["name"], tuple((p[0], p[1]) for p in d["polygon"])) for d in data()["districts"]]


def district_of(point: Point) -> str:
    """The district ``point`` lies in, or the nearest district's name if it is on no polygon."""
    all_districts = districts()
    for district in all_districts:
        if district.contains(point):
            return district.name
    return min(all_districts, key=lambda d: distance(point, _centroid(d.polygon))).name


def _centroid(points: tuple[Point, ...]) -> Point:
    return sum(p[0] for p in points) / len(points), sum(p[1] for p in points) / len(points)


def distance(a: Point, b: Point) -> float:
    """Metres between two points."""
    return math.hypot((a[0] - b[0]) * M_PER_DEG_LON, (a[1] - b[1]) * M_PER_DEG_LAT)


def length(line: list[Point]) -> float:
    return sum(distance(a, b) for a, b in itertools.pairwise(line))


def along(line: list[Point], metres: float) -> Point:
    """The point ``metres`` along ``line`` from its start (clamped to its ends)."""
    for a, b in itertools.pairwise(line):
        step = distance(a, b)
        if metres <= step and step > 0:
            f = metres / step
            return a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f
        metres -= step
    return line[-1]


def to_segment(point: Point, a: Point, b: Point) -> float:
    """Metres from ``point`` to the straight segment ``a``-``b``."""
    px, py = (point[0] - a[0]) * M_PER_DEG_LON, (point[1] - a[1]) * M_PER_DEG_LAT
    bx, by = (b[0] - a[0]) * M_PER_DEG_LON, (b[1] - a[1]) * M_PER_DEG_LAT
    span = bx * bx + by * by
    f = 0.0 if span == 0 else max(0.0, min(1.0, (px * bx + py * by) / span))
    return math.hypot(px - f * bx, py - f * by)


def to_line(point: Point, line: list[Point]) -> float:
    """Metres from ``point`` to the nearest part of ``line``."""
    return min(to_segment(point, a, b) for a, b in itertools.pairwise(line))


def offset(point: Point, east_m: float, north_m: float) -> Point:
    return point[0] + east_m / M_PER_DEG_LON, point[1] + north_m / M_PER_DEG_LAT
