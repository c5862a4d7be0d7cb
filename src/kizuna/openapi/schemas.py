"""The component schemas of the document: ProblemDetails made from :mod:`kizuna.errors`, the
DSP 2025-1 schemas the connector validates its messages with, and the shapes of the other APIs.

Answers that vary with the request (``pick``, ``keyValues``, ``details``) get schemas loose
enough to hold every variant: a schema here promises what every answer satisfies, not what a
typical one looks like.
"""

from __future__ import annotations

import json
from collections import defaultdict
from functools import cache
from importlib import resources
from typing import Any

from kizuna.errors import DspError, NgsiLdError

Schema = dict[str, Any]
DSP_SCHEMA_BASE = "https://w3id.org/dspace/2025/1/"


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _error_classes() -> list[type[NgsiLdError]]:
    """Every ProblemDetails type the node can answer (DSP error messages have their own schemas)."""
    found: list[type[NgsiLdError]] = []
    pending: list[type[NgsiLdError]] = [NgsiLdError]
    while pending:
        cls = pending.pop()
        if issubclass(cls, DspError):
            continue
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def _type_uri(cls: type[NgsiLdError]) -> str:
    """The class's type URI, read without the arguments its constructor may want."""
    return cls.__new__(cls).type_uri


@cache
def error_types_by_status() -> dict[int, list[str]]:
    """Status -> the type names errors.py gives it, for each response's description."""
    names: dict[int, set[str]] = defaultdict(set)
    for cls in _error_classes():
        names[cls.status].add(cls.type_name)
    return {status: sorted(found) for status, found in names.items()}


def problem_details() -> Schema:
    uris = sorted({_type_uri(cls) for cls in _error_classes()})
    return {
        "type": "object",
        "description": "RFC 7807 ProblemDetails with an NGSI-LD (clause 5.5.2) or Kizuna error type.",
        "required": ["type", "title", "status"],
        "properties": {
            "type": {"type": "string", "enum": uris},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
        },
    }


@cache
def dsp_schemas() -> dict[str, Schema]:
    """The bundled DSP schemas as components ``dsp.<folder>.<Definition>``: their cross-file
    ``$ref`` URIs are rewritten to component references, so that no reader of the document
    fetches anything from w3id.org."""
    root = resources.files("kizuna.dataspace").joinpath("schemas")
    files: dict[str, Schema] = {}
    for folder in ("catalog", "common", "negotiation", "transfer"):
        for entry in root.joinpath(folder).iterdir():
            if entry.name.endswith(".json"):
                files[f"{folder}/{entry.name}"] = json.loads(entry.read_text())

    def component(file: str, pointer: str) -> str:
        if not pointer:  # a whole file: the definition its top level stands for
            pointer = files[file]["allOf"][0]["$ref"].removeprefix("#")
        return f"dsp.{file.split('/')[0]}.{pointer.removeprefix('/definitions/')}"

    def rewrite(node: Any, file: str) -> Any:
        if isinstance(node, dict):
            out = {k: rewrite(v, file) for k, v in node.items() if k not in ("$schema", "$id")}
            target = node.get("$ref")
            if isinstance(target, str):
                uri, _, pointer = target.partition("#")
                out["$ref"] = ref(component(uri.removeprefix(DSP_SCHEMA_BASE) or file, pointer))["$ref"]
            return out
        if isinstance(node, list):
            return [rewrite(item, file) for item in node]
        return node

    components: dict[str, Schema] = {}
    for file, schema in files.items():
        for name, definition in schema.get("definitions", {}).items():
            components[component(file, f"/definitions/{name}")] = rewrite(definition, file)
    return components


def dsp(name: str) -> str:
    """The component name of a DSP message type (``ContractRequestMessage``)."""
    matches = [c for c in dsp_schemas() if c.rsplit(".", 1)[1] == name]
    assert len(matches) == 1, f"no single DSP schema named {name}: {matches}"
    return matches[0]


OBJECT: Schema = {"type": "object"}
STRINGS: Schema = {"type": "array", "items": {"type": "string"}}


def _listing(item: str) -> Schema:
    return {"type": "array", "items": ref(item)}


def _described(description: str, schema: Schema) -> Schema:
    return {"description": description, **schema}


