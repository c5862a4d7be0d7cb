"""The simulated city: every subsystem built from one seed and stepped by one clock.

``City`` is pure: no I/O, no wall clock, randomness only from its own ``random.Random(seed)``.
``advance(to)`` steps it one simulated minute at a time up to ``to`` and returns the changes
coalesced per entity, so that the same seed gives the same city at the same simulated instant
however fast or slow the driver asks. Each subsystem reports at its real-world rate: traffic
and trams every minute, classrooms every 5, weather every 10, air quality and cabinet meters
every 15 or 30, street lights when they change.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from kizuna.sim import geography
from kizuna.sim.lighting import Lighting
from kizuna.sim.ngsi import Changes, Entity
from kizuna.sim.people import People
from kizuna.sim.roads import Roads, network
from kizuna.sim.weather import Weather

STEP = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Scale:
    """How big the city is (docs/simulator.md has the resulting entity counts)."""

    lights: int
    cabinets: int
    segments: int
    corridor_piece_m: float  # corridors are cut into pieces this long
    schools: int
    rooms_per_school: int
    zoo_aps: int
    centre_aps: int
    trams_per_line: int
    stations: int  # weather stations, and as many air quality stations
    accidents_per_hour: float


SCALES = {
    "small": Scale(1_000, 34, 120, 1_000, 4, 12, 8, 12, 4, 3, 0.5),
    "city": Scale(45_000, 1_500, 1_200, 300, 80, 20, 40, 179, 27, 7, 4.0),
}


@dataclass(frozen=True, slots=True)
class Options:
    scale: str = "small"
    seed: int = 7
    fault_rate: float = 0.001  # faults per street light per simulated day
    repair_hours: float = 48.0  # mean time to repair a fault
    accidents_per_hour: float | None = None  # None: the scale's default


class City:
    def __init__(self, options: Options, start: datetime) -> None:
        scale = SCALES[options.scale]
        self.rng = random.Random(options.seed)
        self.now = start
        segments = network(self.rng, scale.segments, scale.corridor_piece_m)
        self.lighting = Lighting(
            self.rng, segments, scale.lights, scale.cabinets, options.fault_rate, options.repair_hours
        )
        accidents = (
            scale.accidents_per_hour if options.accidents_per_hour is None else options.accidents_per_hour
        )
        self.roads = Roads(self.rng, segments, accidents)
        self.people = People(
            self.rng,
            scale.schools,
            scale.rooms_per_school,
            scale.zoo_aps,
            scale.centre_aps,
            scale.trams_per_line,
        )
        stations = [
            (s["name"], (s["coordinates"][0], s["coordinates"][1]))
            for s in geography.data()["weather_stations"]
        ]
        air = [
            (s["name"], (s["coordinates"][0], s["coordinates"][1]))
            for s in geography.data()["air_quality_stations"]
        ]
        self.weather = Weather(self.rng, stations[: scale.stations], air[: scale.stations])

    def entities(self) -> list[Entity]:
        """Every entity as it is at the start, for the first upsert."""
        now = self.now
        return [
            *self.roads.entities(now),
            *self.lighting.entities(now),
            *self.people.entities(now),
            *self.weather.entities(now),
        ]

    def advance(self, to: datetime) -> Changes:
        """Step minute by minute until ``to``; what changed, the latest value of each attribute."""
        changes: Changes = {}
        while self.now + STEP <= to:
            self.now += STEP
            now, minute = self.now, self.now.minute
            self.lighting.step(now, 1, changes)
            self.roads.step(now, 1, self.weather.slowdown(now), changes)
            self.people.step_wifi(now, changes)
            if minute % 5 == 0:
                self.people.step_rooms(now, 5, changes)
            if minute % 10 == 0:
                self.weather.step(now, changes)
        return changes
