"""The transfer process state machine (DSP 2025-1, section "Transfer Process Protocol").

Like :mod:`negotiation`: one transition table keyed by (state, message, sender role), per-role
tables derived from it, records persisted in the store, follow-ups run after the response. The
provider side opens and closes the data plane (pull tokens, push subscriptions) as the process
enters and leaves STARTED.
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from kizuna.dataspace import messages
from kizuna.dataspace.catalog import FORMATS, PULL, PUSH, CatalogService
from kizuna.dataspace.core import (
    AGREEMENT,
    CONSUMER,
    OTHER,
    PROVIDER,
    TRANSFER,
    FollowUp,
    Node,
    apply_transition,
    join,
    new_record,
)
from kizuna.dataspace.negotiation import FINALIZED, _unreachable
from kizuna.dataspace.sealing import Sealer
from kizuna.errors import (
    BadRequestData,
    Conflict,
    CounterpartyError,
    NgsiLdError,
    TransferError,
    TransferNotFound,
)

REQUESTED, STARTED, SUSPENDED, COMPLETED, TERMINATED = (
    "REQUESTED",
    "STARTED",
    "SUSPENDED",
    "COMPLETED",
    "TERMINATED",
)
STATES = (REQUESTED, STARTED, SUSPENDED, COMPLETED, TERMINATED)
INITIAL = None

REQUEST = "TransferRequestMessage"
START = "TransferStartMessage"
SUSPEND = "TransferSuspensionMessage"
COMPLETE = "TransferCompletionMessage"
TERMINATE = "TransferTerminationMessage"

C, P = CONSUMER, PROVIDER
TRANSITIONS: dict[tuple[str | None, str, str], str] = {
    (INITIAL, REQUEST, C): REQUESTED,
    (REQUESTED, START, P): STARTED,
    (REQUESTED, TERMINATE, C): TERMINATED,
    (REQUESTED, TERMINATE, P): TERMINATED,
    (STARTED, COMPLETE, C): COMPLETED,
    (STARTED, COMPLETE, P): COMPLETED,
    (STARTED, SUSPEND, C): SUSPENDED,
    (STARTED, SUSPEND, P): SUSPENDED,
    (STARTED, TERMINATE, C): TERMINATED,
    (STARTED, TERMINATE, P): TERMINATED,
    (SUSPENDED, START, C): STARTED,
    (SUSPENDED, START, P): STARTED,
    (SUSPENDED, TERMINATE, C): TERMINATED,
    (SUSPENDED, TERMINATE, P): TERMINATED,
}
SENDS = {role: {(s, m): n for (s, m, by), n in TRANSITIONS.items() if by == role} for role in (C, P)}
RECEIVES = {
    role: {(s, m): n for (s, m, by), n in TRANSITIONS.items() if by == OTHER[role]} for role in (C, P)
}
PATHS = {START: "start", SUSPEND: "suspension", COMPLETE: "completion", TERMINATE: "termination"}


DataPlaneRefusal = NgsiLdError  # what the data plane raises when it will not open


def next_state(role: str, state: str | None, message: str, *, receiving: bool) -> str | None:
    return (RECEIVES[role] if receiving else SENDS[role]).get((state, message))


class DataPlaneHooks(Protocol):
    """What the transfer machine needs from the data plane (provider side)."""

    async def open(self, record: dict[str, Any], agreement: dict[str, Any]) -> dict[str, Any] | None:
        """Make the data available (a pull token, a push subscription); the DataAddress to send."""

    async def close(self, record: dict[str, Any], *, locked: bool = False) -> None:
        """Withdraw it (revoke tokens, delete the push subscription); ``locked``: the caller
        holds the transfer's lock."""


def ack(record: dict[str, Any]) -> dict[str, Any]:
    body = messages.message(
        "TransferProcess",
        providerPid=record["providerPid"],
        consumerPid=record["consumerPid"],
        state=record["state"],
    )
    return messages.check(body, "TransferProcess")


