"""CADDE between two nodes on loopback: Kanagawa (provider, ``--cadde all``, ``--auth oidc``)
offers open air-quality data and shelters under a contract; Duisburg (consumer) searches
Kanagawa's provider connector and fetches through it, under a DSP agreement.

Every CADDE answer is checked against tests/data/cadde/provider-connector-v4.schema.json, made
from CADDE's OpenAPI document (its origin is in the file)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ckanapi
import httpx
import jsonschema
import pytest
from starlette.testclient import TestClient

from access_helpers import rsa, token
from dsp_helpers import free_port, node, start_negotiation, wait_for
from kizuna.app import create_app
from kizuna.config import Settings
from kizuna.dataspace.auth import generate_key_file

SCHEMA = json.loads(
    (Path(__file__).parent / "data" / "cadde" / "provider-connector-v4.schema.json").read_text()
)
KANAGAWA, DUISBURG = "did:web:kanagawa.example", "did:web:duisburg.example"
AIR = {
    "id": "urn:kanagawa:ds:air",
    "title": "Air quality of Kanagawa",
    "entityTypes": ["AirQualityObserved"],
    "open": True,
}
SHELTERS = {
    "id": "urn:kanagawa:ds:shelters",
    "title": "Evacuation shelters",
    "entityTypes": ["Shelter"],
    "policy": {
        "permission": [
            {
                "action": "use",
                "constraint": [
                    {"leftOperand": "purpose", "operator": "eq", "rightOperand": "disaster-relief"},
                    {"leftOperand": "count", "operator": "lteq", "rightOperand": "1"},
                ],
            }
        ]
    },
}


def valid(instance: Any, definition: str) -> Any:
    jsonschema.validate(instance, {**SCHEMA, "$ref": f"#/$defs/{definition}"})
    return instance


@dataclass
class Nodes:
    provider: str
    consumer: str
    admin: httpx.Client  # each node's administrator, on either node

    @property
    def cadde(self) -> str:
        return f"{self.provider}/cadde/api/v4"

    def resource(self, entity_type: str) -> str:
        return f"{self.provider}/ngsi-ld/v1/entities?type={entity_type}"


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    tmp = tmp_path_factory.mktemp("cadde")
    keys = {name: generate_key_file(str(tmp / f"{name}.pem")) for name in ("kanagawa", "duisburg")}
    trusted = tmp / "trusted.json"
    trusted.write_text(
        json.dumps(
            {
                KANAGAWA: {"publicKey": keys["kanagawa"], "region": "JP"},
                DUISBURG: {"publicKey": keys["duisburg"], "region": "DE"},
            }
        )
    )
    admins: dict[int, str] = {}
    settings = {}
    for name, cadde in (("kanagawa", "all"), ("duisburg", "off")):
        port = free_port()
        realm, idp = f"https://sso.{name}.example/realms/{name}", rsa(name)
        jwks = tmp / f"{name}-jwks.json"
        jwks.write_text(json.dumps({"keys": [idp.as_dict(private=False)]}))
        minted = token(idp, iss=realm, sub=f"steward@{name}", realm_access={"roles": ["kizuna-admin"]})
        admins[port] = f"Bearer {minted}"
        settings[name] = Settings(
            port=port,
            store=f"sqlite:///{tmp}/{name}.db",
            participant_id=f"did:web:{name}.example",
            dsp_key_file=str(tmp / f"{name}.pem"),
            dsp_trusted_participants=str(trusted),
            auth="oidc",
            oidc_issuer=realm,
            oidc_audience="kizuna",
            oidc_jwks=str(jwks),
            outbound_allow="127.0.0.1/32",
            cadde=cadde,
            cadde_provider_id="kanagawa-cadde-user",
        )

    def as_admin(outgoing: httpx.Request) -> None:
        if outgoing.url.port in admins and "authorization" not in outgoing.headers:
            outgoing.headers["Authorization"] = admins[outgoing.url.port]

    with (
        node(settings["kanagawa"]) as provider,
        node(settings["duisburg"]) as consumer,
        httpx.Client(timeout=10, event_hooks={"request": [as_admin]}) as admin,
    ):
        for i in (1, 2):
            entity = {"id": f"urn:ngsi-ld:AirQualityObserved:{i}", "type": "AirQualityObserved"}
            entity["no2"] = {"type": "Property", "value": 20 + i}
            assert admin.post(f"{provider}/ngsi-ld/v1/entities", json=entity).status_code == 201
        shelter = {
            "id": "urn:ngsi-ld:Shelter:1",
            "type": "Shelter",
            "capacity": {"type": "Property", "value": 300},
        }
        assert admin.post(f"{provider}/ngsi-ld/v1/entities", json=shelter).status_code == 201
        for dataset in (AIR, SHELTERS):
            created = admin.post(f"{provider}/management/v1/datasets", json=dataset)
            assert created.status_code == 201, created.text
        yield Nodes(provider, consumer, admin)


def test_an_open_dataset_is_read_by_anyone_and_only_it_is_listed_to_anyone(nodes: Nodes) -> None:
    with ckanapi.RemoteCKAN(nodes.provider) as portal:
        assert portal.action.package_list() == ["urn-kanagawa-ds-air"]
        with pytest.raises(ckanapi.NotFound):
            portal.action.package_show(id="urn:kanagawa:ds:shelters")
    dcat = httpx.get(f"{nodes.provider}/catalog").text
    assert "urn:kanagawa:ds:air" in dcat and "shelters" not in dcat

    found = valid(httpx.get(f"{nodes.cadde}/catalog", params={"q": "Kanagawa"}).json(), "SearchResponse")
    assert found["result"]["count"] == 1
    (package,) = found["result"]["results"]
    extras = {e["key"]: e["value"] for e in package["extras"]}
    assert extras["caddec_provider_id"] == "kanagawa-cadde-user"
    assert extras["caddec_dataset_id_for_detail"] == package["name"]
    (ngsi,) = [r for r in package["resources"] if "caddec_resource_type" in r]
    assert (ngsi["url"], ngsi["caddec_resource_type"]) == (nodes.resource("AirQualityObserved"), "api/ngsi")
    assert ngsi["caddec_contract_required"] == "notRequired"

    # NGSI-LD, without credentials: the open dataset's entities, none of the closed one's.
    entities = httpx.get(f"{nodes.provider}/ngsi-ld/v1/entities?type=AirQualityObserved").json()
    assert sorted(e["id"] for e in entities) == [
        "urn:ngsi-ld:AirQualityObserved:1",
        "urn:ngsi-ld:AirQualityObserved:2",
    ]
    assert httpx.get(f"{nodes.provider}/ngsi-ld/v1/entities?type=Shelter").json() == []

    # CADDE's data exchange, without a token: the open resource, paged as its URL says.
    headers = {"x-cadde-resource-url": ngsi["url"] + "&limit=1", "x-cadde-resource-api-type": "api/ngsi"}
    fetched = httpx.get(f"{nodes.cadde}/file", headers=headers)
    assert fetched.status_code == 200, fetched.text
    assert len(valid(fetched.json(), "NgsiBody")) == 1
    answer = valid(dict(fetched.headers), "FileHeaders")
    assert answer["x-cadde-contract-id"] == "" and answer["x-cadde-contract-type"] == ""

    closed = {"x-cadde-resource-url": nodes.resource("Shelter"), "x-cadde-resource-api-type": "api/ngsi"}
    refused = httpx.get(f"{nodes.cadde}/file", headers=closed)
    assert refused.status_code == 403
    assert "contract" in valid(refused.json(), "ErrorResponse")["detail"]
    as_file = httpx.get(f"{nodes.cadde}/file", headers={**headers, "x-cadde-resource-api-type": "file/http"})
    assert as_file.status_code == 400 and valid(as_file.json(), "ErrorResponse")["status"] == 400


def test_a_consumer_node_fetches_through_cadde_under_a_contract(nodes: Nodes) -> None:
    admin, consumer = nodes.admin, nodes.consumer
    # Signed for Kanagawa's DSP address, the search lists what Kanagawa offers under contracts too.
    search = {"address": nodes.cadde, "counterPartyAddress": f"{nodes.provider}/dsp"}
    found = admin.post(f"{consumer}/management/v1/cadde/catalog", json=search)
    assert found.status_code == 200, found.text
    packages = {p["name"]: p for p in valid(found.json(), "SearchResponse")["result"]["results"]}
    assert set(packages) == {"urn-kanagawa-ds-air", "urn-kanagawa-ds-shelters"}
    (shelters,) = [
        r for r in packages["urn-kanagawa-ds-shelters"]["resources"] if "caddec_resource_type" in r
    ]
    assert shelters["caddec_contract_required"] == "required"
    unsigned = admin.post(f"{consumer}/management/v1/cadde/catalog", json={"address": nodes.cadde})
    assert [p["name"] for p in unsigned.json()["result"]["results"]] == ["urn-kanagawa-ds-air"]

    fetch = {"address": nodes.cadde, "resourceUrl": shelters["url"], "purpose": "disaster-relief"}
    without = admin.post(f"{consumer}/management/v1/cadde/fetch", json=fetch)
    assert without.status_code == 403, without.text

    # The contract: a DSP agreement, negotiated through Duisburg's node, and a pull transfer.
    catalog = admin.post(
        f"{consumer}/management/v1/catalog/request", json={"counterPartyAddress": f"{nodes.provider}/dsp"}
    ).json()
    (dataset,) = [d for d in catalog["dataset"] if d["@id"] == SHELTERS["id"]]
    offer = {**dataset["hasPolicy"][0], "target": dataset["@id"]}
    pid = start_negotiation(admin, consumer, nodes.provider, offer, KANAGAWA)
    negotiation = wait_for(
        lambda: admin.get(f"{consumer}/management/v1/negotiations/{pid}").json(),
        lambda n: n["state"] in ("FINALIZED", "TERMINATED"),
    )
    assert negotiation["state"] == "FINALIZED", negotiation
    transfer = admin.post(
        f"{consumer}/management/v1/transfers",
        json={
            "counterPartyAddress": f"{nodes.provider}/dsp",
            "agreementId": negotiation["agreementId"],
            "format": "HttpData-PULL",
        },
    )
    assert transfer.status_code == 201, transfer.text
    tid = transfer.json()["id"]
    wait_for(
        lambda: admin.get(f"{consumer}/management/v1/transfers/{tid}").json(), lambda t: "tokenHeld" in t
    )

    fetched = admin.post(f"{consumer}/management/v1/cadde/fetch", json={**fetch, "transferId": tid})
    assert fetched.status_code == 200, fetched.text
    assert [e["id"] for e in valid(fetched.json(), "NgsiBody")] == ["urn:ngsi-ld:Shelter:1"]
    answer = valid(dict(fetched.headers), "FileHeaders")
    assert answer["x-cadde-contract-id"] == negotiation["agreementId"]
    assert answer["x-cadde-contract-management-service-url"].startswith(f"{nodes.provider}/dsp/negotiations/")
    assert answer["kizuna-access-count"] == "1"

    # The agreement allows one access: the next fetch is refused, and says why.
    again = admin.post(f"{consumer}/management/v1/cadde/fetch", json={**fetch, "transferId": tid})
    assert again.status_code == 403 and "count" in again.json()["detail"]
    other_purpose = admin.post(
        f"{consumer}/management/v1/cadde/fetch", json={**fetch, "transferId": tid, "purpose": "marketing"}
    )
    assert other_purpose.status_code == 403


def test_without_cadde_no_cadde_route_is_served(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(store=f"sqlite:///{tmp_path}/k.db"))) as client:
        assert client.get("/cadde/api/v4/catalog").status_code == 404
        assert client.get("/cadde/api/v4/file").status_code == 404


def test_cadde_open_serves_open_datasets_only_even_to_participants(tmp_path: Path) -> None:
    """With ``--dsp-auth none`` the DSP catalog answers anyone, so CKAN lists both datasets; CADDE
    under ``--cadde open`` lists and serves the open one only."""
    settings = Settings(store=f"sqlite:///{tmp_path}/k.db", dsp_auth="none", cadde="open")
    with TestClient(create_app(settings)) as client:
        for dataset in (AIR, SHELTERS):
            assert client.post("/management/v1/datasets", json=dataset).status_code == 201
        assert len(client.get("/api/3/action/package_list").json()["result"]) == 2
        found = valid(client.get("/cadde/api/v4/catalog").json(), "SearchResponse")
        assert [p["name"] for p in found["result"]["results"]] == ["urn-kanagawa-ds-air"]
        shelters = f"{settings.public_base_url}/ngsi-ld/v1/entities?type=Shelter"
        headers = {"x-cadde-resource-url": shelters, "x-cadde-resource-api-type": "api/ngsi"}
        assert (
            valid(client.get("/cadde/api/v4/file", headers=headers).json(), "ErrorResponse")["status"] == 404
        )
        with_token = client.get("/cadde/api/v4/file", headers={**headers, "Authorization": "Bearer x"})
        assert with_token.status_code == 403 and "--cadde open" in with_token.json()["detail"]
