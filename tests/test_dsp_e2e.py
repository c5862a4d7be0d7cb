"""Two nodes on loopback: Tübingen (provider) shares pseudonymised research data with RIKEN
(consumer) for research only, inside the EU and Japan, for one year, at most 1,000 accesses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from access_helpers import rsa, token
from dsp_helpers import free_port, node, start_negotiation, wait_for
from kizuna.config import Settings
from kizuna.dataspace.auth import generate_key_file

POLICY = {
    "@type": "Offer",
    "permission": [
        {
            "action": "use",
            "constraint": [
                {"leftOperand": "purpose", "operator": "eq", "rightOperand": "research"},
                {"leftOperand": "spatial", "operator": "isAnyOf", "rightOperand": ["EU", "JP"]},
                {"leftOperand": "elapsedTime", "operator": "lteq", "rightOperand": "P1Y"},
                {"leftOperand": "count", "operator": "lteq", "rightOperand": "1000"},
            ],
        }
    ],
    "prohibition": [{"action": "distribute"}],
}


@dataclass
class TwoNodes:
    """Tübingen and RIKEN, and one client that calls each as that node's administrator (with
    ``--auth oidc``, a token from the node's own realm, minted here from a key made here)."""

    provider: str
    consumer: str
    http: httpx.Client
    secured: bool

    def get_json(self, url: str) -> Any:
        response = self.http.get(url)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(params=["none", "oidc"])
def two_nodes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TwoNodes]:
    keys = {}
    for name in ("tuebingen", "riken"):
        keys[name] = generate_key_file(str(tmp_path / f"{name}.pem"))
    trusted = tmp_path / "trusted.json"
    trusted.write_text(
        json.dumps(
            {
                "did:web:tuebingen.example": {"publicKey": keys["tuebingen"], "region": "DE"},
                "did:web:riken.example": {
                    "publicKey": keys["riken"],
                    "region": "JP",
                    "memberships": ["research-institute"],
                },
            }
        )
    )
    ports = {"tuebingen": free_port(), "riken": free_port()}
    admin_headers: dict[int, str] = {}
    settings = {}
    for name, port in ports.items():
        auth: dict[str, Any] = {}
        if request.param == "oidc":
            realm, idp_key = f"https://sso.{name}.example/realms/{name}", rsa(name)
            jwks = tmp_path / f"{name}-jwks.json"
            jwks.write_text(json.dumps({"keys": [idp_key.as_dict(private=False)]}))
            auth = {
                "auth": "oidc",
                "oidc_issuer": realm,
                "oidc_audience": "kizuna",
                "oidc_jwks": str(jwks),
                "outbound_allow": "127.0.0.1/32",  # the other node, on this machine
            }
            minted = token(
                idp_key, iss=realm, sub=f"steward@{name}", realm_access={"roles": ["kizuna-admin"]}
            )
            admin_headers[port] = f"Bearer {minted}"
        settings[name] = Settings(
            host="127.0.0.1",
            port=port,
            store=f"sqlite:///{tmp_path}/{name}.db",
            participant_id=f"did:web:{name}.example",
            dsp_key_file=str(tmp_path / f"{name}.pem"),
            dsp_trusted_participants=str(trusted),
            **auth,
        )

    def as_admin(outgoing: httpx.Request) -> None:
        bearer = admin_headers.get(outgoing.url.port or 0)
        if bearer is not None and "authorization" not in outgoing.headers:
            outgoing.headers["Authorization"] = bearer

    with (
        node(settings["tuebingen"]) as provider,
        node(settings["riken"]) as consumer,
        httpx.Client(timeout=10, event_hooks={"request": [as_admin]}) as http,
    ):
        yield TwoNodes(provider, consumer, http, secured=request.param == "oidc")


