"""Several workers on one store: two app instances of the provider on one SQLite file (each with
its own store connection, in-process locks and event loop, as two ``--workers`` processes
have). Messages for one process are applied one at a time across both (the lock is a lease in
the store) and every access is counted exactly once (a compare-and-set on the agreement)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dsp_helpers import DSPACE, consumer_token, free_port, get_json, node, start_negotiation, wait_for
from kizuna.config import Settings
from kizuna.dataspace.auth import (
    Directory,
    Participant,
    SignedTokenAuth,
    generate_key_file,
    public_key_text,
)
from kizuna.dataspace.core import USED_TOKEN, Records
from kizuna.errors import Unauthenticated
from kizuna.store import open_store

LIMIT = 10


@pytest.fixture
def provider_twice_and_consumer(tmp_path: Path):
    db = f"sqlite:///{tmp_path}/tuebingen.db"
    ports = [free_port() for _ in range(3)]
    common = {"host": "127.0.0.1", "dsp_auth": "none"}
    a = Settings(port=ports[0], store=db, participant_id="did:web:tuebingen.example", **common)
    # The second instance announces the first one's address (as workers behind one port do).
    b = Settings(
        port=ports[1],
        store=db,
        participant_id="did:web:tuebingen.example",
        public_url=f"http://127.0.0.1:{ports[0]}",
        **common,
    )
    generate_key_file(str(tmp_path / "riken.pem"))
    c = Settings(
        port=ports[2],
        store=f"sqlite:///{tmp_path}/riken.db",
        participant_id="did:web:riken.example",
        dsp_key_file=str(tmp_path / "riken.pem"),
        **common,
    )
    with ExitStack() as stack:
        yield [stack.enter_context(node(s)) for s in (a, b, c)]


def started_pull(provider: str, consumer: str) -> tuple[str, dict[str, Any]]:
    r = httpx.post(
        f"{provider}/ngsi-ld/v1/entities",
        json={
            "id": "urn:ngsi-ld:CohortRecord:1",
            "type": "CohortRecord",
            "biomarker": {"type": "Property", "value": 1},
        },
    )
    assert r.status_code == 201, r.text
    r = httpx.post(
        f"{provider}/management/v1/datasets",
        json={
            "id": "urn:ds:cohort",
            "entityTypes": ["CohortRecord"],
            "policy": {
                "permission": [
                    {
                        "action": "use",
                        "constraint": [
                            {"leftOperand": "count", "operator": "lteq", "rightOperand": str(LIMIT)}
                        ],
                    }
                ]
            },
        },
    )
    assert r.status_code == 201, r.text
    offer = {**r.json()["offers"][0], "target": "urn:ds:cohort"}
    pid = start_negotiation(httpx, consumer, provider, offer)
    negotiation = wait_for(
        lambda: get_json(f"{consumer}/management/v1/negotiations/{pid}"), lambda n: n["state"] == "FINALIZED"
    )
    r = httpx.post(
        f"{consumer}/management/v1/transfers",
        json={
            "counterPartyAddress": f"{provider}/dsp",
            "agreementId": negotiation["agreementId"],
            "format": "HttpData-PULL",
        },
    )
    tid = r.json()["id"]
    transfer = wait_for(
        lambda: get_json(f"{consumer}/management/v1/transfers/{tid}"), lambda t: "tokenHeld" in t
    )
    return negotiation["agreementId"], transfer


def test_accesses_through_two_workers_are_counted_exactly_once(
    provider_twice_and_consumer, tmp_path: Path
) -> None:
    a, b, consumer = provider_twice_and_consumer
    agreement_id, transfer = started_pull(a, consumer)
    token = consumer_token(f"sqlite:///{tmp_path}/riken.db", str(tmp_path / "riken.pem"), transfer["id"])
    auth = {"Authorization": f"Bearer {token}"}

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as client:
            calls = [client.get(f"{(a, b)[i % 2]}/dsp/data/entities", headers=auth) for i in range(2 * LIMIT)]
            return [r.status_code for r in await asyncio.gather(*calls)]

    statuses = asyncio.run(burst())
    assert statuses.count(200) == LIMIT, statuses
    assert statuses.count(403) == LIMIT, statuses
    for instance in (a, b):
        assert get_json(f"{instance}/management/v1/agreements/{agreement_id}")["accessCount"] == LIMIT


def test_racing_messages_for_one_transfer_are_applied_one_at_a_time(provider_twice_and_consumer) -> None:
    a, b, consumer = provider_twice_and_consumer
    started_pull(a, consumer)
    (record,) = get_json(f"{a}/management/v1/transfers")
    pids = {"providerPid": record["providerPid"], "consumerPid": record["consumerPid"]}
    complete = {"@context": [DSPACE], "@type": "TransferCompletionMessage", **pids}
    terminate = {"@context": [DSPACE], "@type": "TransferTerminationMessage", "code": "x", **pids}

    async def race() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            base = f"/dsp/transfers/{record['providerPid']}"
            return list(
                await asyncio.gather(
                    client.post(f"{a}{base}/completion", json=complete),
                    client.post(f"{b}{base}/termination", json=terminate),
                )
            )

    answers = asyncio.run(race())
    codes = sorted(r.status_code for r in answers)
    assert codes == [200, 400], [(r.status_code, r.text) for r in answers]
    loser = next(r for r in answers if r.status_code == 400).json()
    assert loser["@type"] == "TransferError"
    winner = next(r for r in answers if r.status_code == 200).json()
    final = get_json(f"{b}/management/v1/transfers/{record['id']}")
    assert final["state"] == winner["state"] in ("COMPLETED", "TERMINATED")
    # One transition out of STARTED, whichever worker applied it: nothing applied twice or lost.
    (stored,) = get_json(f"{a}/management/v1/transfers")
    assert stored["state"] == final["state"]


async def test_the_process_lock_excludes_other_workers_and_survives_a_crashed_holder(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    stores = [open_store(url), open_store(url)]
    for s in stores:
        await s.open()
    try:
        one, two = Records(stores[0]), Records(stores[1])
        await one.insert("k", {"id": "n", "value": 0})
        inside: list[str] = []

        async def bump(records: Records, name: str) -> None:
            async with records.lock("n"):
                inside.append(name)
                assert len(inside) == 1, inside  # nobody else in the critical section
                doc = await records.get("k", "n")
                await asyncio.sleep(0.01)  # a read-modify-write that would lose updates unlocked
                doc["value"] += 1
                await records.replace("k", doc)
                inside.remove(name)

        await asyncio.gather(*(bump((one, two)[i % 2], f"w{i}") for i in range(20)))
        assert (await one.get("k", "n"))["value"] == 20

        # A worker that died holding the lock: the lease runs out and another takes over.
        dead = Records(stores[0], lease=0.2)
        holder = dead.lock("m")
        await holder.__aenter__()  # never released
        waiting = Records(stores[1], wait=5.0)
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with waiting.lock("m"):
            assert loop.time() - started >= 0.1
        # A replace based on a stale read is refused instead of overwriting.
        stale = await one.get("k", "n")
        fresh = await two.get("k", "n")
        fresh["value"] = 99
        await two.replace("k", fresh)
        stale["value"] = -1
        with pytest.raises(Exception, match="changed concurrently"):
            await one.replace("k", stale)
        assert (await one.get("k", "n"))["value"] == 99
    finally:
        for s in stores:
            await s.close()


def reader(body: bytes) -> Callable[[], Awaitable[bytes]]:
    async def read() -> bytes:
        return body

    return read


TUEBINGEN = "https://tuebingen.example/dsp"
RIKEN = "https://riken.example/dsp"


async def test_a_token_signed_for_one_counterparty_is_refused_by_another(any_store_url: str) -> None:
    """The token names its audience (the DSP address it was signed for): replayed to another
    node, which trusts the same sender, it is refused before its id is even spent."""
    store = open_store(any_store_url)
    await store.open()
    try:
        riken = Ed25519PrivateKey.generate()
        directory = Directory(
            {"did:web:riken.example": Participant("did:web:riken.example", public_key=public_key_text(riken))}
        )
        sender = SignedTokenAuth("did:web:riken.example", riken, Directory(), Records(store).first_use, RIKEN)
        body = b"{}"
        signed = sender.sign("POST", TUEBINGEN, "/dsp/catalog/request", body)
        headers = {k.lower(): v for k, v in signed.items()}
        other = SignedTokenAuth(
            "did:web:other.example",
            Ed25519PrivateKey.generate(),
            directory,
            Records(store).first_use,
            "https://other.example/dsp",
        )
        with pytest.raises(Unauthenticated, match="audience"):
            await other.identify("POST", "/dsp/catalog/request", headers, reader(body))
        meant = SignedTokenAuth(
            "did:web:tuebingen.example",
            Ed25519PrivateKey.generate(),
            directory,
            Records(store).first_use,
            "HTTPS://Tuebingen.example:443/dsp/",
        )
        assert await meant.identify("POST", "/dsp/catalog/request", headers, reader(body)) == (
            "did:web:riken.example",
            body,
        )
    finally:
        await store.close()


async def test_a_signed_request_is_accepted_once_whichever_worker_sees_it(any_store_url: str) -> None:
    """A captured request token replayed to another worker (or the same one) is refused; ids of
    tokens long expired are swept from the store."""
    stores = [open_store(any_store_url), open_store(any_store_url)]
    for s in stores:
        await s.open()
    try:
        riken = Ed25519PrivateKey.generate()
        directory = Directory(
            {"did:web:riken.example": Participant("did:web:riken.example", public_key=public_key_text(riken))}
        )
        workers = [
            SignedTokenAuth(
                "did:web:tuebingen.example",
                Ed25519PrivateKey.generate(),
                directory,
                Records(s).first_use,
                TUEBINGEN,
            )
            for s in stores
        ]
        sender = SignedTokenAuth(
            "did:web:riken.example", riken, Directory(), Records(stores[0]).first_use, RIKEN
        )
        body = b'{"@type": "ContractRequestMessage"}'
        signed = sender.sign("POST", TUEBINGEN + "/", "/dsp/negotiations/request", body)
        headers = {k.lower(): v for k, v in signed.items()}
        assert await workers[0].identify("POST", "/dsp/negotiations/request", headers, reader(body)) == (
            "did:web:riken.example",
            body,
        )
        for worker in workers:
            with pytest.raises(Unauthenticated, match="replay"):
                await worker.identify("POST", "/dsp/negotiations/request", headers, reader(body))

        records = Records(stores[1])
        await records.first_use("urn:old", expires=time.time() - 3600)
        records._pruned = 0.0  # the next use sweeps
        assert await records.first_use("urn:new", expires=time.time() + 60)
        used, _ = await stores[0].list_documents(USED_TOKEN, "")
        assert "urn:old" not in {d["id"] for d in used} and "urn:new" in {d["id"] for d in used}
    finally:
        for s in stores:
            await s.close()
