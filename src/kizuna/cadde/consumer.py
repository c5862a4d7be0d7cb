"""The node as a CADDE consumer: it searches a CADDE provider connector's catalog and fetches a
resource through it for its administrators, every connection through the outbound gate.

Against a Kizuna provider the contract is a DSP agreement: the node sends the token it keeps
for a started pull transfer (which never leaves the node), and signs its catalog search for the
provider's DSP address so that the provider lists what it offers under contracts too. Against
another CADDE provider the caller brings the token CADDE's authentication gave it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson

from kizuna.cadde.provider import API_NGSI
from kizuna.dataspace.core import Node, Pulled
from kizuna.dataspace.transfer import TransferService, held_token
from kizuna.errors import BadRequestData, CounterpartyFailed
from kizuna.outbound import UNREACHABLE, summary

# What of a provider's answer to a data exchange is passed on to the node's caller.
PASSED_ON = (
    "content-type",
    "content-disposition",
    "kizuna-access-count",
    "x-cadde-provenance",
    "x-cadde-provenance-management-service-url",
    "x-cadde-contract-id",
    "x-cadde-contract-type",
    "x-cadde-contract-management-service-url",
)
DETAIL_KEPT = 500  # characters of a provider's error detail told to the caller


class CaddeConsumer:
    def __init__(self, node: Node, transfers: TransferService) -> None:
        self.node = node
        self.transfers = transfers

    async def search(
        self, address: str, params: dict[str, str], *, sign_for: str | None, token: str | None
    ) -> Any:
        """The provider connector's detail search (a CKAN package_search envelope)."""
        if sign_for is not None and token is not None:
            raise BadRequestData(
                "Give either a token (a CADDE provider) or counterPartyAddress (a Kizuna one)"
            )
        url = _join(address, "catalog") + (f"?{urlencode(params)}" if params else "")
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if sign_for is not None:
            await self.node.messenger.vet(sign_for, "counterPartyAddress")
            parts = urlsplit(url)
            headers |= self.node.messenger.auth.sign(
                "GET", sign_for, parts.path + (f"?{parts.query}" if parts.query else ""), b""
            )
        answer = await self._get(address, url, headers)
        try:
            body = orjson.loads(answer.content)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("result"), dict):
            raise CounterpartyFailed(f"{address} did not answer a CKAN package_search")
        return body

    async def fetch(
        self,
        address: str,
        resource_url: str,
        *,
        api_type: str,
        options: dict[str, str],
        token: str | None,
        transfer_id: str | None,
    ) -> Pulled:
        """One resource through the provider connector, with the caller's contract token (or the
        one this node keeps for ``transfer_id``); the provider's answer as it gave it."""
        if token is not None and transfer_id is not None:
            raise BadRequestData("Give either a token or a transferId, not both")
        if transfer_id is not None:
            token = held_token(await self.transfers.get(transfer_id), self.node.sealer)
        if any("," in k + v or ":" in k for k, v in options.items()):
            raise BadRequestData("x-cadde-options cannot carry a comma, nor a colon in a name")
        headers = {"x-cadde-resource-url": resource_url, "x-cadde-resource-api-type": api_type or API_NGSI}
        if options:
            headers["x-cadde-options"] = ",".join(f"{k}:{v}" for k, v in options.items())
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return await self._get(address, _join(address, "file"), headers)

    async def _get(self, address: str, url: str, headers: dict[str, str]) -> Pulled:
        await self.node.messenger.vet(address, "address")
        try:
            async with self.node.messenger.client() as client:
                response = await client.get(url, headers=headers)
        except UNREACHABLE as error:
            raise CounterpartyFailed(f"GET {url} failed: {summary(error)}") from error
        if response.status_code >= 300:
            raise CounterpartyFailed(
                f"{address} answered {response.status_code}: {_detail(response.content)}",
                status=response.status_code if 400 <= response.status_code < 500 else 502,
            )
        kept = {k: v for k, v in response.headers.items() if k.lower() in PASSED_ON}
        return Pulled(response.status_code, response.content, kept)


def _join(address: str, path: str) -> str:
    return address.rstrip("/") + "/" + path


def _detail(content: bytes) -> str:
    """The ``detail`` of a CADDE error answer, shortened: what the provider refused, in its words."""
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return "(no CADDE error)"
    detail = body.get("detail") if isinstance(body, dict) else None
    return detail[:DETAIL_KEPT] if isinstance(detail, str) else "(no CADDE error)"
