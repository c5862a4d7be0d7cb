"""The console (`/console`): its page and assets as served, then the pages in a real browser
(Debian's Chromium driven by Playwright) against a node the simulator filled, each checked
against what the node's API answers.

Screenshots of each page go to docs/console/ only when KIZUNA_CONSOLE_SCREENSHOTS is set, so
that `make test` leaves the tree clean.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import os
import re
import secrets
import subprocess
import time
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from _browser import CHROMIUM, CHROMIUM_ARGS
from access_helpers import ISS, bearer, rsa, token
from conftest import KIZUNA
from dsp_helpers import free_port, wait_for
from dsp_helpers import node as dsp_node
from dsp_helpers import serve as serve_app
from dsp_helpers import start_negotiation as dsp_start_negotiation
from kizuna.app import create_app
from kizuna.config import Settings
from kizuna.console.routes import STATIC
from kizuna.sim.ngsi import CONTEXTS
from sim_helpers import API, link, node

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "docs" / "console"
START = datetime(2026, 1, 14, 15, 0, tzinfo=UTC)  # 16:00 in Duisburg: the lights go on at dusk
POLICY = {
    "permission": [
        {
            "action": "use",
            "constraint": [
                {"leftOperand": "purpose", "operator": "eq", "rightOperand": "research"},
                {"leftOperand": "count", "operator": "lteq", "rightOperand": "100"},
            ],
        }
    ],
    "prohibition": [{"action": "distribute"}],
}


# --- The page and its assets, as served ---------------------------------------------------------


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        store=f"sqlite:///{tmp_path}/kizuna.db", console_tiles="https://tiles.test/{z}/{x}/{y}.png"
    )
    with TestClient(create_app(settings)) as client:
        yield client


def test_the_page_has_no_inline_script_and_a_strict_policy(app_client: TestClient) -> None:
    page = app_client.get("/console")
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "img-src 'self' data: https://tiles.test" in policy  # the configured tile server
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page.text, re.S)
    assert scripts and all("src=" in attributes and not body.strip() for attributes, body in scripts)
    assert '<meta name="kizuna-tiles" content="https://tiles.test/{z}/{x}/{y}.png">' in page.text
    assert app_client.get("/console/").status_code == 200


def test_every_asset_the_page_loads_is_served(app_client: TestClient) -> None:
    """Follow the page's links and every module's imports: a broken path fails here, not in a
    user's browser."""
    page = app_client.get("/console").text
    pending = re.findall(r'(?:src|href)="(/console/static/[^"]+)"', page)
    seen: set[str] = set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        answer = app_client.get(path)
        assert answer.status_code == 200, path
        if path.endswith(".js"):
            assert "javascript" in answer.headers["content-type"], path
            base = path.rsplit("/", 1)[0]
            for target in re.findall(r'(?:from|import\()\s*"(\.{1,2}/[^"]+)"', answer.text):
                pending.append(os.path.normpath(f"{base}/{target}"))
    assert {"/console/static/js/map.js", "/console/static/vendor/uplot/uPlot.esm.js"} <= seen
    districts = app_client.get("/console/districts.json").json()
    assert len(districts["features"]) > 5


def test_the_package_carries_every_asset() -> None:
    """pip installs only what package-data names: every file of the console must match it."""
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "kizuna"
    ]
    static = Path(str(STATIC))
    files = [p.relative_to(static.parent.parent).as_posix() for p in static.rglob("*") if p.is_file()]
    missing = [f for f in files if not any(fnmatch.fnmatch(f, g) for g in globs)]
    assert len(files) > 15 and not missing, missing
    licences = {p.parent.name for p in static.glob("vendor/*/LICENSE")}
    assert licences == {"leaflet", "uplot"}


def test_console_off_serves_nothing(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(store=f"sqlite:///{tmp_path}/k.db", console="off"))) as client:
        assert client.get("/console").status_code == 404
        assert client.get("/console/static/js/main.js").status_code == 404
        assert client.get("/console/map").status_code == 404


