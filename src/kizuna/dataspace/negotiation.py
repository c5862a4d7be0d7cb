"""The contract negotiation state machine (DSP 2025-1, section "Contract Negotiation Protocol").

One transition table, keyed by (state, message, sender role); the tables of what each role may
receive and send are derived from it. Records persist in the store, so negotiations survive
restarts. No HTTP here: routes call ``receive_*`` for incoming messages and the management
actions for outgoing ones; automatic next steps come back as follow-ups run after the response.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from kizuna.dataspace import messages, odrl
from kizuna.dataspace.catalog import CatalogService
from kizuna.dataspace.core import (
    AGREEMENT,
    CONSUMER,
    DATASET,
    NEGOTIATION,
    OTHER,
    PROVIDER,
    FollowUp,
    Node,
    apply_transition,
    new_record,
)
from kizuna.errors import (
    BadRequestData,
    Conflict,
    CounterpartyError,
    CounterpartyFailed,
    NegotiationError,
    NegotiationNotFound,
    NgsiLdError,
    ResourceNotFound,
)

REQUESTED, OFFERED, ACCEPTED, AGREED, VERIFIED, FINALIZED, TERMINATED = (
    "REQUESTED",
    "OFFERED",
    "ACCEPTED",
    "AGREED",
    "VERIFIED",
    "FINALIZED",
    "TERMINATED",
)
STATES = (REQUESTED, OFFERED, ACCEPTED, AGREED, VERIFIED, FINALIZED, TERMINATED)
INITIAL = None  # no negotiation yet

# Messages, by what they do.
REQUEST = "ContractRequestMessage"
OFFER = "ContractOfferMessage"
ACCEPT = "ContractNegotiationEventMessage:ACCEPTED"
AGREEMENT_MSG = "ContractAgreementMessage"
VERIFY = "ContractAgreementVerificationMessage"
FINALIZE = "ContractNegotiationEventMessage:FINALIZED"
TERMINATE = "ContractNegotiationTerminationMessage"

C, P = CONSUMER, PROVIDER
# (state, message, sender) -> next state: the state machine figure of the specification.
TRANSITIONS: dict[tuple[str | None, str, str], str] = {
    (INITIAL, REQUEST, C): REQUESTED,
    (INITIAL, OFFER, P): OFFERED,
    (REQUESTED, OFFER, P): OFFERED,
    (REQUESTED, AGREEMENT_MSG, P): AGREED,
    (REQUESTED, TERMINATE, C): TERMINATED,
    (REQUESTED, TERMINATE, P): TERMINATED,
    (OFFERED, REQUEST, C): REQUESTED,
    (OFFERED, ACCEPT, C): ACCEPTED,
    (OFFERED, TERMINATE, C): TERMINATED,
    (OFFERED, TERMINATE, P): TERMINATED,
    (ACCEPTED, AGREEMENT_MSG, P): AGREED,
    (ACCEPTED, TERMINATE, P): TERMINATED,
    (AGREED, VERIFY, C): VERIFIED,
    (AGREED, TERMINATE, C): TERMINATED,
    (VERIFIED, FINALIZE, P): FINALIZED,
    (VERIFIED, TERMINATE, P): TERMINATED,
}
# What a node in each role sends and receives: {(state, message): next state}.
SENDS = {role: {(s, m): n for (s, m, by), n in TRANSITIONS.items() if by == role} for role in (C, P)}
RECEIVES = {
    role: {(s, m): n for (s, m, by), n in TRANSITIONS.items() if by == OTHER[role]} for role in (C, P)
}


def next_state(role: str, state: str | None, message: str, *, receiving: bool) -> str | None:
    """The state after ``role`` receives (or sends) ``message`` in ``state``; None if invalid."""
    table = RECEIVES[role] if receiving else SENDS[role]
    return table.get((state, message))


def ack(record: dict[str, Any]) -> dict[str, Any]:
    body = messages.message(
        "ContractNegotiation",
        providerPid=record["providerPid"],
        consumerPid=record["consumerPid"],
        state=record["state"],
    )
    return messages.check(body, "ContractNegotiation")


def management_view(record: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "id",
        "role",
        "state",
        "providerPid",
        "consumerPid",
        "counterPartyId",
        "counterPartyAddress",
        "agreementId",
        "offer",
        "datasetId",
        "approval",
        "reason",
        "createdAt",
        "modifiedAt",
    )
    return {k: record[k] for k in keys if record.get(k) is not None}


class NegotiationService:
    def __init__(
        self,
        node: Node,
        catalog: CatalogService,
        facts_for: Callable[[str | None], odrl.Facts],
        on_agreement: Callable[[str, str], Awaitable[None]],
    ):
        self.node = node
        self.catalog = catalog
        self.facts_for = facts_for  # counterparty id -> what we know of it (for offer checks)
        self.on_agreement = on_agreement  # (agreement id, new state): its permission follows

    @property
    def records(self):
        return self.node.records

    # -- reading ---------------------------------------------------------------------------------

    async def get(self, pid: str, sender: str | None = None) -> dict[str, Any]:
        record = await self.records.get(NEGOTIATION, pid)
        if record is None or record["state"] is None:
            raise NegotiationNotFound(f"No contract negotiation {pid}")
        self._check_sender(record, sender)
        return record

    async def list(self) -> list[dict[str, Any]]:
        return (await self.records.list(NEGOTIATION))[0]

    def _check_sender(self, record: dict[str, Any], sender: str | None) -> None:
        # A negotiation is only visible to its counterparty (the spec answers 404 to others).
        expected = record.get("counterPartyId")
        if sender is not None and expected and sender != expected:
            raise NegotiationNotFound(f"No contract negotiation {record['id']}")

    # -- receiving (provider) ------------------------------------------------------------------

    async def receive_request(
        self, body: Any, sender: str | None, pid: str | None = None
    ) -> tuple[dict[str, Any], list[FollowUp]]:
        """An initial ContractRequestMessage (``pid`` None) or a consumer's counter-offer."""
        message = messages.require_valid(
            body, REQUEST, NegotiationError, consumer_pid=messages.pid_of(body, "consumerPid")
        )
        offer = message["offer"]
        if pid is None:
            if "providerPid" in message:
                raise NegotiationError(
                    "An initial contract request carries no providerPid", consumer_pid=message["consumerPid"]
                )
            await self.node.messenger.vet(message["callbackAddress"], "callbackAddress")
            found = await self.catalog.published_offer(offer)
            if found is None:
                raise NegotiationError(
                    f"Offer {offer.get('@id')} for {offer.get('target')} is not in the catalog",
                    consumer_pid=message["consumerPid"],
                )
            dataset, _ = found
            record = new_record(
                PROVIDER,
                provider_pid=f"urn:uuid:{uuid.uuid4()}",
                consumer_pid=message["consumerPid"],
                counterparty_id=sender,
                address=message["callbackAddress"],
                approval=dataset["approval"],
            )
            record.update(state=REQUESTED, offer=offer, offerBy=CONSUMER, datasetId=dataset["id"])
            await self.records.insert(NEGOTIATION, record)
            return ack(record), self._auto_provider(record["id"])
        async with self.records.lock(pid):
            record = await self._for_message(pid, PROVIDER, message, sender)
            self._transition(record, REQUEST)
            record.update(offer=offer, offerBy=CONSUMER)
            await self._save(record)
        return ack(record), self._auto_provider(pid)

    async def receive_event(self, pid: str, body: Any, sender: str | None) -> list[FollowUp]:
        message = messages.require_valid(
            body, "ContractNegotiationEventMessage", NegotiationError, **messages.pids_of(body)
        )
        kind = f"ContractNegotiationEventMessage:{message['eventType']}"
        async with self.records.lock(pid):
            record = await self._for_message(pid, None, message, sender)
            self._transition(record, kind)
            await self._save(record)
        if kind == ACCEPT:
            return self._auto_provider(pid)
        if kind == FINALIZE:
            await self._set_agreement_state(record, FINALIZED)
        return []

    async def receive_verification(self, pid: str, body: Any, sender: str | None) -> list[FollowUp]:
        message = messages.require_valid(body, VERIFY, NegotiationError, **messages.pids_of(body))
        async with self.records.lock(pid):
            record = await self._for_message(pid, PROVIDER, message, sender)
            self._transition(record, VERIFY)
            await self._save(record)
        return self._auto_provider(pid)

    async def receive_termination(self, pid: str, body: Any, sender: str | None) -> None:
        message = messages.require_valid(body, TERMINATE, NegotiationError, **messages.pids_of(body))
        async with self.records.lock(pid):
            record = await self._for_message(pid, None, message, sender)
            self._transition(record, TERMINATE)
            record["reason"] = message.get("reason")
            await self._save(record)
        await self._set_agreement_state(record, TERMINATED)

    # -- receiving (consumer) ------------------------------------------------------------------

    async def receive_offer(
        self, body: Any, sender: str | None, pid: str | None = None
    ) -> tuple[dict[str, Any], list[FollowUp]]:
        message = messages.require_valid(body, OFFER, NegotiationError, **messages.pids_of(body))
        if pid is None:
            if "consumerPid" in message or "callbackAddress" not in message:
                raise NegotiationError(
                    "An initial offer carries a callbackAddress and no consumerPid",
                    provider_pid=message["providerPid"],
                )
            await self.node.messenger.vet(message["callbackAddress"], "callbackAddress")
            record = new_record(
                CONSUMER,
                provider_pid=message["providerPid"],
                consumer_pid=f"urn:uuid:{uuid.uuid4()}",
                counterparty_id=sender,
                address=message["callbackAddress"],
                approval="auto",
            )
            record.update(state=OFFERED, offer=message["offer"], offerBy=PROVIDER)
            record["datasetId"] = message["offer"].get("target")
            await self.records.insert(NEGOTIATION, record)
            return ack(record), []
        async with self.records.lock(pid):
            record = await self._for_message(pid, CONSUMER, message, sender)
            self._transition(record, OFFER)
            record.update(offer=message["offer"], offerBy=PROVIDER)
            await self._save(record)
        return ack(record), []  # an offer is never accepted automatically

    async def receive_agreement(self, pid: str, body: Any, sender: str | None) -> list[FollowUp]:
        message = messages.require_valid(body, AGREEMENT_MSG, NegotiationError, **messages.pids_of(body))
        agreement = message["agreement"]
        async with self.records.lock(pid):
            record = await self._for_message(pid, CONSUMER, message, sender)
            self._transition(record, AGREEMENT_MSG)
            await self._keep_agreement(record, agreement, CONSUMER)
            await self._save(record)
        if record["approval"] == "auto":
            return [lambda: self._auto_step(pid, self.verify)]
        return []

    # -- local actions (management API) ---------------------------------------------------------

    async def start(
        self, address: str, counterparty_id: str | None, offer: dict[str, Any], approval: str = "auto"
    ) -> dict[str, Any]:
        """Consumer: send an initial ContractRequestMessage for an offer seen in the remote catalog."""
        if approval not in ("auto", "manual"):
            raise BadRequestData("approval must be auto or manual")
        await self.node.messenger.vet(address, "counterPartyAddress")
        record = new_record(
            CONSUMER,
            provider_pid=None,
            consumer_pid=f"urn:uuid:{uuid.uuid4()}",
            counterparty_id=counterparty_id,
            address=address,
            approval=approval,
        )
        record.update(state=None, offer=offer, offerBy=CONSUMER, datasetId=offer.get("target"))
        request = messages.message(
            REQUEST, consumerPid=record["consumerPid"], offer=offer, callbackAddress=self.node.dsp_base
        )
        if messages.schema_errors(request, REQUEST):
            raise BadRequestData("offer: " + "; ".join(messages.schema_errors(request, REQUEST)))
        async with self.records.lock(record["id"]):
            await self.records.insert(NEGOTIATION, record)
            try:
                answer = await self.node.messenger.post(address, "negotiations/request", request)
            except CounterpartyError as error:
                await self.records.delete(NEGOTIATION, record["id"])
                raise _unreachable(error) from None
            if messages.schema_errors(answer, "ContractNegotiation") or answer.get("state") != REQUESTED:
                await self.records.delete(NEGOTIATION, record["id"])
                raise _unreachable(
                    CounterpartyError("the provider's answer is not a REQUESTED ContractNegotiation")
                )
            record.update(providerPid=answer["providerPid"], state=REQUESTED)
            await self._save(record)
        return record

    async def counter_offer(self, pid: str, offer: dict[str, Any]) -> dict[str, Any]:
        """Consumer: a ContractRequestMessage with a (counter-)offer."""
        if not isinstance(offer, dict):
            raise BadRequestData("offer must be a JSON object")
        return await self._send(pid, CONSUMER, REQUEST, "negotiations/{providerPid}/request", offer=offer)

    async def accept(self, pid: str) -> dict[str, Any]:
        return await self._send(
            pid, CONSUMER, ACCEPT, "negotiations/{providerPid}/events", eventType=ACCEPTED
        )

    async def verify(self, pid: str) -> dict[str, Any]:
        return await self._send(pid, CONSUMER, VERIFY, "negotiations/{providerPid}/agreement/verification")

    async def offer(self, pid: str, offer: dict[str, Any] | None = None) -> dict[str, Any]:
        """Provider: a ContractOfferMessage (the current offer unless another one is given)."""
        record = await self.get(pid)
        offer = offer or record["offer"]
        return await self._send(pid, PROVIDER, OFFER, "negotiations/{consumerPid}/offers", offer=offer)

    async def agree(self, pid: str) -> dict[str, Any]:
        record = await self.get(pid)
        offer = record["offer"]
        agreement = {
            "@id": f"urn:uuid:{uuid.uuid4()}",
            "@type": "Agreement",
            "target": record.get("datasetId") or offer.get("target"),
            "timestamp": messages.now_iso(),
            "assigner": self.node.participant_id,
            "assignee": record.get("counterPartyId") or "urn:kizuna:anonymous",
            **odrl.rules_of(offer),
        }
        return await self._send(
            pid, PROVIDER, AGREEMENT_MSG, "negotiations/{consumerPid}/agreement", agreement=agreement
        )

    async def finalize(self, pid: str) -> dict[str, Any]:
        return await self._send(
            pid, PROVIDER, FINALIZE, "negotiations/{consumerPid}/events", eventType=FINALIZED
        )

    async def terminate(self, pid: str, reason: str = "Terminated by the participant") -> dict[str, Any]:
        record = await self.get(pid)
        target = (
            "negotiations/{providerPid}/termination"
            if record["role"] == CONSUMER
            else ("negotiations/{consumerPid}/termination")
        )
        return await self._send(pid, record["role"], TERMINATE, target, code="terminated", reason=[reason])

    # -- machinery -------------------------------------------------------------------------------

    async def _for_message(
        self, pid: str, role: str | None, message: dict[str, Any], sender: str | None
    ) -> dict[str, Any]:
        """The record a message addresses: it exists, is ours in the role the endpoint serves,
        comes from our counterparty, and names both pids of this negotiation."""
        record = await self.records.get(NEGOTIATION, pid)
        if record is None or record["state"] is None or (role is not None and record["role"] != role):
            raise NegotiationNotFound(f"No contract negotiation {pid}", **messages.pids_of(message))
        self._check_sender(record, sender)
        for key in ("providerPid", "consumerPid"):
            if key in message and message[key] != record[key]:
                raise NegotiationError(
                    f"{key} {message[key]} does not belong to negotiation {pid}",
                    provider_pid=record["providerPid"],
                    consumer_pid=record["consumerPid"],
                )
        return record

    def _transition(self, record: dict[str, Any], message: str) -> None:
        new = next_state(record["role"], record["state"], message, receiving=True)
        if new is None:
            raise NegotiationError(
                f"{message.replace(':', ' ')} is not allowed in state {record['state']} "
                f"(the node is the {record['role']})",
                provider_pid=record["providerPid"],
                consumer_pid=record["consumerPid"],
            )
        apply_transition(record, new, message, OTHER[record["role"]])

    async def _save(self, record: dict[str, Any]) -> None:
        await self.records.replace(NEGOTIATION, record)

    async def _send(self, pid: str, role: str, kind: str, path: str, **members: Any) -> dict[str, Any]:
        async with self.records.lock(pid):
            record = await self.get(pid)
            if record["role"] != role:
                raise Conflict(f"Negotiation {pid}: the node is the {record['role']}, not the {role}")
            new = next_state(role, record["state"], kind, receiving=False)
            if new is None:
                raise Conflict(
                    f"Negotiation {pid} is {record['state']}: cannot send {kind.replace(':', ' ')}"
                )
            body = messages.message(
                kind.split(":")[0],
                providerPid=record["providerPid"],
                consumerPid=record["consumerPid"],
                **members,
            )
            errors = messages.schema_errors(body, body["@type"])
            if errors:
                raise BadRequestData(f"{body['@type']}: " + "; ".join(errors))
            try:
                await self.node.messenger.post(record["counterPartyAddress"], path.format(**record), body)
            except CounterpartyError as error:
                raise _unreachable(error) from None
            apply_transition(record, new, kind, role)
            if kind in (REQUEST, OFFER):
                record.update(offer=members["offer"], offerBy=role)
            if kind == AGREEMENT_MSG:
                # The dataset as agreed: replacing it later never widens this agreement.
                dataset = await self.records.get(DATASET, record.get("datasetId") or "")
                await self._keep_agreement(
                    record,
                    members["agreement"],
                    PROVIDER,
                    datasetId=record.get("datasetId"),
                    dataset=dataset,
                    accessCount=0,
                )
            if kind == TERMINATE:
                record["reason"] = members.get("reason")
            await self._save(record)
        if new in (FINALIZED, TERMINATED, VERIFIED):
            await self._set_agreement_state(record, new)
        return record

    async def _keep_agreement(
        self, record: dict[str, Any], agreement: dict[str, Any], role: str, **members: Any
    ) -> None:
        """This node's copy of the agreement a negotiation reached, in ``role``; the provider's
        also carries what enforcement needs (``members``: the dataset, the access count)."""
        record["agreementId"] = agreement["@id"]
        await self.records.insert(
            AGREEMENT,
            {
                "id": agreement["@id"],
                "role": role,
                "negotiationId": record["id"],
                "counterPartyId": record.get("counterPartyId"),
                "counterPartyAddress": record["counterPartyAddress"],
                "state": AGREED,
                "agreement": agreement,
                **members,
            },
        )
        await self.node.audit.record(
            record.get("counterPartyId"),
            "",
            "agreement.agree",
            agreement["@id"],
            detail=f"as {role}, dataset {record.get('datasetId') or agreement.get('target')}",
        )

    async def _set_agreement_state(self, record: dict[str, Any], state: str) -> None:
        agreement_id = record.get("agreementId")
        if not agreement_id:
            return

        def set_state(agreement: dict[str, Any]) -> None:
            agreement["state"] = state

        with contextlib.suppress(KeyError):  # a compare-and-set: concurrent access counts stay
            await self.records.update(AGREEMENT, agreement_id, set_state)
        await self.on_agreement(agreement_id, state)
        await self.node.audit.record(
            record.get("counterPartyId"), "", f"agreement.{state.lower()}", agreement_id
        )

    # -- automatic behaviour -------------------------------------------------------------------

    def _auto_provider(self, pid: str) -> list[FollowUp]:
        return [lambda: self._provider_step(pid)]

    async def _provider_step(self, pid: str) -> None:
        """With approval auto: agree to a request for a published offer with its rules unchanged
        (and whose constraints the counterparty meets now), terminate other requests, finalize
        after verification."""
        record = await self.records.get(NEGOTIATION, pid)
        if record is None or record["approval"] != "auto":
            return
        if record["state"] in (REQUESTED, ACCEPTED):
            problem = await self.check_offer(record)
            if problem is None:
                await self.agree(pid)
            else:
                await self.terminate(pid, problem)
        elif record["state"] == VERIFIED:
            await self.finalize(pid)

    async def check_offer(self, record: dict[str, Any]) -> str | None:
        """Why the negotiation's current offer cannot be agreed (None when it can)."""
        offer = record["offer"]
        found = await self.catalog.published_offer({**offer, "target": record.get("datasetId")})
        if found is None:
            return f"offer {offer.get('@id')} is not a published offer of {record.get('datasetId')}"
        _, published = found
        if offer.get("target") not in (None, record.get("datasetId")) or not odrl.same_rules(
            offer, published
        ):
            return f"offer {offer.get('@id')} changes the rules of the published offer"
        facts = self.facts_for(record.get("counterPartyId"))
        facts.at_negotiation = True
        decision = odrl.evaluate(published, facts)
        if not decision.allowed:
            return "the counterparty does not meet the offer's constraints: " + decision.reason()
        return None

    async def _auto_step(self, pid: str, action: Callable[[str], Any]) -> None:
        await action(pid)


def _unreachable(error: CounterpartyError) -> NgsiLdError:
    """The counterparty's failure, summarised: its status and the ``code`` of a DSP error
    message, never its body (the address may be anything, and so may what it answered)."""
    extra: dict[str, Any] = {"counterpartyStatus": error.status} if error.status else {}
    code = error.body.get("code") if isinstance(error.body, dict) else None
    if isinstance(code, str):
        extra["counterpartyCode"] = code[:80]
    return CounterpartyFailed(str(error), **extra)


__all__ = ["STATES", "TRANSITIONS", "NegotiationService", "ResourceNotFound"]
