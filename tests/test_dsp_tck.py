"""The 67 mandatory scenarios of the Eclipse Dataspace TCK (dsp-tck-scenarios.txt), each against a
scripted counterparty: the node under test runs under TestClient with ``--dsp-auth none``; the
counterparty is the test itself (its messages go to the node's /dsp endpoints) plus a recorder app
that receives what the node sends (through an in-process httpx transport). Every message either
side sends is validated against the bundled 2025-1 JSON Schemas."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from kizuna.app import create_app
from kizuna.config import Settings
from kizuna.dataspace.messages import schema_errors

CTX = ["https://w3id.org/dspace/2025/1/context.jsonld"]
PEER = "http://peer.test/dsp"
POLICY = {"permission": [{"action": "use"}]}


class Recorder:
    """The scripted counterparty's receiving side: records and schema-checks every message."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.provider_pid = f"urn:uuid:{uuid.uuid4()}"
        self.app = Starlette(routes=[Route("/{path:path}", self.receive, methods=["POST", "GET"])])

    async def receive(self, request: Request) -> JSONResponse:
        body = await request.json()
        assert schema_errors(body, body["@type"]) == [], (body, schema_errors(body, body["@type"]))
        self.received.append((request.url.path, body))
        if request.url.path.endswith("/negotiations/request"):
            ack = {
                "@context": CTX,
                "@type": "ContractNegotiation",
                "providerPid": self.provider_pid,
                "consumerPid": body["consumerPid"],
                "state": "REQUESTED",
            }
            return JSONResponse(ack, status_code=201)
        if request.url.path.endswith("/transfers/request"):
            ack = {
                "@context": CTX,
                "@type": "TransferProcess",
                "providerPid": self.provider_pid,
                "consumerPid": body["consumerPid"],
                "state": "REQUESTED",
            }
            return JSONResponse(ack, status_code=201)
        return JSONResponse({}, status_code=200)

    def last(self, message_type: str) -> dict[str, Any]:
        return next(b for _, b in reversed(self.received) if b["@type"] == message_type)


