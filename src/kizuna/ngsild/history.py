"""What the entity API's writes add to the history, and how long history is kept.

:func:`record_changes` runs inside every entity write transaction (``kizuna.ngsild.entities``),
so the history holds each committed version and nothing a rolled-back write made;
:func:`prune_history_forever` enforces ``--history-retention``."""

from __future__ import annotations

from typing import Any

from kizuna.members import VALUE_MEMBER
from kizuna.ngsild import model
from kizuna.retention import prune_forever
from kizuna.store import Entity, Store

Instance = dict[str, Any]


def deletion_record(instance: Instance, now: str) -> Instance:
    """The history record of a deleted attribute instance: its kind, NGSI-LD Null, deletedAt.

    This is what the entity API appends when an attribute (instance) is deleted."""
    kind = instance["type"]
    member = VALUE_MEMBER[kind]
    value: Any = model.NULL
    if kind == "LanguageProperty":
        value = {"@none": model.NULL}
    elif kind in ("ListProperty", "ListRelationship"):
        value = [model.NULL]
    record: Instance = {"type": kind, member: value}
    if "datasetId" in instance:
        record["datasetId"] = instance["datasetId"]
    record["createdAt"] = instance.get("createdAt", now)
    record["modifiedAt"] = now
    record["deletedAt"] = now
    return record


async def record_changes(tx: Any, before: Entity | None, after: Entity | None, now: str) -> None:
    """Append to the history what changed between two versions of an entity, in ``tx``: every
    new or changed instance as it is now, and a deletion record for every instance gone.
    ``before`` None is a creation, ``after`` None a deletion. Call it before committing."""
    core = after if after is not None else before
    if core is None:
        return
    types = core.get("type", [])
    scope = after.get("scope") if after is not None else None
    old = _instances_by_key(before)
    new = _instances_by_key(after)
    changed = [
        (iri, instance)
        for (iri, _), instance in new.items()
        if old.get((iri, instance.get("datasetId"))) != instance
    ]
    changed += [(key[0], deletion_record(instance, now)) for key, instance in old.items() if key not in new]
    await tx.append_histories(core["id"], types, changed, scope=scope)
    if before is not None and "scope" in before and (after is None or "scope" not in after):
        # The scope's deletion record (ETSI 020_19): an empty scope, deletedAt.
        record = {"type": "Property", "value": [], "createdAt": before.get("createdAt", now)}
        await tx.append_history(core["id"], types, "scope", {**record, "modifiedAt": now, "deletedAt": now})


def _instances_by_key(entity: Entity | None) -> dict[tuple[str, str | None], Instance]:
    if entity is None:
        return {}
    return {
        (iri, instance.get("datasetId")): instance
        for iri, instances in entity.items()
        if iri not in ("id", "type", "scope", "@context") and iri not in model.SYSTEM_MEMBERS
        for instance in instances
    }


async def prune_history_forever(store: Store, retention: float, *, every: float | None = None) -> None:
    """Delete the history older than ``retention`` seconds, until cancelled (see
    :func:`kizuna.retention.prune_forever`)."""
    await prune_forever(store.prune_history, retention, "attribute instances", every=every)
