"""NGSI-LD entities in NGSI v2's shapes, as Orion answers them.

The input is an entity already rendered (:func:`kizuna.ngsild.render.render_entity`, normalized,
names compacted with the request's @context), so that compaction has one place; what is left
here is the v2 typing of each attribute:

- a Property's v2 type follows its value: ``Number``, ``Text``, ``Boolean``, ``DateTime`` (an
  NGSI-LD ``{"@type": "DateTime", "@value": ...}``), ``StructuredValue`` (objects, arrays),
  ``None``; a LanguageProperty, JsonProperty or ListProperty is a ``StructuredValue``, a
  VocabProperty ``Text``;
- a GeoProperty is ``geo:json`` with its GeoJSON geometry;
- a Relationship (or ListRelationship) is ``Relationship`` with its object(s) as the value;
- ``observedAt``, ``unitCode``, ``datasetId`` and every sub-attribute become metadata.
"""

from __future__ import annotations

from typing import Any

from kizuna.members import VALUE_MEMBER

Entity = dict[str, Any]
# Members of a rendered entity that are no attributes.
_NOT_ATTRIBUTES = frozenset({"id", "type", "scope", "@context", "createdAt", "modifiedAt", "deletedAt"})
# Members of an attribute instance that become metadata, and their v2 types.
_METADATA = {"observedAt": "DateTime", "unitCode": "Text", "datasetId": "Text"}
# Orion's builtin attributes, given only when ``attrs`` names them: name -> NGSI-LD member.
BUILTINS = {"dateCreated": "createdAt", "dateModified": "modifiedAt"}


def v2_entity(rendered: Entity, system: Entity, builtins: list[str], key_values: bool) -> Entity:
    """One entity: ``rendered`` in NGSI-LD normalized form, ``system`` the stored entity (for
    the builtin attributes ``builtins`` asks for)."""
    types = rendered.get("type")
    out: Entity = {"id": rendered["id"], "type": types[0] if isinstance(types, list) else types}
    for name, attribute in rendered.items():
        if name in _NOT_ATTRIBUTES:
            continue
        v2_type, value, metadata = _attribute(_default_instance(attribute))
        out[name] = value if key_values else {"type": v2_type, "value": value, "metadata": metadata}
    for name in builtins:
        stamp = system.get(BUILTINS[name])
        if stamp is not None:
            out[name] = stamp if key_values else {"type": "DateTime", "value": stamp, "metadata": {}}
    return out


def _default_instance(attribute: Any) -> dict[str, Any]:
    """v2 has one value per attribute: the instance without a datasetId, else the first."""
    if isinstance(attribute, list):
        return next((i for i in attribute if "datasetId" not in i), attribute[0])
    return attribute


def _attribute(instance: dict[str, Any]) -> tuple[str, Any, dict[str, Any]]:
    kind = instance.get("type", "Property")
    raw = instance.get(VALUE_MEMBER.get(kind, "value"))
    v2_type, value = _typed(kind, raw)
    metadata: dict[str, Any] = {}
    for key, item in instance.items():
        if key in _METADATA:
            metadata[key] = {"type": _METADATA[key], "value": item}
        elif isinstance(item, dict) and item.get("type") in VALUE_MEMBER:
            sub_type, sub_value, _ = _attribute(item)
            metadata[key] = {"type": sub_type, "value": sub_value}
    return v2_type, value, metadata


def _typed(kind: str, value: Any) -> tuple[str, Any]:
    if kind == "GeoProperty":
        return "geo:json", value
    if kind == "Relationship":
        return "Relationship", value
    if kind == "ListRelationship":
        objects = [o.get("object") if isinstance(o, dict) else o for o in value or []]
        return "Relationship", objects
    if kind == "VocabProperty":
        return "Text", value
    if kind in ("LanguageProperty", "JsonProperty"):
        return "StructuredValue", value
    if kind == "ListProperty":
        return "StructuredValue", [_typed("Property", v)[1] for v in value or []]
    return _property_type(value)


def _property_type(value: Any) -> tuple[str, Any]:
    if isinstance(value, dict) and "@value" in value:
        literal = value["@value"]
        return ("DateTime" if value.get("@type") == "DateTime" else _property_type(literal)[0]), literal
    if value is None:
        return "None", None
    if isinstance(value, bool):
        return "Boolean", value
    if isinstance(value, int | float):
        return "Number", value
    if isinstance(value, str):
        return "Text", value
    return "StructuredValue", value
