"""The reads of NGSI v2 over the node's entities: Orion's parameters in, v2 entities out.

Every read goes through :class:`EntityService` (and so through the one policy decision): a v2
client sees exactly what the same subject sees through NGSI-LD. Names (types, attributes) are
expanded and compacted with one term map, the request's (docs/interop-catalogs.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kizuna.access.subject import Subject
from kizuna.errors import BadRequestData, NonExistingTenant, ResourceNotFound
from kizuna.jsonld.terms import TermMap
from kizuna.ngsild.entities import EntityService
from kizuna.ngsild.model import is_uri
from kizuna.ngsild.render import View, render_entity
from kizuna.ngsild.selection import MAX_OFFSET, int_param, names, parse_selection, parse_types
from kizuna.ngsiv2.translate import BUILTINS, Entity, v2_entity

OPTIONS = frozenset({"keyValues", "count"})
QUERY_PARAMS = frozenset({"type", "id", "idPattern", "limit", "offset", "attrs", "options"})
RETRIEVE_PARAMS = frozenset({"type", "attrs", "options"})
ENTITY_NOT_FOUND = "The requested entity has not been found. Check type and id"


@dataclass(slots=True)
class Shape:
    """Which attributes an answer keeps (None: all), the builtins it adds, and its form."""

    attrs: frozenset[str] | None
    builtins: list[str]
    key_values: bool
    count: bool


@dataclass(slots=True)
class Found:
    entities: list[Entity]
    total: int | None


def parse_shape(params: Mapping[str, str], terms: TermMap) -> Shape:
    options = set(names(params, "options") or [])
    unknown = sorted(options - OPTIONS)
    if unknown:
        raise BadRequestData(f"Unsupported options: {', '.join(unknown)} (supported: keyValues, count)")
    listed = names(params, "attrs")
    builtins = [n for n in listed or [] if n in BUILTINS]
    wanted = [n for n in listed or [] if n not in BUILTINS]
    every = listed is None or "*" in wanted
    attrs = None if every else frozenset(terms.expand(n) for n in wanted if n != "*")
    return Shape(attrs, builtins, "keyValues" in options, "count" in options)


class V2Reads:
    def __init__(self, entities: EntityService) -> None:
        self.entities = entities

    async def query(
        self,
        tenant: str,
        subject: Subject,
        params: Mapping[str, str],
        terms: TermMap,
        page: tuple[int, int],
    ) -> Found:
        """``GET /v2/entities``: type (a list), id (a list), idPattern; ``attrs`` only shapes
        the answer (in v2 it selects no entities). ``page`` is (limit, offset)."""
        shape = parse_shape(params, terms)
        narrowed = {k: v for k, v in params.items() if k in ("type", "idPattern")}
        ids = names(params, "id")
        if ids is not None:
            ids = [i for i in ids if is_uri(i)]  # NGSI-LD ids are URIs: no other id can match
            if not ids:
                return Found([], 0 if shape.count else None)
            narrowed["id"] = ",".join(ids)
        selection = parse_selection(narrowed, terms, kind=None)
        limit, offset = page
        query = selection.entity_query(limit=limit, offset=offset, count=shape.count)
        try:
            result = await self.entities.query(tenant, subject, query)
        except NonExistingTenant:  # Orion answers a service it never saw as an empty one
            return Found([], 0 if shape.count else None)
        rendered = [self._render(e, terms, shape) for e in result.entities]
        return Found(rendered, result.total)

    async def retrieve(
        self, tenant: str, subject: Subject, entity_id: str, params: Mapping[str, str], terms: TermMap
    ) -> Entity:
        """``GET /v2/entities/{id}``; every failure to find it is Orion's one NotFound."""
        shape = parse_shape(params, terms)
        types = parse_types(params, terms)
        if not is_uri(entity_id):
            raise ResourceNotFound(ENTITY_NOT_FOUND)
        try:
            entity = await self.entities.retrieve(tenant, subject, entity_id, types)
        except (ResourceNotFound, NonExistingTenant):
            raise ResourceNotFound(ENTITY_NOT_FOUND) from None
        return self._render(entity, terms, shape)

    def _render(self, entity: Entity, terms: TermMap, shape: Shape) -> Entity:
        rendered = render_entity(entity, terms, View(attrs=shape.attrs))
        return v2_entity(rendered, entity, shape.builtins, shape.key_values)


def parse_page(params: Mapping[str, str], default_limit: int, max_limit: int) -> tuple[int, int]:
    """Orion's paging: ``limit`` from 1 (default 20) to the node's maximum, ``offset`` from 0."""
    limit = int_param(params, "limit", default_limit, minimum=1, maximum=max_limit)
    return limit, int_param(params, "offset", 0, maximum=MAX_OFFSET)
