"""Canonical entities out, in the representation and @context the client asked for.

This is the only place where IRIs become terms again (compaction at the edge).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from kizuna.jsonld.terms import TermMap
from kizuna.members import VALUE_MEMBER
from kizuna.ngsild.model import INSTANCE_MEMBERS, SYSTEM_MEMBERS, convert_compound
from kizuna.query import Projection

GEOJSON_CONTENT_PROPERTIES = frozenset({"id", "type", "@context"})
Entity = dict[str, Any]


@dataclass(slots=True, frozen=True)
class View:
    """How to render: the representation and which members to keep (names as IRIs)."""

    form: str = "normalized"  # "normalized" | "keyValues" | "concise"
    sys_attrs: bool = False
    lang: str | None = None
    attrs: frozenset[str] | None = None  # attributes to keep (attrs / pick of attributes)
    pick: frozenset[str] | None = None  # entity members to keep: id, type, scope, attribute IRIs
    omit: frozenset[str] = frozenset()
    dataset_ids: frozenset[str | None] | None = None  # instances to keep; None for the default one
    # pick/omit with the projections in braces that apply to linked entities (clause 4.21)
    pick_tree: Projection | None = None
    omit_tree: Projection | None = None
    join: str | None = None  # "inline" | "flat" (clause 4.5.23); None: relationships stay links
    join_level: int = 1

    def linked(self, relationship: str) -> View:
        """The view of the entities a Relationship links to: the same representation, with the
        pick/omit given in braces after the relationship's name, and no attrs or datasetId filter
        (those select among the attributes of the entities asked for, not of linked ones)."""
        pick = self.pick_tree.linked(relationship) if self.pick_tree is not None else None
        omit = self.omit_tree.linked(relationship) if self.omit_tree is not None else None
        return replace(
            self,
            attrs=None,
            dataset_ids=None,
            pick=None if pick is None else pick.names(),
            omit=frozenset() if omit is None else omit.plain_names(),
            pick_tree=pick,
            omit_tree=omit,
        )


def render_entity(
    entity: Entity,
    terms: TermMap,
    view: View,
    linked: Mapping[str, Entity] | None = None,
    level: int = 0,
) -> dict[str, Any]:
    """One entity in the view's representation; with ``join=inline``, Relationships whose target is
    in ``linked`` carry the rendered target entity, ``level`` more levels deep."""
    out: dict[str, Any] = {}
    keep = _keeper(view)
    if keep("id"):
        out["id"] = entity["id"]
    if keep("type") and "type" in entity:
        types = [terms.compact(t) for t in entity["type"]]
        out["type"] = types[0] if len(types) == 1 else types
    if keep("scope") and "scope" in entity:
        scope = entity["scope"]
        out["scope"] = scope[0] if len(scope) == 1 else scope
    if view.sys_attrs and view.form != "keyValues":
        for member in ("createdAt", "modifiedAt", "deletedAt"):
            if member in entity:
                out[member] = entity[member]
    inline = linked is not None and level > 0 and view.join == "inline"
    # Bound once: a page of 100 entities runs this loop 700 times, and the view's tests were
    # half of it (issue 15's listing).
    attrs, dataset_ids, compact = view.attrs, view.dataset_ids, terms.compact
    every = view.pick is None and not view.omit
    for iri, instances in entity.items():
        if iri in _ENTITY_CORE or not (every or keep(iri)) or (attrs is not None and iri not in attrs):
            continue
        if dataset_ids is not None:
            instances = [i for i in instances if i.get("datasetId") in dataset_ids]
            if not instances:
                continue
        if len(instances) == 1 and not inline:
            out[compact(iri)] = render_instance(instances[0], terms, view)
            continue
        rendered = [render_instance(i, terms, view) for i in instances]
        if inline and linked is not None:
            target_view = view.linked(iri)
            rendered = [
                _inline(r, i, linked, terms, target_view, level - 1)
                for r, i in zip(rendered, instances, strict=True)
            ]
        out[compact(iri)] = rendered[0] if len(rendered) == 1 else rendered
    return out


def _inline(
    rendered: Any,
    instance: dict[str, Any],
    linked: Mapping[str, Entity],
    terms: TermMap,
    view: View,
    level: int,
) -> Any:
    """A Relationship with its target entity: as ``entity`` beside ``object``, or, in keyValues,
    in place of the object's URI (clause 4.5.23)."""
    if instance["type"] != "Relationship" or not isinstance(instance.get("object"), str):
        return rendered
    target = linked.get(instance["object"])
    if target is None:
        return rendered
    entity = render_entity(target, terms, view, linked, level)
    if view.form == "keyValues":
        return entity
    if not isinstance(rendered, dict):
        rendered = {"object": rendered}
    return {**rendered, "entity": entity}


