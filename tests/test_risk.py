"""`kizuna risk` against a real node: an accident next to a dark segment with three lights out
makes that segment's RoadSegmentRisk rise above 0.7 within 2 s, and clearing it brings it back."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from conftest import KIZUNA
from kizuna.sim.ngsi import CONTEXTS
from notify_helpers import wait_until
from sim_helpers import API, link, node

NIGHT = "2026-01-14T23:00:00Z"
LINE = [[6.7700, 51.4300], [6.7800, 51.4300]]  # ~700 m east-west in Mitte
LD = {"Content-Type": "application/ld+json"}
RISK = "urn:ngsi-ld:RoadSegmentRisk:test-1"


def sdm(entity_id: str, entity_type: str, **attrs: Any) -> dict[str, Any]:
    return {"id": entity_id, "type": entity_type, **attrs, "@context": [CONTEXTS[entity_type]]}


def prop(value: Any) -> dict[str, Any]:
    return {"type": "Property", "value": value, "observedAt": NIGHT}


def point(lon: float, lat: float) -> dict[str, Any]:
    return {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}}


@pytest.fixture
def risk(tmp_path: Path) -> Iterator[str]:
    with node(tmp_path) as base:
        city = [
            sdm(
                "urn:ngsi-ld:RoadSegment:test-1",
                "RoadSegment",
                location={"type": "GeoProperty", "value": {"type": "LineString", "coordinates": LINE}},
                maximumAllowedSpeed={"type": "Property", "value": 50},
            ),
            *(
                sdm(
                    f"urn:ngsi-ld:Streetlight:test-{n}",
                    "Streetlight",
                    location=point(6.7720 + 0.002 * n, 51.4301),
                    status=prop("defectiveLamp"),
                    powerState=prop("on"),
                )
                for n in range(3)
            ),
            sdm(
                "urn:ngsi-ld:WeatherObserved:test",
                "WeatherObserved",
                location=point(6.77, 51.42),
                temperature=prop(6.0),
                precipitation=prop(0.0),
                visibility=prop(20000),
            ),
        ]
        done = httpx.post(f"{base}{API}/entityOperations/upsert", content=orjson.dumps(city), headers=LD)
        assert done.status_code in (201, 204), done.text
        log = tmp_path / "risk.log"
        with log.open("wb") as sink:
            service = subprocess.Popen([KIZUNA, "risk", "--url", base], stdout=sink, stderr=subprocess.STDOUT)
        try:
            yield base
        finally:
            service.terminate()
            service.wait(timeout=10)


def level(base: str) -> float | None:
    answer = httpx.get(f"{base}{API}/entities/{RISK}", params={"options": "keyValues"})
    return answer.json()["riskLevel"] if answer.status_code == 200 else None


def test_an_accident_at_night_with_lights_out_is_high_risk_until_cleared(risk: str) -> None:
    dark = wait_until(lambda: level(risk), timeout=20)
    assert 0.3 < dark < 0.7  # three lights out after dark, alone
    accident = sdm(
        "urn:ngsi-ld:RoadAccident:test-1",
        "RoadAccident",
        location=point(6.7750, 51.4302),
        accidentDate={"type": "Property", "value": NIGHT},
        status=prop("onGoing"),
    )
    posted = time.monotonic()
    assert httpx.post(f"{risk}{API}/entities", content=orjson.dumps(accident), headers=LD).status_code == 201
    wait_until(lambda: (level(risk) or 0) > 0.7, timeout=2)
    assert time.monotonic() - posted < 2
    found = httpx.get(
        f"{risk}{API}/entities",
        params={
            "type": "RoadSegmentRisk",
            "q": "riskLevel>0.7",
            "georel": "near;maxDistance==2000",
            "geometry": "Point",
            "coordinates": "[6.7750,51.4350]",
        },
    ).json()
    assert [e["id"] for e in found] == [RISK]
    assert found[0]["factors"]["value"]["accident"] > 0 and found[0]["factors"]["value"]["lightsOut"] > 0
    assert httpx.delete(f"{risk}{API}/entities/urn:ngsi-ld:RoadAccident:test-1").status_code == 204
    wait_until(lambda: (level(risk) or 1) < 0.7, timeout=5)


def test_it_hears_of_street_lights_only_when_they_go_out_or_come_back(risk: str) -> None:
    """45,000 lights dim in steps at dusk and report power: only status and powerState matter."""
    wait_until(lambda: level(risk), timeout=20)  # subscribed by then
    subs = httpx.get(f"{risk}{API}/subscriptions", headers=link("Streetlight")).json()
    lights = [s for s in subs if s["entities"] == [{"type": "Streetlight"}]]
    assert len(lights) == 1
    assert sorted(lights[0]["watchedAttributes"]) == ["powerState", "status"]
    assert sorted(lights[0]["notification"]["attributes"]) == ["location", "powerState", "status"]
