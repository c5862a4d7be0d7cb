"""What Kizuna's own clients of a node share (the simulator, ``kizuna import`` and ``export``):
where the node is and who asks, and a POST that rides out a busy node.

They use only the public API, as any other client would; 429 and 503 mean "later", so they are
retried with back-off (``Retry-After`` if the node gives one), as are lost connections.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx

LD = "application/ld+json"


class NodeError(Exception):
    """The node cannot be reached, or keeps refusing: the command stops with this message."""


@dataclass(frozen=True, slots=True)
class Target:
    url: str
    tenant: str | None = None
    api_key: str | None = None
    token: str | None = None
    batch_size: int = 1000  # the node's --max-batch-entities, or less

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": LD}
        if self.tenant:
            headers["NGSILD-Tenant"] = self.tenant
        if self.api_key:
            headers["X-API-Key"] = self.api_key
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers=self.headers(), timeout=60.0)


async def check(client: httpx.AsyncClient, target: Target) -> None:
    """Fail at once, with a message saying so, when the node is not there."""
    try:
        answer = await client.get("/health", timeout=10.0)
    except httpx.HTTPError as error:
        raise NodeError(f"cannot reach the node at {target.url}: {error}") from None
    if answer.status_code != 200:
        raise NodeError(f"{target.url}/health answered {answer.status_code}")


async def post(client: httpx.AsyncClient, path: str, body: bytes, content_type: str = LD) -> httpx.Response:
    """POST, retrying 429/503 and lost connections with back-off (Retry-After if given)."""
    wait = 0.25
    for _ in range(10):
        try:
            answer = await client.post(path, content=body, headers={"Content-Type": content_type})
        except httpx.TransportError as error:
            failure: str = f"{type(error).__name__}: {error}"
        else:
            if answer.status_code not in (429, 503):
                return answer
            failure = f"{answer.status_code}"
            wait = max(wait, _retry_after(answer.headers.get("retry-after")))
        await asyncio.sleep(wait)
        wait = min(wait * 2, 10.0)
    raise NodeError(f"the node at {client.base_url} keeps failing: {failure}")


def _retry_after(value: str | None) -> float:
    try:
        return min(float(value), 30.0) if value else 0.0
    except ValueError:
        return 0.0