def test_the_map_rows_follow_the_read_rights(tmp_path: Path, any_store_url: str) -> None:
    """GET /console/map reads as the NGSI-LD API does, on either store: an anonymous caller on
    a node with access control gets what a query would give it, an administrator every
    located entity."""
    key = rsa("map-test")
    jwks = tmp_path / "jwks.json"
    jwks.write_bytes(orjson.dumps({"keys": [key.as_dict(private=False)]}))
    settings = Settings(
        store=f"sqlite:///{tmp_path}/k.db",
        auth="oidc",
        oidc_issuer=ISS,
        oidc_audience="kizuna",
        oidc_jwks=str(jwks),
    )
    admin = bearer(key, "kizuna-admin")
    with TestClient(create_app(settings)) as client:
        for n, (lon, lat) in enumerate([(6.76, 51.43), (6.77, 51.44)]):
            made = client.post(
                f"{API}/entities",
                headers=admin,
                json={
                    "id": f"urn:ngsi-ld:Streetlight:{n}",
                    "type": "Streetlight",
                    "location": {
                        "type": "GeoProperty",
                        "value": {"type": "Point", "coordinates": [lon, lat]},
                    },
                    "powerState": {"type": "Property", "value": "on"},
                },
            )
            assert made.status_code == 201, made.text
        client.post(f"{API}/entities", headers=admin, json={"id": "urn:x:1", "type": "Cabinet"})
        rows = client.get("/console/map", headers=admin).json()
        assert rows["types"] == ["Streetlight"]
        assert sorted(r[0] for r in rows["rows"]) == [
            "urn:ngsi-ld:Streetlight:0",
            "urn:ngsi-ld:Streetlight:1",
        ]
        power = rows["attributes"].index("powerState")
        assert [r[3 + power] for r in rows["rows"]] == ["on", "on"]
        geometry = {r[0]: r[2] for r in rows["rows"]}["urn:ngsi-ld:Streetlight:0"]
        assert geometry == {"type": "Point", "coordinates": [6.76, 51.43]}
        anonymous = client.get(f"{API}/entities", params={"type": "Streetlight"})
        answer = client.get("/console/map")
        assert answer.status_code == anonymous.status_code
        if answer.status_code == 200:
            assert len(answer.json()["rows"]) == len(anonymous.json())
        assert client.get("/console/map", params={"limit": 3}).status_code == 400


