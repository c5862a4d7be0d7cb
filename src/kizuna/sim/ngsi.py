"""How the model's state becomes NGSI-LD: normalized attributes with the simulated time as
``observedAt``, and each entity with the @context of its Smart Data Models domain.

The simulator writes ``application/ld+json``, each entity carrying its own @context, so one
batch may mix domains and a client reading with the same @context sees the Smart Data Models
terms (tests/data/smart-data-models/context-map.json maps these URLs to local copies).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

Entity = dict[str, Any]
Changes = dict[str, Entity]  # entity id -> the attributes to write, coalesced


def sdm(domain: str) -> str:
    return f"https://raw.githubusercontent.com/smart-data-models/dataModel.{domain}/master/context.jsonld"


CONTEXTS = {
    "Streetlight": sdm("Streetlighting"),
    "StreetlightGroup": sdm("Streetlighting"),
    "StreetlightControlCabinet": sdm("Streetlighting"),
    "RoadSegment": sdm("Transportation"),
    "TrafficFlowObserved": sdm("Transportation"),
    "RoadAccident": sdm("Transportation"),
    "AccessPoint": sdm("WifiNetwork"),
    "WifiPointOfInterest": sdm("WifiNetwork"),
    "IndoorEnvironmentObserved": sdm("Environment"),
    "AirQualityObserved": sdm("Environment"),
    "WeatherObserved": sdm("Environment"),  # the Environment @context defines its terms
}


def iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def prop(value: Any, when: datetime | None = None, unit: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "Property", "value": value}
    if when is not None:
        out["observedAt"] = iso(when)
    if unit is not None:
        out["unitCode"] = unit
    return out


def rel(target: str | list[str]) -> dict[str, Any]:
    return {"type": "Relationship", "object": target}


def point(coordinates: tuple[float, float], when: datetime | None = None) -> dict[str, Any]:
    return geo({"type": "Point", "coordinates": [round(coordinates[0], 6), round(coordinates[1], 6)]}, when)


def geo(geometry: dict[str, Any], when: datetime | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "GeoProperty", "value": geometry}
    if when is not None:
        out["observedAt"] = iso(when)
    return out


def entity(entity_id: str, entity_type: str, **attrs: Any) -> Entity:
    return {"id": entity_id, "type": entity_type, **attrs, "@context": [CONTEXTS[entity_type]]}


def emit(changes: Changes, entity_id: str, entity_type: str, **attrs: Any) -> None:
    """Record new attribute values; a later value of the same attribute replaces the earlier one,
    which is how updates coalesce between two writes."""
    current = changes.get(entity_id)
    if current is None:
        changes[entity_id] = entity(entity_id, entity_type, **attrs)
    else:
        current.update(attrs)