def linked_targets(entity: Entity, view: View) -> list[tuple[str, View]]:
    """The ids a join follows from ``entity`` (Relationships the view keeps), each with the view
    its target is rendered in."""
    keep = _keeper(view)
    targets: list[tuple[str, View]] = []
    for iri, instances in entity.items():
        if iri in _ENTITY_CORE or not keep(iri) or (view.attrs is not None and iri not in view.attrs):
            continue
        for instance in instances:
            if instance.get("type") == "Relationship":
                objects = instance.get("object")
                for target in objects if isinstance(objects, list) else [objects]:
                    if isinstance(target, str):
                        targets.append((target, view.linked(iri)))
    return targets


_ENTITY_CORE = frozenset({"id", "type", "scope"} | SYSTEM_MEMBERS)


def _keeper(view: View):
    pick, omit = view.pick, view.omit
    if pick is None and not omit:
        return lambda member: True
    return lambda member: (pick is None or member in pick) and member not in omit


def render_instance(instance: dict[str, Any], terms: TermMap, view: View) -> Any:
    kind = instance["type"]
    member = VALUE_MEMBER[kind]
    value = _compact_value(kind, instance[member], terms)
    form = view.form
    if kind == "LanguageProperty" and view.lang is not None:
        # lang=xx: a LanguageProperty becomes a Property holding the best-matching string.
        chosen, value = _pick_language(value, view.lang)
        if form == "keyValues":
            return value
        kind, member = "Property", "value"
        out: dict[str, Any] = {"type": kind} if form == "normalized" else {}
        out["value"], out["lang"] = value, chosen
    elif form == "keyValues":
        return value
    else:
        out = {"type": kind, member: value} if form == "normalized" else {member: value}
    for key, item in instance.items():
        if key not in INSTANCE_MEMBERS:
            out[terms.compact(key)] = render_instance(item, terms, view)
        elif key in _SKIPPED:
            continue
        elif key in SYSTEM_MEMBERS:
            if view.sys_attrs:
                out[key] = item
        elif key != member:
            out[key] = terms.compact(item) if key == "objectType" and isinstance(item, str) else item
    bare = form == "concise" and len(out) == 1 and kind in ("Property", "GeoProperty")
    if bare and (kind == "GeoProperty" or not isinstance(value, dict)):
        return value
    return out


def _pick_language(language_map: dict[str, Any], wanted: str) -> tuple[str, Any]:
    """Pick per the lang parameter (clause 4.15): a list with q-weights, ``*`` for any."""
    preferences: list[tuple[float, str]] = []
    for position, part in enumerate(wanted.split(",")):
        tag, _, params = part.strip().partition(";")
        weight = 1.0
        if params.strip().startswith("q="):
            try:
                weight = float(params.strip()[2:])
            except ValueError:
                weight = 0.0
        preferences.append((-weight + position * 1e-6, tag.strip()))
    for _, tag in sorted(preferences):
        if tag == "*":
            break
        if tag in language_map:
            return tag, language_map[tag]
        for key in language_map:
            if key.split("-")[0] == tag.split("-")[0]:
                return key, language_map[key]
    if "@none" in language_map:
        return "@none", language_map["@none"]
    first = next(iter(language_map))
    return first, language_map[first]


_SKIPPED = frozenset({"type", "languageMap"})  # an instance's members never copied as they are


def _compact_value(kind: str, value: Any, terms: TermMap) -> Any:
    if kind in ("Property", "ListProperty"):
        if not isinstance(value, dict | list):
            return value  # most values: nothing in a scalar to compact
        return convert_compound(value, terms.compact)
    if kind == "VocabProperty":
        return [terms.compact(v) for v in value] if isinstance(value, list) else terms.compact(value)
    return value


def to_geojson_feature(
    entity: dict[str, Any], rendered: dict[str, Any], terms: TermMap, geoproperty: str
) -> dict[str, Any]:
    """GeoJSON rendering (clause 4.5.16): the entity becomes a Feature."""
    geometry = None
    instances = entity.get(geoproperty)
    if instances:
        geometry = instances[0].get("value")
    properties = {k: v for k, v in rendered.items() if k not in GEOJSON_CONTENT_PROPERTIES}
    if "type" in rendered:
        properties = {"type": rendered["type"], **properties}
    return {"id": entity["id"], "type": "Feature", "geometry": geometry, "properties": properties}
