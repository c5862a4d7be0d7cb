"""``GET /metrics`` of real nodes: the families move by what the node did, and nothing else.

Each test starts its own ``kizuna serve`` (so counts start at zero, whatever other tests did in
this process), drives it, and reads the exposition back with prometheus_client's own parser.
"""

from __future__ import annotations

import glob
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from access_helpers import bearer
from conftest import KIZUNA, wait_healthy
from dsp_helpers import start_negotiation
from kizuna import metrics
from kizuna.dataspace.auth import generate_key_file
from kizuna.metrics_routes import DSP_STATES
from kizuna.store import Vitals
from notify_helpers import Mosquitto, Receiver, free_port, wait_until

DOCS = Path(__file__).resolve().parent.parent / "docs"
API = "/ngsi-ld/v1"
ENTITY = "/ngsi-ld/v1/entities/{entity_id}"
LD = {"Content-Type": "application/ld+json"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(url: str, **kwargs: Any) -> Samples:
    response = httpx.get(url, timeout=10, **kwargs)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample with exactly these labels (0 when the node never had one)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def requests(before: Samples, after: Samples, route: str, method: str, status: int) -> float:
    return moved(before, after, "kizuna_http_requests_total", route=route, method=method, status=str(status))


def all_families() -> list[Any]:
    """Every family the node exposes, from this process's definitions, without a server."""
    text = metrics.exposition(Vitals(0, None, {}), DSP_STATES, time.time()).decode()
    return [f for f in text_string_to_metric_families(text) if f.name.startswith("kizuna_")]


def light(n: int, context: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"id": f"urn:ngsi-ld:Light:{n}", "type": "Light"}
    body["power"] = {"type": "Property", "value": n}
    if context is not None:
        body["@context"] = context
    return body


def test_requests_are_counted_by_route_template_method_and_status(serve: Callable[..., str]) -> None:
    base = serve()
    before = scrape(base + "/metrics")
    with httpx.Client(base_url=base, timeout=10) as http:
        assert http.post(f"{API}/entities", json=light(1)).status_code == 201
        for _ in range(3):
            assert http.get(f"{API}/entities/urn:ngsi-ld:Light:1").status_code == 200
        for n in (2, 3):
            assert http.get(f"{API}/entities/urn:ngsi-ld:Light:{n}").status_code == 404
        assert http.get("/nowhere/at/all").status_code == 404
        assert http.delete("/health").status_code == 405
    after = scrape(base + "/metrics")
    assert requests(before, after, ENTITY, "GET", 200) == 3
    assert requests(before, after, ENTITY, "GET", 404) == 2
    assert requests(before, after, f"{API}/entities", "POST", 201) == 1
    assert requests(before, after, "unmatched", "GET", 404) == 1
    assert requests(before, after, "/health", "DELETE", 405) == 1
    assert moved(before, after, "kizuna_http_request_duration_seconds_count", route=ENTITY, method="GET") == 5
    assert value(after, "kizuna_http_request_duration_seconds_sum", route=ENTITY, method="GET") > 0
    # No raw path ever becomes a label: the ids stay out of the series.
    assert not [key for key in after if any("urn:ngsi-ld:Light" in v for _, v in key[1])]
    # The entity's write was one transaction; the scrape before was counted too, as /metrics.
    assert moved(before, after, "kizuna_store_transaction_duration_seconds_count") >= 1
    assert requests(before, after, "/metrics", "GET", 200) == 1
    # With --auth none every request through authentication (the six NGSI-LD ones and the first
    # scrape, counted once it answered) is an allowed decision, and none is denied.
    assert moved(before, after, "kizuna_auth_decisions_total", decision="allowed") == 7
    assert moved(before, after, "kizuna_auth_decisions_total", decision="denied") == 0
    assert value(after, "kizuna_notification_outbox_rows") == 0
    assert value(after, "kizuna_store_pool_size_connections") == 0  # SQLite has no pool


def test_context_cache_hits_misses_and_fetch_failures(serve: Callable[..., str]) -> None:
    base = serve()
    inline = {"power": "https://example.org/power", "Light": "https://example.org/Light"}
    before = scrape(base + "/metrics")
    with httpx.Client(base_url=base, timeout=10) as http:
        for n in (1, 2, 3):
            assert http.post(f"{API}/entities", json=light(n, inline), headers=LD).status_code == 201
        closed = f"http://127.0.0.1:{free_port()}/context.jsonld"  # nothing listens there
        missing = http.get(
            f"{API}/entities/urn:ngsi-ld:Light:1",
            headers={"Link": f'<{closed}>; rel="http://www.w3.org/ns/json-ld#context"'},
        )
        assert missing.status_code == 503, missing.text
    after = scrape(base + "/metrics")
    assert moved(before, after, "kizuna_context_cache_misses_total") == 2  # the inline one, the URL
    assert moved(before, after, "kizuna_context_cache_hits_total") == 2
    assert moved(before, after, "kizuna_context_fetch_failures_total") == 1


def subscribe(http: httpx.Client, uri: str) -> None:
    body = {
        "id": "urn:ngsi-ld:Subscription:lights",
        "type": "Subscription",
        "entities": [{"type": "Light"}],
        "notification": {"endpoint": {"uri": uri, "accept": "application/json"}},
    }
    response = http.post(f"{API}/subscriptions", json=body)
    assert response.status_code == 201, response.text


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_a_failed_then_retried_notification_moves_the_notification_families(
    serve: Callable[..., str], receiver: Receiver
) -> None:
    base = serve("--notify-backoff-base", "3")  # the row stays in the outbox while it waits
    with httpx.Client(base_url=base, timeout=10) as http:
        subscribe(http, receiver.url)
        before = scrape(base + "/metrics")
        receiver.script = ["500"]
        assert http.post(f"{API}/entities", json=light(1)).status_code == 201
    waiting = wait_until(
        lambda: (
            (s := scrape(base + "/metrics"))
            and moved(before, s, "kizuna_notifications_retried_total", channel="http") == 1
            and s
        )
    )
    assert value(waiting, "kizuna_notification_outbox_rows") == 1
    assert value(waiting, "kizuna_notification_outbox_oldest_age_seconds") > 0
    assert moved(before, waiting, "kizuna_notifications_failed_total", channel="http") == 1
    assert moved(before, waiting, "kizuna_notifications_sent_total", channel="http") == 0
    receiver.wait_for(1)
    after = wait_until(
        lambda: (s := scrape(base + "/metrics")) and value(s, "kizuna_notification_outbox_rows") == 0 and s
    )
    assert moved(before, after, "kizuna_notifications_sent_total", channel="http") == 1
    assert moved(before, after, "kizuna_notifications_failed_total", channel="http") == 1
    assert moved(before, after, "kizuna_notifications_retried_total", channel="http") == 1
    assert moved(before, after, "kizuna_notifications_sent_total", channel="mqtt") == 0
    assert value(after, "kizuna_notification_outbox_oldest_age_seconds") == 0


def test_mqtt_notifications_are_counted_on_their_own_channel(
    serve: Callable[..., str], tmp_path: Path
) -> None:
    broker = Mosquitto(tmp_path)  # fails, never skips, when mosquitto is missing
    try:
        base = serve("--notify-backoff-base", "3")
        with httpx.Client(base_url=base, timeout=10) as http:
            subscribe(http, f"mqtt://127.0.0.1:{broker.port}/lights")
            before = scrape(base + "/metrics")
            assert http.post(f"{API}/entities", json=light(1)).status_code == 201
            sent = wait_until(
                lambda: (
                    (s := scrape(base + "/metrics"))
                    and moved(before, s, "kizuna_notifications_sent_total", channel="mqtt") == 1
                    and s
                )
            )
            assert moved(before, sent, "kizuna_notifications_sent_total", channel="http") == 0
            broker.close()
            patch = {"power": {"type": "Property", "value": 2}}
            assert http.patch(f"{API}/entities/urn:ngsi-ld:Light:1/attrs", json=patch).status_code == 204
    finally:
        broker.close()
    failing = wait_until(
        lambda: (
            (s := scrape(base + "/metrics"))
            and moved(before, s, "kizuna_notifications_retried_total", channel="mqtt") == 1
            and s
        )
    )
    assert moved(before, failing, "kizuna_notifications_failed_total", channel="mqtt") == 1
    assert moved(before, failing, "kizuna_notifications_failed_total", channel="http") == 0
    assert value(failing, "kizuna_notification_outbox_rows") == 1


class EmptySource:
    """A context source on loopback that holds nothing: every GET answers ``[]``."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"[]")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_forwarded_requests_are_counted_per_source_and_outcome(serve: Callable[..., str]) -> None:
    base = serve()
    source = EmptySource()
    endpoints = {
        "answers": source.url,
        "closed": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "itself": base,  # a loop: never sent
    }
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            for name, endpoint in endpoints.items():
                registration = {
                    "id": f"urn:ngsi-ld:ContextSourceRegistration:{name}",
                    "type": "ContextSourceRegistration",
                    "information": [{"entities": [{"type": "Light"}]}],
                    "endpoint": endpoint,
                }
                created = http.post(f"{API}/csourceRegistrations", json=registration)
                assert created.status_code == 201, created.text
            before = scrape(base + "/metrics")
            assert http.get(f"{API}/entities", params={"type": "Light"}).status_code == 200
        after = scrape(base + "/metrics")
    finally:
        source.close()
    outcomes = {"answers": "2xx", "closed": "unreachable", "itself": "refused"}
    for name, outcome in outcomes.items():
        source_id = f"urn:ngsi-ld:ContextSourceRegistration:{name}"
        assert moved(before, after, "kizuna_forwarded_requests_total", source=source_id, outcome=outcome) == 1
    assert sum(v for (n, _), v in after.items() if n == "kizuna_forwarded_requests_total") == 3


def test_on_postgresql_the_pool_shows(serve: Callable[..., str], postgres_url: str) -> None:
    base = serve("--store", postgres_url)
    before = scrape(base + "/metrics")
    assert httpx.post(f"{base}{API}/entities", json=light(1)).status_code == 201
    after = scrape(base + "/metrics")
    size = value(after, "kizuna_store_pool_size_connections")
    assert size >= 1 and 0 <= value(after, "kizuna_store_pool_in_use_connections") <= size
    assert moved(before, after, "kizuna_store_transaction_duration_seconds_count") >= 1
    assert value(after, "kizuna_notification_outbox_rows") == 0


POLICY = {
    "@type": "Offer",
    "permission": [
        {
            "action": "use",
            "constraint": [{"leftOperand": "purpose", "operator": "eq", "rightOperand": "research"}],
        }
    ],
}


def test_dsp_states_come_from_the_store_and_accesses_are_counted(
    serve: Callable[..., str], tmp_path: Path
) -> None:
    keys = {name: generate_key_file(str(tmp_path / f"{name}.pem")) for name in ("provider", "consumer")}
    trusted = tmp_path / "trusted.json"
    trusted.write_text(json.dumps({f"did:web:{n}.example": {"publicKey": k} for n, k in keys.items()}))
    provider, consumer = (
        serve(
            "--store",
            f"sqlite:///{tmp_path}/{name}.db",
            "--participant-id",
            f"did:web:{name}.example",
            "--dsp-key-file",
            str(tmp_path / f"{name}.pem"),
            "--dsp-trusted-participants",
            str(trusted),
        )
        for name in ("provider", "consumer")
    )
    with httpx.Client(timeout=10) as http:

        def get(url: str) -> Any:
            response = http.get(url)
            assert response.status_code == 200, response.text
            return response.json()

        assert http.post(f"{provider}{API}/entities", json=light(1)).status_code == 201
        dataset = {"id": "urn:ds:lights", "title": "Lights", "entityTypes": ["Light"], "policy": POLICY}
        assert http.post(f"{provider}/management/v1/datasets", json=dataset).status_code == 201
        catalog = http.post(
            f"{consumer}/management/v1/catalog/request", json={"counterPartyAddress": f"{provider}/dsp"}
        ).json()
        offered = catalog["dataset"][0]
        offer = {**offered["hasPolicy"][0], "target": offered["@id"]}
        pid = start_negotiation(http, consumer, provider, offer, "did:web:provider.example")
        negotiation = wait_until(
            lambda: (n := get(f"{consumer}/management/v1/negotiations/{pid}"))["state"] == "FINALIZED" and n
        )
        for node in (provider, consumer):
            samples = wait_until(
                lambda node=node: (
                    (s := scrape(node + "/metrics"))
                    and value(s, "kizuna_dsp_negotiations", state="FINALIZED") == 1
                    and s
                )
            )
            others = [
                value(samples, "kizuna_dsp_negotiations", state=state)
                for state in DSP_STATES["dsp.negotiation"]
            ]
            assert sum(others) == 1  # every state is shown; the one negotiation is in one
            assert value(samples, "kizuna_dsp_transfers", state="STARTED") == 0
        before = scrape(provider + "/metrics")
        r = http.post(
            f"{consumer}/management/v1/transfers",
            json={
                "counterPartyAddress": f"{provider}/dsp",
                "agreementId": negotiation["agreementId"],
                "format": "HttpData-PULL",
            },
        )
        assert r.status_code == 201, r.text
        tid = r.json()["id"]
        wait_until(lambda: "tokenHeld" in get(f"{consumer}/management/v1/transfers/{tid}"))
        data = f"{consumer}/management/v1/transfers/{tid}/data/entities"
        assert http.get(data, headers={"Kizuna-Purpose": "research"}).status_code == 200
        assert http.get(data, headers={"Kizuna-Purpose": "marketing"}).status_code == 403
    after = scrape(provider + "/metrics")
    assert moved(before, after, "kizuna_dsp_agreement_accesses_total", outcome="allowed") == 1
    assert moved(before, after, "kizuna_dsp_agreement_accesses_total", outcome="denied") == 1
    for node in (provider, consumer):
        assert value(scrape(node + "/metrics"), "kizuna_dsp_transfers", state="STARTED") == 1


def test_under_access_control_only_administrators_read_metrics(secured: TestClient, idp_key: Any) -> None:
    anonymous = secured.get("/metrics")
    assert anonymous.status_code == 401, anonymous.text
    assert secured.get("/metrics", headers=bearer(idp_key, "kizuna-creator")).status_code == 403
    admin = secured.get("/metrics", headers=bearer(idp_key, "kizuna-admin"))
    assert admin.status_code == 200, admin.text
    samples = parse(admin.text)
    assert value(samples, "kizuna_auth_decisions_total", decision="denied") >= 2
    assert value(samples, "kizuna_http_requests_total", route="/metrics", method="GET", status="401") >= 1
    refused = secured.get("/management/v1/audit", headers=bearer(idp_key, "kizuna-admin")).json()
    assert [e["operation"] for e in refused if e["outcome"] == "denied"].count("GET /metrics") >= 2


def test_a_metrics_port_serves_metrics_and_the_main_port_does_not(serve: Callable[..., str]) -> None:
    port = free_port()
    base = serve("--metrics-port", str(port))
    assert httpx.get(base + "/metrics").status_code == 404
    samples = scrape(f"http://127.0.0.1:{port}/metrics")
    # The main port's requests are counted (wait_healthy's /health, the 404 just now).
    assert value(samples, "kizuna_http_requests_total", route="/health", method="GET", status="200") >= 1
    assert value(samples, "kizuna_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert not [key for key in samples if dict(key[1]).get("route") == "/metrics"]


def test_metrics_off_serves_and_counts_nothing(serve: Callable[..., str]) -> None:
    base = serve("--metrics", "off")
    assert httpx.get(base + "/metrics").status_code == 404
    assert httpx.get(base + "/health").status_code == 200


def _requests_of(files: list[str], route: str) -> float:
    return sum(
        s.value
        for metric in MultiProcessCollector.merge(files)
        for s in metric.samples
        if s.name == "kizuna_http_requests_total" and s.labels.get("route") == route
    )


def pids_of(samples: Samples) -> set[str]:
    return {dict(key[1])["pid"] for key in samples if key[0] == "kizuna_process_start_time_seconds"}


def lives(samples: Samples) -> float:
    return value(samples, "kizuna_http_requests_total", route="/health/live", method="GET", status="200")


@pytest.mark.parametrize("server", ["uvicorn", "granian"])
def test_two_workers_counts_add_up_and_their_directory_goes_with_the_node(
    tmp_path: Path, server: str
) -> None:
    """Under granian too: it replaced no killed worker, and once it did, a SIGTERM while the
    replacement started left the node waiting for it for good."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    port = free_port()
    log = tmp_path / "kizuna.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [KIZUNA, "serve", "--port", str(port), "--workers", "2", "--http-server", server],
            env={**os.environ, "TMPDIR": str(temp)},
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, process, log)
        (directory,) = glob.glob(str(temp / "kizuna-metrics-*"))
        assert os.stat(directory).st_mode & 0o077 == 0  # private
        # Both workers show, each with its pid.
        pids = wait_until(lambda: len(found := pids_of(scrape(base + "/metrics"))) == 2 and found, timeout=20)
        sent = 0

        def per_worker() -> dict[str, float]:
            return {pid: _requests_of(glob.glob(f"{directory}/*_{pid}.db"), "/health/live") for pid in pids}

        with ThreadPoolExecutor(8) as pool:
            deadline = time.monotonic() + 30
            while not all(per_worker().values()):
                assert time.monotonic() < deadline, per_worker()
                codes = list(pool.map(lambda _: httpx.get(base + "/health/live").status_code, range(16)))
                assert codes == [200] * 16
                sent += 16
        counts = per_worker()
        assert all(counts.values()) and sum(counts.values()) == sent, counts
        assert lives(scrape(base + "/metrics")) == sent
        # A killed worker leaves the live gauges once it is gone; its counts stay in the sums.
        killed = sorted(pids)[0]
        os.kill(int(killed), signal.SIGKILL)
        later = wait_until(
            lambda: (s := scrape(base + "/metrics")) and killed not in pids_of(s) and s, timeout=20
        )
        assert lives(later) == sent
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert not glob.glob(str(temp / "kizuna-metrics-*"))


def test_every_family_is_documented_in_operations_md() -> None:
    text = (DOCS / "operations.md").read_text()
    section = text[text.index("## Metrics") :]
    names = [family.name for family in all_families()]
    exposed = {n + "_total" if f.type == "counter" else n for f, n in zip(all_families(), names, strict=True)}
    missing = sorted(name for name in exposed if f"`{name}`" not in section)
    assert len(exposed) >= 15 and not missing, f"docs/operations.md's Metrics section lacks {missing}"


SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}


def test_the_grafana_dashboard_uses_only_families_the_node_exposes() -> None:
    dashboard = json.loads((DOCS / "grafana-kizuna.json").read_text())
    expressions = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    exposed: set[str] = set()
    for family in all_families():
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}.get(
            family.type, ("",)
        )
        exposed.update(family.name + suffix for suffix in suffixes)
    used = {name for expr in expressions for name in re.findall(r"\bkizuna_[a-z_]+", expr)}
    assert len(expressions) >= 6 and used, expressions
    assert used <= exposed, sorted(used - exposed)
