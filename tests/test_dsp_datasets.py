"""Datasets beyond the current state of one entity type: over temporal history, restricted by a
geoQ, and pulls narrowed by the consumer's own q (within the agreed data only)."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from dsp_helpers import consumer_token, free_port, get_json, node, start_negotiation, wait_for
from kizuna.config import Settings
from kizuna.dataspace.auth import generate_key_file

TUEBINGEN = {
    "geometry": "Polygon",
    "coordinates": [[[8.9, 48.4], [9.2, 48.4], [9.2, 48.6], [8.9, 48.6], [8.9, 48.4]]],
    "georel": "within",
}
POLICY = {"permission": [{"action": "use"}]}


@pytest.fixture
def nodes(tmp_path: Path):
    settings = [
        Settings(
            host="127.0.0.1",
            port=free_port(),
            store=f"sqlite:///{tmp_path}/{name}.db",
            participant_id=f"did:web:{name}.example",
            dsp_auth="none",
            dsp_key_file=key_file(tmp_path, name),
        )
        for name in ("tuebingen", "riken")
    ]
    with ExitStack() as stack:
        yield [stack.enter_context(node(s)) for s in settings]


def key_file(tmp_path: Path, name: str) -> str:
    path = tmp_path / f"{name}.pem"
    if not path.exists():
        generate_key_file(str(path))
    return str(path)


def pull_access(provider: str, consumer: str, dataset: dict[str, Any], tmp_path: Path) -> dict[str, str]:
    """Publish the dataset, agree on it, start a pull; the bearer header for its data."""
    r = httpx.post(f"{provider}/management/v1/datasets", json={**dataset, "policy": POLICY})
    assert r.status_code == 201, r.text
    offer = {**r.json()["offers"][0], "target": dataset["id"]}
    pid = start_negotiation(httpx, consumer, provider, offer)
    agreed = wait_for(
        lambda: get_json(f"{consumer}/management/v1/negotiations/{pid}"), lambda n: n["state"] == "FINALIZED"
    )
    r = httpx.post(
        f"{consumer}/management/v1/transfers",
        json={
            "counterPartyAddress": f"{provider}/dsp",
            "agreementId": agreed["agreementId"],
            "format": "HttpData-PULL",
        },
    )
    tid = r.json()["id"]
    wait_for(lambda: get_json(f"{consumer}/management/v1/transfers/{tid}"), lambda t: "tokenHeld" in t)
    token = consumer_token(f"sqlite:///{tmp_path}/riken.db", key_file(tmp_path, "riken"), tid)
    return {"Authorization": f"Bearer {token}"}


def station(n: int, lon: float, lat: float, level: float) -> dict[str, Any]:
    return {
        "id": f"urn:ngsi-ld:Station:{n}",
        "type": "Station",
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}},
        "level": {"type": "Property", "value": level},
        "operator": {"type": "Property", "value": f"op-{n}"},
    }


def test_geoq_dataset_and_consumer_q_narrow_but_never_widen(nodes, tmp_path: Path) -> None:
    provider, consumer = nodes
    for entity in (
        station(1, 9.05, 48.52, 3),  # Tübingen, low
        station(2, 9.06, 48.51, 7),  # Tübingen, high
        station(3, 139.7, 35.7, 9),  # Tokyo: outside the dataset's area
    ):
        assert httpx.post(f"{provider}/ngsi-ld/v1/entities", json=entity).status_code == 201
    auth = pull_access(
        provider,
        consumer,
        {
            "id": "urn:ds:stations",
            "entityTypes": ["Station"],
            "attributes": ["level", "location"],
            "geoQ": TUEBINGEN,
        },
        tmp_path,
    )
    data = f"{provider}/dsp/data/entities"

    def ids(**params: str) -> list[str]:
        r = httpx.get(data, headers=auth, params=params)
        assert r.status_code == 200, r.text
        return sorted(e["id"] for e in r.json())

    assert ids() == ["urn:ngsi-ld:Station:1", "urn:ngsi-ld:Station:2"]
    assert ids(q="level>5") == ["urn:ngsi-ld:Station:2"]  # narrowed by the consumer
    assert ids(q="level>8") == []  # Tokyo's station matches the q but is not agreed data
    assert ids(q="level<100|level>0") == ["urn:ngsi-ld:Station:1", "urn:ngsi-ld:Station:2"]
    # Filtering on a withheld attribute would disclose it: refused, and not counted.
    before = int(httpx.get(data, headers=auth).headers["Kizuna-Access-Count"])
    r = httpx.get(data, headers=auth, params={"q": 'operator=="op-1"'})
    assert r.status_code == 400
    assert "operator" in r.json()["detail"]
    assert int(httpx.get(data, headers=auth).headers["Kizuna-Access-Count"]) == before + 1
    r = httpx.get(data, headers=auth, params={"q": "level>>"})
    assert r.status_code == 400
    # The dataset is current state: its temporal endpoint says where to read it.
    r = httpx.get(f"{provider}/dsp/data/temporal/entities", headers=auth)
    assert r.status_code == 400 and "/dsp/data/entities" in r.json()["detail"]


def test_temporal_history_dataset(nodes, tmp_path: Path) -> None:
    provider, consumer = nodes

    def series(values: list[float]) -> list[dict[str, Any]]:
        return [
            {"type": "Property", "value": v, "observedAt": f"2025-03-0{i + 1}T12:00:00Z"}
            for i, v in enumerate(values)
        ]

    def sensor(n: int, lon: float, lat: float, values: list[float]) -> dict[str, Any]:
        return {
            "id": f"urn:ngsi-ld:Sensor:{n}",
            "type": "Sensor",
            "temperature": series(values),
            "serial": series([float(n)] * len(values)),
            # (q and geoQ look at the instances inside the time window a pull asks for)
            "location": [
                {
                    "type": "GeoProperty",
                    "value": {"type": "Point", "coordinates": [lon, lat]},
                    "observedAt": f"2025-03-0{day}T12:00:00Z",
                }
                for day in range(1, len(values) + 1)
            ],
        }

    for entity in (
        sensor(1, 9.05, 48.52, [20, 21, 22]),
        sensor(2, 9.07, 48.5, [30, 31, 32]),
        sensor(3, 139.7, 35.7, [5, 6, 7]),
    ):
        r = httpx.post(f"{provider}/ngsi-ld/v1/temporal/entities", json=entity)
        assert r.status_code == 201, r.text
    auth = pull_access(
        provider,
        consumer,
        {
            "id": "urn:ds:sensor-history",
            "entityTypes": ["Sensor"],
            "attributes": ["temperature"],
            "geoQ": TUEBINGEN,
            "history": True,
        },
        tmp_path,
    )
    data = f"{provider}/dsp/data/temporal/entities"
    r = httpx.get(data, headers=auth)
    assert r.status_code == 200, r.text
    by_id = {e["id"]: e for e in r.json()}
    assert sorted(by_id) == ["urn:ngsi-ld:Sensor:1", "urn:ngsi-ld:Sensor:2"]  # Tokyo's is outside
    history = by_id["urn:ngsi-ld:Sensor:1"]
    assert [i["value"] for i in history["temperature"]] == [20, 21, 22]
    assert "serial" not in history and "location" not in history  # only agreed attributes

    # The consumer narrows in time and by its own q over agreed attributes.
    r = httpx.get(
        data,
        headers=auth,
        params={"timerel": "after", "timeAt": "2025-03-02T00:00:00Z", "q": "temperature>25"},
    )
    assert r.status_code == 200, r.text
    (only,) = r.json()
    assert only["id"] == "urn:ngsi-ld:Sensor:2"
    assert [i["value"] for i in only["temperature"]] == [31, 32]
    r = httpx.get(data, headers=auth, params={"q": "serial==1"})
    assert r.status_code == 400 and "serial" in r.json()["detail"]
    # A history dataset is not read as current state.
    r = httpx.get(f"{provider}/dsp/data/entities", headers=auth)
    assert r.status_code == 400 and "/temporal/entities" in r.json()["detail"]


def test_dataset_definitions_are_checked(nodes) -> None:
    provider, _ = nodes
    base = {"id": "urn:ds:bad", "entityTypes": ["T"], "policy": POLICY}
    for bad in (
        {"geoQ": {"georel": "within"}},
        {"geoQ": {**TUEBINGEN, "georel": "nowhere"}},
        {"history": "yes"},
    ):
        r = httpx.post(f"{provider}/management/v1/datasets", json={**base, **bad})
        assert r.status_code == 400, (bad, r.text)
    r = httpx.post(f"{provider}/management/v1/datasets", json={**base, "geoQ": TUEBINGEN, "history": True})
    assert r.status_code == 201
    assert r.json()["history"] is True and r.json()["geoQ"]["georel"] == "within"


def test_replacing_a_dataset_never_widens_an_agreement(nodes, tmp_path: Path) -> None:
    provider, consumer = nodes
    for entity in (station(1, 9.05, 48.52, 3), {"id": "urn:ngsi-ld:Staff:1", "type": "Staff"}):
        assert httpx.post(f"{provider}/ngsi-ld/v1/entities", json=entity).status_code == 201
    dataset = {"id": "urn:ds:agreed", "entityTypes": ["Station"], "attributes": ["level"]}
    auth = pull_access(provider, consumer, dataset, tmp_path)
    data = f"{provider}/dsp/data/entities"
    assert [e["id"] for e in httpx.get(data, headers=auth).json()] == ["urn:ngsi-ld:Station:1"]
    # The provider deletes the dataset and publishes a wider one under the same id.
    assert httpx.delete(f"{provider}/management/v1/datasets/urn:ds:agreed").status_code == 204
    wider = {"id": "urn:ds:agreed", "entityTypes": ["Station", "Staff"], "policy": POLICY}
    assert httpx.post(f"{provider}/management/v1/datasets", json=wider).status_code == 201
    answered = httpx.get(data, headers=auth)
    assert answered.status_code == 200, answered.text
    assert [(e["id"], sorted(e)) for e in answered.json()] == [
        ("urn:ngsi-ld:Station:1", ["id", "level", "type"])
    ]
