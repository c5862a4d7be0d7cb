"""Discovery of what a tenant holds (clause 5.7.5-5.7.10): entity types and attributes.

The summary is one pass over the tenant's entities; the routes compact its IRIs for the client.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kizuna.access.subject import Subject
from kizuna.errors import ResourceNotFound
from kizuna.jsonld.contexts import ContextRegistry
from kizuna.jsonld.terms import TermMap
from kizuna.ngsild import edge
from kizuna.ngsild.entities import EntityService
from kizuna.ngsild.merging import attributes_of
from kizuna.ngsild.selection import bool_param
from kizuna.ngsild.tenants import require_tenant

P_DISCOVERY = frozenset({"details", "local", "type", "attrs"})


@dataclass(slots=True)
class AttributeSummary:
    kinds: set[str] = field(default_factory=set)
    types: set[str] = field(default_factory=set)
    entity_count: int = 0


@dataclass(slots=True)
class TypeSummary:
    attributes: dict[str, set[str]] = field(default_factory=dict)  # attribute IRI -> kinds
    entity_count: int = 0


@dataclass(slots=True)
class Inventory:
    """Types and attributes of a tenant, in first-seen order (entities in insertion order)."""

    types: dict[str, TypeSummary] = field(default_factory=dict)
    attributes: dict[str, AttributeSummary] = field(default_factory=lambda: defaultdict(AttributeSummary))


async def take_inventory(entities: EntityService, tenant: str, subject: Subject) -> Inventory:
    """What the entities ``subject`` may read hold: another's types are not discovered."""
    await require_tenant(entities.store, tenant, subject)
    inventory = Inventory()
    async for entity in entities.readable(tenant, subject):
        types = entity.get("type", [])
        for entity_type in types:
            summary = inventory.types.setdefault(entity_type, TypeSummary())
            summary.entity_count += 1
        for iri, instances in attributes_of(entity).items():
            kinds = {instance["type"] for instance in instances}
            attribute = inventory.attributes[iri]
            attribute.kinds |= kinds
            attribute.types.update(types)
            attribute.entity_count += 1
            for entity_type in types:
                inventory.types[entity_type].attributes.setdefault(iri, set()).update(kinds)
    return inventory


class DiscoveryApi:
    def __init__(self, entities: EntityService, contexts: ContextRegistry) -> None:
        self.entities = entities
        self.contexts = contexts

    async def _start(self, request: Request) -> tuple[str, TermMap, str | None, bool, Inventory]:
        edge.check_params(request, P_DISCOVERY)
        media = edge.accepted_type(request)
        terms, context = await edge.link_terms(request, self.contexts)
        details = bool_param(request.query_params, "details")
        inventory = await take_inventory(self.entities, edge.tenant_of(request), edge.subject_of(request))
        return media, terms, context, details, inventory

    async def types(self, request: Request) -> Response:
        media, terms, context, details, inventory = await self._start(request)
        if not details:
            return edge.respond(
                _listing("EntityTypeList", inventory.types, terms), media=media, context=context
            )
        body = [
            {
                "id": iri,
                "type": "EntityType",
                "typeName": terms.compact(iri),
                "attributeNames": [terms.compact(a) for a in summary.attributes],
            }
            for iri, summary in inventory.types.items()
        ]
        return edge.respond(body, media=media, context=context)

    async def type_info(self, request: Request) -> Response:
        media, terms, context, _, inventory = await self._start(request)
        name = request.path_params["type"]
        iri = terms.expand(name)
        summary = inventory.types.get(iri)
        if summary is None:
            raise ResourceNotFound(f"No entity of type {name}")
        body = {
            "id": iri,
            "type": "EntityTypeInfo",
            "typeName": terms.compact(iri),
            "entityCount": summary.entity_count,
            "attributeDetails": [
                {
                    "id": attribute,
                    "type": "Attribute",
                    "attributeName": terms.compact(attribute),
                    "attributeTypes": sorted(kinds),
                }
                for attribute, kinds in summary.attributes.items()
            ],
        }
        return edge.respond(body, media=media, context=context)

    async def attributes(self, request: Request) -> Response:
        media, terms, context, details, inventory = await self._start(request)
        if not details:
            return edge.respond(
                _listing("AttributeList", inventory.attributes, terms), media=media, context=context
            )
        body = [
            {
                "id": iri,
                "type": "Attribute",
                "attributeName": terms.compact(iri),
                "typeNames": [terms.compact(t) for t in sorted(summary.types)],
            }
            for iri, summary in inventory.attributes.items()
        ]
        return edge.respond(body, media=media, context=context)

    async def attribute_info(self, request: Request) -> Response:
        media, terms, context, _, inventory = await self._start(request)
        name = request.path_params["attr"]
        iri = terms.expand(name)
        summary = inventory.attributes.get(iri)
        if summary is None:
            raise ResourceNotFound(f"No entity has an attribute {name}")
        body = {
            "id": iri,
            "type": "Attribute",
            "attributeName": terms.compact(iri),
            "attributeCount": summary.entity_count,
            "attributeTypes": sorted(summary.kinds),
            "typeNames": [terms.compact(t) for t in sorted(summary.types)],
        }
        return edge.respond(body, media=media, context=context)

    def routes(self) -> list[Route]:
        return [
            Route("/types", self.types, methods=["GET"]),
            Route("/types/{type:path}", self.type_info, methods=["GET"]),
            Route("/attributes", self.attributes, methods=["GET"]),
            Route("/attributes/{attr:path}", self.attribute_info, methods=["GET"]),
        ]


def _listing(kind: str, iris: Iterable[str], terms: TermMap) -> dict[str, Any]:
    """An EntityTypeList or AttributeList: the compacted names, under a fresh id."""
    member = {"EntityTypeList": "typeList", "AttributeList": "attributeList"}[kind]
    return {
        "id": f"urn:ngsi-ld:{kind}:{uuid.uuid4()}",
        "type": kind,
        member: [terms.compact(i) for i in iris],
    }