@pytest.fixture
def tck(tmp_path: Path):
    settings = Settings(store=f"sqlite:///{tmp_path}/node.db", dsp_auth="none", participant_id="urn:node")
    app = create_app(settings)
    recorder = Recorder()
    app.state.dataspace.node.messenger.client_factory = lambda: httpx.AsyncClient(
        transport=httpx.ASGITransport(app=recorder.app)
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, recorder


def send(client: TestClient, path: str, body: dict[str, Any], expect: int) -> Any:
    assert schema_errors(body, body["@type"]) == [], body
    r = client.post(f"/dsp/{path}", json=body)
    assert r.status_code == expect, (path, r.status_code, r.text)
    if r.status_code == 400:
        error = r.json()
        kind = "ContractNegotiationError" if "negotiations" in path else "TransferError"
        assert error["@type"] == kind and schema_errors(error, kind) == []
    return r.json() if r.content else None


def make_dataset(client: TestClient, approval: str = "manual") -> dict[str, Any]:
    r = client.post(
        "/management/v1/datasets",
        json={"id": f"urn:ds:{uuid.uuid4()}", "entityTypes": ["T"], "policy": POLICY, "approval": approval},
    )
    assert r.status_code == 201, r.text
    dataset = r.json()
    return {**dataset["offers"][0], "target": dataset["id"]}


# -- negotiations, node as provider (CN) ------------------------------------------------------------

CN = {
    "CN:01-01": ("node:offer peer:terminate", "TERMINATED"),
    "CN:01-02": ("node:offer peer:request node:terminate", "TERMINATED"),
    "CN:01-03": ("node:offer peer:accept node:agree peer:verify node:finalize", "FINALIZED"),
    "CN:01-04": ("node:agree peer:verify node:finalize", "FINALIZED"),
    "CN:02-01": ("node:terminate", "TERMINATED"),
    "CN:02-02": ("peer:terminate", "TERMINATED"),
    "CN:02-03": ("node:agree peer:terminate", "TERMINATED"),
    "CN:02-04": ("node:offer peer:terminate", "TERMINATED"),
    "CN:02-05": ("node:offer node:terminate", "TERMINATED"),
    "CN:02-06": ("node:offer peer:accept node:terminate", "TERMINATED"),
    "CN:02-07": ("node:agree peer:verify node:terminate", "TERMINATED"),
    "CN:03-01": ("node:agree peer:verify node:finalize peer!:terminate", "FINALIZED"),
    "CN:03-02": ("node:offer peer!:verify", "OFFERED"),
    "CN:03-03": ("node:offer peer:accept peer!:verify", "ACCEPTED"),
    "CN:03-04": ("node:offer peer:request peer!:request node:terminate", "TERMINATED"),
}


def _negotiation_message(
    kind: str, ppid: str, cpid: str, offer: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    base = {"@context": CTX, "providerPid": ppid, "consumerPid": cpid}
    return {
        "request": ("request", {**base, "@type": "ContractRequestMessage", "offer": offer}),
        "accept": ("events", {**base, "@type": "ContractNegotiationEventMessage", "eventType": "ACCEPTED"}),
        "verify": ("agreement/verification", {**base, "@type": "ContractAgreementVerificationMessage"}),
        "terminate": (
            "termination",
            {**base, "@type": "ContractNegotiationTerminationMessage", "code": "1", "reason": ["test"]},
        ),
        "finalize": (
            "events",
            {**base, "@type": "ContractNegotiationEventMessage", "eventType": "FINALIZED"},
        ),
        "offer": ("offers", {**base, "@type": "ContractOfferMessage", "offer": offer}),
        "agreement": (
            "agreement",
            {
                **base,
                "@type": "ContractAgreementMessage",
                "agreement": {
                    "@id": f"urn:uuid:{uuid.uuid4()}",
                    "@type": "Agreement",
                    "target": offer["target"],
                    "timestamp": "2025-01-01T00:00:00Z",
                    "assigner": "urn:peer",
                    "assignee": "urn:node",
                    "permission": [{"action": "use"}],
                },
            },
        ),
    }[kind]


def provider_negotiation(client: TestClient, offer: dict[str, Any]) -> tuple[str, str]:
    cpid = f"urn:uuid:{uuid.uuid4()}"
    ack = send(
        client,
        "negotiations/request",
        {
            "@context": CTX,
            "@type": "ContractRequestMessage",
            "consumerPid": cpid,
            "offer": offer,
            "callbackAddress": PEER,
        },
        201,
    )
    assert ack["state"] == "REQUESTED" and ack["@context"] == CTX
    return ack["providerPid"], cpid


@pytest.mark.parametrize("scenario", sorted(CN))
def test_cn_provider(tck, scenario: str):
    client, recorder = tck
    steps, final = CN[scenario]
    offer = make_dataset(client)
    ppid, cpid = provider_negotiation(client, offer)
    for step in steps.split():
        who, kind = step.split(":")
        if who == "node":
            r = client.post(f"/management/v1/negotiations/{ppid}/{kind}")
            assert r.status_code == 200, r.text
        else:
            path, body = _negotiation_message(kind, ppid, cpid, offer)
            send(client, f"negotiations/{ppid}/{path}", body, 400 if who == "peer!" else 200)
    state = client.get(f"/dsp/negotiations/{ppid}").json()
    assert state["state"] == final
    assert schema_errors(state, "ContractNegotiation") == []
    if "agree" in steps:
        agreement = recorder.last("ContractAgreementMessage")["agreement"]
        assert agreement["target"] == offer["target"] and "timestamp" in agreement


# -- negotiations, node as consumer (CN_C) ------------------------------------------------------------

CN_C = {
    "CN_C:01-01": ("peer:offer node:accept peer:agreement node:verify peer:finalize", "FINALIZED"),
    "CN_C:01-02": ("peer:offer node:request peer:terminate", "TERMINATED"),
    "CN_C:01-03": ("peer:offer node:terminate", "TERMINATED"),
    "CN_C:01-04": ("peer:agreement node:verify peer:finalize", "FINALIZED"),
    "CN_C:02-01": ("peer:terminate", "TERMINATED"),
    "CN_C:02-02": ("node:terminate", "TERMINATED"),
    "CN_C:02-03": ("peer:agreement node:terminate", "TERMINATED"),
    "CN_C:02-04": ("peer:offer peer:terminate", "TERMINATED"),
    "CN_C:02-05": ("peer:offer node:accept peer:terminate", "TERMINATED"),
    "CN_C:02-06": ("peer:agreement node:verify peer:terminate", "TERMINATED"),
    "CN_C:03-01": ("peer!:finalize", "REQUESTED"),
    "CN_C:03-02": ("peer:offer peer!:agreement", "OFFERED"),
    "CN_C:03-03": ("peer:offer peer!:finalize", "OFFERED"),
    "CN_C:03-04": ("peer:offer node:accept peer!:finalize", "ACCEPTED"),
    "CN_C:03-05": ("peer:offer node:accept peer!:offer", "ACCEPTED"),
    "CN_C:03-06": ("peer:offer node:accept peer:agreement peer!:finalize", "AGREED"),
}


@pytest.mark.parametrize("scenario", sorted(CN_C))
def test_cn_consumer(tck, scenario: str):
    client, recorder = tck
    steps, final = CN_C[scenario]
    offer = {
        "@id": "urn:offer:1",
        "@type": "Offer",
        "target": "urn:ds:remote",
        "permission": [{"action": "use"}],
    }
    r = client.post(
        "/management/v1/negotiations",
        json={
            "counterPartyAddress": PEER,
            "counterPartyId": "urn:peer",
            "offer": offer,
            "approval": "manual",
        },
    )
    assert r.status_code == 201, r.text
    cpid = r.json()["id"]
    request = recorder.last("ContractRequestMessage")
    assert request["offer"] == offer and request["consumerPid"] == cpid  # @id and target unchanged
    ppid = recorder.provider_pid
    for step in steps.split():
        who, kind = step.split(":")
        if who == "node":
            body = {"offer": offer} if kind == "request" else None
            r = client.post(f"/management/v1/negotiations/{cpid}/{kind}", json=body)
            assert r.status_code == 200, r.text
        else:
            path, body = _negotiation_message(kind, ppid, cpid, offer)
            send(client, f"negotiations/{cpid}/{path}", body, 400 if who == "peer!" else 200)
    state = client.get(f"/management/v1/negotiations/{cpid}").json()
    assert state["state"] == final


# -- transfers, node as provider (TP) ------------------------------------------------------------------

TP = {
    "TP:01-01": ("node:start node:terminate", "TERMINATED"),
    "TP:01-02": ("node:start node:complete", "COMPLETED"),
    "TP:01-03": ("node:start node:suspend node:terminate", "TERMINATED"),
    "TP:01-04": ("node:start node:suspend node:start node:complete", "COMPLETED"),
    "TP:01-05": ("node:terminate", "TERMINATED"),
    "TP:02-01": ("node:start peer:terminate", "TERMINATED"),
    "TP:02-02": ("node:start peer:complete", "COMPLETED"),
    "TP:02-03": ("node:start peer:suspend peer:terminate", "TERMINATED"),
    "TP:02-04": ("node:start peer:suspend peer:start peer:complete", "COMPLETED"),
    "TP:02-05": ("peer:terminate", "TERMINATED"),
    "TP:03-01": ("peer!:complete", "REQUESTED"),
    "TP:03-02": ("peer!:suspend", "REQUESTED"),
    "TP:03-03": ("node:start peer:suspend peer!:complete", "SUSPENDED"),
    "TP:03-04": ("node:start peer:terminate peer!:start", "TERMINATED"),
    "TP:03-05": ("node:start peer:terminate peer!:suspend", "TERMINATED"),
    "TP:03-06": ("node:start peer:terminate peer!:complete", "TERMINATED"),
}
TRANSFER_PATHS = {
    "start": ("start", "TransferStartMessage"),
    "complete": ("completion", "TransferCompletionMessage"),
    "suspend": ("suspension", "TransferSuspensionMessage"),
    "terminate": ("termination", "TransferTerminationMessage"),
}


def _transfer_message(kind: str, ppid: str, cpid: str) -> tuple[str, dict[str, Any]]:
    path, message_type = TRANSFER_PATHS[kind]
    body = {"@context": CTX, "@type": message_type, "providerPid": ppid, "consumerPid": cpid}
    if kind in ("suspend", "terminate"):
        body.update(code="1", reason=["test"])
    return path, body


def finalized_agreement(client: TestClient) -> str:
    offer = make_dataset(client)
    ppid, cpid = provider_negotiation(client, offer)
    client.post(f"/management/v1/negotiations/{ppid}/agree")
    path, body = _negotiation_message("verify", ppid, cpid, offer)
    send(client, f"negotiations/{ppid}/{path}", body, 200)
    client.post(f"/management/v1/negotiations/{ppid}/finalize")
    negotiation = client.get(f"/management/v1/negotiations/{ppid}").json()
    assert negotiation["state"] == "FINALIZED"
    return negotiation["agreementId"]


@pytest.mark.parametrize("scenario", sorted(TP))
def test_tp_provider(tck, scenario: str):
    client, recorder = tck
    steps, final = TP[scenario]
    agreement_id = finalized_agreement(client)
    cpid = f"urn:uuid:{uuid.uuid4()}"
    ack = send(
        client,
        "transfers/request",
        {
            "@context": CTX,
            "@type": "TransferRequestMessage",
            "consumerPid": cpid,
            "agreementId": agreement_id,
            "format": "HttpData-PULL",
            "callbackAddress": PEER,
        },
        201,
    )
    assert ack["state"] == "REQUESTED"
    ppid = ack["providerPid"]
    for step in steps.split():
        who, kind = step.split(":")
        if who == "node":
            r = client.post(f"/management/v1/transfers/{ppid}/{'resume' if kind == 'start' else kind}")
            assert r.status_code == 200, r.text
        else:
            path, body = _transfer_message(kind, ppid, cpid)
            send(client, f"transfers/{ppid}/{path}", body, 400 if who == "peer!" else 200)
    state = client.get(f"/dsp/transfers/{ppid}").json()
    assert state["state"] == final and schema_errors(state, "TransferProcess") == []
    if "node:start" in steps:
        start = next(b for _, b in recorder.received if b["@type"] == "TransferStartMessage")
        address = start["dataAddress"]
        assert address["endpoint"].startswith("http")
        assert any(p["name"] == "authorization" for p in address["endpointProperties"])


# -- transfers, node as consumer (TP_C) ---------------------------------------------------------------

TP_C = {
    "TP_C:01-01": ("peer:start peer:terminate", "TERMINATED"),
    "TP_C:01-02": ("peer:start peer:complete", "COMPLETED"),
    "TP_C:01-03": ("peer:start peer:suspend peer:terminate", "TERMINATED"),
    "TP_C:01-04": ("peer:start peer:suspend peer:start peer:complete", "COMPLETED"),
    "TP_C:01-05": ("peer:terminate", "TERMINATED"),
    "TP_C:02-01": ("peer:start node:terminate", "TERMINATED"),
    "TP_C:02-02": ("peer:start node:complete", "COMPLETED"),
    "TP_C:02-03": ("peer:start node:suspend node:terminate", "TERMINATED"),
    "TP_C:02-04": ("peer:start node:suspend node:resume node:complete", "COMPLETED"),
    "TP_C:02-05": ("node:terminate", "TERMINATED"),
    "TP_C:03-01": ("peer!:complete", "REQUESTED"),
    "TP_C:03-02": ("peer!:suspend", "REQUESTED"),
    "TP_C:03-03": ("peer:start peer:suspend peer!:complete", "SUSPENDED"),
    "TP_C:03-04": ("peer:start peer:terminate peer!:start", "TERMINATED"),
    "TP_C:03-05": ("peer:start peer:terminate peer!:suspend", "TERMINATED"),
    "TP_C:03-06": ("peer:start peer:terminate peer!:complete", "TERMINATED"),
}


@pytest.mark.parametrize("scenario", sorted(TP_C))
def test_tp_consumer(tck, scenario: str):
    client, recorder = tck
    steps, final = TP_C[scenario]
    r = client.post(
        "/management/v1/transfers",
        json={"counterPartyAddress": PEER, "agreementId": "urn:agreement:1", "format": "HttpData-PULL"},
    )
    assert r.status_code == 201, r.text
    cpid = r.json()["id"]
    request = recorder.last("TransferRequestMessage")
    assert "dataAddress" not in request  # a pull request carries none
    ppid = recorder.provider_pid
    for step in steps.split():
        who, kind = step.split(":")
        if who == "node":
            r = client.post(f"/management/v1/transfers/{cpid}/{kind}")
            assert r.status_code == 200, r.text
        else:
            path, body = _transfer_message(kind, ppid, cpid)
            send(client, f"transfers/{cpid}/{path}", body, 400 if who == "peer!" else 200)
    assert client.get(f"/management/v1/transfers/{cpid}").json()["state"] == final


# -- catalog and metadata (CAT, MET) ---------------------------------------------------------------------


def test_cat_01_01_catalog_request(tck):
    client, _ = tck
    offer = make_dataset(client)
    r = client.post("/dsp/catalog/request", json={"@context": CTX, "@type": "CatalogRequestMessage"})
    assert r.status_code == 200
    catalog = r.json()
    assert schema_errors(catalog, "Catalog") == [] and catalog["participantId"] == "urn:node"
    dataset = catalog["dataset"][0]
    assert dataset["@id"] == offer["target"]
    assert any(d["format"] == "HttpData-PULL" and d["accessService"] for d in dataset["distribution"])


def test_cat_01_02_dataset_request(tck):
    client, _ = tck
    offer = make_dataset(client)
    r = client.get(f"/dsp/catalog/datasets/{offer['target']}")
    assert r.status_code == 200
    assert schema_errors(r.json(), "Dataset") == [] and r.json()["hasPolicy"][0]["@id"] == offer["@id"]


def test_cat_01_03_dataset_not_found(tck):
    client, _ = tck
    r = client.get("/dsp/catalog/datasets/urn:ds:missing")
    assert 400 <= r.status_code < 500
    assert r.json()["@type"] == "CatalogError" and schema_errors(r.json(), "CatalogError") == []


def test_met_01_01_metadata(tck):
    client, _ = tck
    r = client.get("/.well-known/dspace-version")
    assert r.status_code == 200
    assert schema_errors(r.json(), "VersionResponse") == []
    assert any(v["version"] == "2025-1" for v in r.json()["protocolVersions"])


def test_scenario_count():
    scenarios = Path(__file__).parents[2] / "shared/reference/dataspace-protocol-2025-1/dsp-tck-scenarios.txt"
    covered = set(CN) | set(CN_C) | set(TP) | set(TP_C) | {"CAT:01-01", "CAT:01-02", "CAT:01-03", "MET:01-01"}
    assert len(covered) == 67
    if scenarios.exists():  # the list lives outside the project; check it when it is there
        names = {
            line.split(": ")[0] for line in scenarios.read_text().splitlines() if line and line[0] != "#"
        }
        assert names == covered


@pytest.mark.parametrize(
    ("path", "message_type"),
    [
        ("transfers/urn:x/completion", "TransferCompletionMessage"),
        ("negotiations/urn:x/termination", "ContractNegotiationTerminationMessage"),
    ],
)
def test_an_error_message_keeps_to_its_schema_when_the_refused_message_does_not(
    tck: Any, path: str, message_type: str
) -> None:
    """A pid that is no string is not echoed into the error (Schemathesis found a TransferError
    whose providerPid was the array the request sent)."""
    client, _ = tck
    body = {"@context": CTX, "@type": message_type, "providerPid": [1, {}], "consumerPid": "urn:c"}
    r = client.post(f"/dsp/{path}", json=body)
    assert r.status_code == 400, r.text
    error = r.json()
    error_type = "TransferError" if path.startswith("transfers") else "ContractNegotiationError"
    assert error["@type"] == error_type and schema_errors(error, error_type) == [], error
    assert (error["providerPid"], error["consumerPid"]) == ("urn:unknown", "urn:c")
