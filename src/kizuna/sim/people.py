"""Where people are: classrooms following the school timetable, and Wi-Fi access points in the
zoo, the shopping street and on trams that run their lines.

Classroom CO2 follows a one-box ventilation model: each person breathes out about 0.3 l of CO2
a minute, ~94 ppm an hour in a 200 m3 room, and its air is exchanged about once an hour with
windows shut (lessons) and six times an hour with them open (breaks); between two reports the
equation is solved exactly.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from kizuna.sim import calendar, geography
from kizuna.sim.geography import Point
from kizuna.sim.ngsi import Changes, Entity, emit, entity, point, prop, rel

OUTDOOR_CO2 = 420.0
PPM_PER_PERSON_HOUR = 94.0  # 5.2e-6 m3/s exhaled CO2 into 200 m3


@dataclass(slots=True)
class Classroom:
    id: str
    school: str
    at: Point
    size: int  # pupils in its class
    co2: float = OUTDOOR_CO2
    people: int = 0


@dataclass(slots=True)
class AccessPoint:
    id: str
    poi: str
    at: Point
    peak: int  # clients at the busiest time
    line: int | None = None  # index of its tram line, if it rides one
    phase: float = 0.0  # minutes into the line's cycle at midnight
    clients: int = 0


class People:
    def __init__(
        self,
        rng: random.Random,
        schools: int,
        rooms_per_school: int,
        zoo_aps: int,
        centre_aps: int,
        trams_per_line: int,
    ) -> None:
        self.rng = rng
        self.rooms: list[Classroom] = []
        districts = geography.districts()
        for s in range(schools):
            district = districts[s % len(districts)]
            west, south, east, north = district.bounds()
            while not district.contains(at := (rng.uniform(west, east), rng.uniform(south, north))):
                pass
            for r in range(rooms_per_school):
                self.rooms.append(
                    Classroom(
                        f"urn:ngsi-ld:IndoorEnvironmentObserved:duisburg-school-{s:03d}-room-{r:02d}",
                        f"{district.name} school {s}",
                        geography.offset(at, 8 * (r % 6), 8 * (r // 6)),
                        rng.randint(20, 30),
                    )
                )
        data = geography.data()
        self.lines = [[(p[0], p[1]) for p in line["stops"]] for line in data["tram_lines"]]
        self.line_minutes = [float(line["minutes_end_to_end"]) for line in data["tram_lines"]]
        self.pois = {
            "urn:ngsi-ld:WifiPointOfInterest:duisburg-zoo": (
                data["zoo"]["name"],
                tuple(data["zoo"]["coordinates"]),
            ),
            "urn:ngsi-ld:WifiPointOfInterest:duisburg-centre": (
                data["centre"]["name"],
                tuple(data["centre"]["coordinates"]),
            ),
        }
        self.aps: list[AccessPoint] = []
        for kind, count, peak in (("zoo", zoo_aps, 60), ("centre", centre_aps, 80)):
            poi = f"urn:ngsi-ld:WifiPointOfInterest:duisburg-{kind}"
            centre = self.pois[poi][1]
            for n in range(count):
                at = geography.offset(centre, rng.uniform(-250, 250), rng.uniform(-150, 150))  # type: ignore[arg-type]
                self.aps.append(
                    AccessPoint(f"urn:ngsi-ld:AccessPoint:duisburg-{kind}-{n:03d}", poi, at, peak)
                )
        for index, line in enumerate(data["tram_lines"]):
            poi = f"urn:ngsi-ld:WifiPointOfInterest:duisburg-tram-{line['name']}"
            self.pois[poi] = (f"Tram {line['name']} Wi-Fi", tuple(self.lines[index][0]))
            cycle = self._cycle(index)
            for n in range(trams_per_line):
                self.aps.append(
                    AccessPoint(
                        f"urn:ngsi-ld:AccessPoint:duisburg-tram-{line['name']}-{n:02d}",
                        poi,
                        self.lines[index][0],
                        70,
                        index,
                        cycle * n / trams_per_line,
                    )
                )

    def _cycle(self, line: int) -> float:
        """Minutes of a round trip: there, a 5-minute layover, back, another layover."""
        return 2 * self.line_minutes[line] + 10

    def tram_position(self, ap: AccessPoint, now: datetime) -> Point:
        """Where a tram is on its line at ``now``: a shuttle between the two ends."""
        assert ap.line is not None
        local = calendar.local(now)
        minute = local.hour * 60 + local.minute + local.second / 60
        t = (minute + ap.phase) % self._cycle(ap.line)
        run = self.line_minutes[ap.line]
        line = self.lines[ap.line]
        total = geography.length(line)
        if t < run:
            return geography.along(line, total * t / run)
        if t < run + 5:
            return line[-1]
        if t < 2 * run + 5:
            return geography.along(line, total * (1 - (t - run - 5) / run))
        return line[0]

    def entities(self, now: datetime) -> list[Entity]:
        out = [
            entity(
                room.id,
                "IndoorEnvironmentObserved",
                name=prop(f"{room.school}, room {room.id.rsplit('-', 1)[1]}"),
                location=point(room.at),
                address=prop({"addressLocality": "Duisburg", "addressCountry": "DE"}),
                co2=prop(round(room.co2), now, "59"),
                temperature=prop(19.0, now, "CEL"),
                relativeHumidity=prop(0.35, now),
                peopleCount=prop(0, now),
            )
            for room in self.rooms
        ]
        for poi, (name, at) in self.pois.items():
            out.append(
                entity(
                    poi,
                    "WifiPointOfInterest",
                    name=prop(name),
                    location=point(at),  # type: ignore[arg-type]
                    wifiStatus=prop("working", now),
                    clientsConnected=prop(0, now),
                    service=prop(["public Wi-Fi"]),
                )
            )
        for ap in self.aps:
            out.append(
                entity(
                    ap.id,
                    "AccessPoint",
                    name=prop(ap.id.rsplit(":", 1)[1]),
                    location=point(ap.at) if ap.line is None else point(self.tram_position(ap, now), now),
                    apState=prop("up", now),
                    clientsConnected=prop(0, now),
                    refPointOfInterest=rel(ap.poi),
                    ssid=prop(["DU-Free"]),
                    modelName=prop("Aironet 1000 LWAPP" if ap.line is None else "Tram AP 2"),
                )
            )
        return out

    def step_rooms(self, now: datetime, minutes: float, changes: Changes) -> None:
        """The classrooms over the ``minutes`` ending at ``now``."""
        middle = now - timedelta(minutes=minutes / 2)
        lesson, school = calendar.lesson_at(middle), calendar.school_day(middle)
        for room in self.rooms:
            if lesson is not None:
                occupied = self.rng.random() > 0.1
                room.people = room.size + 1 if occupied else 0
                exchanges = 1.0
            else:
                room.people = self.rng.randint(0, 3) if school else 0
                exchanges = 6.0 if school else 0.5
            steady = OUTDOOR_CO2 + PPM_PER_PERSON_HOUR * room.people / exchanges
            room.co2 = steady + (room.co2 - steady) * math.exp(-exchanges * minutes / 60)
            emit(
                changes,
                room.id,
                "IndoorEnvironmentObserved",
                co2=prop(round(room.co2), now, "59"),
                peopleCount=prop(room.people, now),
                temperature=prop(
                    round(19.0 + 2.0 * min(1.0, (room.co2 - OUTDOOR_CO2) / 1500), 1), now, "CEL"
                ),
                relativeHumidity=prop(round(0.35 + 0.15 * room.people / 30, 2), now),
            )

    def step_wifi(self, now: datetime, changes: Changes) -> None:
        zoo, shops = calendar.zoo_visitors(now), calendar.shoppers(now)
        trams = calendar.tram_in_service(now)
        riders = 0.15 + calendar.traffic_demand(now)
        totals = dict.fromkeys(self.pois, 0)
        for ap in self.aps:
            if ap.line is None:
                crowd = zoo if ap.poi.endswith("zoo") else shops
                ap.clients = round(ap.peak * crowd * self.rng.uniform(0.8, 1.2))
                emit(changes, ap.id, "AccessPoint", clientsConnected=prop(ap.clients, now))
            else:
                ap.clients = round(ap.peak * min(1.0, riders) * self.rng.uniform(0.7, 1.2)) if trams else 0
                emit(
                    changes,
                    ap.id,
                    "AccessPoint",
                    location=point(self.tram_position(ap, now), now),
                    apState=prop("up" if trams else "down", now),
                    clientsConnected=prop(ap.clients, now),
                )
            totals[ap.poi] += ap.clients
        for poi, clients in totals.items():
            emit(changes, poi, "WifiPointOfInterest", clientsConnected=prop(clients, now))
