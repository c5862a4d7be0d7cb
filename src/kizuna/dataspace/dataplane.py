"""The provider's data plane: short-lived bearer tokens bound to an agreement for HTTP pull, and
NGSI-LD subscriptions to the consumer's endpoint for HTTP push.

Every access is checked against the agreement's ODRL policy (:mod:`odrl`) with the facts of that
access (time, counterparty, region, purpose, access count) and counted in the agreement record
by compare-and-set (safe with several workers): each pull request, and each push notification
(through the dispatcher's :class:`DeliveryGate`; an agreement that allows no more ends the push
transfer with a TransferTerminationMessage saying why). Only the agreed data leaves the node:
current state through the NGSI-LD query machinery (:class:`EntityService`), temporal history
through :class:`TemporalService`; a consumer may narrow a pull by its own ``q`` over the agreed
attributes, never widen it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from kizuna import query as ql
from kizuna.access.grants import Grants
from kizuna.access.subject import ANONYMOUS, NODE, Subject, participant
from kizuna.dataspace import odrl
from kizuna.dataspace.catalog import PULL, PUSH
from kizuna.dataspace.core import AGREEMENT, DATASET, PROVIDER, TOKEN, TRANSFER, Node
from kizuna.dataspace.negotiation import FINALIZED, TERMINATED
from kizuna.errors import (
    BadRequestData,
    InvalidToken,
    NgsiLdError,
    NonExistingTenant,
    ResourceNotFound,
    TransferNotActive,
    UsageDenied,
)
from kizuna.jsonld.contexts import ContextRegistry
from kizuna.metrics import ACCESS_ALLOWED, ACCESS_DENIED
from kizuna.ngsild.entities import EntityService
from kizuna.ngsild.render import View, render_entity
from kizuna.ngsild.selection import EntitySelection
from kizuna.ngsild.subscriptions import SubscriptionService
from kizuna.ngsild.temporal import TemporalPage, TemporalService
from kizuna.ngsild.temporal_params import parse_temporal_params
from kizuna.ngsild.temporal_render import render_temporal
from kizuna.times import iso_seconds, parse_instant

log = logging.getLogger("kizuna.dataspace")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# A push transfer's subscription is named after the transfer, so that the dispatcher's gate knows
# at a glance which notifications are dataspace accesses.
PUSH_PREFIX = "urn:kizuna:dsp-push:"


def push_subscription_id(transfer_pid: str) -> str:
    return PUSH_PREFIX + transfer_pid


def push_transfer_of(sub_id: str) -> str | None:
    return sub_id[len(PUSH_PREFIX) :] if sub_id.startswith(PUSH_PREFIX) else None


def declared_purpose(record: dict[str, Any]) -> str | None:
    """The purpose a consumer declared for a push transfer (an endpoint property ``purpose`` of
    its dataAddress); pulls declare theirs with each request."""
    address = record.get("consumerDataAddress") or record.get("consumerAddress") or {}
    for prop in address.get("endpointProperties", []) or []:
        if prop.get("name") == "purpose" and isinstance(prop.get("value"), str):
            return prop["value"]
    return None


class DataPlane:
    def __init__(
        self,
        node: Node,
        entities: EntityService,
        contexts: ContextRegistry,
        subscriptions: SubscriptionService | None,
        facts_for: Callable[[str | None], odrl.Facts],
        grants: Grants,
        temporal: TemporalService | None = None,
    ) -> None:
        self.node = node
        self.grants = grants
        self.entities = entities
        self.contexts = contexts
        self.subscriptions = subscriptions
        self.facts_for = facts_for
        self.temporal = temporal
        # Set by the transfer service: ends a transfer (pid, reason) when its agreement runs out.
        self.terminate: Callable[[str, str], Awaitable[Any]] | None = None
        self._ending: dict[str, asyncio.Task[None]] = {}

    # -- policy and counting -------------------------------------------------------------------

    def _facts(self, agreement: dict[str, Any], purpose: str | None) -> odrl.Facts:
        facts = self.facts_for(agreement.get("counterPartyId"))
        facts.purpose = purpose
        facts.agreed_at = parse_instant(agreement["agreement"]["timestamp"])
        facts.access_count = int(agreement.get("accessCount", 0))
        return facts

    def check(self, agreement: dict[str, Any], purpose: str | None) -> odrl.Decision:
        """Would one more access be allowed now (nothing counted)?"""
        return odrl.evaluate(agreement["agreement"], self._facts(agreement, purpose))

    async def count_access(self, agreement_id: str, purpose: str | None) -> tuple[dict[str, Any], Any]:
        """Check one access against the agreement and count it, in one compare-and-set on the
        agreement record (no access is lost or counted twice, whichever worker serves it).
        UsageDenied (nothing counted) if the policy does not allow it."""
        decisions: list[odrl.Decision] = []

        def count(agreement: dict[str, Any]) -> None:
            if agreement["state"] != FINALIZED:
                raise UsageDenied(f"Agreement {agreement_id} is not in force", agreementId=agreement_id)
            facts = self._facts(agreement, purpose)
            decision = odrl.evaluate(agreement["agreement"], facts)
            if not decision.allowed:
                raise UsageDenied(
                    f"Agreement {agreement_id} does not allow this access: {decision.reason()}",
                    agreementId=agreement_id,
                    accessCount=facts.access_count,
                )
            decisions[:] = [decision]
            agreement["accessCount"] = (facts.access_count or 0) + 1
            agreement["lastAccess"] = iso_seconds(facts.now)

        try:
            agreement = await self.node.records.update(AGREEMENT, agreement_id, count)
        except KeyError:
            ACCESS_DENIED.inc()
            raise UsageDenied(f"Agreement {agreement_id} no longer exists") from None
        except UsageDenied:
            ACCESS_DENIED.inc()
            raise
        ACCESS_ALLOWED.inc()
        return agreement, decisions[0]

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
                        "value": iso_seconds(datetime.fromtimestamp(expires, UTC)),
                    },
                ],
            }
        if record["format"] == PUSH and self.subscriptions is not None and not record.get("subscriptionId"):
            # The policy must allow an access now (purpose declared with the request, region,
            # time window, accesses left); each notification is then counted as it goes.
            decision = self.check(agreement, declared_purpose(record))
            if not decision.allowed:
                raise UsageDenied(
                    f"Agreement {agreement['id']} does not allow this push transfer: {decision.reason()}",
                    agreementId=agreement["id"],
                )
            dataset = await self._dataset(agreement)
            record["subscriptionId"] = await self._subscribe(agreement, record, dataset)
        return None

    async def close(self, record: dict[str, Any], *, locked: bool = False) -> None:
        """Revoke the transfer's tokens and delete its push subscription (``locked``: the caller
        holds the transfer's lock)."""
        if locked:
            sub_id = await self._withdraw(record)
        else:
            async with self.node.records.lock(record["id"]):
                sub_id = await self._withdraw(record)
        if sub_id and self.subscriptions is not None:
            dataset = await self.node.records.get(DATASET, record.get("datasetId") or "")
            try:
                await self.subscriptions.delete(dataset["tenant"] if dataset else "", NODE, sub_id)
            except NgsiLdError:
                log.warning("push subscription %s was already gone", sub_id)

    async def _withdraw(self, record: dict[str, Any]) -> str | None:
        current = await self.node.records.get(TRANSFER, record["id"])
        stored = current or {}
        for digest in set(stored.get("tokens", [])) | set(record.get("tokens", [])):
            await self.node.records.delete(TOKEN, digest)
        # The record in hand may hold a subscription not saved yet (a start that failed).
        sub_id = stored.pop("subscriptionId", None) or record.pop("subscriptionId", None)
        record["tokens"] = []
        if current is not None and (current.get("tokens") or sub_id):
            current["tokens"] = []
            await self.node.records.replace(TRANSFER, current)
        return sub_id

    async def _subscribe(
        self, agreement: dict[str, Any], record: dict[str, Any], dataset: dict[str, Any]
    ) -> str:
        """The push subscription: the node's (nobody else changes it), reading as the consumer
        under the agreement, so that each notification is bounded by the agreement's permission
        as a pull is."""
        assert self.subscriptions is not None
        context = dataset.get("context")
        terms = await self.contexts.term_map(context)
        reader = await self._reader(agreement, dataset, terms)
        endpoint = record["consumerDataAddress"]["endpoint"]
        body: dict[str, Any] = {
            "id": push_subscription_id(record["id"]),
            "type": "Subscription",
            "description": f"Dataspace push transfer {record['id']} (agreement {record['agreementId']})",
            "entities": [{"type": t} for t in dataset["entityTypes"]],
            "notification": {"endpoint": {"uri": endpoint, "accept": "application/json"}},
        }
        if dataset.get("attributes"):
            body["notification"]["attributes"] = dataset["attributes"]
        if dataset.get("q"):
            body["q"] = dataset["q"]
        if dataset.get("geoQ"):
            body["geoQ"] = dataset["geoQ"]
        return await self.subscriptions.create(dataset["tenant"], NODE, body, terms, context, reads_as=reader)

    # -- push: the dispatcher's gate (DeliveryGate) --------------------------------------------

    async def admit(self, tenant: str, sub: dict[str, Any]) -> bool:
        """A notification of a push transfer's subscription goes out only while the transfer is
        STARTED and the agreement allows one more access, which it then counts."""
        pid = push_transfer_of(sub.get("id", ""))
        if pid is None:
            return True
        transfer = await self.node.records.get(TRANSFER, pid)
        if transfer is None or transfer.get("subscriptionId") != sub["id"]:
            if transfer is None or transfer["state"] in ("SUSPENDED", "COMPLETED", "TERMINATED"):
                self._later(pid, self._drop(tenant, sub["id"]))  # a subscription left behind
            return False  # not started yet (or just ended): held back
        if transfer["state"] != "STARTED":
            return False
        try:
            await self.count_access(transfer["agreementId"], declared_purpose(transfer))
        except UsageDenied as denied:
            self._end(pid, f"The agreement allows no more notifications: {denied.detail}")
            return False
        return True

    async def delivered(self, tenant: str, sub: dict[str, Any]) -> None:
        """After a counted notification: end the transfer at once if its agreement is used up."""
        pid = push_transfer_of(sub.get("id", ""))
        if pid is None:
            return
        transfer = await self.node.records.get(TRANSFER, pid)
        if transfer is None or transfer["state"] != "STARTED":
            return
        agreement = await self.node.records.get(AGREEMENT, transfer["agreementId"])
        if agreement is None:
            return
        decision = self.check(agreement, declared_purpose(transfer))
        if not decision.allowed:
            count = agreement.get("accessCount", 0)
            self._end(
                pid,
                f"Agreement {agreement['id']} is used up after {count} accesses: {decision.reason()}",
            )

    def _end(self, pid: str, reason: str) -> None:
        if self.terminate is not None:
            self._later(pid, self.terminate(pid, reason))

    def _later(self, pid: str, step: Awaitable[Any]) -> None:
        """Run outside the dispatcher's worker (which the subscription's deletion ends)."""
        if pid in self._ending and not self._ending[pid].done():
            if asyncio.iscoroutine(step):
                step.close()
            return

        async def run() -> None:
            try:
                await step
            except Exception:  # the counterparty is unreachable: tried again on the next notification
                log.exception("ending push transfer %s failed", pid)

        self._ending[pid] = asyncio.get_running_loop().create_task(run())
        for key in [k for k, task in self._ending.items() if task.done()]:
            self._ending.pop(key, None)

    async def _drop(self, tenant: str, sub_id: str) -> None:
        if self.subscriptions is not None:
            with contextlib.suppress(NgsiLdError):
                await self.subscriptions.delete(tenant, NODE, sub_id)

    # -- agreements as permissions ------------------------------------------------------------

    async def agreement_changed(self, agreement_id: str, state: str) -> None:
        """A provider's agreement came into force or ended: its permission follows."""
        agreement = await self.node.records.get(AGREEMENT, agreement_id)
        if agreement is None or agreement.get("role") != PROVIDER:
            return
        if state == FINALIZED:
            dataset = agreement.get("dataset") or await self.node.records.get(
                DATASET, agreement.get("datasetId") or ""
            )
            if dataset is not None:
                terms = await self.contexts.term_map(dataset.get("context"))
                await self._reader(agreement, dataset, terms)
        elif state == TERMINATED:
            dataset = agreement.get("dataset") or {}
            await self.grants.revoke_agreement(dataset.get("tenant", ""), agreement_id)

    async def publication_changed(self, dataset: dict[str, Any], published: bool) -> None:
        """An open dataset was published or withdrawn: the public's permission follows."""
        if not dataset.get("open"):
            return
        if not published:
            await self.grants.revoke_open_dataset(dataset["tenant"], dataset["id"])
            return
        terms = await self.contexts.term_map(dataset.get("context"))
        types = [terms.expand(t) for t in dataset["entityTypes"]]
        await self.grants.grant_open_dataset(dataset["tenant"], dataset["id"], types)

    async def _reader(self, agreement: dict[str, Any], dataset: dict[str, Any], terms: Any) -> Subject:
        """The consumer as the subject of reads under ``agreement``, holding the permission the
        agreement grants (made here for agreements finalized before permissions existed)."""
        consumer = agreement["agreement"].get("assignee") or agreement.get("counterPartyId")
        if not isinstance(consumer, str) or not consumer:
            raise UsageDenied(f"Agreement {agreement['id']} names no consumer", agreementId=agreement["id"])
        types = [terms.expand(t) for t in dataset["entityTypes"]]
        await self.grants.grant_agreement(dataset["tenant"], agreement["id"], consumer, types)
        return participant(consumer, agreement["id"])

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
        """The dataset as the agreement agreed it, while the provider still offers it: deleting
        it ends the agreement's accesses, and replacing it changes nothing the agreement reads."""
        current = await self.node.records.get(DATASET, agreement.get("datasetId") or "")
        if current is None:
            raise ResourceNotFound(f"The dataset of agreement {agreement['id']} no longer exists")
        return agreement.get("dataset") or current  # agreements made before datasets were kept

    def _narrowing(self, dataset: dict[str, Any], q: str | None, terms: Any) -> ql.QExpr | None:
        """The dataset's q and the consumer's own (both must hold); the consumer's may only name
        agreed attributes (filtering on withheld ones would disclose them)."""
        parts: list[ql.QExpr] = []
        if dataset.get("q"):
            parts.append(ql.parse_q(dataset["q"]).resolve(terms.expand))
        if q:
            own = ql.parse_q(q)
            if dataset.get("attributes"):
                allowed = {terms.expand(a) for a in dataset["attributes"]}
                withheld = sorted(
                    n for n in own.attribute_names() if terms.expand(n) not in allowed and n != "id"
                )
                if withheld:
                    raise BadRequestData(f"q names attributes outside the agreed data: {', '.join(withheld)}")
            parts.append(own.resolve(terms.expand))
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else ql.QAnd(tuple(parts))

    def _selection(self, dataset: dict[str, Any], q: str | None, terms: Any) -> EntitySelection:
        """What a pull of the dataset selects: its entity types, q (narrowed by the consumer's)
        and geoQ."""
        selection = EntitySelection(
            types=[terms.expand(t) for t in dataset["entityTypes"]], q=self._narrowing(dataset, q, terms)
        )
        geo_q = dataset.get("geoQ")
        if geo_q:
            selection.geo = ql.parse_geoq(
                geo_q["georel"], geo_q["geometry"], geo_q["coordinates"], geo_q.get("geoproperty")
            )
            selection.geoproperty = terms.expand(geo_q.get("geoproperty") or "location")
        return selection

    async def pull(
        self,
        token: str | None,
        *,
        purpose: str | None,
        limit: int,
        offset: int,
        key_values: bool,
        q: str | None = None,
        temporal: dict[str, str] | None = None,
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The agreed entities (current state, or with ``temporal`` the temporal history of a
        history dataset) for one access, counted against the agreement; and its details."""
        transfer, agreement, dataset = await self.authorize(token)
        history = bool(dataset.get("history"))
        if history != (temporal is not None):
            where = "/entities" if not history else "/temporal/entities"
            raise BadRequestData(
                f"Dataset {dataset['id']} offers {'temporal history' if history else 'current state'}: "
                f"read it at {self.node.data_endpoint}{where}"
            )
        terms = await self.contexts.term_map(dataset.get("context"))
        selection = self._selection(dataset, q, terms)  # a bad q is refused before it is counted
        agreement, decision = await self.count_access(agreement["id"], purpose)
        reader = await self._reader(agreement, dataset, terms)
        # The agreement's policy allowed this access above; its permission bounds the read.
        rendered = await self._read(reader, dataset, terms, selection, temporal, limit, offset, key_values)
        info = {
            "agreementId": agreement["id"],
            "transferPid": transfer["id"],
            "accessCount": agreement["accessCount"],
            "duties": decision.duties,
        }
        return rendered, info

    async def read_open(
        self, dataset: dict[str, Any], *, limit: int, offset: int, key_values: bool
    ) -> list[dict[str, Any]]:
        """An open dataset's data as anyone reads it: no agreement, nothing counted; the public's
        permission (:meth:`publication_changed`) is what the one policy decision lets through."""
        if not dataset.get("open"):
            raise UsageDenied(f"Dataset {dataset['id']} is read under an agreement: send its transfer token")
        terms = await self.contexts.term_map(dataset.get("context"))
        temporal = {} if dataset.get("history") else None
        selection = self._selection(dataset, None, terms)
        return await self._read(ANONYMOUS, dataset, terms, selection, temporal, limit, offset, key_values)

    async def _read(
        self,
        reader: Subject,
        dataset: dict[str, Any],
        terms: Any,
        selection: EntitySelection,
        temporal: dict[str, str] | None,
        limit: int,
        offset: int,
        key_values: bool,
    ) -> list[dict[str, Any]]:
        """The dataset's entities (current state, or with ``temporal`` their history) as ``reader``
        may read them, only its attributes."""
        attrs = (
            frozenset(terms.expand(a) for a in dataset["attributes"]) if dataset.get("attributes") else None
        )
        if temporal is not None:
            return await self._pull_history(reader, dataset, terms, selection, attrs, temporal, limit, offset)
        try:
            result = await self.entities.query(
                dataset["tenant"], reader, selection.entity_query(limit=limit, offset=offset)
            )
            entities = result.entities
        except (ResourceNotFound, NonExistingTenant):
            entities = []  # the tenant has no data yet
        view = View(form="keyValues" if key_values else "normalized", attrs=attrs)
        return [render_entity(e, terms, view) for e in entities]

    async def _pull_history(
        self,
        reader: Subject,
        dataset: dict[str, Any],
        terms: Any,
        selection: EntitySelection,
        attrs: frozenset[str] | None,
        params: dict[str, str],
        limit: int,
        offset: int,
    ) -> list[dict[str, Any]]:
        if self.temporal is None:
            raise ResourceNotFound("This node keeps no temporal history")
        read = None
        if attrs is not None:  # and what the dataset's q and geoQ look at (not rendered)
            read = set(attrs) | (selection.q.attribute_names() if selection.q is not None else set())
            if selection.geoproperty is not None:
                read.add(selection.geoproperty)
        temporal = parse_temporal_params(params, set(), attrs=sorted(read) if read is not None else None)
        try:
            page: TemporalPage = await self.temporal.query(
                dataset["tenant"],
                reader,
                selection.temporal_filter(require_attributes=attrs is not None),
                temporal,
                limit=limit,
                offset=offset,
                count=False,
            )
        except (ResourceNotFound, NonExistingTenant):
            return []
        rendered = []
        for entity in page.entities:
            if attrs is not None:  # the history of agreed attributes only
                entity.attributes = {k: v for k, v in entity.attributes.items() if k in attrs}
            rendered.append(render_temporal(entity, terms, temporal))
        return rendered
