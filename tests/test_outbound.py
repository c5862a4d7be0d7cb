"""The outbound gate (kizuna.outbound): the node connects only where it may, to the address it
checked, and tells callers no more than that a target could not be reached. Every case names
what must not happen (a connection, a stored subscription, an echoed body) and checks that it
did not."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from kizuna.app import create_app
from kizuna.config import Settings
from kizuna.errors import BadRequestData, DeliveryError
from kizuna.notify.senders import HttpSender, Message, MqttSender
from kizuna.outbound import OutboundGate, Refused, allowed_header
from notify_helpers import free_port
from test_forwarding import Source, vehicle

NGSI = "/ngsi-ld/v1"
BAD_REQUEST = "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
STRICT = OutboundGate()


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.1",
        "::1",
        "10.0.0.5",
        "172.16.3.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.100.100.200",
        "100.64.0.1",
        "0.0.0.0",
        "::",
        "224.0.0.1",
        "fd00::1",
        "fe80::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "240.0.0.1",
    ],
)
def test_internal_addresses_are_refused(address: str) -> None:
    assert STRICT.refusal(ipaddress.ip_address(address)) is not None


def test_public_addresses_pass_and_the_allow_list_opens_internal_ones() -> None:
    assert STRICT.refusal(ipaddress.ip_address("93.184.215.14")) is None
    assert STRICT.refusal(ipaddress.ip_address("2606:4700::1111")) is None
    gate = OutboundGate.for_node("10.0.0.0/8, 127.0.0.1", open_loopback_node=False)
    assert gate.refusal(ipaddress.ip_address("10.1.2.3")) is None
    assert gate.refusal(ipaddress.ip_address("127.0.0.1")) is None
    assert gate.refusal(ipaddress.ip_address("127.0.0.2")) is not None
    assert gate.refusal(ipaddress.ip_address("169.254.169.254")) is not None


def test_only_an_open_loopback_node_allows_loopback_by_default() -> None:
    open_node = OutboundGate.for_node(None, open_loopback_node=True)
    assert open_node.refusal(ipaddress.ip_address("127.0.0.1")) is None
    assert open_node.refusal(ipaddress.ip_address("::1")) is None
    assert open_node.refusal(ipaddress.ip_address("10.0.0.1")) is not None
    secured = OutboundGate.for_node(None, open_loopback_node=False)
    assert secured.refusal(ipaddress.ip_address("127.0.0.1")) is not None
    with pytest.raises(ValueError):
        OutboundGate.for_node("not-a-network", open_loopback_node=True)


def test_a_name_is_refused_when_it_resolves_to_an_internal_address() -> None:
    with pytest.raises(Refused, match="loopback"):
        asyncio.run(STRICT.resolve("localhost", 80))
    with pytest.raises(BadRequestData, match="loopback"):
        asyncio.run(STRICT.vet("http://localhost:8080/x", "endpoint"))
    # A name that does not resolve now may at delivery, where it is checked again.
    asyncio.run(STRICT.vet("http://no-such-host.invalid/x", "endpoint"))


def test_headers_that_frame_a_request_or_name_its_sender_are_not_a_callers() -> None:
    for name in ("Host", "via", "Content-Length", "Transfer-Encoding", "Connection", "Proxy-Authorization"):
        assert not allowed_header(name, "x")
    assert not allowed_header("Authorization", "Bearer stolen")
    assert allowed_header("Authorization", "urn:ngsi-ld:request")
    assert allowed_header("X-Additional-Key", "Value")


class Counting:
    """A loopback port that counts the connections made to it (and answers HTTP 200)."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[bytes] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(2)
                try:
                    self.requests.append(conn.recv(65536))
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def target() -> Iterator[Counting]:
    counting = Counting()
    yield counting
    counting.close()