def management_view(record: dict[str, Any]) -> dict[str, Any]:
    out = {
        k: record[k]
        for k in (
            "id",
            "role",
            "state",
            "providerPid",
            "consumerPid",
            "agreementId",
            "format",
            "counterPartyId",
            "counterPartyAddress",
            "reason",
            "createdAt",
            "modifiedAt",
        )
        if record.get(k) is not None
    }
    address = record.get("dataAddress")
    if record["role"] == CONSUMER and address:
        # The provider's token stays inside the node: users read through /transfers/{id}/data.
        out["endpoint"] = address.get("endpoint")
        for prop in address.get("endpointProperties", []):
            if prop.get("name") == "authorization":
                out["tokenHeld"] = True
            if prop.get("name") == "expiresAt":
                out["tokenExpiresAt"] = prop.get("value")
    return out


def _sealed(address: dict[str, Any], sealer: Sealer, transfer_id: str) -> dict[str, Any]:
    """The provider's DataAddress as the consumer keeps it: its token encrypted."""
    properties = [
        {**p, "value": sealer.seal(str(p.get("value", "")), transfer_id)}
        if p.get("name") == "authorization"
        else p
        for p in address.get("endpointProperties", [])
        if isinstance(p, dict)
    ]
    return {**address, "endpointProperties": properties}


def pull_address(record: dict[str, Any], path: str, sealer: Sealer) -> tuple[str, str]:
    """(URL, token) of a read under a started pull transfer's endpoint; ``path`` stays below it."""
    token = held_token(record, sealer)
    segments = path.split("/")
    if not path or any(s in ("", ".", "..") for s in segments) or ":" in segments[0]:
        raise BadRequestData(f"{path!r} is not a path below the transfer's endpoint")
    return join(record["dataAddress"]["endpoint"], path), token


def held_token(record: dict[str, Any], sealer: Sealer) -> str:
    """The provider's token of a started pull transfer of this consumer, unsealed to be sent
    (to its data plane, or to its CADDE file API), never shown."""
    address = record.get("dataAddress") or {}
    sealed = next(
        (p.get("value") for p in address.get("endpointProperties", []) if p.get("name") == "authorization"),
        None,
    )
    if record["role"] != CONSUMER or record["state"] != STARTED or not sealed or not address.get("endpoint"):
        raise Conflict(f"Transfer {record['id']} is not a started pull transfer of this consumer")
    token = sealer.open(sealed, record["id"])
    if token is None:
        raise Conflict(
            f"Transfer {record['id']}: its token was sealed with another key (a restart without"
            " --dsp-key-file); request a new transfer"
        )
    return token


