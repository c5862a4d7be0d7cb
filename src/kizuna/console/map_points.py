"""What the console's map draws: each readable entity with a location, as one compact row.

The map needs only an entity's id, type, geometry and the few attributes its colour depends
on, for every located entity of the tenant (45,000 street lights at city scale). Reading them
through ``GET /entities`` takes a discovery of the types first and fifty pages of keyValues
with full IRIs, seconds of work for the node; one pass over the readable entities, keeping
only those members, takes a fraction of that. The same read rights apply: the rows come from
``EntityService.readable``, as discovery's do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kizuna.access.subject import Subject
from kizuna.ngsild.entities import EntityService
from kizuna.ngsild.tenants import require_tenant

LOCATION = "https://uri.etsi.org/ngsi-ld/location"
# The attributes a colour depends on, by local name (console/static/js/state.js reads them):
# the simulator's Smart Data Models terms and the risk service's core-context ones alike.
STATE_NAMES = (
    "status",
    "powerState",
    "illuminanceLevel",
    "voltage",
    "congested",
    "co2",
    "riskLevel",
    "apState",
)
_COLUMN = {name: index for index, name in enumerate(STATE_NAMES)}
_EMPTY = (None,) * len(STATE_NAMES)


def local_name(iri: str) -> str:
    return iri.rsplit("/", 1)[-1].rsplit("#", 1)[-1]


@dataclass(slots=True)
class MapPoints:
    """``rows``: ``[id, type index, geometry, *state values]``, values in STATE_NAMES order
    (None where the entity has no such attribute); ``types``: the type IRIs indexed."""

    types: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        return {"attributes": list(STATE_NAMES), "types": self.types, "rows": self.rows}


async def map_points(entities: EntityService, tenant: str, subject: Subject) -> MapPoints:
    await require_tenant(entities.store, tenant, subject)
    out = MapPoints()
    index: dict[str, int] = {}
    columns: dict[str, int] = {}  # attribute IRI -> its state column
    seen: set[str] = set()  # every member name met so far, state or not
    async for entity in entities.readable(tenant, subject):
        location = entity.get(LOCATION)
        if not location or not entity.get("type"):
            continue
        entity_type = entity["type"][0]
        if entity_type not in index:
            index[entity_type] = len(out.types)
            out.types.append(entity_type)
        # Set operations on the keys run in C: only names never met before are looked at.
        for iri in entity.keys() - seen:
            seen.add(iri)
            if (column := _COLUMN.get(local_name(iri))) is not None:
                columns[iri] = column
        row: list[Any] = [entity["id"], index[entity_type], location[0].get("value"), *_EMPTY]
        for iri in entity.keys() & columns.keys():
            instances = entity[iri]
            if isinstance(instances, list) and instances:
                row[3 + columns[iri]] = instances[0].get("value")
        out.rows.append(row)
    return out