def test_research_data_exchange(two_nodes: TwoNodes) -> None:
    provider, consumer, http, get_json = (
        two_nodes.provider,
        two_nodes.consumer,
        two_nodes.http,
        two_nodes.get_json,
    )
    # Tübingen holds real NGSI-LD data: two pseudonymised cohort records and one it does not share.
    for i in (1, 2):
        r = http.post(
            f"{provider}/ngsi-ld/v1/entities",
            json={
                "id": f"urn:ngsi-ld:CohortRecord:{i}",
                "type": "CohortRecord",
                "ageBand": {"type": "Property", "value": "40-49"},
                "biomarker": {"type": "Property", "value": 1.5 * i},
                "pseudonym": {"type": "Property", "value": f"P-{i}"},
            },
        )
        assert r.status_code == 201
    http.post(
        f"{provider}/ngsi-ld/v1/entities",
        json={"id": "urn:ngsi-ld:Staff:1", "type": "Staff", "name": {"type": "Property", "value": "x"}},
    )
    r = http.post(
        f"{provider}/management/v1/datasets",
        json={
            "id": "urn:tuebingen:dataset:cohort",
            "title": "Pseudonymised cohort",
            "entityTypes": ["CohortRecord"],
            "attributes": ["ageBand", "biomarker"],
            "policy": POLICY,
        },
    )
    assert r.status_code == 201, r.text
    published = r.json()["offers"][0]

    # Direct DSP calls without a signed token are refused.
    unsigned = http.post(
        f"{provider}/dsp/catalog/request",
        json={
            "@context": ["https://w3id.org/dspace/2025/1/context.jsonld"],
            "@type": "CatalogRequestMessage",
        },
    )
    assert unsigned.status_code == 401

    # RIKEN reads the catalog through its own node (signed request).
    catalog = http.post(
        f"{consumer}/management/v1/catalog/request", json={"counterPartyAddress": f"{provider}/dsp"}
    ).json()
    assert catalog["participantId"] == "did:web:tuebingen.example"
    dataset = catalog["dataset"][0]
    offer = {**dataset["hasPolicy"][0], "target": dataset["@id"]}
    assert offer["@id"] == published["@id"]

    # Negotiation: auto-agreed by Tübingen, auto-verified by RIKEN, finalized.
    pid = start_negotiation(http, consumer, provider, offer, "did:web:tuebingen.example")
    state = wait_for(
        lambda: get_json(f"{consumer}/management/v1/negotiations/{pid}"),
        lambda n: n["state"] in ("FINALIZED", "TERMINATED"),
    )
    assert state["state"] == "FINALIZED", state
    agreement_id = state["agreementId"]
    provider_agreement = next(
        a for a in get_json(f"{provider}/management/v1/agreements") if a["id"] == agreement_id
    )
    assert provider_agreement["agreement"]["target"] == "urn:tuebingen:dataset:cohort"
    assert provider_agreement["agreement"]["assignee"] == "did:web:riken.example"
    assert "timestamp" in provider_agreement["agreement"]

    # The provider's audit trail: the unsigned request refused, the agreement made and finalized.
    trail = wait_for(
        lambda: get_json(f"{provider}/management/v1/audit"),
        lambda events: any(e["operation"] == "agreement.finalized" for e in events),
    )
    assert ("", "POST /dsp/catalog/request", "denied") in [
        (e["subject"], e["operation"], e["outcome"]) for e in trail
    ]
    # The agreement is a permission of the consumer's participant id, the connector's to end.
    perms = get_json(f"{provider}/ngsi-ld/v1/auth/permissions?action=read")
    from_agreements = [p for p in perms if p.get("agreement")]
    assert len(from_agreements) == 1, (perms, trail)
    (granted,) = from_agreements
    assert (granted["agreement"], granted["assignee"], granted["action"]) == (
        agreement_id,
        "did:web:riken.example",
        "read",
    )
    assert granted["target"] == {"types": "CohortRecord"}
    assert http.delete(f"{provider}/ngsi-ld/v1/auth/permissions/{granted['id']}").status_code == 403
    agreed = [(e["subject"], e["operation"]) for e in trail if e["target"] == agreement_id]
    assert agreed[0] == ("did:web:riken.example", "agreement.agree")
    assert ("did:web:riken.example", "agreement.finalized") in agreed

    # Pull transfer: the provider starts it and hands over an endpoint and a token.
    r = http.post(
        f"{consumer}/management/v1/transfers",
        json={
            "counterPartyAddress": f"{provider}/dsp",
            "agreementId": agreement_id,
            "format": "HttpData-PULL",
        },
    )
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    transfer = wait_for(
        lambda: get_json(f"{consumer}/management/v1/transfers/{tid}"), lambda t: "tokenHeld" in t
    )
    assert transfer["state"] == "STARTED"
    assert transfer["endpoint"].startswith("http")
    # The token stays in the consumer node, which reads for its users.
    assert "token" not in transfer and all(
        "token" not in t for t in get_json(f"{consumer}/management/v1/transfers")
    )
    data = f"{consumer}/management/v1/transfers/{tid}/data"

    # Research use: only the agreed entities and attributes come back.
    r = http.get(f"{data}/entities", headers={"Kizuna-Purpose": "research"})
    assert r.status_code == 200, r.text
    entities = r.json()
    assert sorted(e["id"] for e in entities) == ["urn:ngsi-ld:CohortRecord:1", "urn:ngsi-ld:CohortRecord:2"]
    assert all("pseudonym" not in e and "biomarker" in e for e in entities)
    assert r.headers["Kizuna-Access-Count"] == "1"

    if two_nodes.secured:  # the consumer's proxy and the provider's NGSI-LD API need credentials
        assert httpx.get(f"{data}/entities", headers={"Kizuna-Purpose": "research"}).status_code == 401
        assert httpx.get(f"{provider}/ngsi-ld/v1/entities?type=CohortRecord").json() == []

    # Outside the policy: a commercial purpose is refused with a clear error, and not counted.
    r = http.get(f"{data}/entities", headers={"Kizuna-Purpose": "marketing"})
    assert r.status_code == 403
    assert "purpose" in r.json()["detail"]
    r = http.get(f"{data}/entities")  # no purpose declared
    assert r.status_code == 403
    for outside in ("..%2F..%2Fagreements", "http:%2F%2F127.0.0.1:9/x"):  # nowhere but below it
        assert http.get(f"{data}/{outside}").status_code == 400
    # A wrong token is refused.
    r = http.get(f"{transfer['endpoint']}/entities", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401

    # Termination: RIKEN ends the transfer; the token stops working; both sides agree on the state.
    r = http.post(f"{consumer}/management/v1/transfers/{tid}/terminate")
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "TERMINATED"
    provider_transfers = get_json(f"{provider}/management/v1/transfers")
    assert [t["state"] for t in provider_transfers] == ["TERMINATED"]
    r = http.get(f"{data}/entities", headers={"Kizuna-Purpose": "research"})
    assert r.status_code == 409
    # Terminated processes stay readable.
    assert get_json(f"{consumer}/management/v1/transfers/{tid}")["state"] == "TERMINATED"


def test_changed_offer_is_terminated(two_nodes: TwoNodes) -> None:
    provider, consumer, http, get_json = (
        two_nodes.provider,
        two_nodes.consumer,
        two_nodes.http,
        two_nodes.get_json,
    )
    r = http.post(
        f"{provider}/management/v1/datasets",
        json={"id": "urn:ds:x", "entityTypes": ["CohortRecord"], "policy": POLICY},
    )
    offer = {**r.json()["offers"][0], "target": "urn:ds:x"}
    offer["permission"] = [{"action": "use"}]  # drops every constraint
    pid = start_negotiation(http, consumer, provider, offer, "did:web:tuebingen.example")
    state = wait_for(
        lambda: get_json(f"{consumer}/management/v1/negotiations/{pid}"), lambda n: n["state"] == "TERMINATED"
    )
    assert state["state"] == "TERMINATED"
