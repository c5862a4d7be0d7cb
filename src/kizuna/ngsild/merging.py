"""How a fragment changes an entity: the merge rules of append, update and merge-patch.

Pure functions on canonical entities, shared by the single-entity and the batch operations of
:mod:`kizuna.ngsild.entities` (and by nothing that stores or sends), so each rule of clauses
5.6.2-5.6.4 and 5.6.17 is written once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kizuna.errors import BadRequestData
from kizuna.members import VALUE_MEMBER
from kizuna.ngsild import model
from kizuna.ngsild.model import SYSTEM_MEMBERS
from kizuna.store import Entity
from kizuna.times import now_iso

Instance = dict[str, Any]
ENTITY_CORE = frozenset({"id", "type", "scope"} | SYSTEM_MEMBERS)


@dataclass(slots=True)
class UpdateResult:
    """Which attributes an operation changed and which it left, with why (clause 5.2.18)."""

    updated: list[str] = field(default_factory=list)
    not_updated: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class InstanceChoice:
    """Which instances of an attribute a delete takes (clauses 5.6.5, 5.6.13): the one of
    ``dataset_id`` (None: the default instance), or with ``every`` all of them. Both APIs read
    it from the same query parameters (datasetId, deleteAll), so they take it as one value."""

    dataset_id: str | None
    every: bool

    def check(self) -> None:
        """Checked by the operation, not when made: an error of the entity id or access comes first."""
        if self.dataset_id is not None and not model.is_uri(self.dataset_id):
            raise BadRequestData(f"datasetId must be a URI, not {self.dataset_id!r}")


def attributes_of(entity: Entity) -> dict[str, list[Instance]]:
    return {k: v for k, v in entity.items() if k not in ENTITY_CORE}


NOT_OVERWRITTEN = "The attribute exists and noOverwrite was requested"


def check_appended(result: UpdateResult) -> None:
    """An append with noOverwrite that appended nothing, every attribute existing already, is
    refused (400), as Orion-LD refuses it and FiLiP expects: clause 6.6.3.1 answers 204 when all
    were appended and 207 for a partial success, and says nothing of none. ETSI 010_04_01 (one
    new, one existing: 207) is untouched. Not when a context source failed its share: that
    stays a 207 that says so."""
    if result.updated or not result.not_updated:
        return
    if any(why != NOT_OVERWRITTEN for _, why in result.not_updated):
        return
    names = ", ".join(iri for iri, _ in result.not_updated)
    raise BadRequestData(f"Nothing was appended: with noOverwrite, {names} exist already")


def append_to_entity(entity: Entity, fragment: Entity, *, overwrite: bool) -> UpdateResult:
    """Append (clause 5.6.3): new attributes are added; existing instances are replaced unless
    noOverwrite, in which case they are reported as not updated. Types add up; the scope is
    replaced, or with noOverwrite extended."""
    result = UpdateResult()
    now = now_iso()
    _add_types(entity, fragment, now)
    if "scope" in fragment:
        current = entity.get("scope", []) if not overwrite else []
        entity["scope"] = current + [s for s in fragment["scope"] if s not in current]
        result.updated.append("scope")
    for iri, new_instances in attributes_of(fragment).items():
        instances = entity.setdefault(iri, [])
        changed = False
        for new in new_instances:
            index = instance_index(instances, new.get("datasetId"))
            if index is None:
                instances.append(new)
                changed = True
            elif overwrite:
                new["createdAt"] = instances[index]["createdAt"]
                instances[index] = new
                changed = True
        if changed:
            result.updated.append(iri)
        else:
            result.not_updated.append((iri, NOT_OVERWRITTEN))
    entity["modifiedAt"] = now
    return result


def update_entity(entity: Entity, fragment: Entity) -> UpdateResult:
    """Update attributes (clause 5.6.2): instances are replaced whole and NGSI-LD Null deletes one.

    The ETSI suite (011_01_03) expects attributes the entity does not have yet to be added, as
    peers do, so they are; a scope can only be updated on an entity that has one."""
    result = UpdateResult()
    now = now_iso()
    _add_types(entity, fragment, now)
    if "scope" in fragment:
        if "scope" in entity:
            entity["scope"] = fragment["scope"]
            result.updated.append("scope")
        else:
            result.not_updated.append(("scope", "The entity has no scope to update"))
    result.updated.extend(_apply(entity, fragment, added=lambda new: new, changed=_replaced))
    entity["modifiedAt"] = now
    return result


def merge_entity(entity: Entity, fragment: Entity, now: str) -> None:
    """Merge-patch semantics: attributes and sub-attributes merge, NGSI-LD Null deletes."""
    _add_types(entity, fragment, now)
    if "scope" in fragment:
        entity["scope"] = fragment["scope"]

    def merged(current: Instance, patch: Instance) -> Instance:
        merge_instance(current, patch, now)
        return current

    _apply(entity, fragment, added=_drop_nulls, changed=merged)
    entity["modifiedAt"] = now


def _apply(
    entity: Entity,
    fragment: Entity,
    *,
    added: Callable[[Instance], Instance],
    changed: Callable[[Instance, Instance], Instance],
) -> list[str]:
    """Each instance of ``fragment`` into ``entity``, by its datasetId: NGSI-LD Null deletes
    that instance, a new datasetId is added (as ``added`` makes it), an existing one becomes
    ``changed(current, new)``; an attribute left without instances goes. Update and merge
    differ only in ``added`` and ``changed``. Returns the attribute IRIs of the fragment."""
    names = []
    for iri, new_instances in attributes_of(fragment).items():
        instances = entity.setdefault(iri, [])
        for new in new_instances:
            index = instance_index(instances, new.get("datasetId"))
            if new.get("null"):
                if index is not None:
                    del instances[index]
            elif index is None:
                instances.append(added(new))
            else:
                instances[index] = changed(instances[index], new)
        if not instances:
            del entity[iri]
        names.append(iri)
    return names


def _replaced(current: Instance, new: Instance) -> Instance:
    """``new`` in place of ``current``, which it keeps the creation time of."""
    new["createdAt"] = current["createdAt"]
    return new


def merge_instance(current: Instance, patch: Instance, now: str, *, keep_value: bool = False) -> None:
    kind = patch["type"]
    member = VALUE_MEMBER[kind]
    if not keep_value:
        for old_member in model.KIND_OF_MEMBER:
            current.pop(old_member, None)
        current["type"] = kind
        current[member] = patch[member]
    for key, item in patch.items():
        if key in ("type", member, "createdAt", "modifiedAt", "null"):
            continue
        if isinstance(item, dict) and item.get("null"):
            current.pop(key, None)
        elif key in model.INSTANCE_MEMBERS or not isinstance(item, dict) or key not in current:
            current[key] = _drop_nulls(item) if isinstance(item, dict) else item
        else:
            merge_instance(current[key], item, now)
    current["modifiedAt"] = now


def _drop_nulls(instance: Instance) -> Instance:
    return {k: v for k, v in instance.items() if not (isinstance(v, dict) and v.get("null"))}


def _add_types(entity: Entity, fragment: Entity, now: str) -> None:
    for t in fragment.get("type", ()):
        if t not in entity["type"]:
            entity["type"].append(t)
            entity["modifiedAt"] = now


def instance_index(instances: list[Instance], dataset_id: str | None) -> int | None:
    for index, instance in enumerate(instances):
        if instance.get("datasetId") == dataset_id:
            return index
    return None