# --- In a browser, against a city ---------------------------------------------------------------


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second node the console's node negotiates with."""
    tmp = tmp_path_factory.mktemp("provider")
    settings = Settings(
        port=free_port(),
        store=f"sqlite:///{tmp}/provider.db",
        participant_id="did:web:provider.example",
        dsp_auth="none",
    )
    with dsp_node(settings) as url:
        yield url


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A node with a small Duisburg, three simulated hours from dusk."""
    tmp = tmp_path_factory.mktemp("console")
    with node(tmp, "--dsp-auth", "none", "--participant-id", "did:web:console.example") as base:
        done = subprocess.run(
            [
                *(KIZUNA, "simulate", "duisburg", "--url", base, "--scale", "small", "--speed", "4000"),
                *("--duration", "3h", "--start", START.isoformat(), "--interval", "0.15"),
                *("--fault-rate", "0.05", "--repair-hours", "100000", "--seed", "7"),
            ],
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert done.returncode == 0, done.stderr
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        reason = f"console browser tests NOT RUN: no {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A page at 1280x800 whose JavaScript errors (console or uncaught) fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-GB")
    tab = context.new_page()
    errors: list[str] = []
    tab.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    shown = tab.locator("#error")
    problem = shown.text_content() if shown.count() and shown.is_visible() else None
    context.close()
    assert not errors, errors
    assert not problem, problem


def visit(page: Any, base: str, view: str, ready: str) -> None:
    page.goto(f"{base}/console#/{view}")
    page.wait_for_selector(ready, timeout=15_000)


def screenshot(page: Any, name: str) -> None:
    if os.environ.get("KIZUNA_CONSOLE_SCREENSHOTS"):
        SHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"))


def located_types(base: str) -> list[str]:
    answer = httpx.get(f"{base}{API}/types", params={"details": "true"}, timeout=10).json()
    return [t["typeName"] for t in answer if "location" in t["attributeNames"]]


def count(base: str, headers: dict[str, str] | None = None, **params: str) -> int:
    answer = httpx.get(
        f"{base}{API}/entities", params={**params, "limit": 0, "count": "true"}, headers=headers, timeout=10
    )
    answer.raise_for_status()
    return int(answer.headers["NGSILD-Results-Count"])


def legend(page: Any) -> dict[str, int]:
    items = page.locator(".legend li").all()
    return {item.get_attribute("data-state"): int(item.get_attribute("data-count")) for item in items}


def test_the_map_draws_every_located_entity_in_its_state(page: Any, city: str) -> None:
    expected = count(city, type=",".join(located_types(city)))
    visit(page, city, "map", '#map[data-ready="true"]')
    assert expected > 1000
    assert int(page.get_attribute("#map", "data-markers")) == expected
    states = legend(page)
    assert sum(states.values()) == expected
    faulty = count(city, link("Streetlight"), type="Streetlight", q='status!="ok"|voltage==0')
    assert faulty > 0 and states["faulty"] == faulty
    screenshot(page, "map")
    # Filtering by type: without the street lights, the others remain.
    lights = count(city, link("Streetlight"), type="Streetlight")
    page.get_by_label("Streetlight", exact=True).uncheck()
    assert int(page.get_attribute("#map", "data-markers")) == expected - lights


def test_a_write_recolours_its_marker_within_two_seconds(page: Any, city: str) -> None:
    visit(page, city, "map", '#map[data-ready="true"]')
    before = legend(page)["faulty"]
    lights = httpx.get(
        f"{city}{API}/entities",
        params={"type": "Streetlight", "q": 'status=="ok";voltage>0', "limit": 1, "options": "keyValues"},
        headers=link("Streetlight"),
        timeout=10,
    ).json()
    written = time.monotonic()
    answer = httpx.patch(
        f"{city}{API}/entities/{quote(lights[0]['id'], safe='')}/attrs",
        json={"status": {"type": "Property", "value": "defectiveLamp"}},
        headers=link("Streetlight"),
        timeout=10,
    )
    assert answer.status_code == 204, answer.text
    # A CSS selector: the page's Content-Security-Policy forbids the eval a JS predicate needs.
    page.wait_for_selector(f'.legend li[data-state="faulty"][data-count="{before + 1}"]', timeout=2_000)
    assert time.monotonic() - written < 2.0


def test_the_entities_page_counts_filters_and_pages(page: Any, city: str) -> None:
    visit(page, city, "entities", "table.types tr[data-type]")
    for row in page.locator("table.types tr[data-type]").all():
        shown = int(row.locator("td[data-count]").get_attribute("data-count"))
        assert shown == count(city, type=row.get_attribute("data-type"))
    page.fill("#context", CONTEXTS["Streetlight"])
    page.select_option("#type", label="Streetlight")
    page.fill("#q", 'powerState=="on"')
    page.click("form[role=search] button[type=submit]")
    expected = count(city, link("Streetlight"), type="Streetlight", q='powerState=="on"')
    page.wait_for_selector(f'table.entities[data-total="{expected}"]')
    assert page.locator("table.entities tbody tr").count() == min(20, expected)
    screenshot(page, "entities")


def test_an_entity_shows_links_json_and_its_history(page: Any, city: str) -> None:
    flow = httpx.get(
        f"{city}{API}/entities",
        params={"type": "TrafficFlowObserved", "limit": 1},
        headers=link("TrafficFlowObserved"),
    ).json()[0]
    visit(page, city, f"entity/{quote(flow['id'], safe='')}", "#raw:not(:empty)")
    # The relationship is a link to the road segment.
    segment = flow["refRoadSegment"]["object"]
    assert page.locator(f'a[href="#/entity/{quote(segment, safe="")}"]').count() == 1
    page.select_option("#format", "keyValues")
    page.wait_for_selector('#raw[data-format="keyValues"]')
    assert '"Property"' not in page.text_content("#raw")
    assert '"averageVehicleSpeed": ' not in page.text_content("#raw")  # IRIs: the core @context
    history = httpx.get(
        f"{city}{API}/temporal/entities/{quote(flow['id'], safe='')}",
        params={"attrs": "averageVehicleSpeed", "options": "temporalValues", "lastN": 5000},
        headers=link("TrafficFlowObserved"),
        timeout=10,
    ).json()["averageVehicleSpeed"]["values"]
    page.select_option("#chart-attribute", label="averageVehicleSpeed")
    page.wait_for_selector(f'#chart[data-points="{len(history)}"]')
    assert len(history) >= 5
    screenshot(page, "entity")
    hourly = httpx.get(
        f"{city}{API}/temporal/entities/{quote(flow['id'], safe='')}",
        params={
            "attrs": "averageVehicleSpeed",
            "options": "aggregatedValues",
            "aggrMethods": "avg",
            "aggrPeriodDuration": "PT1H",
        },
        headers=link("TrafficFlowObserved"),
        timeout=10,
    ).json()["averageVehicleSpeed"]["avg"]
    page.select_option("#chart-range", "hour")
    page.wait_for_selector(f'#chart[data-points="{len(hourly)}"]')
    assert 2 <= len(hourly) <= len(history)


def test_the_services_dashboards(page: Any, city: str) -> None:
    visit(page, city, "services", '[data-service="risk"]')
    page.wait_for_selector('[data-service="classrooms"]')
    lights = count(city, link("Streetlight"), type="Streetlight")
    figures = page.locator('[data-service="lighting"] [data-figure] .big').all_text_contents()
    assert sum(int(f.replace(",", "")) for f in figures) == lights
    over = count(city, link("IndoorEnvironmentObserved"), type="IndoorEnvironmentObserved", q="co2>1000")
    shown = page.locator('[data-service="classrooms"] [data-figure="over"] .big').text_content()
    assert int(shown.replace(",", "")) == over
    congested = count(city, link("TrafficFlowObserved"), type="TrafficFlowObserved", q="congested==true")
    shown = page.locator('[data-service="traffic"] [data-figure="congested"] .big').text_content()
    assert int(shown.replace(",", "")) == congested
    assert page.locator('[data-service="wifi"] tbody tr').count() > 3
    screenshot(page, "services")


def start_negotiation(consumer: str, provider: str, dataset: str, approval: str = "auto") -> str:
    """A dataset published by ``provider`` and the id of a negotiation ``consumer`` starts for it."""
    published = httpx.post(
        f"{provider}/management/v1/datasets",
        json={"id": dataset, "entityTypes": ["Streetlight"], "policy": POLICY, "approval": approval},
    )
    assert published.status_code == 201, published.text
    offer = {**published.json()["offers"][0], "target": dataset}
    return dsp_start_negotiation(httpx, consumer, provider, offer, "did:web:provider.example")


def test_the_data_space_page_lists_a_negotiation_and_the_terms(page: Any, city: str, provider: str) -> None:
    pid = start_negotiation(city, provider, "urn:provider:dataset:lights")
    own = httpx.post(
        f"{city}/management/v1/datasets",
        json={"id": "urn:console:dataset:rooms", "title": "Rooms", "entityTypes": ["Room"], "policy": POLICY},
    )
    assert own.status_code == 201, own.text
    wait_for(
        lambda: httpx.get(f"{city}/management/v1/negotiations/{pid}").json()["state"],
        lambda state: state == "FINALIZED",
    )
    visit(page, city, "dataspace", f'[data-table="negotiations"] tr[data-id="{pid}"]')
    assert page.locator(f'tr[data-id="{pid}"] [data-state]').text_content() == "FINALIZED"
    terms = page.locator('[data-table="datasets"]').text_content()
    assert "for research only" in terms and "at most 100 accesses" in terms and "Must not distribute" in terms
    # A negotiation the provider must approve by hand waits; the console ends it.
    waiting = start_negotiation(city, provider, "urn:provider:dataset:manual", approval="manual")
    wait_for(
        lambda: httpx.get(f"{city}/management/v1/negotiations/{waiting}").json()["state"],
        lambda state: state == "REQUESTED",
    )
    page.reload()
    page.wait_for_selector(f'[data-table="negotiations"] tr[data-id="{waiting}"] button')
    page.click(f'tr[data-id="{waiting}"] button')
    page.wait_for_selector(f'tr[data-id="{waiting}"] [data-state="TERMINATED"]')
    assert httpx.get(f"{city}/management/v1/negotiations/{waiting}").json()["state"] == "TERMINATED"
    page.wait_for_selector('[data-table="agreements"] meter')
    assert page.locator('[data-table="agreements"]').text_content().count("0 / 100") == 1
    screenshot(page, "dataspace")


@pytest.mark.parametrize("language", ["de", "ja"])
def test_every_text_is_translated(page: Any, city: str, language: str) -> None:
    """No page shows a bare text key ("nav.map") in German or Japanese."""
    key = re.compile(
        r"\b(?:nav|state|entity|chart|page|service|lighting|traffic|wifi|classrooms|risk|ds|odrl)\.\w+"
    )
    visit(page, city, "map", '#map[data-ready="true"]')
    page.select_option("#language", language)
    for view, ready in [
        ("map", '#map[data-ready="true"]'),
        ("entities", "table.types tr"),
        ("services", '[data-service="risk"]'),
        ("dataspace", '[data-section="agreements"] table, [data-section="agreements"] p'),
    ]:
        visit(page, city, view, ready)
        text = page.locator("body").inner_text()
        assert not key.findall(text), (view, key.findall(text))
    assert page.locator("nav a").first.text_content() == {"de": "Karte", "ja": "地図"}[language]


def test_a_phone_sees_every_page_without_scrolling_sideways(browser: Any, city: str) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    phone = context.new_page()
    try:
        for view, ready in [
            ("map", '#map[data-ready="true"]'),
            ("entities", "table.types tr"),
            ("services", '[data-service="risk"]'),
        ]:
            visit(phone, city, view, ready)
            assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), view
        if os.environ.get("KIZUNA_CONSOLE_SCREENSHOTS"):
            visit(phone, city, "map", '#map[data-ready="true"]')
            phone.screenshot(path=str(SHOTS / "phone-map.png"))
    finally:
        context.close()


def test_the_keyboard_reaches_every_view(page: Any, city: str) -> None:
    visit(page, city, "map", '#map[data-ready="true"]')
    page.keyboard.press("Tab")  # the skip link
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")  # Entities
    page.keyboard.press("Enter")
    page.wait_for_selector("table.types tr")
    assert page.evaluate("location.hash") == "#/entities"


# --- Sign-in with --auth oidc -------------------------------------------------------------------


def fake_issuer(url: str, key: Any, roles: list[str]) -> Starlette:
    """The few endpoints of an identity provider the console uses: metadata, an authorization
    endpoint that signs "alice" in at once, and a token endpoint that checks the PKCE verifier."""
    codes: dict[str, tuple[str, str]] = {}  # code -> (challenge, redirect_uri)
    cors = {"Access-Control-Allow-Origin": "*"}

    async def metadata(request: Request) -> Response:
        return JSONResponse(
            {"issuer": url, "authorization_endpoint": f"{url}/authorize", "token_endpoint": f"{url}/token"},
            headers=cors,
        )

    async def authorize(request: Request) -> Response:
        params = request.query_params
        assert params["code_challenge_method"] == "S256" and params["response_type"] == "code"
        code = secrets.token_urlsafe(8)
        codes[code] = (params["code_challenge"], params["redirect_uri"])
        return RedirectResponse(f"{params['redirect_uri']}?code={code}&state={params['state']}", 302)

    async def token_endpoint(request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))
        challenge, redirect = codes.pop(str(form["code"]))
        digest = hashlib.sha256(str(form["code_verifier"]).encode()).digest()
        if (
            base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != challenge
            or form["redirect_uri"] != redirect
        ):
            return JSONResponse({"error": "invalid_grant"}, status_code=400, headers=cors)
        access = token(key, iss=url, preferred_username="alice", realm_access={"roles": roles})
        return JSONResponse({"access_token": access, "token_type": "Bearer"}, headers=cors)

    return Starlette(
        routes=[
            Route("/.well-known/openid-configuration", metadata),
            Route("/authorize", authorize),
            Route("/token", token_endpoint, methods=["POST"]),
        ]
    )


def test_sign_in_with_pkce_shows_what_the_user_may(browser: Any, tmp_path: Path) -> None:
    key = rsa("console-test")
    jwks = tmp_path / "jwks.json"
    jwks.write_bytes(orjson.dumps({"keys": [key.as_dict(private=False)]}))
    issuer_port = free_port()
    issuer = f"http://127.0.0.1:{issuer_port}"
    settings = Settings(
        port=free_port(),
        store=f"sqlite:///{tmp_path}/k.db",
        auth="oidc",
        oidc_issuer=issuer,
        oidc_jwks=str(jwks),
        oidc_audience="kizuna",
        console_client_id="kizuna-console",
    )
    with serve_app(fake_issuer(issuer, key, ["kizuna-admin"]), issuer_port), dsp_node(settings) as base:
        context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-GB")
        tab = context.new_page()
        try:
            visit(tab, base, "dataspace", '[data-section="negotiations"] p')
            assert (
                tab.locator('[data-section="negotiations"]')
                .text_content()
                .endswith("Only node administrators may see this.")
            )
            tab.click("#signin")
            tab.wait_for_selector("#user:not([hidden])")
            assert tab.text_content("#user") == "alice" and tab.url == f"{base}/console#/dataspace"
            tab.wait_for_selector('[data-section="negotiations"] p.muted:text("None.")')
            assert "Only node administrators" not in tab.locator("main").inner_text()
            # The token lives in memory only: nothing of it in the browser's storage.
            stored = tab.evaluate("JSON.stringify({...localStorage, ...sessionStorage})")
            assert "eyJ" not in stored
        finally:
            context.close()
