"""Which entities a read selects, and how much of each: query parameters (and the members of a
batch query body, clause 5.7.3) in, one validated :class:`EntitySelection`, :class:`View` and
:class:`Page` out.

The entity routes, the temporal routes and the data plane all select entities through
:class:`EntitySelection`, so that what narrows every read (access control, later) has one place
to do it: :meth:`EntitySelection.entity_query` and :meth:`EntitySelection.temporal_filter`.
Nothing here knows HTTP: the routes hand over plain mappings of parameter name to value.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from kizuna import query as ql
from kizuna.errors import BadRequestData, InvalidRequest
from kizuna.jsonld.terms import TermMap
from kizuna.ngsild.merging import ENTITY_CORE
from kizuna.ngsild.model import is_uri
from kizuna.ngsild.render import View
from kizuna.ngsild.temporal import TemporalFilter
from kizuna.store import EntityQuery

Params = Mapping[str, str]
"""Query parameters, one value each (the last one given, as Starlette's ``QueryParams.get``)."""

# What a batch query body (type Query) may carry besides ``type``, for each kind of query.
ENTITY_QUERY_BODY = (
    "entities",
    "attrs",
    "q",
    "scopeQ",
    "lang",
    "join",
    "joinLevel",
    "orderBy",
    "pick",
    "omit",
)
TEMPORAL_QUERY_BODY = ("entities", "attrs", "q", "scopeQ", "lang", "geoQ", "temporalQ")
_TEMPORAL_Q = ("timerel", "timeAt", "endTimeAt", "timeproperty", "lastN")
FORMATS = ("normalized", "keyValues", "simplified", "concise")


# -- single parameters -------------------------------------------------------------------------------


def names(params: Params, name: str) -> list[str] | None:
    """A comma-separated list parameter (``attrs``, ``id``, ``datasetId``, ``keep`` ...), if given."""
    raw = params.get(name)
    return None if raw is None else ql.parse_attrs_list(raw, name)


def int_param(
    params: Params, name: str, default: int, *, minimum: int = 0, maximum: int | None = None
) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequestData(f"Parameter {name} must be an integer, not {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        raise BadRequestData(f"Parameter {name} must be between {minimum} and {maximum}")
    return value


def bool_param(params: Params, name: str) -> bool:
    raw = params.get(name)
    if raw is None:
        return False
    if raw not in ("true", "false"):
        raise BadRequestData(f"Parameter {name} must be true or false")
    return raw == "true"


# -- paging ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Page:
    """Which part of a selection a query answers (clause 5.5.9), and whether it counts the whole."""

    limit: int
    offset: int = 0
    count: bool = False


MAX_OFFSET = 2**53  # far past any store, and within what the stores' integers hold


def parse_page(params: Params, default_limit: int, max_limit: int) -> Page:
    count = bool_param(params, "count")
    limit = int_param(params, "limit", default_limit, maximum=max_limit)
    offset = int_param(params, "offset", 0, maximum=MAX_OFFSET)
    if limit == 0 and not count:
        raise BadRequestData("limit=0 is only allowed together with count=true")
    return Page(limit, offset, count)


# -- the selection -----------------------------------------------------------------------------------


@dataclass(slots=True)
class EntitySelection:
    """The entities a read selects, every name an IRI; every filter given must hold.

    ``types`` is what a store narrows by; ``type_expr`` is set when the type selection is more
    than a list (``;`` in it) and is then checked on each entity."""

    types: list[str] | None = None
    type_expr: ql.TypeExpr | None = None
    ids: list[str] | None = None
    id_pattern: str | None = None
    attrs: list[str] | None = None
    q: ql.QExpr | None = None
    scope: ql.ScopeExpr | None = None
    geo: ql.GeoQuery | None = None
    geoproperty: str | None = None
    order: ql.OrderBy | None = None
    local: bool = False

    def entity_query(self, *, limit: int | None = None, offset: int = 0, count: bool = False) -> EntityQuery:
        """The store query of this selection (a page of it, with ``limit`` and ``offset``)."""
        query = EntityQuery(
            types=self.types,
            ids=self.ids,
            id_pattern=self.id_pattern,
            attrs=self.attrs,
            q=self.q,
            scope=self.scope,
            geo=self.geo,
            geoproperty=self.geoproperty,
            limit=limit,
            offset=offset,
            count=count,
        )
        if self.type_expr is not None:
            query.predicate = lambda e, expr=self.type_expr: expr.matches(e.get("type", []))
        return query

    def temporal_filter(self, *, require_attributes: bool) -> TemporalFilter:
        """The temporal query of this selection: types, ids and idPattern narrow in the store,
        everything else is checked on each entity's current state (``attrs`` names what is read
        of the history, not which entities are selected)."""
        return TemporalFilter(
            types=self.types,
            ids=self.ids,
            id_pattern=self.id_pattern,
            predicate=self.entity_query().residual(attrs=False),
            require_attributes=require_attributes,
            order_by=self.order,
        )


def parse_selection(params: Params, terms: TermMap, *, kind: str | None = "query") -> EntitySelection:
    """The selection of a query (``kind`` names it in the error when it has no filter) or, with
    ``kind`` None, of an operation that checks its filters itself (purge)."""
    selection = EntitySelection(local=params.get("local") == "true")
    type_text = params.get("type")
    if type_text:
        expr = ql.parse_type_expr(type_text).resolve(terms.expand)
        simple = expr.as_simple_list()
        if simple is not None:
            selection.types = simple
        else:
            selection.types, selection.type_expr = sorted(expr.names()), expr
    if params.get("id"):
        ids = names(params, "id") or []
        for entity_id in ids:
            if not is_uri(entity_id):
                raise BadRequestData(f"id {entity_id!r} is not a URI")
        selection.ids = ids
    if params.get("idPattern"):
        selection.id_pattern = ql.check_regex(params["idPattern"])
    attrs, q_text, scope_text, georel = (params.get(n) for n in ("attrs", "q", "scopeQ", "georel"))
    # Clause 5.7.2.4: ids alone do not make a query (ETSI 019_03_05); local=true does (019_25).
    # An idPattern does, as Orion-LD reads it: FiLiP clears a broker with idPattern=.* alone.
    filters = (type_text, attrs, q_text, scope_text, georel, selection.id_pattern)
    if kind is not None and not (selection.local or any(filters)):
        raise BadRequestData(
            f"A {kind} needs at least one of type, idPattern, attrs, q, scopeQ, geoQ or local=true"
        )
    if attrs:
        attr_names = names(params, "attrs") or []
        core = [n for n in attr_names if n in ENTITY_CORE]
        if core:
            raise BadRequestData(f"attrs names attributes; {', '.join(core)} is not an attribute")
        selection.attrs = [terms.expand(n) for n in attr_names]
    if q_text:
        selection.q = ql.parse_q(q_text).resolve(terms.expand)
    if scope_text:
        selection.scope = ql.parse_scope_q(scope_text)
    if georel:
        geoproperty = params.get("geoproperty")
        selection.geo = ql.parse_geoq(
            georel, params.get("geometry", ""), params.get("coordinates", ""), geoproperty
        )
        selection.geoproperty = terms.expand(geoproperty or "location")
    order_by = params.get("orderBy")
    if order_by is not None:
        selection.order = ql.parse_order_by(order_by).resolve(terms.expand)
    return selection


def parse_types(params: Params, terms: TermMap) -> list[str] | None:
    """The ``type`` of an operation on one entity: a plain list of types (IRIs), if given."""
    raw = params.get("type")
    if raw is None:
        return None
    simple = ql.parse_type_expr(raw).as_simple_list()
    if simple is None:
        raise BadRequestData("Only a list of types is allowed here")
    return [terms.expand(t) for t in simple]


@dataclass(slots=True)
class Purge:
    """What DELETE /entities removes: the selected entities, or only some of their attributes."""

    selection: EntitySelection
    keep: set[str] | None
    drop: set[str] | None


def parse_purge(params: Params, terms: TermMap) -> Purge:
    keep, drop = names(params, "keep"), names(params, "drop")
    if keep is not None and drop is not None:
        raise BadRequestData("keep and drop exclude each other")
    if not any(params.get(name) for name in ("type", "id", "idPattern", "q", "scopeQ", "georel", "local")):
        raise BadRequestData(
            "Purging entities needs at least one of type, id, idPattern, q, scopeQ, geoQ, local"
        )
    return Purge(
        parse_selection(params, terms, kind=None),
        keep=None if keep is None else {terms.expand(n) for n in keep},
        drop=None if drop is None else {terms.expand(n) for n in drop},
    )


def query_body_params(body: Any, params: Params, members: Collection[str]) -> dict[str, str]:
    """The parameters of a batch query: ``params`` with what the body (type Query) says instead,
    of its ``members`` (:data:`ENTITY_QUERY_BODY` or :data:`TEMPORAL_QUERY_BODY`)."""
    if not isinstance(body, dict) or body.get("type") != "Query":
        raise BadRequestData("The body of a query must be an object of type Query")
    merged = dict(params)
    for name in members:
        if name not in body or name in ("entities", "geoQ", "temporalQ"):
            continue
        merged[name] = _text(name, body[name])
    if "entities" in members and body.get("entities"):
        merged.update(_selectors(body["entities"]))
    if "temporalQ" in members:
        temporal_q = body.get("temporalQ") or {}
        if not isinstance(temporal_q, dict):
            raise BadRequestData("temporalQ must be an object")
        merged.update((name, str(temporal_q[name])) for name in _TEMPORAL_Q if name in temporal_q)
    geo_q = body.get("geoQ")
    if "geoQ" in members and isinstance(geo_q, dict):
        merged["georel"] = str(geo_q.get("georel", ""))
        merged["geometry"] = str(geo_q.get("geometry", ""))
        coordinates = geo_q.get("coordinates", "")
        merged["coordinates"] = (
            coordinates if isinstance(coordinates, str) else orjson.dumps(coordinates).decode()
        )
        if "geoproperty" in geo_q:
            merged["geoproperty"] = str(geo_q["geoproperty"])
    return merged


def _text(name: str, value: Any) -> str:
    """A body member as the query parameter it stands for (a list joined with commas)."""
    if isinstance(value, str):
        return value
    if name == "joinLevel" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ",".join(value)
    raise BadRequestData(f"{name} must be a string or an array of strings")


def _selectors(entities: Any) -> dict[str, str]:
    """``type``, ``id`` and ``idPattern`` of a body's EntitySelectors (the first idPattern)."""
    if not isinstance(entities, list) or not all(isinstance(e, dict) for e in entities):
        raise BadRequestData("entities must be an array of EntitySelectors")
    for selector in entities:
        for member in ("id", "idPattern", "type"):
            if member in selector and not isinstance(selector[member], str):
                raise BadRequestData(f"{member} of an EntitySelector must be a string")
    found: dict[str, str] = {}
    types = [e["type"] for e in entities if isinstance(e.get("type"), str)]
    if types:
        found["type"] = ",".join(types)
    ids = [e["id"] for e in entities if "id" in e]
    if ids:
        found["id"] = ",".join(ids)
    patterns = [e["idPattern"] for e in entities if "idPattern" in e]
    if patterns:
        found["idPattern"] = patterns[0]
    return found


# -- the view ----------------------------------------------------------------------------------------


def parse_view(params: Params, terms: TermMap, options: Collection[str]) -> View:
    """The rendering of the selected entities a read asks for (format, attrs, pick/omit, lang,
    datasetId, join)."""
    if not params and not options:
        return _WHOLE  # most reads ask for nothing but the entity
    form = params.get("format")
    if form is not None and form not in FORMATS:
        raise InvalidRequest(f"Unknown format {form!r}; expected one of {', '.join(FORMATS)}")
    if form is None:
        if "keyValues" in options or "simplified" in options:
            form = "keyValues"
        elif "concise" in options:
            form = "concise"
        else:
            form = "normalized"
    if form == "simplified":
        form = "keyValues"
    attrs = names(params, "attrs")
    pick, omit = _projection(params, "pick", terms), _projection(params, "omit", terms)
    if attrs is not None and (pick is not None or omit is not None):
        raise BadRequestData("attrs cannot be combined with pick or omit")
    if pick is not None and omit is not None:
        both = pick.names() & omit.plain_names()
        if both:
            raise BadRequestData(f"{', '.join(sorted(both))} is both picked and omitted")
    join = params.get("join")
    if join is not None and join not in ("flat", "inline", "@none"):
        raise BadRequestData(f"Invalid join {join!r}: expected flat, inline or @none")
    join_level = _join_level(params.get("joinLevel"))
    return View(
        form=form,
        sys_attrs="sysAttrs" in options,
        lang=params.get("lang"),
        attrs=None if attrs is None else _expand_members(attrs, terms),
        pick=None if pick is None else pick.names(),
        omit=frozenset() if omit is None else omit.plain_names(),
        dataset_ids=dataset_ids(params),
        pick_tree=pick,
        omit_tree=omit,
        join=None if join == "@none" else join,
        join_level=join_level,
    )


_WHOLE = View()


def parse_member_names(params: Params, terms: TermMap) -> tuple[frozenset[str] | None, frozenset[str]]:
    """``pick`` and ``omit`` of a temporal read: plain names of members to keep (None: all) and
    to drop; a temporal entity links to nothing, so there are no projections of linked ones."""
    pick, omit = names(params, "pick"), names(params, "omit")
    if (pick is not None or omit is not None) and params.get("attrs"):
        raise BadRequestData("pick/omit and attrs exclude each other")
    both = set(pick or ()) & set(omit or ())
    if both:
        raise BadRequestData(f"{', '.join(sorted(both))} is both picked and omitted")
    return (
        None if pick is None else _expand_members(pick, terms),
        frozenset() if omit is None else _expand_members(omit, terms),
    )


def dataset_ids(params: Params) -> frozenset[str | None] | None:
    """``datasetId``: the instances wanted (None for ``@none``, the default instance)."""
    given = names(params, "datasetId")
    return None if given is None else frozenset(None if d == "@none" else d for d in given)


def _expand_members(members: list[str], terms: TermMap) -> frozenset[str]:
    return frozenset(n if n in ql.ENTITY_MEMBER_NAMES else terms.expand(n) for n in members)


def _join_level(raw: str | None) -> int:
    if raw is None:
        return 1
    if not raw.isdigit() or int(raw) < 1:
        raise BadRequestData(f"joinLevel must be a positive integer, not {raw!r}")
    return int(raw)


def _projection(params: Params, name: str, terms: TermMap) -> ql.Projection | None:
    raw = params.get(name)
    if raw is None:
        return None
    return ql.parse_projection(raw, name).resolve(terms.expand)