class TransferService:
    def __init__(self, node: Node, catalog: CatalogService, dataplane: DataPlaneHooks) -> None:
        self.node = node
        self.catalog = catalog
        self.dataplane = dataplane
        if hasattr(dataplane, "terminate"):  # the data plane ends push transfers whose agreement ran out
            dataplane.terminate = self.terminate  # type: ignore[attr-defined]

    @property
    def records(self):
        return self.node.records

    async def get(self, pid: str, sender: str | None = None) -> dict[str, Any]:
        record = await self.records.get(TRANSFER, pid)
        if record is None or record["state"] is None:
            raise TransferNotFound(f"No transfer process {pid}")
        expected = record.get("counterPartyId")
        if sender is not None and expected and sender != expected:
            raise TransferNotFound(f"No transfer process {pid}")
        return record

    async def list(self) -> list[dict[str, Any]]:
        return (await self.records.list(TRANSFER))[0]

    # -- receiving -----------------------------------------------------------------------------

    async def receive_request(self, body: Any, sender: str | None) -> tuple[dict[str, Any], list[FollowUp]]:
        pids = {"consumer_pid": body.get("consumerPid") if isinstance(body, dict) else None}
        message = messages.require_valid(body, REQUEST, TransferError, **pids)
        if "providerPid" in message:
            raise TransferError("A transfer request carries no providerPid", **pids)
        agreement = await self.records.get(AGREEMENT, message["agreementId"])
        if agreement is None or agreement["role"] != PROVIDER:
            raise TransferError(f"No agreement {message['agreementId']}", **pids)
        if sender is not None and agreement.get("counterPartyId") not in (None, sender):
            raise TransferError(f"Agreement {message['agreementId']} was not made with {sender}", **pids)
        if agreement["state"] != FINALIZED:
            raise TransferError(f"Agreement {message['agreementId']} is not finalized", **pids)
        if message["format"] not in FORMATS:
            raise TransferError(
                f"Unsupported format {message['format']} (use {' or '.join(FORMATS)})", **pids
            )
        address = message.get("dataAddress")
        if message["format"] == PUSH and not (address and address.get("endpoint")):
            raise TransferError("A push transfer needs a dataAddress with an endpoint", **pids)
        await self.node.messenger.vet(message["callbackAddress"], "callbackAddress")
        if message["format"] == PUSH:
            await self.node.messenger.vet(address["endpoint"], "dataAddress.endpoint")
        dataset = await self.catalog.find(agreement.get("datasetId") or "")
        record = new_record(
            PROVIDER,
            provider_pid=f"urn:uuid:{uuid.uuid4()}",
            consumer_pid=message["consumerPid"],
            counterparty_id=agreement.get("counterPartyId") or sender,
            address=message["callbackAddress"],
            agreementId=agreement["id"],
            format=message["format"],
        )
        record.update(state=REQUESTED, consumerDataAddress=address, datasetId=agreement.get("datasetId"))
        await self.records.insert(TRANSFER, record)
        approval = dataset["approval"] if dataset else "manual"
        follow_ups: list[FollowUp] = [lambda: self._auto_start(record["id"])] if approval == "auto" else []
        return ack(record), follow_ups

    async def receive(self, pid: str, kind: str, body: Any, sender: str | None) -> None:
        """TransferStart/Suspension/Completion/TerminationMessage for one of our processes."""
        pids = {
            "provider_pid": body.get("providerPid") if isinstance(body, dict) else None,
            "consumer_pid": body.get("consumerPid") if isinstance(body, dict) else None,
        }
        message = messages.require_valid(body, kind, TransferError, **pids)
        async with self.records.lock(pid):
            record = await self.get(pid, sender)
            for key in ("providerPid", "consumerPid"):
                if message[key] != record[key]:
                    raise TransferError(f"{key} {message[key]} does not belong to transfer {pid}", **pids)
            new = next_state(record["role"], record["state"], kind, receiving=True)
            if new is None:
                raise TransferError(
                    f"{kind} is not allowed in state {record['state']} (the node is the {record['role']})",
                    provider_pid=record["providerPid"],
                    consumer_pid=record["consumerPid"],
                )
            if record["role"] == PROVIDER and kind == START and record["format"] == PUSH:
                try:
                    await self._open(record)
                except (Conflict, NgsiLdError) as refused:
                    raise TransferError(
                        str(getattr(refused, "detail", refused)),
                        provider_pid=record["providerPid"],
                        consumer_pid=record["consumerPid"],
                    ) from None
            if record["role"] == CONSUMER and kind == START and message.get("dataAddress"):
                record["dataAddress"] = _sealed(message["dataAddress"], self.node.sealer, record["id"])
            if kind in (SUSPEND, TERMINATE):
                record["reason"] = message.get("reason")
            apply_transition(record, new, kind, OTHER[record["role"]])
            await self.records.replace(TRANSFER, record)
        if record["role"] == PROVIDER and new != STARTED:
            await self.dataplane.close(record)

    # -- local actions ---------------------------------------------------------------------------

    async def request(
        self,
        address: str,
        agreement_id: str,
        fmt: str,
        endpoint: str | None = None,
        counterparty_id: str | None = None,
        purpose: str | None = None,
    ) -> dict[str, Any]:
        """Consumer: send a TransferRequestMessage under an agreement. A push transfer names the
        endpoint notifications go to and may declare the purpose its data is used for."""
        if fmt not in FORMATS:
            raise BadRequestData(f"format must be {' or '.join(FORMATS)}")
        agreement = await self.records.get(AGREEMENT, agreement_id)
        if agreement is not None and agreement["state"] != FINALIZED:
            raise Conflict(f"Agreement {agreement_id} is {agreement['state']}, not FINALIZED")
        if fmt == PUSH and not (endpoint and endpoint.lower().startswith(("http://", "https://"))):
            raise BadRequestData("A push transfer needs the http(s) endpoint notifications go to")
        await self.node.messenger.vet(address, "counterPartyAddress")
        record = new_record(
            CONSUMER,
            provider_pid=None,
            consumer_pid=f"urn:uuid:{uuid.uuid4()}",
            counterparty_id=counterparty_id or (agreement or {}).get("counterPartyId"),
            address=address,
            agreementId=agreement_id,
            format=fmt,
        )
        data_address = None
        if fmt == PUSH:
            data_address = {
                "@type": "DataAddress",
                "endpointType": "https://w3id.org/idsa/v4.1/HTTP",
                "endpoint": endpoint,
            }
            if purpose:
                data_address["endpointProperties"] = [
                    {"@type": "EndpointProperty", "name": "purpose", "value": purpose}
                ]
        elif purpose:
            raise BadRequestData("A pull transfer declares its purpose with each request (Kizuna-Purpose)")
        request = messages.message(
            REQUEST,
            consumerPid=record["consumerPid"],
            agreementId=agreement_id,
            format=fmt,
            dataAddress=data_address,
            callbackAddress=self.node.dsp_base,
        )
        async with self.records.lock(record["id"]):
            await self.records.insert(TRANSFER, record)
            try:
                answer = await self.node.messenger.post(address, "transfers/request", request)
            except CounterpartyError as error:
                await self.records.delete(TRANSFER, record["id"])
                raise _unreachable(error) from None
            if messages.schema_errors(answer, "TransferProcess") or answer.get("state") != REQUESTED:
                await self.records.delete(TRANSFER, record["id"])
                raise _unreachable(
                    CounterpartyError("the provider's answer is not a REQUESTED TransferProcess")
                )
            record.update(providerPid=answer["providerPid"], state=REQUESTED)
            apply_transition(record, REQUESTED, REQUEST, CONSUMER)
            await self.records.replace(TRANSFER, record)
        return record

    async def start(self, pid: str) -> dict[str, Any]:
        return await self._send(pid, START)

    async def suspend(self, pid: str, reason: str = "Suspended by the participant") -> dict[str, Any]:
        return await self._send(pid, SUSPEND, code="suspended", reason=[reason])

    async def complete(self, pid: str) -> dict[str, Any]:
        return await self._send(pid, COMPLETE)

    async def terminate(self, pid: str, reason: str = "Terminated by the participant") -> dict[str, Any]:
        return await self._send(pid, TERMINATE, code="terminated", reason=[reason])

    # -- machinery -------------------------------------------------------------------------------

    async def _open(self, record: dict[str, Any]) -> dict[str, Any] | None:
        agreement = await self.records.get(AGREEMENT, record["agreementId"])
        if agreement is None or agreement["state"] != FINALIZED:
            raise Conflict(f"Agreement {record['agreementId']} is no longer in force")
        return await self.dataplane.open(record, agreement)

    async def _send(self, pid: str, kind: str, **members: Any) -> dict[str, Any]:
        async with self.records.lock(pid):
            record = await self.get(pid)
            role = record["role"]
            new = next_state(role, record["state"], kind, receiving=False)
            if new is None:
                raise Conflict(f"Transfer {pid} is {record['state']}: the {role} cannot send {kind}")
            if role == PROVIDER and kind == START:
                address = await self._open(record)
                if address is not None:
                    members["dataAddress"] = address
            body = messages.message(
                kind, providerPid=record["providerPid"], consumerPid=record["consumerPid"], **members
            )
            target = f"transfers/{record['consumerPid' if role == PROVIDER else 'providerPid']}/{PATHS[kind]}"
            try:
                await self.node.messenger.post(record["counterPartyAddress"], target, body)
            except CounterpartyError as error:
                if role == PROVIDER and kind == START:
                    await self.dataplane.close(record, locked=True)
                raise _unreachable(error) from None
            if kind in (SUSPEND, TERMINATE):
                record["reason"] = members.get("reason")
            apply_transition(record, new, kind, role)
            await self.records.replace(TRANSFER, record)
        if role == PROVIDER and new != STARTED:
            await self.dataplane.close(record)
        return record

    async def _auto_start(self, pid: str) -> None:
        record = await self.records.get(TRANSFER, pid)
        if record is not None and record["state"] == REQUESTED:
            try:
                await self.start(pid)
            except DataPlaneRefusal as refused:  # e.g. a push whose policy does not hold now
                await self.terminate(pid, str(getattr(refused, "detail", refused)))


__all__ = ["PULL", "PUSH", "STATES", "TRANSITIONS", "TransferService"]
