"""The NGSI-LD query languages of ETSI GS CIM 009: q (4.9), scopeQ (4.19), geoQ (4.10), types (4.17),
and the parameters that shape an answer: attribute lists, pick / omit (4.21) and orderBy.

Each language is parsed once into a frozen AST, validated with a 400 BadRequestData for anything
malformed, has its names expanded through the request @context with ``resolve()``, and is then
evaluated against many canonical entities. The package depends on no layer of Kizuna, only on
top-level helpers (:mod:`kizuna.errors`, :mod:`kizuna.patterns`, :mod:`kizuna.members`): the
store compiles and evaluates these ASTs, and the NGSI-LD layer builds them from requests, so
the language sits below both.

One concept per module: :mod:`~kizuna.query.grammar` (scanner, the shared `;` / `|` grammar),
:mod:`~kizuna.query.q`, :mod:`~kizuna.query.scope`, :mod:`~kizuna.query.types`,
:mod:`~kizuna.query.projection`, :mod:`~kizuna.query.order` and :mod:`~kizuna.query.geo`.
Callers import from the package; the modules import each other.
"""

from __future__ import annotations

from kizuna.query.geo import (
    DEFAULT_GEOPROPERTY,
    GEOMETRIES,
    GEORELS,
    GeoQuery,
    boxes_inside,
    geo_matches,
    geo_matches_many,
    geo_matches_values,
    parse_geoq,
    simple_points,
)
from kizuna.query.grammar import check_regex
from kizuna.query.order import OrderBy, OrderKey, parse_order_by
from kizuna.query.projection import ENTITY_MEMBER_NAMES, Projection, parse_attrs_list, parse_projection
from kizuna.query.q import (
    AttrPath,
    Comparison,
    Exists,
    NotExists,
    Pattern,
    QAnd,
    QExpr,
    QOr,
    Range,
    Scalar,
    Uri,
    ValueList,
    instance_leaves,
    matches,
    parse_q,
)
from kizuna.query.scope import ScopeAnd, ScopeExpr, ScopeOr, ScopePattern, parse_scope_q
from kizuna.query.types import TypeAnd, TypeExpr, TypeName, TypeOr, parse_type_expr

__all__ = [
    "DEFAULT_GEOPROPERTY",
    "ENTITY_MEMBER_NAMES",
    "GEOMETRIES",
    "GEORELS",
    "AttrPath",
    "Comparison",
    "Exists",
    "GeoQuery",
    "NotExists",
    "OrderBy",
    "OrderKey",
    "Pattern",
    "Projection",
    "QAnd",
    "QExpr",
    "QOr",
    "Range",
    "Scalar",
    "ScopeAnd",
    "ScopeExpr",
    "ScopeOr",
    "ScopePattern",
    "TypeAnd",
    "TypeExpr",
    "TypeName",
    "TypeOr",
    "Uri",
    "ValueList",
    "boxes_inside",
    "check_regex",
    "geo_matches",
    "geo_matches_many",
    "geo_matches_values",
    "instance_leaves",
    "matches",
    "parse_attrs_list",
    "parse_geoq",
    "parse_order_by",
    "parse_projection",
    "parse_q",
    "parse_scope_q",
    "parse_type_expr",
    "simple_points",
]
