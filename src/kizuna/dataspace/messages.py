"""DSP 2025-1 messages: the bundled @context and JSON Schemas, validation, and error bodies."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft201909Validator
from referencing import Registry, Resource

from kizuna.errors import DSPACE_CONTEXT, DspError
from kizuna.times import iso_seconds

CONTEXT = [DSPACE_CONTEXT]
SCHEMA_BASE = "https://w3id.org/dspace/2025/1/"

# message @type -> schema file (relative to schemas/)
SCHEMA_OF = {
    "CatalogRequestMessage": "catalog/catalog-request-message-schema.json",
    "DatasetRequestMessage": "catalog/dataset-request-message-schema.json",
    "Catalog": "catalog/catalog-schema.json",
    "Dataset": "catalog/dataset-schema.json",
    "CatalogError": "catalog/catalog-error-schema.json",
    "ContractRequestMessage": "negotiation/contract-request-message-schema.json",
    "ContractOfferMessage": "negotiation/contract-offer-message-schema.json",
    "ContractAgreementMessage": "negotiation/contract-agreement-message-schema.json",
    "ContractAgreementVerificationMessage": "negotiation/contract-agreement-verification-message-schema.json",
    "ContractNegotiationEventMessage": "negotiation/contract-negotiation-event-message-schema.json",
    "ContractNegotiationTerminationMessage": (
        "negotiation/contract-negotiation-termination-message-schema.json"
    ),
    "ContractNegotiation": "negotiation/contract-negotiation-schema.json",
    "ContractNegotiationError": "negotiation/contract-negotiation-error-schema.json",
    "TransferRequestMessage": "transfer/transfer-request-message-schema.json",
    "TransferStartMessage": "transfer/transfer-start-message-schema.json",
    "TransferSuspensionMessage": "transfer/transfer-suspension-message-schema.json",
    "TransferCompletionMessage": "transfer/transfer-completion-message-schema.json",
    "TransferTerminationMessage": "transfer/transfer-termination-message-schema.json",
    "TransferProcess": "transfer/transfer-process-schema.json",
    "TransferError": "transfer/transfer-error-schema.json",
    "VersionResponse": "common/protocol-version-schema.json",
}


@cache
def _registry() -> Registry:
    root = resources.files(__package__).joinpath("schemas")
    registry: Registry = Registry()
    for folder in ("catalog", "common", "negotiation", "transfer"):
        for entry in root.joinpath(folder).iterdir():
            if entry.name.endswith(".json"):
                schema = json.loads(entry.read_text())
                registry = registry.with_resource(schema["$id"], Resource.from_contents(schema))
    return registry


@cache
def _validator(message_type: str) -> Draft201909Validator:
    uri = SCHEMA_BASE + SCHEMA_OF[message_type]
    schema = _registry().contents(uri)
    return Draft201909Validator(schema, registry=_registry())


def schema_errors(message: Any, message_type: str) -> list[str]:
    """Why ``message`` is not a valid ``message_type`` (empty when it is)."""
    if not isinstance(message, dict):
        return ["a DSP message must be a JSON object"]
    if message.get("@type") != message_type and message_type not in ("Dataset", "VersionResponse"):
        return [f"@type must be {message_type}"]
    errors = sorted(_validator(message_type).iter_errors(message), key=lambda e: list(e.path))
    return [f"{'/'.join(map(str, e.path)) or '(root)'}: {e.message}" for e in errors[:5]]


def check(message: Any, message_type: str) -> dict[str, Any]:
    """Validate an outgoing message; an invalid one is our bug, never sent."""
    errors = schema_errors(message, message_type)
    if errors:
        raise AssertionError(f"invalid outgoing {message_type}: {errors}")
    return message


def now_iso() -> str:
    return iso_seconds(datetime.now(UTC))


def message(message_type: str, **members: Any) -> dict[str, Any]:
    body = {"@context": list(CONTEXT), "@type": message_type}
    body.update({k: v for k, v in members.items() if v is not None})
    return body


def pid_of(body: Any, key: str) -> str | None:
    """A pid of an incoming message, for its error body: one that is no string is not named,
    since the error schemas want strings (an error message must be valid even when the
    message it refuses is not)."""
    value = body.get(key) if isinstance(body, dict) else None
    return value if isinstance(value, str) else None


def pids_of(body: Any) -> dict[str, str | None]:
    return {"provider_pid": pid_of(body, "providerPid"), "consumer_pid": pid_of(body, "consumerPid")}


def require_valid(body: Any, message_type: str, error: type[DspError], **pids: str | None) -> dict[str, Any]:
    """Validate an incoming message; 400 with the protocol's error body when it is not valid."""
    errors = schema_errors(body, message_type)
    if errors:
        raise error(f"Invalid {message_type}: " + "; ".join(errors), **pids)
    return body
