"""What the dataspace services share: persistence on the store's generic documents, per-process
locks, the outgoing messenger, and follow-up actions run after a response is sent."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from kizuna.dataspace import messages
from kizuna.dataspace.auth import Directory, ParticipantAuth
from kizuna.store import DEFAULT_TENANT, Store

log = logging.getLogger("kizuna.dataspace")

# Document kinds on the store's generic document methods (one tenant: the node's own).
DATASET = "dsp.dataset"
NEGOTIATION = "dsp.negotiation"
AGREEMENT = "dsp.agreement"
TRANSFER = "dsp.transfer"
TOKEN = "dsp.token"
TENANT = DEFAULT_TENANT

PROVIDER = "provider"
CONSUMER = "consumer"
OTHER = {PROVIDER: CONSUMER, CONSUMER: PROVIDER}

FollowUp = Callable[[], Awaitable[None]]


class Records:
    """Process records (negotiations, transfers, agreements, ...) as store documents, and one lock
    per process id so that messages for one process are applied one at a time in this process."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def get(self, kind: str, doc_id: str) -> dict[str, Any] | None:
        return await self.store.get_document(kind, TENANT, doc_id)

    async def insert(self, kind: str, doc: dict[str, Any]) -> bool:
        return await self.store.insert_document(kind, TENANT, doc)

    async def replace(self, kind: str, doc: dict[str, Any]) -> None:
        if not await self.store.replace_document(kind, TENANT, doc):
            raise KeyError(doc["id"])

    async def delete(self, kind: str, doc_id: str) -> bool:
        return await self.store.delete_document(kind, TENANT, doc_id)

    async def list(
        self, kind: str, limit: int | None = None, offset: int = 0
    ) -> tuple[list[dict[str, Any]], int]:
        return await self.store.list_documents(kind, TENANT, limit, offset)


class CounterpartyError(Exception):
    """The counterparty could not be reached or refused a message."""

    def __init__(self, detail: str, status: int | None = None, body: Any = None) -> None:
        super().__init__(detail)
        self.status = status
        self.body = body


@dataclass(slots=True)
class Messenger:
    """Sends DSP messages (validated against the schemas, signed) to counterparties."""

    auth: ParticipantAuth
    client_factory: Callable[[], httpx.AsyncClient] = field(
        default=lambda: httpx.AsyncClient(timeout=10.0, follow_redirects=False)
    )

    async def post(self, base: str, path: str, body: dict[str, Any]) -> Any:
        messages.check(body, body["@type"])
        return await self._call("POST", join(base, path), orjson.dumps(body))

    async def get(self, base: str, path: str) -> Any:
        return await self._call("GET", join(base, path), b"")

    async def _call(self, method: str, url: str, payload: bytes) -> Any:
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        headers = {"Content-Type": "application/json", **self.auth.sign(method, path, payload)}
        try:
            async with self.client_factory() as client:
                response = await client.request(method, url, content=payload or None, headers=headers)
        except httpx.HTTPError as error:
            raise CounterpartyError(f"{method} {url} failed: {type(error).__name__}: {error}") from error
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
    token_lifetime: float = 600.0

    @property
    def dsp_base(self) -> str:
        return self.public_url.rstrip("/") + "/dsp"

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
