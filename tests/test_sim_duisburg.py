"""`kizuna simulate duisburg` against a real node, checked as a city engineer would check it.

One node and one run serve the module: small scale, 07:30 to 01:00 local time on a winter
Wednesday (14 January 2026) at 4,000x in lockstep (nine simulated minutes per write, however
long the node takes, so that a loaded machine gives the same history), with a high fault rate
so that faults can be counted.
What the engineer sees is read back from the node: current state, counts, attribute history.
"""

from __future__ import annotations

import asyncio
import io
import math
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import KIZUNA
from kizuna.client import Target
from kizuna.sim import geography
from kizuna.sim.city import City, Options
from kizuna.sim.driver import MAX_TICK_INTERVALS, Driver
from kizuna.sim.sun import elevation
from sim_helpers import API, link, node

START = datetime(2026, 1, 14, 6, 30, tzinfo=UTC)  # 07:30 in Duisburg
HOURS = 17.5
FAULT_RATE, LIGHT_FAULT_SHARE = 0.05, 0.9  # per light per day; lamp + column of all faults
DOCS = Path(__file__).resolve().parent.parent / "docs" / "simulator.md"


def test_sun_elevation_at_duisburg() -> None:
    lat, lon = 51.4344, 6.7623
    assert elevation(datetime(2026, 6, 21, 11, 33, tzinfo=UTC), lat, lon) == pytest.approx(62.0, abs=0.3)
    assert elevation(datetime(2026, 12, 21, 11, 40, tzinfo=UTC), lat, lon) == pytest.approx(15.1, abs=0.3)
    assert elevation(datetime(2026, 12, 21, 23, 40, tzinfo=UTC), lat, lon) < -60
    # Sunrise at the March equinox is about 05:40 UTC (06:40 CET) in Duisburg.
    assert elevation(datetime(2026, 3, 20, 5, 25, tzinfo=UTC), lat, lon) < -0.8
    assert elevation(datetime(2026, 3, 20, 5, 55, tzinfo=UTC), lat, lon) > 0


def test_same_seed_same_city_other_seed_other_city() -> None:
    def run(seed: int) -> Any:
        city = City(Options(seed=seed, fault_rate=1.0), START)
        return city.entities(), city.advance(START + timedelta(hours=3))

    assert run(3) == run(3)
    assert run(3) != run(4)


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("sim")
    with node(tmp) as base:
        done = subprocess.run(
            [
                *(KIZUNA, "simulate", "duisburg", "--url", base, "--scale", "small", "--speed", "4000"),
                *("--duration", f"{HOURS}h", "--start", START.isoformat(), "--interval", "0.135"),
                *("--fault-rate", str(FAULT_RATE), "--repair-hours", "100000", "--seed", "7", "--lockstep"),
            ],
            capture_output=True,
            text=True,
            timeout=300,  # a deadline: a quiet machine takes about 20 s
        )
        assert done.returncode == 0, done.stderr
        assert "entities 1" in done.stderr and "errors 0" in done.stderr  # the progress line
        yield base


