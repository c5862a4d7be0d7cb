"""Discovery of what a tenant holds (clause 5.7.5-5.7.10): entity types and attributes.

The summary is one pass over the tenant's entities; the routes compact its IRIs for the client.
Without ``local=true``, the context sources registered for the discovery operation are asked the
same question (clause 4.3.6, :meth:`kizuna.ngsild.forwarding.Federation.discover`) and what they
answer is added to the summary: names and attribute types joined, entity and attribute counts
summed (a source's entities are its own, so they are not counted twice).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kizuna.access.subject import Subject
from kizuna.errors import ResourceNotFound
from kizuna.jsonld.contexts import ContextRegistry
from kizuna.jsonld.terms import TermMap
from kizuna.ngsild import edge
from kizuna.ngsild.entities import EntityService
from kizuna.ngsild.forwarding import Federation
from kizuna.ngsild.merging import attributes_of
from kizuna.ngsild.routes import origin_of
from kizuna.ngsild.selection import bool_param
from kizuna.ngsild.tenants import require_tenant

P_DISCOVERY = frozenset({"details", "local", "type", "attrs"})
S = TypeVar("S")


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
    def __init__(self, entities: EntityService, contexts: ContextRegistry, federation: Federation) -> None:
        self.entities = entities
        self.contexts = contexts
        self.federation = federation

    async def _start(
        self, request: Request, facet: _Facet[Any], name: str | None = None
    ) -> tuple[str, TermMap, str | None, bool, Inventory, str | None]:
        """The inventory of this node and, added to it, of the sources, and the IRI of ``name``
        (the type or attribute asked about, if one is)."""
        media, terms, context = await edge.reading(request, self.contexts, P_DISCOVERY)
        one = None if name is None else terms.expand(name)
        details = bool_param(request.query_params, "details")
        tenant = edge.tenant_of(request)
        inventory = await take_inventory(self.entities, tenant, edge.subject_of(request))
        operation, shape = (
            facet.info_op if one is not None else facet.details_op if details else facet.list_op
        )
        answers = await self.federation.discover(
            tenant,
            operation,
            quote(request.url.path, safe="/:%"),  # a "#" of a type IRI, if it came decoded
            origin_of(request, context),
            types=[one] if one is not None and facet is _TYPES else None,
            attrs=[one] if one is not None and facet is _ATTRIBUTES else None,
        )
        for data, source_terms in answers:
            for item in data if isinstance(data, list) else [data]:
                if isinstance(item, dict):
                    shape(inventory, item, source_terms, one)
        return media, terms, context, details, inventory, one

    async def types(self, request: Request) -> Response:
        return await self._list(request, _TYPES)

    async def type_info(self, request: Request) -> Response:
        return await self._info(request, _TYPES)

    async def attributes(self, request: Request) -> Response:
        return await self._list(request, _ATTRIBUTES)

    async def attribute_info(self, request: Request) -> Response:
        return await self._info(request, _ATTRIBUTES)

    async def _list(self, request: Request, facet: _Facet[S]) -> Response:
        """The names, or with details=true one record each."""
        media, terms, context, details, inventory, _ = await self._start(request, facet)
        summaries = facet.part(inventory)
        if not details:
            return edge.respond(_listing(facet.listing, summaries, terms), media=media, context=context)
        body = [facet.details(iri, summary, terms) for iri, summary in summaries.items()]
        return edge.respond(body, media=media, context=context)

    async def _info(self, request: Request, facet: _Facet[S]) -> Response:
        """What the tenant holds of one type or attribute; 404 if none of its entities has it."""
        name = request.path_params[facet.param]
        media, terms, context, _, inventory, iri = await self._start(request, facet, name)
        assert iri is not None
        summary = facet.part(inventory).get(iri)
        if summary is None:
            raise ResourceNotFound(facet.missing.format(name))
        return edge.respond(facet.info(iri, summary, terms), media=media, context=context)

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


def _record(kind: str, iri: str, terms: TermMap, **members: Any) -> dict[str, Any]:
    """A discovery record: every kind (EntityType, EntityTypeInfo, Attribute) starts with its
    IRI, its kind and its compacted name."""
    name = "attributeName" if kind == "Attribute" else "typeName"
    return {"id": iri, "type": kind, name: terms.compact(iri), **members}


def _type_details(iri: str, summary: TypeSummary, terms: TermMap) -> dict[str, Any]:
    return _record("EntityType", iri, terms, attributeNames=[terms.compact(a) for a in summary.attributes])


def _type_info(iri: str, summary: TypeSummary, terms: TermMap) -> dict[str, Any]:
    details = [
        _record("Attribute", attribute, terms, attributeTypes=sorted(kinds))
        for attribute, kinds in summary.attributes.items()
    ]
    return _record("EntityTypeInfo", iri, terms, entityCount=summary.entity_count, attributeDetails=details)


def _attribute_details(iri: str, summary: AttributeSummary, terms: TermMap) -> dict[str, Any]:
    return _record("Attribute", iri, terms, typeNames=[terms.compact(t) for t in sorted(summary.types)])


def _attribute_info(iri: str, summary: AttributeSummary, terms: TermMap) -> dict[str, Any]:
    return _record(
        "Attribute",
        iri,
        terms,
        attributeCount=summary.entity_count,
        attributeTypes=sorted(summary.kinds),
        typeNames=[terms.compact(t) for t in sorted(summary.types)],
    )


# -- what the sources answer, added to the inventory ---------------------------------------------
# Each takes one item of a source's answer, read with the terms of its @context (and the IRI of
# the type or attribute asked about, for the answers about one).

Shape = Callable[[Inventory, Mapping[str, Any], TermMap, str | None], None]


def _names(item: Mapping[str, Any], member: str, terms: TermMap) -> list[str]:
    value = item.get(member, [])
    return [
        terms.expand(name)
        for name in (value if isinstance(value, list) else [value])
        if isinstance(name, str)
    ]


def _kinds(item: Mapping[str, Any]) -> set[str]:
    value = item.get("attributeTypes", [])
    return {kind for kind in (value if isinstance(value, list) else [value]) if isinstance(kind, str)}


def _count(item: Mapping[str, Any], member: str) -> int:
    value = item.get(member)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _type_list(inventory: Inventory, item: Mapping[str, Any], terms: TermMap, _: str | None) -> None:
    """An EntityTypeList (clause 5.2.24)."""
    for iri in _names(item, "typeList", terms):
        inventory.types.setdefault(iri, TypeSummary())


def _type_record(inventory: Inventory, item: Mapping[str, Any], terms: TermMap, _: str | None) -> None:
    """An EntityType (clause 5.2.25): a type and its attribute names."""
    for iri in _names(item, "typeName", terms):
        summary = inventory.types.setdefault(iri, TypeSummary())
        for attribute in _names(item, "attributeNames", terms):
            summary.attributes.setdefault(attribute, set())


def _type_info_of(inventory: Inventory, item: Mapping[str, Any], terms: TermMap, one: str | None) -> None:
    """An EntityTypeInfo (clause 5.2.26) about the type asked for."""
    assert one is not None
    summary = inventory.types.setdefault(one, TypeSummary())
    summary.entity_count += _count(item, "entityCount")
    for detail in item.get("attributeDetails", ()):
        if isinstance(detail, dict):
            for attribute in _names(detail, "attributeName", terms):
                summary.attributes.setdefault(attribute, set()).update(_kinds(detail))


def _attribute_list(inventory: Inventory, item: Mapping[str, Any], terms: TermMap, _: str | None) -> None:
    """An AttributeList (clause 5.2.27)."""
    for iri in _names(item, "attributeList", terms):
        inventory.attributes.setdefault(iri, AttributeSummary())


def _attribute_record(inventory: Inventory, item: Mapping[str, Any], terms: TermMap, one: str | None) -> None:
    """An Attribute (clause 5.2.28), also the answer about one attribute (with its count)."""
    for iri in [one] if one is not None else _names(item, "attributeName", terms):
        attribute = inventory.attributes[iri]
        attribute.kinds |= _kinds(item)
        attribute.types.update(_names(item, "typeNames", terms))
        if one is not None:
            attribute.entity_count += _count(item, "attributeCount")


@dataclass(frozen=True, slots=True)
class _Facet(Generic[S]):
    """What tells types and attributes apart in discovery; the routes are the same for both."""

    listing: str  # the kind of the name listing
    param: str  # the path parameter naming one
    missing: str  # the 404 message, {} the name
    part: Callable[[Inventory], Mapping[str, S]]
    details: Callable[[str, S, TermMap], dict[str, Any]]  # a record of GET ...?details=true
    info: Callable[[str, S, TermMap], dict[str, Any]]  # the answer about one
    # The operation a registration allows for each request (clause 4.3.6), and how its answer
    # is added to the inventory: the names, the details, the answer about one.
    list_op: tuple[str, Shape]
    details_op: tuple[str, Shape]
    info_op: tuple[str, Shape]


_TYPES = _Facet(
    "EntityTypeList",
    "type",
    "No entity of type {}",
    lambda i: i.types,
    _type_details,
    _type_info,
    ("retrieveEntityTypes", _type_list),
    ("retrieveEntityTypeDetails", _type_record),
    ("retrieveEntityTypeInfo", _type_info_of),
)
_ATTRIBUTES = _Facet(
    "AttributeList",
    "attr",
    "No entity has an attribute {}",
    lambda i: i.attributes,
    _attribute_details,
    _attribute_info,
    ("retrieveAttrTypes", _attribute_list),
    ("retrieveAttrTypeDetails", _attribute_record),
    ("retrieveAttrTypeInfo", _attribute_record),
)
