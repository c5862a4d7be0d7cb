"""Linked entity retrieval (clause 4.5.23): the entities the Relationships of an answer link to,
for ``join=inline`` (inlined into the Relationship) and ``join=flat`` (listed after the answer)."""

from __future__ import annotations

from kizuna.access.subject import Subject
from kizuna.ngsild.entities import EntityService
from kizuna.ngsild.model import is_uri
from kizuna.ngsild.render import View, linked_targets
from kizuna.ngsild.selection import EntitySelection
from kizuna.store import Entity


async def linked_entities(
    entities: EntityService, tenant: str, subject: Subject, roots: list[Entity], view: View
) -> tuple[dict[str, Entity], list[tuple[Entity, View]]]:
    """Follow the Relationships the view keeps, ``joinLevel`` levels deep, one store query per
    level; only entities ``subject`` may read are linked.

    Returns every entity a Relationship may be inlined with (the roots too, so that entities
    of one answer that link to each other are inlined) and, for ``join=flat``, the linked
    entities that are not roots, each once, with the view its first link asks for."""
    linked: dict[str, Entity] = {e["id"]: e for e in roots}
    if view.join is None:
        return linked, []
    flat: list[tuple[Entity, View]] = []
    frontier: list[tuple[Entity, View]] = [(e, view) for e in roots]
    for _ in range(view.join_level):
        targets: dict[str, View] = {}
        for entity, entity_view in frontier:
            for target, target_view in linked_targets(entity, entity_view):
                if target not in linked and is_uri(target):
                    targets.setdefault(target, target_view)
        if not targets:
            break
        result = await entities.query(tenant, subject, EntitySelection(ids=list(targets)).entity_query())
        frontier = []
        for entity in result.entities:
            linked[entity["id"]] = entity
            frontier.append((entity, targets[entity["id"]]))
        flat.extend(frontier)
    return linked, flat
