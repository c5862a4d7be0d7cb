"""The provider's data plane: short-lived bearer tokens bound to an agreement for HTTP pull, and
NGSI-LD subscriptions to the consumer's endpoint for HTTP push.

Every pull request is checked against the agreement's ODRL policy (:mod:`odrl`) with the facts
of that access (time, counterparty, region, purpose, access count), and answers only the agreed
data, through the NGSI-LD query machinery (:class:`EntityService` and :func:`render_entity`).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kizuna.dataspace import odrl
from kizuna.dataspace.catalog import PULL, PUSH
from kizuna.dataspace.core import AGREEMENT, DATASET, TOKEN, TRANSFER, Node
from kizuna.dataspace.negotiation import FINALIZED
from kizuna.errors import NgsiLdError, ResourceNotFound
from kizuna.jsonld.contexts import ContextRegistry
from kizuna.ngsild import query as ql
from kizuna.ngsild.entities import EntityService
from kizuna.ngsild.render import View, render_entity
from kizuna.ngsild.subscriptions import SubscriptionService
from kizuna.store import EntityQuery

log = logging.getLogger("kizuna.dataspace")
ERROR_BASE = "https://w3id.org/kizuna/errors/"


class DataPlaneError(NgsiLdError):
    @property
    def type_uri(self) -> str:
        return ERROR_BASE + self.type_name


class InvalidToken(DataPlaneError):
    type_name = "InvalidToken"
    title = "The access token is missing, unknown, expired, or for another transfer"
    status = 401


class UsageDenied(DataPlaneError):
    type_name = "UsageDenied"
    title = "The agreement's usage policy does not allow this access"
    status = 403


class TransferNotActive(DataPlaneError):
    type_name = "TransferNotActive"
    title = "The transfer process is not STARTED"
    status = 403


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class DataPlane:
    def __init__(
        self,
        node: Node,
        entities: EntityService,
        contexts: ContextRegistry,
        subscriptions: SubscriptionService | None,
        facts_for: Callable[[str | None], odrl.Facts],
    ) -> None:
        self.node = node
        self.entities = entities
        self.contexts = contexts
        self.subscriptions = subscriptions
        self.facts_for = facts_for

    # -- hooks of the transfer machine ---------------------------------------------------------

    async def open(self, record: dict[str, Any], agreement: dict[str, Any]) -> dict[str, Any] | None:
        if record["format"] == PULL:
            token = secrets.token_urlsafe(32)
            expires = time.time() + self.node.token_lifetime
            await self.node.records.insert(
                TOKEN,
                {
                    "id": token_hash(token),
                    "transferPid": record["id"],
                    "agreementId": agreement["id"],
                    "expiresAt": expires,
                },
            )
            record.setdefault("tokens", []).append(token_hash(token))
            return {
                "@type": "DataAddress",
                "endpointType": "https://w3id.org/idsa/v4.1/HTTP",
                "endpoint": self.node.data_endpoint,
                "endpointProperties": [
                    {"@type": "EndpointProperty", "name": "authorization", "value": token},
                    {"@type": "EndpointProperty", "name": "authType", "value": "bearer"},
                    {
                        "@type": "EndpointProperty",
                        "name": "expiresAt",
                        "value": datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    },
                ],
            }
        if record["format"] == PUSH and self.subscriptions is not None and not record.get("subscriptionId"):
            dataset = await self._dataset(agreement)
            record["subscriptionId"] = await self._subscribe(record, dataset)
        return None

    async def close(self, record: dict[str, Any]) -> None:
        async with self.node.records.lock(record["id"]):
            current = await self.node.records.get(TRANSFER, record["id"]) or record
            for digest in current.get("tokens", []):
                await self.node.records.delete(TOKEN, digest)
            sub_id = current.pop("subscriptionId", None)
            if current.get("tokens") or sub_id:
                current["tokens"] = []
                await self.node.records.replace(TRANSFER, current)
        if sub_id and self.subscriptions is not None:
            dataset = await self.node.records.get(DATASET, record.get("datasetId") or "")
            try:
                await self.subscriptions.delete(dataset["tenant"] if dataset else "", sub_id)
            except NgsiLdError:
                log.warning("push subscription %s was already gone", sub_id)

    async def _subscribe(self, record: dict[str, Any], dataset: dict[str, Any]) -> str:
        assert self.subscriptions is not None
        context = dataset.get("context")
        terms = await self.contexts.term_map(context)
        endpoint = record["consumerDataAddress"]["endpoint"]
        body: dict[str, Any] = {
            "type": "Subscription",
            "description": f"Dataspace push transfer {record['id']} (agreement {record['agreementId']})",
            "entities": [{"type": t} for t in dataset["entityTypes"]],
            "notification": {"endpoint": {"uri": endpoint, "accept": "application/json"}},
        }
        if dataset.get("attributes"):
            body["notification"]["attributes"] = dataset["attributes"]
        if dataset.get("q"):
            body["q"] = dataset["q"]
        return await self.subscriptions.create(dataset["tenant"], body, terms, context)

    # -- pull ----------------------------------------------------------------------------------

    async def authorize(self, token: str | None) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """The transfer, agreement and dataset a bearer token gives access to."""
        if not token:
            raise InvalidToken("Send the token of the TransferStartMessage as Authorization: Bearer <token>")
        grant = await self.node.records.get(TOKEN, token_hash(token))
        if grant is None:
            raise InvalidToken("The token is unknown or was revoked when its transfer left STARTED")
        if grant["expiresAt"] < time.time():
            raise InvalidToken("The token has expired: ask the provider to start the transfer again")
        transfer = await self.node.records.get(TRANSFER, grant["transferPid"])
        if transfer is None or transfer["state"] != "STARTED":
            state = transfer["state"] if transfer else "gone"
            raise TransferNotActive(f"Transfer {grant['transferPid']} is {state}")
        agreement = await self.node.records.get(AGREEMENT, grant["agreementId"])
        if agreement is None or agreement["state"] != FINALIZED or transfer["agreementId"] != agreement["id"]:
            raise UsageDenied(f"Agreement {grant['agreementId']} is not in force")
        return transfer, agreement, await self._dataset(agreement)

    async def _dataset(self, agreement: dict[str, Any]) -> dict[str, Any]:
        dataset = await self.node.records.get(DATASET, agreement.get("datasetId") or "")
        if dataset is None:
            raise ResourceNotFound(f"The dataset of agreement {agreement['id']} no longer exists")
        return dataset

    async def pull(
        self, token: str | None, *, purpose: str | None, limit: int, offset: int, key_values: bool
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The agreed entities for one access, counted against the agreement; and its details."""
        transfer, agreement, dataset = await self.authorize(token)
        async with self.node.records.lock(agreement["id"]):
            agreement = await self.node.records.get(AGREEMENT, agreement["id"]) or agreement
            facts = self.facts_for(agreement.get("counterPartyId"))
            facts.purpose = purpose
            facts.agreed_at = odrl.parse_time(agreement["agreement"]["timestamp"])
            facts.access_count = int(agreement.get("accessCount", 0))
            decision = odrl.evaluate(agreement["agreement"], facts)
            if not decision.allowed:
                raise UsageDenied(
                    f"Agreement {agreement['id']} does not allow this access: {decision.reason()}",
                    agreementId=agreement["id"],
                    accessCount=facts.access_count,
                )
            agreement["accessCount"] = facts.access_count + 1
            agreement["lastAccess"] = facts.now.strftime("%Y-%m-%dT%H:%M:%SZ")
            await self.node.records.replace(AGREEMENT, agreement)
        terms = await self.contexts.term_map(dataset.get("context"))
        query = EntityQuery(
            types=[terms.expand(t) for t in dataset["entityTypes"]], limit=limit, offset=offset
        )
        if dataset.get("q"):
            query.q = ql.parse_q(dataset["q"]).resolve(terms.expand)
        try:
            result = await self.entities.query(dataset["tenant"], query)
            entities = result.entities
        except NgsiLdError:
            entities = []  # the tenant has no data yet
        attrs = (
            frozenset(terms.expand(a) for a in dataset["attributes"]) if dataset.get("attributes") else None
        )
        view = View(form="keyValues" if key_values else "normalized", attrs=attrs)
        rendered = [render_entity(e, terms, view) for e in entities]
        info = {
            "agreementId": agreement["id"],
            "transferPid": transfer["id"],
            "accessCount": agreement["accessCount"],
            "duties": decision.duties,
        }
        return rendered, info