@pytest.fixture
def strict(tmp_path: Path) -> Iterator[TestClient]:
    """A node that may connect to no internal address at all (``--outbound-allow`` empty)."""
    settings = Settings(
        store=f"sqlite:///{tmp_path}/strict.db", auth="none", outbound_allow="", dsp_auth="none"
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def subscription(uri: str, **endpoint: Any) -> dict[str, Any]:
    return {
        "type": "Subscription",
        "entities": [{"type": "Streetlight"}],
        "notification": {"endpoint": {"uri": uri, **endpoint}},
    }


def refused(response: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return response.json()


@pytest.mark.parametrize(
    "uri",
    ["http://127.0.0.1:{port}/n", "http://localhost:{port}/n", "http://[::ffff:127.0.0.1]:{port}/n"],
)
def test_a_subscription_to_an_internal_address_is_refused_and_never_sent(
    strict: TestClient, target: Counting, uri: str
) -> None:
    problem = refused(strict.post(f"{NGSI}/subscriptions", json=subscription(uri.format(port=target.port))))
    assert problem["type"] == BAD_REQUEST and "outbound-allow" in problem["detail"]
    assert strict.get(f"{NGSI}/subscriptions").json() == []
    strict.post(f"{NGSI}/entities", json={"id": "urn:ngsi-ld:Streetlight:1", "type": "Streetlight"})
    assert target.connections == 0


@pytest.mark.parametrize(
    "uri",
    [
        "http://169.254.169.254/computeMetadata/v1/",
        "mqtt://10.0.0.5:6379/topic",
        "http://[fd00:ec2::254]/latest/meta-data/",
    ],
)
def test_metadata_and_private_endpoints_are_refused_even_on_an_open_loopback_node(
    client: TestClient, uri: str
) -> None:
    body = subscription(uri, receiverInfo=[{"key": "Metadata-Flavor", "value": "Google"}])
    assert refused(client.post(f"{NGSI}/subscriptions", json=body))["type"] == BAD_REQUEST
    assert client.get(f"{NGSI}/subscriptions").json() == []


def test_an_update_cannot_turn_a_subscription_inward(client: TestClient) -> None:
    created = client.post(f"{NGSI}/subscriptions", json=subscription("http://127.0.0.1:9/n"))
    assert created.status_code == 201
    sub_id = created.headers["location"].rsplit("/", 1)[1]
    patch = {"notification": {"endpoint": {"uri": "http://169.254.169.254/"}}}
    refused(client.patch(f"{NGSI}/subscriptions/{sub_id}", json=patch))
    kept = client.get(f"{NGSI}/subscriptions/{sub_id}").json()
    assert kept["notification"]["endpoint"]["uri"] == "http://127.0.0.1:9/n"


@pytest.mark.parametrize("header", ["Host", "Via", "Content-Length", "Authorization", "Transfer-Encoding"])
def test_receiver_info_cannot_set_the_nodes_own_headers(client: TestClient, header: str) -> None:
    body = subscription("http://127.0.0.1:9/n", receiverInfo=[{"key": header, "value": "x"}])
    assert header in refused(client.post(f"{NGSI}/subscriptions", json=body))["detail"]


def test_an_mqtt_password_is_used_but_never_served_back(client: TestClient) -> None:
    body = subscription("mqtt://alice:s3cret@127.0.0.1:1883/lights")
    created = client.post(f"{NGSI}/subscriptions", json=body)
    assert created.status_code == 201, created.text
    shown = client.get(created.headers["location"]).json()
    assert shown["notification"]["endpoint"]["uri"] == "mqtt://alice:***@127.0.0.1:1883/lights"
    assert "s3cret" not in client.get(f"{NGSI}/subscriptions").text


def test_registrations_and_csource_subscriptions_are_gated(strict: TestClient, target: Counting) -> None:
    registration = {
        "type": "ContextSourceRegistration",
        "information": [{"entities": [{"type": "Vehicle"}]}],
        "endpoint": target.url,
    }
    assert refused(strict.post(f"{NGSI}/csourceRegistrations", json=registration))["type"] == BAD_REQUEST
    csub = {**subscription(target.url + "/n"), "entities": [{"type": "Vehicle"}]}
    refused(strict.post(f"{NGSI}/csourceSubscriptions", json=csub))
    assert strict.get(f"{NGSI}/csourceRegistrations", params={"type": "Vehicle"}).json() == []
    assert target.connections == 0


def test_context_source_info_cannot_spoof_via_or_host(client: TestClient) -> None:
    for header in ("Via", "Host", "Authorization"):
        registration = {
            "type": "ContextSourceRegistration",
            "information": [{"entities": [{"type": "Vehicle"}]}],
            "endpoint": "http://127.0.0.1:9",
            "contextSourceInfo": [{"key": header, "value": "1.1 elsewhere"}],
        }
        assert header in refused(client.post(f"{NGSI}/csourceRegistrations", json=registration))["detail"]


def test_a_registration_naming_this_node_is_never_forwarded_to(tmp_path: Path) -> None:
    """The node believes it listens on the source's port: a query must not call itself."""
    source = Source()
    port = int(source.url.rsplit(":", 1)[1])
    settings = Settings(store=f"sqlite:///{tmp_path}/self.db", auth="none", port=port)
    try:
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            registration = {
                "type": "ContextSourceRegistration",
                "information": [{"entities": [{"type": "Vehicle"}]}],
                "endpoint": f"http://localhost:{port}",
            }
            assert client.post(f"{NGSI}/csourceRegistrations", json=registration).status_code == 201
            answer = client.get(f"{NGSI}/entities", params={"type": "Vehicle"})
            assert answer.status_code == 200 and answer.json() == []
    finally:
        source.close()
    assert source.requests == []


def test_a_sources_error_body_is_not_echoed(client: TestClient) -> None:
    source = Source()
    try:
        client.post(f"{NGSI}/entities", json=vehicle("urn:v:1", brand="BMW"), params={"local": "true"})
        source.answers[("PATCH", f"{NGSI}/entities/urn:v:1/attrs/")] = (
            400,
            {"type": BAD_REQUEST, "title": "Refused", "detail": "SECRET internal inventory"},
        )
        registration = {
            "type": "ContextSourceRegistration",
            "information": [{"entities": [{"type": "Vehicle", "id": "urn:v:1"}], "propertyNames": ["speed"]}],
            "endpoint": source.url,
            "mode": "exclusive",
            "operations": ["updateOps"],
        }
        assert client.post(f"{NGSI}/csourceRegistrations", json=registration).status_code == 201
        response = client.patch(
            f"{NGSI}/entities/urn:v:1/attrs", json={"speed": {"type": "Property", "value": 3}}
        )
        assert response.status_code == 207, response.text
        assert "SECRET" not in response.text and "Refused" in response.text
        assert [p for p in source.paths() if p.endswith("/attrs/")]  # it was asked
    finally:
        source.close()


def context_link(url: str) -> dict[str, str]:
    return {"Link": f'<{url}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'}


def test_context_urls_to_internal_hosts_are_not_fetched(strict: TestClient, target: Counting) -> None:
    answer = strict.get(f"{NGSI}/entities", params={"type": "T"}, headers=context_link(target.url + "/c"))
    assert answer.status_code == 503 and "loopback" in answer.json()["detail"]
    assert target.connections == 0


def test_a_closed_port_and_an_open_one_fail_alike(client: TestClient, target: Counting) -> None:
    """The target answers non-JSON-LD; the closed port answers nothing: the caller learns only
    that neither gave a context (not which port is open)."""
    closed = f"http://127.0.0.1:{free_port()}/c"
    hung_up = socket.socket()
    hung_up.bind(("127.0.0.1", 0))
    hung_up.listen(1)
    silent = f"http://127.0.0.1:{hung_up.getsockname()[1]}/c"
    try:
        details = []
        for url in (closed, silent):
            answer = client.get(f"{NGSI}/entities", params={"type": "T"}, headers=context_link(url))
            assert answer.status_code == 503
            details.append(answer.json()["detail"].replace(url, "URL"))
    finally:
        hung_up.close()
    assert details[0] == details[1], details


def test_redirects_lead_through_the_gate_again(strict: TestClient) -> None:
    """A public-looking first hop cannot hand the fetch to an internal one: every hop is
    checked (here the first hop is already internal, so not even it is asked)."""
    redirecting = Counting()
    try:
        url = f"{redirecting.url}/c"
        answer = strict.post(
            f"{NGSI}/entities",
            json={"id": "urn:x:1", "type": "T", "@context": url},
            headers={"Content-Type": "application/ld+json"},
        )
        assert answer.status_code == 503
        assert redirecting.connections == 0
    finally:
        redirecting.close()


def test_a_delivery_to_a_refused_address_fails_with_the_reason(target: Counting) -> None:
    async def send() -> None:
        sender = HttpSender(STRICT)
        try:
            await sender.send(Message(f"http://localhost:{target.port}/n", {}, {}, 2.0))
        finally:
            await sender.close()

    with pytest.raises(DeliveryError, match="loopback"):
        asyncio.run(send())
    assert target.connections == 0


def test_the_gate_connects_to_the_address_it_checked_with_the_name_as_host(target: Counting) -> None:
    gate = OutboundGate.for_node("127.0.0.0/8", open_loopback_node=False)

    async def get() -> int:
        async with gate.client(timeout=2.0) as client:
            return (await client.get(f"http://localhost:{target.port}/x")).status_code

    assert asyncio.run(get()) == 200
    assert f"host: localhost:{target.port}".encode() in target.requests[0].lower()


def test_a_remote_catalog_request_to_an_internal_host_is_refused(
    strict: TestClient, target: Counting
) -> None:
    body = {"counterPartyAddress": f"{target.url}/secret?"}
    assert refused(strict.post("/management/v1/catalog/request", json=body))["status"] == 400
    assert target.connections == 0


def test_a_remote_catalog_that_is_no_catalog_is_not_passed_on(client: TestClient, target: Counting) -> None:
    """Allowed (loopback on an open node), the host answers ``{}``: not a DSP Catalog, so its
    body is not handed to the caller."""
    response = client.post("/management/v1/catalog/request", json={"counterPartyAddress": target.url})
    assert response.status_code == 502, response.text
    assert target.connections == 1


def test_dsp_callbacks_to_internal_hosts_are_refused(strict: TestClient, target: Counting) -> None:
    negotiation = {
        "@context": ["https://w3id.org/dspace/2025/1/context.jsonld"],
        "@type": "ContractRequestMessage",
        "consumerPid": "urn:uuid:c1",
        "callbackAddress": target.url,
        "offer": {
            "@id": "urn:offer:1",
            "@type": "Offer",
            "target": "urn:dataset:1",
            "permission": [{"action": "use"}],
        },
    }
    response = strict.post("/dsp/negotiations/request", json=negotiation)
    assert response.status_code == 400 and "callbackAddress" in response.text, response.text
    assert target.connections == 0


BROKEN_URLS = [
    "http://[::1",
    "http://127.0.0.1:99999/",
    "http://127.0.0.1:0/",
    "http://\u0016/",
    "http:// x/",
]


@pytest.mark.parametrize("url", BROKEN_URLS)
def test_an_address_no_client_could_use_is_refused_when_given(client: TestClient, url: str) -> None:
    """Each was accepted (or reached the HTTP client) and answered 500; now 400 where it is given,
    and nothing is stored."""
    assert refused(client.post(f"{NGSI}/subscriptions", json=subscription(url)))["type"] == BAD_REQUEST
    assert client.get(f"{NGSI}/subscriptions").json() == []
    registration = {
        "type": "ContextSourceRegistration",
        "information": [{"entities": [{"type": "Vehicle"}]}],
        "endpoint": url,
    }
    assert refused(client.post(f"{NGSI}/csourceRegistrations", json=registration))["type"] == BAD_REQUEST
    assert client.get(f"{NGSI}/csourceRegistrations", params={"type": "Vehicle"}).json() == []
    for path in ("catalog/request", "negotiations", "transfers"):
        body = {"counterPartyAddress": url, "offerId": "o", "agreementId": "a", "format": "HttpData-PULL"}
        assert refused(client.post(f"/management/v1/{path}", json=body))["status"] == 400, path


@pytest.mark.parametrize("url", BROKEN_URLS[:2])
def test_a_broken_context_url_is_a_context_not_available(client: TestClient, url: str) -> None:
    answer = client.get(f"{NGSI}/entities", params={"type": "T"}, headers=context_link(url + "c"))
    assert answer.status_code in (400, 503), answer.text


@pytest.mark.parametrize("uri", ["http://127.0.0.1:99999/n", "mqtt://127.0.0.1:99999/t", "http://[::1/n"])
def test_a_stored_endpoint_no_client_can_use_fails_delivery(uri: str) -> None:
    """An endpoint stored before it was checked fails its deliveries with a reason."""
    gate = OutboundGate.for_node(None, open_loopback_node=True)
    message = Message(uri=uri, body={}, headers={}, timeout=1.0)

    async def send() -> None:
        sender = MqttSender(gate) if uri.startswith("mqtt") else HttpSender(gate)
        try:
            await sender.send(message)
        finally:
            await sender.close()

    with pytest.raises(DeliveryError):
        asyncio.run(send())


@pytest.mark.parametrize(
    "path", ["/ngsi-ld/v1/entities//", "/ngsi-ld/v1/entities%2F", "/dsp/catalog/request/"]
)
def test_no_path_is_answered_with_a_redirect(client: TestClient, path: str) -> None:
    answer = client.get(path, follow_redirects=False)
    assert not 300 <= answer.status_code < 400, answer.headers.get("location")


def test_outbound_settings_are_parsed_when_the_node_starts(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="outbound"):
        create_app(Settings(store=f"sqlite:///{tmp_path}/x.db", outbound_allow="10.0.0.0/33"))
