"""What the dataspace services share: persistence on the store's generic documents (versioned,
with per-process locks kept in the store so that several workers can share it), the outgoing
messenger, and follow-up actions run after a response is sent."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from kizuna import paths
from kizuna.access.audit import AuditTrail
from kizuna.dataspace import messages
from kizuna.dataspace.auth import CLOCK_SKEW, Directory, ParticipantAuth
from kizuna.dataspace.sealing import Sealer
from kizuna.errors import BadRequestData, Conflict, CounterpartyError
from kizuna.outbound import UNREACHABLE, OutboundGate, summary
from kizuna.store import DEFAULT_TENANT, Store

log = logging.getLogger("kizuna.dataspace")

# Document kinds on the store's generic document methods (one tenant: the node's own).
DATASET = "dsp.dataset"
NEGOTIATION = "dsp.negotiation"
AGREEMENT = "dsp.agreement"
TRANSFER = "dsp.transfer"
TOKEN = "dsp.token"
USED_TOKEN = "dsp.used-token"  # ids of one-time request tokens already presented
LOCK = "dsp.lock"
TENANT = DEFAULT_TENANT

PROVIDER = "provider"
CONSUMER = "consumer"
OTHER = {PROVIDER: CONSUMER, CONSUMER: PROVIDER}

FollowUp = Callable[[], Awaitable[None]]
PRUNE_INTERVAL = 60.0  # seconds between sweeps of expired one-time token ids


def new_record(
    role: str,
    *,
    provider_pid: str | None,
    consumer_pid: str,
    counterparty_id: str | None,
    address: str,
    **members: Any,
) -> dict[str, Any]:
    """A negotiation's or transfer's record before its first state: keyed by this node's own
    pid, with ``members`` particular to the kind of process."""
    now = messages.now_iso()
    return {
        "id": provider_pid if role == PROVIDER else consumer_pid,
        "role": role,
        "state": None,
        "providerPid": provider_pid,
        "consumerPid": consumer_pid,
        "counterPartyId": counterparty_id,
        "counterPartyAddress": address,
        **members,
        "createdAt": now,
        "modifiedAt": now,
        "history": [],
    }


def apply_transition(record: dict[str, Any], new: str, message: str, by: str) -> None:
    """Move ``record`` to state ``new``, keeping in its history which message (sent ``by`` whom)
    moved it: the audit trail a data steward reads back."""
    now = messages.now_iso()
    record["history"].append({"from": record["state"], "to": new, "message": message, "by": by, "at": now})
    record["state"] = new
    record["modifiedAt"] = now


class StaleRecord(Conflict):
    """A record changed in the store since it was read (another worker wrote it first)."""


class Busy(Conflict):
    """A process stayed locked by another worker for longer than the node waits."""


class Records:
    """Process records (negotiations, transfers, agreements, ...) as store documents.

    Safe with several workers (processes) on one store: every record carries a ``version`` that
    :meth:`replace` checks and bumps in one compare-and-set (``Store.swap_document``), so a write
    based on a stale read fails instead of overwriting; :meth:`update` retries such a write on a
    fresh read (the access counter); and :meth:`lock` is a lease kept *in the store* (a
    ``dsp.lock`` document taken by insert or compare-and-set), so messages for one process are
    applied one at a time across all workers, not only within this one."""

    def __init__(
        self, store: Store, *, lease: float = 30.0, wait: float = 30.0, owner: str | None = None
    ) -> None:
        self.store = store
        self.lease = lease  # seconds a lock holds without being released (a crashed holder's)
        self.wait = wait  # seconds to wait for a lock before giving up (409)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._local: dict[str, asyncio.Lock] = {}
        self._pruned = 0.0

    async def first_use(self, token_id: str, expires: float) -> bool:
        """Record a one-time request token's id in the store, where every worker sees it; False
        if it was recorded before (a replay). Ids are forgotten a while after their token expired:
        an expired token is refused before its id is looked at."""
        now = time.time()
        if now - self._pruned > PRUNE_INTERVAL:
            self._pruned = now
            used, _ = await self.store.list_documents(USED_TOKEN, TENANT)
            for doc in used:
                if doc["expires"] < now - CLOCK_SKEW:
                    await self.store.delete_document(USED_TOKEN, TENANT, doc["id"])
        return await self.store.insert_document(USED_TOKEN, TENANT, {"id": token_id, "expires": expires})

    @asynccontextmanager
    async def lock(self, key: str) -> AsyncIterator[None]:
        local = self._local.get(key)
        if local is None:
            local = self._local[key] = asyncio.Lock()
        try:
            async with local:  # this worker's tasks queue here, without polling the store
                token = await self._acquire(key)
                try:
                    yield
                finally:
                    await self._release(key, token)
        finally:
            if not local.locked():
                self._local.pop(key, None)

    async def _acquire(self, key: str) -> str:
        token = uuid.uuid4().hex
        deadline = time.monotonic() + self.wait
        delay = 0.005
        while True:
            now = time.time()
            lease = {"id": key, "owner": self.owner, "token": token, "until": now + self.lease}
            if await self.store.insert_document(LOCK, TENANT, {**lease, "version": 1}):
                return token
            held = await self.store.get_document(LOCK, TENANT, key)
            if held is not None and (held.get("token") is None or held.get("until", 0) < now):
                version = held.get("version", 0)
                if await self.store.swap_document(LOCK, TENANT, {**lease, "version": version + 1}, version):
                    return token
            if time.monotonic() > deadline:
                raise Busy(f"{key} is being changed by another request; try again")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)

    async def _release(self, key: str, token: str) -> None:
        held = await self.store.get_document(LOCK, TENANT, key)
        if held is not None and held.get("token") == token:
            version = held.get("version", 0)
            free = {"id": key, "owner": None, "token": None, "until": 0, "version": version + 1}
            await self.store.swap_document(LOCK, TENANT, free, version)

    async def get(self, kind: str, doc_id: str) -> dict[str, Any] | None:
        return await self.store.get_document(kind, TENANT, doc_id)

    async def insert(self, kind: str, doc: dict[str, Any]) -> bool:
        return await self.store.insert_document(kind, TENANT, doc)

    async def replace(self, kind: str, doc: dict[str, Any]) -> None:
        """Write a record read before, if nobody wrote it since (its ``version`` is bumped)."""
        version = doc.get("version", 0)
        doc["version"] = version + 1
        if not await self.store.swap_document(kind, TENANT, doc, version):
            doc["version"] = version
            if await self.get(kind, doc["id"]) is None:
                raise KeyError(doc["id"])
            raise StaleRecord(f"{doc['id']} was changed concurrently; try again")

    async def update(
        self, kind: str, doc_id: str, change: Callable[[dict[str, Any]], None], attempts: int = 100
    ) -> dict[str, Any]:
        """Read, ``change`` (which may raise to refuse) and write back, atomically: on a
        concurrent write the change is applied again to a fresh read. The record as written."""
        for _ in range(attempts):
            doc = await self.get(kind, doc_id)
            if doc is None:
                raise KeyError(doc_id)
            change(doc)
            try:
                await self.replace(kind, doc)
            except StaleRecord:
                await asyncio.sleep(0.001)
                continue
            return doc
        raise Busy(f"{doc_id} is being changed by too many requests at once; try again")

    async def delete(self, kind: str, doc_id: str) -> bool:
        return await self.store.delete_document(kind, TENANT, doc_id)

    async def list(
        self, kind: str, limit: int | None = None, offset: int = 0
    ) -> tuple[list[dict[str, Any]], int]:
        return await self.store.list_documents(kind, TENANT, limit, offset)


@dataclass(slots=True)
class Messenger:
    """Sends DSP messages (validated against the schemas, signed) to counterparties, through
    the outbound gate (``client_factory`` replaces the gated client in tests)."""

    auth: ParticipantAuth
    gate: OutboundGate = field(default_factory=OutboundGate)
    client_factory: Callable[[], httpx.AsyncClient] | None = None
    timeout: float = 10.0

    def client(self) -> httpx.AsyncClient:
        if self.client_factory is not None:
            return self.client_factory()
        return self.gate.client(timeout=self.timeout)

    async def vet(self, address: str, what: str) -> None:
        """Refuse (400) a counterparty or callback address the node would never send to."""
        if not address.lower().startswith(("http://", "https://")):
            raise BadRequestData(f"{what} {address!r} is not an http(s) URL")
        await self.gate.vet(address, what)

    async def post(self, base: str, path: str, body: dict[str, Any]) -> Any:
        messages.check(body, body["@type"])
        return await self._call("POST", base, path, orjson.dumps(body))

    async def get(self, base: str, path: str) -> Any:
        return await self._call("GET", base, path, b"")

    async def _call(self, method: str, base: str, path: str, payload: bytes) -> Any:
        url = join(base, path)
        parts = urlsplit(url)
        signed_path = parts.path + (f"?{parts.query}" if parts.query else "")
        headers = {"Content-Type": "application/json", **self.auth.sign(method, base, signed_path, payload)}
        try:
            async with self.client() as client:
                response = await client.request(method, url, content=payload or None, headers=headers)
        except UNREACHABLE as error:
            raise CounterpartyError(f"{method} {url} failed: {summary(error)}") from error
        body: Any = None
        if response.content:
            try:
                body = response.json()
            except ValueError:
                body = response.text
        if response.status_code >= 300:
            raise CounterpartyError(
                f"{method} {url} answered {response.status_code}", response.status_code, body
            )
        return body


@dataclass(frozen=True, slots=True)
class Pulled:
    """What a provider's data plane answered a pull made for this node's user."""

    status: int
    content: bytes
    headers: dict[str, str]


PASSED_ON = ("content-type", "kizuna-access-count", "ngsild-results-count", "link")


async def pull(
    client_factory: Callable[[], httpx.AsyncClient],
    url: str,
    token: str,
    params: list[tuple[str, str]],
    purpose: str | None,
) -> Pulled:
    """GET from a provider's data plane with the transfer's token: the token never leaves this
    node, which reads on its user's behalf (``/management/v1/transfers/{pid}/data/...``)."""
    headers = {"Authorization": f"Bearer {token}"}
    if purpose is not None:
        headers["Kizuna-Purpose"] = purpose
    try:
        async with client_factory() as client:
            response = await client.get(url, params=params, headers=headers)
    except UNREACHABLE as error:
        raise CounterpartyError(f"GET {url} failed: {summary(error)}") from error
    kept = {k: v for k, v in response.headers.items() if k.lower() in PASSED_ON}
    return Pulled(response.status_code, response.content, kept)


def dsp_base(public_url: str) -> str:
    """The node's DSP address: its callbackAddress, and the audience its tokens must name."""
    return public_url.rstrip("/") + paths.DSP


def join(base: str, path: str) -> str:
    """Callback and counterparty addresses with or without a trailing slash alike."""
    return base.rstrip("/") + "/" + path.lstrip("/")


@dataclass(slots=True)
class Node:
    """The node's own identity and addresses, and the shared machinery."""

    participant_id: str
    public_url: str  # e.g. http://127.0.0.1:1026 (no trailing slash)
    records: Records
    messenger: Messenger
    directory: Directory
    audit: AuditTrail
    sealer: Sealer
    token_lifetime: float = 600.0

    @property
    def dsp_base(self) -> str:
        return dsp_base(self.public_url)

    @property
    def data_endpoint(self) -> str:
        return self.dsp_base + "/data"


async def run_follow_ups(follow_ups: list[FollowUp]) -> None:
    """Automatic next steps, run after the response that triggered them has been sent."""
    for step in follow_ups:
        try:
            await step()
        except Exception:  # an automatic step that fails leaves the process where it was
            log.exception("automatic dataspace step failed")
