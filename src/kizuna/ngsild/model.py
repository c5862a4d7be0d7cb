"""NGSI-LD payloads in, Kizuna's canonical form out.

The canonical form is the normalized NGSI-LD representation with every user term expanded to its
IRI (entity types, attribute and sub-attribute names, keys of compound values, vocab values).
The structural members (``type``, ``value``, ``object``, ``observedAt``, ...) are protected terms of
the core @context, so they keep their short names::

    {"id": "urn:ngsi-ld:Streetlight:1", "type": ["https://.../Streetlight"], "scope": ["/Duisburg"],
     "createdAt": "...", "modifiedAt": "...",
     "https://.../status": [{"type": "Property", "value": "ok", "createdAt": "...", "modifiedAt": "...",
                             "https://.../reason": {"type": "Property", "value": "..."}}]}

Every attribute maps to a list of instances (one per ``datasetId``, the default instance having
none); every other member of an instance that is not a core member is a sub-attribute. Inputs are
accepted in normalized and concise form.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from kizuna.errors import BadRequestData
from kizuna.jsonld.terms import TermMap
from kizuna.members import VALUE_MEMBER
from kizuna.times import parse_instant

NULL = "urn:ngsi-ld:null"

KIND_OF_MEMBER = {
    "value": "Property",
    "object": "Relationship",
    "languageMap": "LanguageProperty",
    "vocab": "VocabProperty",
    "json": "JsonProperty",
    "valueList": "ListProperty",
    "objectList": "ListRelationship",
}
SYSTEM_MEMBERS = frozenset({"createdAt", "modifiedAt", "deletedAt"})
INSTANCE_MEMBERS = frozenset(
    {"type", "datasetId", "observedAt", "unitCode", "objectType", "lang", "instanceId"}
    | set(KIND_OF_MEMBER)
    | SYSTEM_MEMBERS
)
ENTITY_MEMBERS = frozenset({"id", "type", "scope", "@context"} | SYSTEM_MEMBERS)
GEO_ATTRIBUTES = frozenset(
    {
        "https://uri.etsi.org/ngsi-ld/location",
        "https://uri.etsi.org/ngsi-ld/observationSpace",
        "https://uri.etsi.org/ngsi-ld/operationSpace",
    }
)
GEOMETRY_TYPES = frozenset(
    {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon", "GeometryCollection"}
)
# Clause 4.6.2: characters that cannot appear in names (they would break the query languages).
_FORBIDDEN_NAME = re.compile(r"[<>\"'=;()\s\x00-\x1f\x7f]")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:[^\s<>\"{}|\\^`]+$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")


def is_uri(text: Any) -> bool:
    return isinstance(text, str) and _URI.match(text) is not None


def is_datetime(text: Any) -> bool:
    if not isinstance(text, str) or _DATETIME.match(text) is None:
        return False
    try:
        parse_instant(text)
    except ValueError:
        return False
    return True


def check_entity_id(entity_id: Any) -> str:
    if not is_uri(entity_id):
        raise BadRequestData(f"Entity id must be a URI, not {entity_id!r}")
    return entity_id


def check_name(name: Any, what: str = "Attribute name") -> str:
    if not isinstance(name, str) or not name or name.startswith("@") or _FORBIDDEN_NAME.search(name):
        raise BadRequestData(f"{what} {name!r} is not a valid NGSI-LD name")
    return name


def expand_types(raw: Any, terms: TermMap) -> list[str]:
    types = raw if isinstance(raw, list) else [raw]
    if not types:
        raise BadRequestData("Entity type must not be empty")
    out: list[str] = []
    for t in types:
        check_name(t, "Entity type")
        iri = terms.expand(t)
        if iri.startswith("@") or ":" not in iri:
            raise BadRequestData(f"Entity type {t!r} does not expand to an IRI")
        if iri not in out:
            out.append(iri)
    return out


def parse_scope(raw: Any) -> list[str]:
    scopes = raw if isinstance(raw, list) else [raw]
    for scope in scopes:
        if not isinstance(scope, str) or not scope.startswith("/") or _FORBIDDEN_NAME.search(scope):
            raise BadRequestData(f"Scope {scope!r} must be a path like /Duisburg/Zoo")
    return list(scopes)


def parse_entity(
    body: Any, terms: TermMap, now: str, *, allow_null: bool = False, require_type: bool = True
) -> dict[str, Any]:
    """Validate an entity payload and return it in canonical form (system timestamps set to now)."""
    if not isinstance(body, dict):
        raise BadRequestData("An entity must be a JSON object")
    entity: dict[str, Any] = {"id": check_entity_id(body.get("id", body.get("@id")))}
    raw_type = body.get("type", body.get("@type"))
    if raw_type is not None:
        entity["type"] = expand_types(raw_type, terms)
    elif require_type:
        raise BadRequestData("Entity type is missing")
    if "scope" in body:
        entity["scope"] = parse_scope(body["scope"])
    entity["createdAt"] = now
    entity["modifiedAt"] = now
    entity.update(parse_attributes(body, terms, now, allow_null=allow_null))
    return entity


def parse_attributes(
    body: dict[str, Any], terms: TermMap, now: str, *, allow_null: bool = False
) -> dict[str, list[dict[str, Any]]]:
    """The attributes of a fragment (entity members other than id/type/scope are ignored here)."""
    attributes: dict[str, list[dict[str, Any]]] = {}
    for name, raw in body.items():
        if name in ENTITY_MEMBERS or name in ("@id", "@type"):
            continue
        iri = terms.expand(check_name(name))
        attributes[iri] = parse_attribute(iri, raw, terms, now, allow_null=allow_null)
    return attributes


def parse_attribute(
    iri: str, raw: Any, terms: TermMap, now: str, *, allow_null: bool = False
) -> list[dict[str, Any]]:
    """All instances given for one attribute; an array means several datasetIds."""
    if isinstance(raw, list) and raw and all(isinstance(i, dict) and _looks_like_instance(i) for i in raw):
        instances = [parse_instance(iri, item, terms, now, allow_null=allow_null) for item in raw]
        seen: set[str | None] = set()
        for instance in instances:
            dataset_id = instance.get("datasetId")
            if dataset_id in seen:
                raise BadRequestData(f"Attribute {iri} has two instances with datasetId {dataset_id!r}")
            seen.add(dataset_id)
        return instances
    return [parse_instance(iri, raw, terms, now, allow_null=allow_null)]


def _looks_like_instance(item: dict[str, Any]) -> bool:
    kind = item.get("type")
    return (isinstance(kind, str) and kind in VALUE_MEMBER) or any(
        member in item for member in KIND_OF_MEMBER
    )


def _is_geometry(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("type"), str) and value["type"] in GEOMETRY_TYPES


def parse_instance(
    iri: str, raw: Any, terms: TermMap, now: str, *, allow_null: bool = False, sub: bool = False
) -> dict[str, Any]:
    """One attribute instance. With ``allow_null`` (merge), NGSI-LD Null yields ``{"null": True}``."""
    if not isinstance(raw, dict) or not _looks_like_instance(raw):
        if raw is None:
            raise BadRequestData(f"Attribute {iri} has a null value")
        if _is_geometry(raw) and "coordinates" in raw:
            raw = {"type": "GeoProperty", "value": raw}
        else:
            raw = {"value": raw}  # concise form of a Property
    kind = raw.get("type")
    if kind is None:
        kind = next(KIND_OF_MEMBER[m] for m in KIND_OF_MEMBER if m in raw)
    member = VALUE_MEMBER.get(kind) if isinstance(kind, str) else None
    if member is None:
        raise BadRequestData(f"Attribute {iri} has an unknown type {kind!r}")
    if member not in raw:
        raise BadRequestData(f"Attribute {iri} of type {kind} has no '{member}'")
    instance: dict[str, Any] = {"type": kind}
    value = raw[member]
    if allow_null and _is_null(value):
        instance["null"] = True
        if "datasetId" in raw:
            instance["datasetId"] = _check_dataset_id(raw["datasetId"], iri)
        return instance
    if kind == "Property" and _is_geometry(value) and iri in GEO_ATTRIBUTES:
        kind = instance["type"] = "GeoProperty"
    instance[member] = _parse_value(iri, kind, value, terms)
    if iri in GEO_ATTRIBUTES and kind != "GeoProperty":
        raise BadRequestData(f"Attribute {iri} must be a GeoProperty")
    for key, item in raw.items():
        if key in ("type", member) or key in SYSTEM_MEMBERS or key == "instanceId":
            continue
        if key == "datasetId":
            if sub:
                raise BadRequestData(f"Sub-attribute {iri} cannot have a datasetId")
            instance["datasetId"] = _check_dataset_id(item, iri)
        elif key == "observedAt":
            if not is_datetime(item):
                raise BadRequestData(f"observedAt of {iri} must be a DateTime, not {item!r}")
            instance["observedAt"] = item
        elif key == "unitCode":
            if not isinstance(item, str) or not item:
                raise BadRequestData(f"unitCode of {iri} must be a non-empty string")
            instance["unitCode"] = item
        elif key == "objectType":
            if kind not in ("Relationship", "ListRelationship"):
                raise BadRequestData(f"objectType is only allowed on relationships ({iri})")
            instance["objectType"] = _expand_type_values(item, terms, iri)
        elif key in KIND_OF_MEMBER or key == "lang":
            raise BadRequestData(f"Attribute {iri} of type {kind} cannot have '{key}'")
        elif key.startswith("@"):
            continue
        else:
            sub_iri = terms.expand(check_name(key, "Sub-attribute name"))
            instance[sub_iri] = parse_instance(sub_iri, item, terms, now, allow_null=allow_null, sub=True)
    instance["createdAt"] = now
    instance["modifiedAt"] = now
    return instance


def _is_null(value: Any) -> bool:
    """NGSI-LD Null is the string urn:ngsi-ld:null (JSON null is invalid, not a deletion)."""
    if value == NULL:
        return True
    if isinstance(value, list) and value == [NULL]:
        return True
    return isinstance(value, dict) and list(value.values()) == [NULL]


def _check_dataset_id(value: Any, iri: str) -> str:
    if not is_uri(value):
        raise BadRequestData(f"datasetId of {iri} must be a URI, not {value!r}")
    return value


def _expand_type_values(value: Any, terms: TermMap, iri: str) -> str | list[str]:
    if isinstance(value, str) and value:
        return terms.expand(value)
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return [terms.expand(v) for v in value]
    raise BadRequestData(f"{iri}: expected a term or a list of terms, not {value!r}")


def _parse_value(iri: str, kind: str, value: Any, terms: TermMap) -> Any:
    if kind == "Property":
        if value is None:
            raise BadRequestData(f"Property {iri} has a null value")
        return convert_compound(value, terms.expand)
    if kind == "GeoProperty":
        check_geometry(value, iri)
        return value
    if kind == "Relationship":
        if not (is_uri(value) or (isinstance(value, list) and value and all(is_uri(v) for v in value))):
            raise BadRequestData(f"Relationship {iri} must have a URI (or a list of URIs) as object")
        return value
    if kind == "ListRelationship":
        if not isinstance(value, list) or not all(
            is_uri(v) or (isinstance(v, dict) and is_uri(v.get("object"))) for v in value
        ):
            raise BadRequestData(f"ListRelationship {iri} must have a list of URIs as objectList")
        return [v["object"] if isinstance(v, dict) else v for v in value]
    if kind == "LanguageProperty":
        if (
            not isinstance(value, dict)
            or not value
            or not all(
                isinstance(k, str)
                and (isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v)))
                for k, v in value.items()
            )
        ):
            raise BadRequestData(f"LanguageProperty {iri} must have a languageMap of language -> string")
        return value
    if kind == "VocabProperty":
        return _expand_type_values(value, terms, iri)
    if kind == "ListProperty":
        if not isinstance(value, list):
            raise BadRequestData(f"ListProperty {iri} must have an array as valueList")
        return [convert_compound(v, terms.expand) for v in value]
    return value  # JsonProperty: any JSON, kept verbatim


def convert_compound(value: Any, convert: Callable[[str], str]) -> Any:
    """Keys of JSON objects inside a Property value are JSON-LD terms too, expanded on the way
    in and compacted on the way out by ``convert`` (``terms.expand`` or ``terms.compact``), as
    is a string ``@type``; other keywords stay, and so does a key that converts to a keyword
    (an alias such as "type" inside a value stays as written: lossless)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key == "@type" and isinstance(item, str):
                out[key] = convert(item)
            elif key.startswith("@"):
                out[key] = item
            else:
                converted = convert(key)
                out[key if converted.startswith("@") else converted] = convert_compound(item, convert)
        return out
    if isinstance(value, list):
        return [convert_compound(v, convert) for v in value]
    return value


def check_geometry(value: Any, iri: str) -> None:
    if not _is_geometry(value):
        raise BadRequestData(f"GeoProperty {iri} must have a GeoJSON geometry as value")
    if value["type"] == "GeometryCollection":
        geometries = value.get("geometries")
        if not isinstance(geometries, list):
            raise BadRequestData(f"GeoProperty {iri}: a GeometryCollection needs 'geometries'")
        for geometry in geometries:
            check_geometry(geometry, iri)
        return
    depth = {
        "Point": 0,
        "MultiPoint": 1,
        "LineString": 1,
        "MultiLineString": 2,
        "Polygon": 2,
        "MultiPolygon": 3,
    }
    if not _positions_ok(value.get("coordinates"), depth[value["type"]]):
        raise BadRequestData(f"GeoProperty {iri}: coordinates do not fit a {value['type']}")


def _positions_ok(coords: Any, depth: int) -> bool:
    if depth == 0:
        return (
            isinstance(coords, list)
            and 2 <= len(coords) <= 3
            and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in coords)
        )
    return isinstance(coords, list) and len(coords) > 0 and all(_positions_ok(c, depth - 1) for c in coords)