def component_schemas() -> dict[str, Schema]:
    ngsi_ld_id = {"type": "string", "description": "A URI"}
    entity = {
        "type": "object",
        "description": "An NGSI-LD entity (normalized, concise or keyValues; pick/omit may drop any member).",
        "properties": {
            "id": ngsi_ld_id,
            "type": {"anyOf": [{"type": "string"}, STRINGS]},
            "@context": {},
        },
    }
    schemas: dict[str, Schema] = {
        "ProblemDetails": problem_details(),
        "Entity": entity,
        "EntityList": _listing("Entity"),
        "NewEntity": {
            "description": "An entity to write: an id, a type, and attributes.",
            "type": "object",
            "required": ["id", "type"],
            "properties": {
                "id": {"type": "string", "pattern": "^urn:ngsi-ld:[A-Za-z]{1,12}:[A-Za-z0-9]{1,12}$"},
                "type": {"type": "string", "pattern": "^[A-Z][A-Za-z]{0,12}$"},
            },
            "propertyNames": {"pattern": "^(id|type|[a-z][A-Za-z]{0,12})$"},
            "additionalProperties": ref("NewAttribute"),
        },
        "NewEntityList": {"type": "array", "minItems": 1, "items": ref("NewEntity")},
        "NewAttribute": {
            "description": "One attribute of an entity to write (any NGSI-LD attribute is taken).",
            "oneOf": [
                {
                    "type": "object",
                    "required": ["type", "value"],
                    "properties": {
                        "type": {"const": "Property"},
                        "value": {"type": ["string", "number", "boolean", "object", "array"]},
                        "observedAt": {"type": "string", "format": "date-time"},
                    },
                },
                {
                    "type": "object",
                    "required": ["type", "object"],
                    "properties": {"type": {"const": "Relationship"}, "object": {"type": "string"}},
                },
            ],
        },
        "Attribute": _described("An NGSI-LD attribute (or, for several datasetIds, a list).", {}),
        "Attributes": _described("Attribute name -> attribute, as in an entity.", OBJECT),
        "GeoJsonFeature": {
            "type": "object",
            "required": ["type"],
            "properties": {"type": {"const": "Feature"}, "id": ngsi_ld_id, "geometry": {}, "properties": {}},
        },
        "GeoJsonFeatureCollection": {
            "type": "object",
            "required": ["type", "features"],
            "properties": {"type": {"const": "FeatureCollection"}, "features": _listing("GeoJsonFeature")},
        },
        "EntityIds": _described("Entity ids (URIs).", STRINGS),
        "BatchOperationResult": {
            "type": "object",
            "required": ["success", "errors"],
            "properties": {
                "success": STRINGS,
                "errors": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "entityId": {"type": ["string", "null"], "description": "null: it named none"},
                            "error": ref("ProblemDetails"),
                        },
                    },
                },
            },
        },
        "UpdateResult": {
            "type": "object",
            "required": ["updated", "notUpdated"],
            "properties": {
                "updated": STRINGS,
                "notUpdated": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"attributeName": {"type": "string"}, "reason": {"type": "string"}},
                    },
                },
            },
        },
        "Query": _described("A Query (clause 5.2.23): query parameters as members.", OBJECT),
        "TemporalEntity": _described("An entity with its attributes' history (clause 5.2.40).", OBJECT),
        "TemporalEntityList": _listing("TemporalEntity"),
        "Subscription": _described("A Subscription (clause 5.2.12).", OBJECT),
        "SubscriptionList": _listing("Subscription"),
        "CsourceRegistration": _described("A CSourceRegistration (clause 5.2.9).", OBJECT),
        "CsourceRegistrationList": _listing("CsourceRegistration"),
        "Permission": _described("A Kizuna permission: assignee, action, target.", OBJECT),
        "PermissionList": _listing("Permission"),
        "Discovery": _described(
            "Entity types or attributes (clause 5.2.24-5.2.30): a list, or its details.",
            {"type": ["object", "array"]},
        ),
        "HostedContexts": _described(
            "Hosted @context URLs, or with details their descriptions.", {"type": "array"}
        ),
        "Json": _described("Any JSON document (a hosted @context, or its description).", {}),
        "Status": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
        "AuditEvents": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["at", "subject", "tenant", "operation", "target", "outcome", "detail"],
                "properties": {
                    name: {"type": "string"}
                    for name in ("at", "subject", "tenant", "operation", "target", "outcome", "detail")
                },
            },
        },
        "ManagedRecord": _described(
            "A dataset, negotiation, agreement or transfer as the management API shows it.", OBJECT
        ),
        "ManagedRecords": _listing("ManagedRecord"),
        "StartedProcess": {
            "type": "object",
            "required": ["id", "state"],
            "properties": {"id": {"type": "string"}, "state": {"type": "string"}},
        },
        "DspError": {
            "description": "A DSP error message; a refusal before the protocol (401) is ProblemDetails.",
            "anyOf": [
                ref(dsp("CatalogError")),
                ref(dsp("ContractNegotiationError")),
                ref(dsp("TransferError")),
                ref("ProblemDetails"),
            ],
        },
        "V2Entity": _described("An NGSI v2 entity (normalized or keyValues).", OBJECT),
        "V2EntityList": _listing("V2Entity"),
        "V2Error": {
            "description": "Orion's error form; a refusal of the authentication in front is ProblemDetails.",
            "anyOf": [
                {
                    "type": "object",
                    "required": ["error", "description"],
                    "properties": {"error": {"type": "string"}, "description": {"type": "string"}},
                },
                ref("ProblemDetails"),
            ],
        },
        "CkanResponse": {
            "type": "object",
            "description": "CKAN's envelope: success with a result, or an error.",
            "properties": {
                "help": {"type": "string"},
                "success": {"type": "boolean"},
                "result": {},
                "error": OBJECT,
            },
        },
        "CkanError": {
            "description": "CKAN's envelope, or its bare message for an unknown action or bad JSON.",
            "anyOf": [ref("CkanResponse"), {"type": "string"}, ref("ProblemDetails")],
        },
        "RdfDocument": _described(
            "The DCAT-AP 3.0 catalog in the negotiated RDF syntax.", {"type": "string"}
        ),
        "OpenApi": _described("This document.", OBJECT),
        "MetricsText": _described("Prometheus's text exposition format 0.0.4.", {"type": "string"}),
        "Page": _described(
            "An HTML page; its scripts and styles come from /console/static.", {"type": "string"}
        ),
        "GeoJson": _described("A GeoJSON FeatureCollection.", OBJECT),
        "MapPoints": _described("The map's rows, as docs/console.md describes them.", OBJECT),
        "EventStream": _described(
            "Server-Sent Events: `change` events of JSON data, and heartbeat comments.", {"type": "string"}
        ),
    }
    return {**schemas, **dsp_schemas()}
