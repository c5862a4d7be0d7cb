"""The weather over Duisburg and the air it leaves: one city-wide state stepped every ten
simulated minutes, seen by each station with a little local noise.

Conditions follow a Markov chain (clear, cloudy, rain, fog) whose odds lean on the hour (fog
at night and in the morning); temperature is the month's mean plus a daily swing peaking at
15:00 and a slow random drift, so that in winter rain falls near freezing (ice on the roads)
and fog forms. Air quality follows traffic, and rain washes particles out.
"""

from __future__ import annotations

import math
import random
from datetime import datetime

from kizuna.sim import calendar
from kizuna.sim.geography import Point
from kizuna.sim.ngsi import Changes, Entity, emit, point, prop

# Mean daily temperature in Duisburg per month (degrees C), roughly.
MONTHLY_MEAN = (3.0, 3.5, 6.5, 10.0, 14.0, 17.0, 19.0, 18.5, 15.0, 11.0, 7.0, 4.0)
CHAIN = {  # condition -> odds of the next condition in ten minutes
    "clear": {"clear": 0.96, "cloudy": 0.035, "fog": 0.005},
    "cloudy": {"cloudy": 0.93, "clear": 0.03, "rain": 0.035, "fog": 0.005},
    "rain": {"rain": 0.94, "cloudy": 0.06},
    "fog": {"fog": 0.95, "cloudy": 0.05},
}
VISIBILITY = {"clear": 20_000, "cloudy": 15_000, "rain": 4_000, "fog": 300}


class Weather:
    def __init__(
        self,
        rng: random.Random,
        weather_stations: list[tuple[str, Point]],
        air_stations: list[tuple[str, Point]],
    ) -> None:
        self.rng = rng
        self.weather = [
            (f"urn:ngsi-ld:WeatherObserved:duisburg-{name.lower()}", name, at)
            for name, at in weather_stations
        ]
        self.air = [
            (f"urn:ngsi-ld:AirQualityObserved:duisburg-{name.lower()}", name, at) for name, at in air_stations
        ]
        self.condition = "cloudy"
        self.drift = 0.0  # degrees away from the climatological temperature

    def temperature(self, now: datetime) -> float:
        local = calendar.local(now)
        swing = -4.0 * math.cos((calendar.hour_of(now) - 3) / 24 * 2 * math.pi)  # warmest at 15:00
        return MONTHLY_MEAN[local.month - 1] + swing + self.drift

    def slowdown(self, now: datetime) -> float:
        """How much slower traffic drives in this weather (1 = not at all)."""
        if self.condition == "fog":
            return 0.75
        if self.condition == "rain":
            return 0.7 if self.temperature(now) < 1 else 0.9
        return 1.0

    def entities(self, now: datetime) -> list[Entity]:
        changes: Changes = {}
        self._report(now, changes, air=True)
        for entity_id, name, at in self.weather + self.air:
            changes[entity_id].update(name=prop(f"Duisburg-{name}"), location=point(at))
        return list(changes.values())

    def step(self, now: datetime, changes: Changes) -> None:
        """Ten simulated minutes: the next condition, the drift, and every station's report;
        air quality on the half hour."""
        h = calendar.hour_of(now)
        odds = dict(CHAIN[self.condition])
        if "fog" in odds and (h < 9 or h > 21):
            odds["fog"] *= 6
        self.condition = self.rng.choices(list(odds), list(odds.values()))[0]
        self.drift = max(-6.0, min(6.0, self.drift * 0.995 + self.rng.gauss(0, 0.15)))
        self._report(now, changes, air=calendar.local(now).minute % 30 < 10)

    def _report(self, now: datetime, changes: Changes, air: bool) -> None:
        base = self.temperature(now)
        for entity_id, _, _ in self.weather:
            temperature = round(base + self.rng.uniform(-0.4, 0.4), 1)
            raining = self.condition == "rain"
            attrs = dict(
                temperature=prop(temperature, now, "CEL"),
                relativeHumidity=prop(round({"rain": 0.93, "fog": 0.98}.get(self.condition, 0.7), 2), now),
                precipitation=prop(round(self.rng.uniform(0.5, 4.0), 1) if raining else 0.0, now, "H67"),
                visibility=prop(round(VISIBILITY[self.condition] * self.rng.uniform(0.7, 1.2)), now, "MTR"),
                weatherType=prop(
                    ("snow" if temperature < 0.5 else "rain") if raining else self.condition, now
                ),
            )
            emit(changes, entity_id, "WeatherObserved", **attrs)
        if not air:
            return
        traffic = calendar.traffic_demand(now)
        washed = 0.5 if self.condition == "rain" else 1.0
        for entity_id, _, _ in self.air:
            no2 = round((12 + 45 * traffic) * self.rng.uniform(0.85, 1.15), 1)
            pm10 = round((10 + 18 * traffic) * washed * self.rng.uniform(0.85, 1.15), 1)
            attrs = dict(
                no2=prop(no2, now, "GQ"),
                pm10=prop(pm10, now, "GQ"),
                pm25=prop(round(pm10 * 0.6, 1), now, "GQ"),
                airQualityLevel=prop("good" if no2 < 40 and pm10 < 25 else "moderate", now),
                temperature=prop(round(base, 1), now, "CEL"),
            )
            emit(changes, entity_id, "AirQualityObserved", typeOfLocation=prop("outdoor"), **attrs)