def history(base: str, entity_type: str, attr: str, **params: Any) -> list[dict[str, Any]]:
    answer = httpx.get(
        f"{base}{API}/temporal/entities",
        params={"type": entity_type, "attrs": attr, "limit": 1000, **params},
        headers=link(entity_type),
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def instances(entity: dict[str, Any], attr: str) -> list[tuple[datetime, Any]]:
    found = entity.get(attr, [])
    found = found if isinstance(found, list) else [found]
    out = [(datetime.fromisoformat(i["observedAt"].replace("Z", "+00:00")), i["value"]) for i in found]
    return sorted(out, key=lambda pair: pair[0])


def at(series: list[tuple[datetime, Any]], when: datetime) -> Any:
    """The value in force at ``when``: the last one observed at or before it."""
    before = [value for t, value in series if t <= when]
    return before[-1] if before else None


def test_lights_are_off_at_noon_and_on_at_midnight(city: str) -> None:
    lights = history(city, "Streetlight", "powerState")
    assert len(lights) == 1000
    noon, midnight = datetime(2026, 1, 14, 11, tzinfo=UTC), datetime(2026, 1, 14, 23, tzinfo=UTC)
    series = [instances(light, "powerState") for light in lights]
    assert all(at(s, noon) == "off" for s in series)
    on = sum(at(s, midnight) == "on" for s in series)
    assert on >= 800, f"{on} of 1000 lights on at midnight (supply faults switch off a few cabinets)"


def test_cabinet_energy_only_grows(city: str) -> None:
    cabinets = history(city, "StreetlightControlCabinet", "energyConsumed")
    assert len(cabinets) == 34
    for cabinet in cabinets:
        values = [v for _, v in instances(cabinet, "energyConsumed")]
        assert len(values) > 10
        assert values == sorted(values), cabinet["id"]
    assert sum(instances(c, "energyConsumed")[-1][1] for c in cabinets) > 100  # kWh of one night


def test_co2_rises_in_lessons_and_falls_in_breaks(city: str) -> None:
    rooms = history(city, "IndoorEnvironmentObserved", "co2")
    assert len(rooms) == 48

    def mean_at(hour: int, minute: int) -> float:
        when = datetime(2026, 1, 14, hour - 1, minute, tzinfo=UTC)  # local CET = UTC + 1
        return sum(at(instances(r, "co2"), when) for r in rooms) / len(rooms)

    assert mean_at(7, 45) < 500  # before school
    assert mean_at(9, 35) > mean_at(8, 5) + 300  # lessons 1 and 2
    assert mean_at(9, 55) < mean_at(9, 35) - 300  # the long break, windows open
    assert mean_at(10, 40) > mean_at(9, 55) + 300  # lesson 3
    assert mean_at(23, 0) < 600  # the empty school at night


def test_tram_access_points_move_along_their_lines(city: str) -> None:
    lines = {line["name"]: [tuple(p) for p in line["stops"]] for line in geography.data()["tram_lines"]}
    aps = [a for a in history(city, "AccessPoint", "location") if ":duisburg-tram-" in a["id"]]
    assert len(aps) == 12
    for ap in aps:
        line = lines[ap["id"].split("duisburg-tram-")[1].rsplit("-", 1)[0]]
        positions = {tuple(v["coordinates"]) for _, v in instances(ap, "location")}
        # Sampled every nine minutes, a tram shuttling on its timetable is met at 10 to 20 places.
        assert len(positions) >= 10, ap["id"]
        assert max(geography.to_line(p, line) for p in positions) < 5  # metres


def count(base: str, entity_type: str, q: str) -> int:
    answer = httpx.get(
        f"{base}{API}/entities",
        params={"type": entity_type, "q": q, "count": "true", "limit": 1},
        headers=link(entity_type),
    )
    assert answer.status_code == 200, answer.text
    return int(answer.headers["NGSILD-Results-Count"])


def test_faults_of_every_kind_appear_at_the_configured_rate(city: str) -> None:
    faulty = count(city, "Streetlight", 'status!="ok"')  # lamp and column faults
    p = 1 - math.exp(-FAULT_RATE * LIGHT_FAULT_SHARE * HOURS / 24)
    expected, sd = 1000 * p, math.sqrt(1000 * p * (1 - p))
    assert abs(faulty - expected) < 4 * sd, f"{faulty} faulty lights, {expected:.0f} expected"
    # Supply faults: a light drawn at the fault rate takes its whole cabinet's feed down.
    dead = httpx.get(
        f"{city}{API}/entities",
        params={"type": "StreetlightControlCabinet", "q": "voltageR==0", "attrs": "voltageR", "limit": 100},
        headers=link("StreetlightControlCabinet"),
    ).json()
    p = 1 - math.exp(-FAULT_RATE * (1 - LIGHT_FAULT_SHARE) * 30 * HOURS / 24)  # 30 lights a cabinet
    expected, sd = 34 * p, math.sqrt(34 * p * (1 - p))
    assert len(dead) >= 1 and abs(len(dead) - expected) < 4 * sd, f"{len(dead)} cabinets without supply"
    # Their lights say so as Smart Data Models can: status stays "ok" (the lamp is fine), the
    # voltage is 0 and they are off, at 01:00 when every supplied light burns.
    unsupplied = count(city, "Streetlight", "voltage==0")
    fed_by_dead = sum(
        count(city, "Streetlight", f'refStreetlightControlCabinet=="{cabinet["id"]}"') for cabinet in dead
    )
    assert unsupplied == fed_by_dead > 0
    assert count(city, "Streetlight", 'voltage==0;powerState=="on"') == 0
    assert count(city, "Streetlight", 'voltage==0|status!="ok"') > faulty  # every kind of fault


def documented_counts() -> dict[str, int]:
    """The small column of docs/simulator.md's table of entity types."""
    rows = re.findall(r"^\| `(\w+)` \| ([\d,]+) \|", DOCS.read_text(), re.MULTILINE)
    return {name: int(small.replace(",", "")) for name, small in rows}


def test_entity_counts_are_as_documented(city: str) -> None:
    documented = documented_counts()
    assert len(documented) == 10
    for entity_type, count in documented.items():
        answer = httpx.get(
            f"{city}{API}/entities",
            params={"type": entity_type, "count": "true", "limit": 1},
            headers=link(entity_type),
        )
        assert int(answer.headers["NGSILD-Results-Count"]) == count, entity_type
    accidents = httpx.get(
        f"{city}{API}/entities",
        params={"type": "RoadAccident", "count": "true", "limit": 1},
        headers=link("RoadAccident"),
    )
    assert 1 <= int(accidents.headers["NGSILD-Results-Count"]) <= 30  # 0.5 an hour for 17.5 h


def test_an_unreachable_node_is_an_error(tmp_path: Path) -> None:
    from notify_helpers import free_port

    done = subprocess.run(
        [KIZUNA, "simulate", "duisburg", "--url", f"http://127.0.0.1:{free_port()}", "--duration", "1h"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "cannot reach the node" in done.stderr


class SlowNode(Target):
    """A node that answers every write at once but one, which takes a second: the dusk at city
    scale on a slow node, in miniature."""

    def client(self) -> httpx.AsyncClient:
        writes = 0

        async def answer(request: httpx.Request) -> httpx.Response:
            nonlocal writes
            if request.url.path == "/health":
                return httpx.Response(200, json={"status": "ok"})
            writes += 1
            if writes == 3:
                await asyncio.sleep(1.0)
            return httpx.Response(204)

        return httpx.AsyncClient(base_url=self.url, transport=httpx.MockTransport(answer))


def stepped(city: City) -> list[timedelta]:
    """The simulated time each of the city's advances covers, as the driver calls it."""
    steps: list[timedelta] = []
    advance = city.advance

    def recorded(to: datetime) -> Any:
        before = city.now
        changes = advance(to)
        steps.append(city.now - before)
        return changes

    city.advance = recorded  # type: ignore[method-assign]
    return steps


def test_a_slow_write_makes_the_clock_slip_rather_than_the_model_step_through_it() -> None:
    speed, interval = 600.0, 0.05  # 30 simulated seconds a tick
    city = City(Options(scale="small"), START)
    steps = stepped(city)
    cap = timedelta(seconds=MAX_TICK_INTERVALS * interval * speed)
    driver = Driver(city, SlowNode("http://node.test"), speed, timedelta(minutes=40), interval, io.StringIO())
    asyncio.run(driver.run())
    # The second-long write wanted 10 simulated minutes in one tick; the tick took at most the cap.
    assert max(steps) == cap
    assert all(step <= cap for step in steps)
    assert city.now >= START + timedelta(minutes=39)


def test_in_lockstep_every_tick_is_one_interval_however_slow_the_write() -> None:
    speed, interval = 600.0, 0.2  # 2 simulated minutes a tick
    city = City(Options(scale="small"), START)
    steps = stepped(city)
    driver = Driver(
        city,
        SlowNode("http://node.test"),
        speed,
        timedelta(minutes=10),
        interval,
        io.StringIO(),
        lockstep=True,
    )
    asyncio.run(driver.run())
    # The second-long write changed nothing: every tick but the last (cut at the end) is 2 min.
    assert steps[:-1] and set(steps[:-1]) == {timedelta(minutes=2)}
    assert city.now >= START + timedelta(minutes=9)


def test_in_lockstep_a_tick_shorter_than_a_model_step_still_advances_one() -> None:
    city = City(Options(scale="small"), START)
    steps = stepped(city)
    driver = Driver(
        city, SlowNode("http://node.test"), 1.0, timedelta(minutes=5), 1.0, io.StringIO(), lockstep=True
    )
    asyncio.run(driver.run())
    assert set(steps) == {timedelta(minutes=1)}
