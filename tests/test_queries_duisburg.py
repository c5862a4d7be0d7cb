"""Every q grammar rule and every georel on Duisburg-sized data, against hand-computed answers.

A few hundred entities shaped like the Smart Data Models examples (Streetlight,
TrafficFlowObserved, AccessPoint, plus four district polygons) are generated deterministically
over Duisburg (6.68-6.83 E, 51.33-51.53 N) and created through the API. Each expected answer is
computed here, independently of Kizuna: explicit loops over the generated data, haversine for
distances, interval arithmetic for axis-aligned rectangles and horizontal road segments.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from starlette.testclient import TestClient

BASE = "/ngsi-ld/v1"
WEST, EAST, SOUTH, NORTH = 6.68, 6.83, 51.33, 51.53
R = 6_371_008.8  # the mean Earth radius (IUGG)
# Axis-aligned district rectangles (west, south, east, north); no generated point lies on an edge.
DISTRICTS = {
    "Mitte": (6.7500, 51.4200, 6.7900, 51.4400),
    "Nord": (6.7000, 51.4800, 6.7800, 51.5200),
    "Sued": (6.7400, 51.3400, 6.8000, 51.3900),
    "West": (6.6900, 51.4000, 6.7300, 51.4500),
}
STATUSES = ("ok", "ok", "ok", "defectiveLamp", "columnIssue", "brokenLantern")


def rect_ring(box: tuple[float, float, float, float]) -> list[list[float]]:
    w, s, e, n = box
    return [[w, s], [e, s], [e, n], [w, n], [w, s]]


def prop(value: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "Property", "value": value, **extra}


def grid(rng: random.Random) -> tuple[float, float]:
    """A point on a 1e-5 degree grid, shifted half a step so that it never lies on an edge above."""
    lon = round(rng.uniform(WEST, EAST), 5) + 0.000005
    lat = round(rng.uniform(SOUTH, NORTH), 5) + 0.000005
    return lon, lat


def district_of(lon: float, lat: float) -> str | None:
    for name, (w, s, e, n) in DISTRICTS.items():
        if w < lon < e and s < lat < n:
            return name
    return None


def generate() -> dict[str, dict[str, Any]]:
    """id -> a plain description used by the expectations; the NGSI-LD body under 'body'."""
    rng = random.Random(47051)  # Duisburg's postcode area
    data: dict[str, dict[str, Any]] = {}
    for n in range(200):
        lon, lat = grid(rng)
        d = {
            "kind": "Streetlight",
            "lon": lon,
            "lat": lat,
            "status": rng.choice(STATUSES),
            "power": rng.choice(["on", "off"]),
            "height": rng.choice([6, 8, 10, 12]),
            "level": round(rng.random(), 2),
            "led": n % 3 != 0,
            "group": f"urn:ngsi-ld:StreetlightGroup:g{n % 5}",
            "observed": f"2026-11-{1 + n % 28:02d}T{n % 24:02d}:00:00Z",
            "changed": f"2025-{1 + n % 12:02d}-15T10:00:00Z",
            "locality": district_of(lon, lat) or "Duisburg",
        }
        body = {
            "id": f"urn:ngsi-ld:Streetlight:dui-{n:03d}",
            "type": "Streetlight",
            "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}},
            "status": prop(d["status"], observedAt=d["observed"]),
            "powerState": prop(d["power"]),
            "lanternHeight": prop(d["height"], unitCode="MTR"),
            "illuminanceLevel": prop(d["level"]),
            "dateLastLampChange": prop({"@type": "DateTime", "@value": d["changed"]}),
            "address": prop({"streetAddress": f"Weg {n}", "addressLocality": d["locality"]}),
            "refStreetlightGroup": {"type": "Relationship", "object": d["group"]},
        }
        if d["led"]:
            body["lampTechnology"] = prop("LED")
        d["body"] = body
        data[body["id"]] = d
    for n in range(120):
        lon, lat = grid(rng)
        length = rng.choice([0.002, 0.004, 0.008])
        d = {
            "kind": "TrafficFlowObserved",
            "x1": lon,
            "x2": round(lon + length, 6),
            "lat": lat,
            "intensity": rng.randrange(0, 1500),
            "speed": round(rng.uniform(5, 70), 1),
            "congested": rng.random() < 0.25,
            "direction": rng.choice(["forward", "backward"]),
        }
        body = {
            "id": f"urn:ngsi-ld:TrafficFlowObserved:dui-{n:03d}",
            "type": "TrafficFlowObserved",
            "location": {
                "type": "GeoProperty",
                "value": {"type": "LineString", "coordinates": [[d["x1"], lat], [d["x2"], lat]]},
            },
            "intensity": prop(d["intensity"], observedAt="2026-11-22T08:00:00Z"),
            "averageVehicleSpeed": prop(d["speed"]),
            "congested": prop(d["congested"]),
            "laneDirection": prop(d["direction"]),
        }
        d["body"] = body
        data[body["id"]] = d
    for n in range(80):
        lon, lat = grid(rng)
        district = district_of(lon, lat)
        scope = f"/Duisburg/{district}" if district else "/Duisburg"
        if n % 4 == 0:
            scope += "/Hafen"
        d = {
            "kind": "AccessPoint",
            "lon": lon,
            "lat": lat,
            "clients": rng.randrange(0, 200),
            "state": rng.choice(["up", "up", "down"]),
            "scope": scope,
            "name": f"DU-Free-{n:02d}" if n % 2 else f"Freifunk-{n:02d}",
        }
        body = {
            "id": f"urn:ngsi-ld:AccessPoint:dui-{n:03d}",
            "type": "AccessPoint",
            "scope": scope,
            "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}},
            "name": prop(d["name"]),
            "apState": prop(d["state"]),
            "clientsConnected": prop(d["clients"]),
        }
        d["body"] = body
        data[body["id"]] = d
    for name, box in DISTRICTS.items():
        body = {
            "id": f"urn:ngsi-ld:District:{name}",
            "type": "District",
            "name": prop(name),
            "location": {
                "type": "GeoProperty",
                "value": {"type": "Polygon", "coordinates": [rect_ring(box)]},
            },
        }
        data[body["id"]] = {"kind": "District", "box": box, "body": body}
    return data


DATA = generate()


@pytest.fixture
def duisburg(client: TestClient) -> TestClient:
    bodies = [d["body"] for d in DATA.values()]
    for start in range(0, len(bodies), 100):
        response = client.post(f"{BASE}/entityOperations/create", json=bodies[start : start + 100])
        assert response.status_code == 201, response.text
    return client


def ask(client: TestClient, **params: Any) -> set[str]:
    response = client.get(f"{BASE}/entities", params={"limit": 1000, **params})
    assert response.status_code == 200, response.text
    found = [e["id"] for e in response.json()]
    assert len(found) == len(set(found))
    return set(found)


def where(kind: str, test: Callable[[dict[str, Any]], bool]) -> set[str]:
    return {i for i, d in DATA.items() if d["kind"] == kind and test(d)}


def haversine(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (
        math.sin((p2 - p1) / 2) ** 2
        + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * R * math.asin(math.sqrt(a))


def test_the_data_is_duisburg_sized_and_the_answers_are_not_trivial() -> None:
    assert len(DATA) == 404
    assert 20 < len(where("Streetlight", lambda d: d["status"] != "ok")) < 150
    assert where("Streetlight", lambda d: d["locality"] == "Mitte")


# -- q: each grammar rule ---------------------------------------------------------------------------


def test_q_comparisons(duisburg: TestClient) -> None:
    light = "Streetlight"
    assert ask(duisburg, type=light, q="lanternHeight==10") == where(light, lambda d: d["height"] == 10)
    assert ask(duisburg, type=light, q='status=="ok"') == where(light, lambda d: d["status"] == "ok")
    assert ask(duisburg, type=light, q='status!="ok"') == where(light, lambda d: d["status"] != "ok")
    assert ask(duisburg, type=light, q="illuminanceLevel>0.7") == where(light, lambda d: d["level"] > 0.7)
    assert ask(duisburg, type=light, q="illuminanceLevel>=0.7") == where(light, lambda d: d["level"] >= 0.7)
    assert ask(duisburg, type=light, q="lanternHeight<8") == where(light, lambda d: d["height"] < 8)
    assert ask(duisburg, type=light, q="lanternHeight<=8") == where(light, lambda d: d["height"] <= 8)
    assert ask(duisburg, type=light, q='powerState>"o"') == where(light, lambda d: d["power"] > "o")


def test_q_ranges_lists_and_booleans(duisburg: TestClient) -> None:
    flow = "TrafficFlowObserved"
    assert ask(duisburg, type=flow, q="intensity==800..1200") == where(
        flow, lambda d: 800 <= d["intensity"] <= 1200
    )
    assert ask(duisburg, type=flow, q="intensity!=800..1200") == where(
        flow, lambda d: not 800 <= d["intensity"] <= 1200
    )
    assert ask(duisburg, type=flow, q="averageVehicleSpeed==10.5..30") == where(
        flow, lambda d: 10.5 <= d["speed"] <= 30
    )
    assert ask(duisburg, type="Streetlight", q='status=="defectiveLamp","columnIssue"') == where(
        "Streetlight", lambda d: d["status"] in ("defectiveLamp", "columnIssue")
    )
    assert ask(duisburg, type="Streetlight", q="lanternHeight==6,12") == where(
        "Streetlight", lambda d: d["height"] in (6, 12)
    )
    assert ask(duisburg, type=flow, q="congested==true") == where(flow, lambda d: d["congested"])
    assert ask(duisburg, type=flow, q="congested==false") == where(flow, lambda d: not d["congested"])


def test_q_and_or_and_parentheses(duisburg: TestClient) -> None:
    flow = "TrafficFlowObserved"
    # The traffic room's question: intensity above 800 and slower than 20 km/h.
    assert ask(duisburg, type=flow, q="intensity>800;averageVehicleSpeed<20") == where(
        flow, lambda d: d["intensity"] > 800 and d["speed"] < 20
    )
    assert ask(duisburg, type=flow, q="intensity>1400|averageVehicleSpeed<8") == where(
        flow, lambda d: d["intensity"] > 1400 or d["speed"] < 8
    )
    assert ask(duisburg, type=flow, q='(intensity>1000|congested==true);laneDirection=="forward"') == where(
        flow, lambda d: (d["intensity"] > 1000 or d["congested"]) and d["direction"] == "forward"
    )
    # `;` binds tighter than `|`.
    assert ask(duisburg, type=flow, q='intensity>1000|congested==true;laneDirection=="forward"') == where(
        flow, lambda d: d["intensity"] > 1000 or (d["congested"] and d["direction"] == "forward")
    )


def test_q_existence_and_absence(duisburg: TestClient) -> None:
    assert ask(duisburg, type="Streetlight", q="lampTechnology") == where("Streetlight", lambda d: d["led"])
    assert ask(duisburg, type="Streetlight", q="!lampTechnology") == where(
        "Streetlight", lambda d: not d["led"]
    )
    everything = set(DATA)
    assert ask(duisburg, q="clientsConnected") == where("AccessPoint", lambda d: True)
    assert ask(duisburg, q="!clientsConnected", type="Streetlight,District") == everything - where(
        "AccessPoint", lambda d: True
    ) - where("TrafficFlowObserved", lambda d: True)


def test_q_patterns(duisburg: TestClient) -> None:
    ap = "AccessPoint"
    assert ask(duisburg, type=ap, q="name~=^DU-Free") == where(ap, lambda d: d["name"].startswith("DU-Free"))
    assert ask(duisburg, type=ap, q="name!~=^DU-Free") == where(
        ap, lambda d: not d["name"].startswith("DU-Free")
    )
    assert ask(duisburg, type=ap, q='name~="(?i)freifunk-0[0-4]"') == where(
        ap, lambda d: d["name"].lower()[:11] in {f"freifunk-0{i}" for i in range(5)}
    )


def test_q_paths_metadata_compound_values_uris_and_datetimes(duisburg: TestClient) -> None:
    light = "Streetlight"
    assert ask(duisburg, type=light, q="status.observedAt>=2026-11-20T00:00:00Z") == where(
        light, lambda d: d["observed"] >= "2026-11-20T00:00:00Z"
    )
    assert ask(duisburg, type=light, q='address[addressLocality]=="Mitte"') == where(
        light, lambda d: d["locality"] == "Mitte"
    )
    assert ask(duisburg, type=light, q="refStreetlightGroup==urn:ngsi-ld:StreetlightGroup:g3") == where(
        light, lambda d: d["group"] == "urn:ngsi-ld:StreetlightGroup:g3"
    )
    cut = datetime.fromisoformat("2025-06-01T00:00:00+00:00")
    assert ask(duisburg, type=light, q="dateLastLampChange<2025-06-01T00:00:00Z") == where(
        light, lambda d: datetime.fromisoformat(d["changed"].replace("Z", "+00:00")) < cut
    )
    assert ask(duisburg, q="lanternHeight>=10;status.observedAt<2026-11-05T00:00:00Z", type=light) == where(
        light, lambda d: d["height"] >= 10 and d["observed"] < "2026-11-05T00:00:00Z"
    )


def test_scope_id_pattern_types_attrs_and_pages(duisburg: TestClient) -> None:
    ap = "AccessPoint"
    assert ask(duisburg, scopeQ="/Duisburg/Mitte/#") == where(
        ap, lambda d: d["scope"].startswith("/Duisburg/Mitte")
    )
    assert ask(duisburg, scopeQ="/Duisburg/+/Hafen") == where(
        ap, lambda d: d["scope"].count("/") == 3 and d["scope"].endswith("/Hafen")
    )
    assert ask(duisburg, type="Streetlight", idPattern="^urn:ngsi-ld:Streetlight:dui-0[1-2]") == {
        f"urn:ngsi-ld:Streetlight:dui-{n:03d}" for n in range(10, 30)
    }
    assert ask(duisburg, type="Streetlight|AccessPoint") == where("Streetlight", lambda d: True) | where(
        ap, lambda d: True
    )
    assert ask(duisburg, attrs="clientsConnected,congested") == where(ap, lambda d: True) | where(
        "TrafficFlowObserved", lambda d: True
    )
    # Pages of 50 in creation order, with the count, cover the selection exactly once.
    seen: list[str] = []
    for offset in range(0, 200, 50):
        page = duisburg.get(
            f"{BASE}/entities", params={"type": "Streetlight", "limit": 50, "offset": offset, "count": "true"}
        )
        assert page.headers["ngsild-results-count"] == "200"
        seen += [e["id"] for e in page.json()]
    assert seen == [f"urn:ngsi-ld:Streetlight:dui-{n:03d}" for n in range(200)]


# -- geoQ: each georel --------------------------------------------------------------------------------


def geo(client: TestClient, georel: str, geometry: str, coordinates: Any, **params: Any) -> set[str]:
    return ask(client, georel=georel, geometry=geometry, coordinates=json.dumps(coordinates), **params)


@pytest.mark.parametrize("metres", [300, 1000, 2500])
def test_near_max_and_min_distance(duisburg: TestClient, metres: int) -> None:
    junction = (6.7623, 51.4312)  # near the Duisburg Hbf junction
    distance = {
        i: haversine(*junction, d["lon"], d["lat"]) for i, d in DATA.items() if d["kind"] == "Streetlight"
    }
    assert all(abs(m - metres) > 1 for m in distance.values()), (
        "a light sits on the circle: move the junction"
    )
    inside = {i for i, m in distance.items() if m <= metres}
    assert inside or metres == 300
    assert geo(duisburg, f"near;maxDistance=={metres}", "Point", junction, type="Streetlight") == inside
    assert geo(duisburg, f"near;minDistance=={metres}", "Point", junction, type="Streetlight") == (
        set(distance) - inside
    )


def test_near_faulty_lights_within_300_m_of_a_junction(duisburg: TestClient) -> None:
    for light in [d for d in DATA.values() if d["kind"] == "Streetlight"][:40]:
        junction = (light["lon"] + 0.001, light["lat"])
        expected = where(
            "Streetlight",
            lambda d, j=junction: d["status"] != "ok" and haversine(*j, d["lon"], d["lat"]) <= 300,
        )
        found = geo(
            duisburg, "near;maxDistance==300", "Point", junction, type="Streetlight", q='status!="ok"'
        )
        assert found == expected


def point_in(box: tuple[float, float, float, float], lon: float, lat: float) -> bool:
    w, s, e, n = box
    return w < lon < e and s < lat < n


def test_within_contains_intersects_and_disjoint_on_points(duisburg: TestClient) -> None:
    for name, box in DISTRICTS.items():
        polygon = [rect_ring(box)]
        inside = where("Streetlight", lambda d, b=box: point_in(b, d["lon"], d["lat"]))
        assert geo(duisburg, "within", "Polygon", polygon, type="Streetlight") == inside, name
        assert geo(duisburg, "intersects", "Polygon", polygon, type="Streetlight") == inside, name
        assert geo(duisburg, "disjoint", "Polygon", polygon, type="Streetlight") == (
            where("Streetlight", lambda d: True) - inside
        ), name
        # The district contains a point inside it; only that district does.
        w, s, e, n = box
        centre = [(w + e) / 2, (s + n) / 2]
        assert geo(duisburg, "contains", "Point", centre, type="District") == {f"urn:ngsi-ld:District:{name}"}


def test_road_segments_against_a_district(duisburg: TestClient) -> None:
    w, s, e, n = DISTRICTS["Mitte"]
    polygon = [rect_ring(DISTRICTS["Mitte"])]
    flow = "TrafficFlowObserved"
    crossing = where(flow, lambda d: s < d["lat"] < n and d["x1"] <= e and d["x2"] >= w)
    wholly = where(flow, lambda d: s < d["lat"] < n and w < d["x1"] and d["x2"] < e)
    assert crossing and wholly
    assert geo(duisburg, "intersects", "Polygon", polygon, type=flow) == crossing
    assert geo(duisburg, "within", "Polygon", polygon, type=flow) == wholly
    assert geo(duisburg, "disjoint", "Polygon", polygon, type=flow) == where(flow, lambda d: True) - crossing
    # A line along a whole latitude of the district's middle intersects the segments on it only.
    segment = next(d for d in DATA.values() if d["kind"] == flow)
    line = [[segment["x1"] - 0.01, segment["lat"]], [segment["x2"] + 0.01, segment["lat"]]]
    assert geo(duisburg, "intersects", "LineString", line, type=flow) == where(
        flow, lambda d: d["lat"] == segment["lat"] and d["x2"] >= line[0][0] and d["x1"] <= line[1][0]
    )


def test_equals_and_overlaps_between_polygons(duisburg: TestClient) -> None:
    w, s, e, n = DISTRICTS["Mitte"]
    # The same rectangle, starting at another vertex, equals the district.
    same = [[[e, n], [w, n], [w, s], [e, s], [e, n]]]
    assert geo(duisburg, "equals", "Polygon", same, type="District") == {"urn:ngsi-ld:District:Mitte"}
    # A box straddling Mitte's east edge overlaps Mitte only; one inside Mitte overlaps nothing.
    straddle = (e - 0.01, s + 0.005, e + 0.01, n - 0.005)
    expected = {
        f"urn:ngsi-ld:District:{name}"
        for name, (bw, bs, be, bn) in DISTRICTS.items()
        if bw < straddle[2]
        and straddle[0] < be
        and bs < straddle[3]
        and straddle[1] < bn  # interiors meet
        and not (bw <= straddle[0] and straddle[2] <= be and bs <= straddle[1] and straddle[3] <= bn)
    }
    assert expected == {"urn:ngsi-ld:District:Mitte"}
    assert geo(duisburg, "overlaps", "Polygon", [rect_ring(straddle)], type="District") == expected
    inner = (w + 0.005, s + 0.005, e - 0.005, n - 0.005)
    assert geo(duisburg, "overlaps", "Polygon", [rect_ring(inner)], type="District") == set()
    assert geo(duisburg, "within", "Polygon", [rect_ring(inner)], type="District") == set()
    assert geo(duisburg, "contains", "Polygon", [rect_ring(inner)], type="District") == {
        "urn:ngsi-ld:District:Mitte"
    }


def test_multi_geometries(duisburg: TestClient) -> None:
    polygons = [[rect_ring(DISTRICTS["Mitte"])], [rect_ring(DISTRICTS["Nord"])]]
    expected = where(
        "Streetlight",
        lambda d: (
            point_in(DISTRICTS["Mitte"], d["lon"], d["lat"])
            or point_in(DISTRICTS["Nord"], d["lon"], d["lat"])
        ),
    )
    assert geo(duisburg, "within", "MultiPolygon", polygons, type="Streetlight") == expected
    lights = [d for d in DATA.values() if d["kind"] == "Streetlight"][:3]
    points = [[d["lon"], d["lat"]] for d in lights]
    assert geo(duisburg, "intersects", "MultiPoint", points, type="Streetlight") == {
        d["body"]["id"] for d in lights
    }
