"""Street lights, their groups and control cabinets: switched and dimmed by the sun, faulting
and repaired, each cabinet metering the energy its lights draw.

A cabinet's photocell switches its lights when the sun's centre sinks below a threshold near
-1 degree (each cabinet a little different, as real photocells are); below -6 degrees (civil
dusk) they burn at full power, in between they are dimmed. Lamp and column faults hit single
lights, supply faults a whole cabinet; each fault is repaired after an exponential time.

A supply fault is reported as Smart Data Models can: the Streetlight ``status`` enumeration
(``ok``, ``defectiveLamp``, ``columnIssue``, ``brokenLantern``) has no value for a lost feed and
the lamp itself is fine, so the cabinet's ``voltageR/S/T`` and each of its lights' ``voltage``
fall to 0 V (and the lights go ``off``); ``q=voltage==0`` finds them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from kizuna.sim import geography, sun
from kizuna.sim.draws import poisson
from kizuna.sim.ngsi import Changes, Entity, emit, entity, iso, point, prop, rel
from kizuna.sim.roads import Segment

FAULT_KINDS = (("lamp", 0.7), ("column", 0.2), ("supply", 0.1))
STATUS = {"lamp": "defectiveLamp", "column": "columnIssue"}
MAINS_V = 230.0  # phase voltage of the supply; 0 during a supply fault
UNITS = {"powerConsumption": "WTT", "voltage": "VLT"}


@dataclass(slots=True)
class Light:
    id: str
    at: tuple[float, float]
    cabinet: int
    rated_w: float
    fault: str | None = None
    repair_at: datetime | None = None
    shown: tuple[str, float, float, str, float] = ("", -1.0, -1.0, "", -1.0)  # what the node last heard


@dataclass(slots=True)
class Cabinet:
    id: str
    group: str
    at: tuple[float, float]
    threshold: float  # sun elevation (degrees) below which it switches on
    lights: list[int] = field(default_factory=list)
    energy_kwh: float = 0.0
    supply_fault: bool = False
    repair_at: datetime | None = None
    power_w: float = 0.0
    shown: tuple[bool, float] = (False, 0.0)  # (on, level) its lights were last set to
    dirty: bool = True  # a light of it faulted or was repaired since

    @property
    def circuit(self) -> str:
        """The circuit it feeds, named after its number: its group's and its lights' label."""
        return f"C-{self.id.rsplit('-', 1)[1]}"


class Lighting:
    """Every street light of the city and the cabinets that feed them."""

    def __init__(
        self,
        rng: random.Random,
        segments: list[Segment],
        lights: int,
        cabinets: int,
        fault_rate: float,
        repair_hours: float,
    ) -> None:
        self.rng = rng
        self.fault_rate = fault_rate  # faults per light per simulated day
        self.repair_hours = repair_hours
        self.lights: list[Light] = []
        self.cabinets: list[Cabinet] = []
        self.faulty: set[int] = set()  # lights with a lamp or column fault
        total = sum(s.length for s in segments)
        placed, share = 0, 0.0
        for segment in segments:
            share += segment.length / total * lights
            count = round(share) - placed
            for i in range(count):
                at = geography.along(segment.line, (i + 0.5) / count * segment.length)
                rated = 150.0 if segment.speed >= 100 else 60.0
                n = placed + i
                self.lights.append(Light(f"urn:ngsi-ld:Streetlight:duisburg-{n:05d}", at, 0, rated))
            placed += count
        per_cabinet = -(-len(self.lights) // cabinets)
        for c in range(cabinets):
            members = list(range(c * per_cabinet, min((c + 1) * per_cabinet, len(self.lights))))
            at = geography.offset(self.lights[members[0]].at, 12, 12)
            cabinet = Cabinet(
                f"urn:ngsi-ld:StreetlightControlCabinet:duisburg-{c:04d}",
                f"urn:ngsi-ld:StreetlightGroup:duisburg-{c:04d}",
                at,
                -1.0 + rng.uniform(-0.8, 0.8),
                members,
            )
            for m in members:
                self.lights[m].cabinet = c
            self.cabinets.append(cabinet)

    def entities(self, now: datetime) -> list[Entity]:
        out: list[Entity] = []
        for c in self.cabinets:
            out.append(
                entity(
                    c.id,
                    "StreetlightControlCabinet",
                    location=point(c.at),
                    brandName=prop("Siemens"),
                    modelName=prop("Simatic S7 1200"),
                    workingMode=prop("automatic"),
                    maximumPowerAvailable=prop(10, unit="KWT"),
                    meterReadingPeriod=prop(15),
                    dateMeteringStarted=prop(iso(now)),
                    energyConsumed=prop(round(c.energy_kwh, 3), now, "KWH"),
                    voltageR=prop(MAINS_V, now, "VLT"),
                    voltageS=prop(MAINS_V, now, "VLT"),
                    voltageT=prop(MAINS_V, now, "VLT"),
                    refStreetlightGroup=rel([c.group]),
                )
            )
            out.append(
                entity(
                    c.group,
                    "StreetlightGroup",
                    location=point(c.at),
                    areaServed=prop(geography.district_of(c.at)),
                    circuitId=prop(c.circuit),
                    refStreetlightControlCabinet=prop(c.id),
                    powerState=prop("off", now),
                )
            )
        for light in self.lights:
            out.append(
                entity(
                    light.id,
                    "Streetlight",
                    location=point(light.at),
                    areaServed=prop(geography.district_of(light.at)),
                    circuit=prop(self.cabinets[light.cabinet].circuit),
                    lanternHeight=prop(10 if light.rated_w > 100 else 6, unit="MTR"),
                    powerRating=prop(light.rated_w, unit="WTT"),
                    controllingMethod=prop("group"),
                    refStreetlightGroup=rel(self.cabinets[light.cabinet].group),
                    refStreetlightControlCabinet=prop(self.cabinets[light.cabinet].id),
                    status=prop("ok", now),
                    powerState=prop("off", now),
                    illuminanceLevel=prop(0.0, now),
                    powerConsumption=prop(0.0, now, "WTT"),
                    voltage=prop(MAINS_V, now, "VLT"),
                )
            )
            light.shown = ("off", 0.0, 0.0, "ok", MAINS_V)
        return out

    def step(self, now: datetime, minutes: float, changes: Changes) -> None:
        """One simulated step of ``minutes`` ending at ``now``."""
        self._faults(now, minutes)
        elevation = sun.elevation(now, geography.LATITUDE, 6.7623)
        for c in self.cabinets:
            on = elevation < c.threshold and not c.supply_fault
            level = 0.0 if not on else min(1.0, round(0.6 + 0.4 * (c.threshold - elevation) / 5, 1))
            if c.dirty or c.shown != (on, level):
                c.power_w = self._switch(c, on, level, now, changes)
                c.shown, c.dirty = (on, level), False
            c.energy_kwh += c.power_w / 1000 * minutes / 60
            if (now.minute % 15) < minutes or minutes >= 15:
                amps = round(c.power_w / 3 / MAINS_V, 2)
                volts = 0.0 if c.supply_fault else MAINS_V
                emit(
                    changes,
                    c.id,
                    "StreetlightControlCabinet",
                    energyConsumed=prop(round(c.energy_kwh, 3), now, "KWH"),
                    intensityR=prop(amps, now, "AMP"),
                    intensityS=prop(amps, now, "AMP"),
                    intensityT=prop(amps, now, "AMP"),
                    voltageR=prop(volts, now, "VLT"),
                    voltageS=prop(volts, now, "VLT"),
                    voltageT=prop(volts, now, "VLT"),
                )
                emit(changes, c.group, "StreetlightGroup", powerState=prop("on" if on else "off", now))

    def _switch(self, c: Cabinet, on: bool, level: float, now: datetime, changes: Changes) -> float:
        """Set the lights of ``c``; what changed for each light goes into ``changes``. Their power."""
        power = 0.0
        volts = 0.0 if c.supply_fault else MAINS_V
        for m in c.lights:
            light = self.lights[m]
            lit = level if light.fault is None else 0.0
            watts = round(light.rated_w * lit, 1)
            power += watts
            shown = ("on" if on else "off", level, watts, STATUS.get(light.fault or "", "ok"), volts)
            if shown != light.shown:
                attrs = {}
                for name, old, new in zip(
                    ("powerState", "illuminanceLevel", "powerConsumption", "status", "voltage"),
                    light.shown,
                    shown,
                    strict=True,
                ):
                    if old != new:
                        attrs[name] = prop(new, now, UNITS.get(name))
                light.shown = shown
                emit(changes, light.id, "Streetlight", **attrs)
        return power

    def _faults(self, now: datetime, minutes: float) -> None:
        for m in [m for m in self.faulty if self.lights[m].repair_at <= now]:  # type: ignore[operator]
            light = self.lights[m]
            light.fault, light.repair_at = None, None
            self.faulty.discard(m)
            self.cabinets[light.cabinet].dirty = True
        for c in self.cabinets:
            if c.repair_at is not None and c.repair_at <= now:
                c.supply_fault, c.repair_at = False, None
                c.dirty = True
        new = poisson(self.rng, self.fault_rate * len(self.lights) * minutes / 1440)
        for _ in range(new):
            m = self.rng.randrange(len(self.lights))
            light = self.lights[m]
            kind = self.rng.choices([k for k, _ in FAULT_KINDS], [w for _, w in FAULT_KINDS])[0]
            repair = now + timedelta(hours=self.rng.expovariate(1 / self.repair_hours))
            if kind == "supply":
                cabinet = self.cabinets[light.cabinet]
                if not cabinet.supply_fault:
                    # dirty: by day its lights are off already, yet their voltage must drop
                    cabinet.supply_fault, cabinet.repair_at, cabinet.dirty = True, repair, True
            elif light.fault is None:
                light.fault, light.repair_at = kind, repair
                self.faulty.add(m)
                self.cabinets[light.cabinet].dirty = True
