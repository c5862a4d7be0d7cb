"""The street lights every bench loads: the same entities, loaded the same way.

Ids share a 30-character prefix of ``a`` (so that a pattern such as ``a*a*...*b`` has work to
do on each); half the lights are on.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson

API = "/ngsi-ld/v1"
JSON = {"Content-Type": "application/json"}


def streetlight(n: int) -> dict[str, Any]:
    return {
        "id": f"urn:ngsi-ld:Streetlight:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa{n:06d}",
        "type": "Streetlight",
        "name": {"type": "Property", "value": "a" * 30 + str(n)},
        "powerState": {
            "type": "Property",
            "value": "on" if n % 2 else "off",
            "observedAt": "2026-12-01T00:00:00Z",
        },
    }


def sdm_streetlight(
    entity_id: str, n: int, coordinates: tuple[float, float], power_state: str = "on"
) -> dict[str, Any]:
    """A Streetlight with 15 attributes, like the Smart Data Models example, at ``coordinates``."""

    def prop(value: Any, **extra: str) -> dict[str, Any]:
        return {"type": "Property", "value": value, **extra}

    return {
        "id": entity_id,
        "type": "Streetlight",
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": list(coordinates)}},
        "status": prop("ok", observedAt="2026-11-01T20:00:00Z"),
        "powerState": prop(power_state),
        "circuit": prop(f"C-{n % 40}"),
        "lanternHeight": prop(10, unitCode="MTR"),
        "illuminanceLevel": prop(0.8),
        "powerConsumption": prop(120.5, unitCode="WTT", observedAt="2026-11-01T20:00:00Z"),
        "lampTechnology": prop("LED"),
        "lampBrandName": prop("Philips"),
        "workingMode": prop("automatic"),
        "dateLastLampChange": prop("2026-03-01T10:00:00Z"),
        "areaServed": prop("Duisburg Zoo"),
        "address": prop({"streetAddress": "Mülheimer Str. 273", "addressLocality": "Duisburg"}),
        "refStreetlightGroup": {"type": "Relationship", "object": "urn:ngsi-ld:StreetlightGroup:zoo"},
        "refDevice": {"type": "Relationship", "object": f"urn:ngsi-ld:Device:lamp-{n}"},
    }


def load(client: httpx.Client, count: int) -> None:
    for first in range(0, count, 1000):
        batch = [streetlight(n) for n in range(first, min(first + 1000, count))]
        answer = client.post(f"{API}/entityOperations/upsert", content=orjson.dumps(batch), headers=JSON)
        if answer.status_code not in (201, 204):
            raise SystemExit(f"bench: load: {answer.status_code} {answer.text[:300]}")
