"""The NGSI-LD query languages of ETSI GS CIM 009 v1.8: q (4.9), scopeQ (4.19), geoQ (4.10), types (4.17).

Each language has a small recursive-descent parser producing a frozen AST, so a query is validated
once, its names are expanded through the request @context with ``resolve()``, and it is then
evaluated against many canonical entities (expanded IRIs, attributes as lists of instances).

Every parse error is a ``BadRequestData`` whose detail names the language, the 0-based position and
what was expected: the ETSI conformance suite expects 400 BadRequestData for malformed expressions.
Evaluation never raises on odd data: a value of the wrong type simply does not match.
"""

from __future__ import annotations

import math
import operator
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time
from typing import Any, Generic, TypeAlias, TypeVar

import numpy as np
import orjson
import shapely
from shapely.errors import ShapelyError
from shapely.geometry import shape as geojson_to_shape
from shapely.geometry.base import BaseGeometry

from kizuna.errors import BadRequestData
from kizuna.members import VALUE_MEMBER
from kizuna.patterns import compile_pattern

MAX_EXPRESSION_LENGTH = 8 * 1024
MAX_NESTING = 64
METADATA_NAMES = frozenset({"observedAt", "unitCode", "createdAt", "modifiedAt", "datasetId"})
EARTH_RADIUS_M = 6_371_008.8
METRES_PER_DEGREE = EARTH_RADIUS_M * math.pi / 180
GEORELS = ("near", "within", "contains", "intersects", "disjoint", "equals", "overlaps")
GEOMETRIES = ("Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon")
DEFAULT_GEOPROPERTY = "location"


# -- scanning and the shared `;` / `|` grammar ---------------------------------------------------


class _Scanner:
    """A cursor over one expression; it also builds the errors so that every detail has one shape."""

    __slots__ = ("language", "pos", "text")

    def __init__(self, language: str, text: str) -> None:
        self.language = language
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def skip_spaces(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def take(self, token: str) -> bool:
        """Consume ``token`` if it comes next; blanks are not skipped (paths and values are contiguous)."""
        if self.text.startswith(token, self.pos):
            self.pos += len(token)
            return True
        return False

    def take_match(self, pattern: re.Pattern[str]) -> str | None:
        found = pattern.match(self.text, self.pos)
        if found is None:
            return None
        self.pos = found.end()
        return found.group()

    def fail(self, message: str, pos: int | None = None) -> BadRequestData:
        at = self.pos if pos is None else pos
        return BadRequestData(f"Invalid {self.language} at position {at}: {message}")

    def error(self, expected: str, pos: int | None = None) -> BadRequestData:
        at = self.pos if pos is None else pos
        found = repr(self.text[at]) if at < len(self.text) else "end of input"
        return self.fail(f"expected {expected}, found {found}", at)


Node = TypeVar("Node")


class _LogicParser(Generic[Node]):
    """The grammar q, scopeQ and type expressions share: `;` (AND) binds tighter than `|` (OR)."""

    def __init__(
        self,
        language: str,
        text: str,
        term: Callable[[_Scanner], Node],
        all_of: Callable[[tuple[Node, ...]], Node],
        any_of: Callable[[tuple[Node, ...]], Node],
        or_tokens: tuple[str, ...] = ("|",),
    ) -> None:
        if len(text) > MAX_EXPRESSION_LENGTH:
            raise BadRequestData(f"Invalid {language}: longer than {MAX_EXPRESSION_LENGTH} characters")
        self.scanner = _Scanner(language, text)
        self.term = term
        self.all_of = all_of
        self.any_of = any_of
        self.or_tokens = or_tokens
        self.operators = " or ".join(repr(t) for t in (";", *or_tokens))

    def parse(self) -> Node:
        node = self._any(0)
        sc = self.scanner
        sc.skip_spaces()
        if sc.pos < len(sc.text):
            if sc.peek() == ")":
                raise sc.fail("unbalanced ')'")
            raise sc.error(f"{self.operators} or end of input")
        return node

    def _take(self, tokens: tuple[str, ...]) -> bool:
        self.scanner.skip_spaces()
        return any(self.scanner.take(token) for token in tokens)

    def _any(self, depth: int) -> Node:
        terms = [self._all(depth)]
        while self._take(self.or_tokens):
            terms.append(self._all(depth))
        return terms[0] if len(terms) == 1 else self.any_of(tuple(terms))

    def _all(self, depth: int) -> Node:
        terms = [self._primary(depth)]
        while self._take((";",)):
            terms.append(self._primary(depth))
        return terms[0] if len(terms) == 1 else self.all_of(tuple(terms))

    def _primary(self, depth: int) -> Node:
        sc = self.scanner
        sc.skip_spaces()
        if not sc.take("("):
            return self.term(sc)
        if depth >= MAX_NESTING:
            raise sc.fail(f"parentheses nested deeper than {MAX_NESTING} levels", sc.pos - 1)
        node = self._any(depth + 1)
        sc.skip_spaces()
        if not sc.take(")"):
            raise sc.error(f"')' or {self.operators}")
        return node


# -- regular expressions -------------------------------------------------------------------------


def check_regex(pattern: str) -> str:
    """Validate a client regular expression (``~=`` operands, ``idPattern``) before it runs on data."""
    try:
        compile_pattern(pattern)
    except ValueError as exc:
        raise BadRequestData(f"Invalid regular expression {pattern[:80]!r}: {exc}") from None
    return pattern


# -- q: AST --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Uri:
    """An unquoted URI literal; unlike a quoted string it takes part in equality only, never ordering."""

    value: str


Scalar: TypeAlias = bool | int | float | str | datetime | date | time | Uri


@dataclass(frozen=True, slots=True)
class ValueList:
    """``a,b,c``: equality with any of the values."""

    values: tuple[Scalar, ...]


@dataclass(frozen=True, slots=True)
class Range:
    """``low..high``, both bounds inclusive."""

    low: Scalar
    high: Scalar


@dataclass(frozen=True, slots=True)
class AttrPath:
    """``attr.sub.sub[key.key]`` or ``attr.sub.observedAt``; ``id`` alone designates the entity id."""

    attribute: str
    sub_attributes: tuple[str, ...] = ()
    metadata: str | None = None
    compound: tuple[str, ...] = ()

    def attribute_names(self) -> set[str]:
        return set() if self.attribute == "id" else {self.attribute}

    def resolve(self, expand: Callable[[str], str]) -> AttrPath:
        if self.attribute == "id":
            return self
        return AttrPath(
            expand(self.attribute),
            tuple(map(expand, self.sub_attributes)),
            self.metadata,
            tuple(map(expand, self.compound)),
        )

    def targets(self, entity: dict[str, Any], datasetid_any: bool) -> list[Any]:
        """The values the path reaches, one per attribute instance (each may itself be a list)."""
        if self.attribute == "id":
            return [entity["id"]] if "id" in entity else []
        nodes = [
            node
            for node in _as_list(entity.get(self.attribute))
            if isinstance(node, dict) and (datasetid_any or "datasetId" not in node)
        ]
        for name in self.sub_attributes:
            nodes = [sub for node in nodes for sub in _as_list(node.get(name)) if isinstance(sub, dict)]
        if self.metadata is not None:
            return [node[self.metadata] for node in nodes if self.metadata in node]
        values = [value for node in nodes if (value := _instance_value(node)) is not _ABSENT]
        for key in self.compound:
            values = list(_members(values, key))
        return values


class QExpr(ABC):
    """A parsed q expression; evaluate it with ``matches(q, entity)``."""

    __slots__ = ()

    @abstractmethod
    def attribute_names(self) -> set[str]:
        """First path segments as written (``id`` excluded): what a store must load to evaluate."""

    @abstractmethod
    def resolve(self, expand: Callable[[str], str]) -> QExpr:
        """A copy with attribute, sub-attribute and compound-key names expanded; metadata names kept."""

    @abstractmethod
    def evaluate(self, entity: dict[str, Any], datasetid_any: bool) -> bool: ...


@dataclass(frozen=True, slots=True)
class QAnd(QExpr):
    terms: tuple[QExpr, ...]

    def attribute_names(self) -> set[str]:
        return set().union(*(term.attribute_names() for term in self.terms))

    def resolve(self, expand: Callable[[str], str]) -> QAnd:
        return QAnd(tuple(term.resolve(expand) for term in self.terms))

    def evaluate(self, entity: dict[str, Any], datasetid_any: bool) -> bool:
        return all(term.evaluate(entity, datasetid_any) for term in self.terms)


@dataclass(frozen=True, slots=True)
class QOr(QExpr):
    terms: tuple[QExpr, ...]

    def attribute_names(self) -> set[str]:
        return set().union(*(term.attribute_names() for term in self.terms))

    def resolve(self, expand: Callable[[str], str]) -> QOr:
        return QOr(tuple(term.resolve(expand) for term in self.terms))

    def evaluate(self, entity: dict[str, Any], datasetid_any: bool) -> bool:
        return any(term.evaluate(entity, datasetid_any) for term in self.terms)


@dataclass(frozen=True, slots=True)
class Exists(QExpr):
    """A bare path: the attribute (sub-attribute, metadata, compound member) is present."""

    path: AttrPath

    def attribute_names(self) -> set[str]:
        return self.path.attribute_names()

    def resolve(self, expand: Callable[[str], str]) -> Exists:
        return Exists(self.path.resolve(expand))

    def evaluate(self, entity: dict[str, Any], datasetid_any: bool) -> bool:
        return bool(self.path.targets(entity, datasetid_any))


@dataclass(frozen=True, slots=True)
class NotExists(QExpr):
    """``!path``: the negation v1.8 allows, absence of the attribute."""

    path: AttrPath

    def attribute_names(self) -> set[str]:
        return self.path.attribute_names()

    def resolve(self, expand: Callable[[str], str]) -> NotExists:
        return NotExists(self.path.resolve(expand))

    def evaluate(self, entity: dict[str, Any], datasetid_any: bool) -> bool:
        return not self.path.targets(entity, datasetid_any)


@dataclass(frozen=True, slots=True)
class Comparison(QExpr):
    """``path op value``; it holds if any reached value satisfies it (lists: any element).

    ``!=`` is the negation of ``==`` per existing value, so it is false on a missing attribute.
    Ordering needs matching types: numbers with numbers, strings lexicographically, DateTime /
    Date / Time literals with values parsed as such (``{"@value": ...}`` unwrapped); anything else
    is simply no match.
    """

    path: AttrPath
    op: str
    value: Scalar | ValueList | Range

    def attribute_names(self) -> set[str]:
        return self.path.attribute_names()

    def resolve(self, expand: Callable[[str], str]) -> Comparison:
        return replace(self, path=self.path.resolve(expand))

    def evaluate(self, entity: dict[str, Any], datasetid_any: bool) -> bool:
        targets = self.path.targets(entity, datasetid_any)
        if self.op == "==":
            return any(self._equal_target(target) for target in targets)
        if self.op == "!=":
            return any(not self._equal_target(target) for target in targets)
        compare = _ORDERINGS[self.op]
        return any(_ordered(leaf, self.value, compare) for leaf in _leaves(targets))

    def _equal_target(self, target: Any) -> bool:
        """One instance's value (or any element of it) equals the operand, is in the list or range."""
        value = self.value
        for leaf in _leaves([target]):
            if isinstance(value, ValueList):
                if any(_equals(leaf, item) for item in value.values):
                    return True
            elif isinstance(value, Range):
                if _ordered(leaf, value.low, operator.ge) and _ordered(leaf, value.high, operator.le):
                    return True
            elif _equals(leaf, value):
                return True
        return False


@dataclass(frozen=True, slots=True)
class Pattern(QExpr):
    """``path~=regex`` / ``path!~=regex`` on string values.

    Matching is RE2's search (:mod:`kizuna.patterns`): the pattern may match anywhere; anchor
    it with ``^...$`` for a whole-value match. ``!~=`` holds for a value whose strings exist and none matches;
    non-string values satisfy neither operator.
    """

    path: AttrPath
    regex: str
    negated: bool = False

    def attribute_names(self) -> set[str]:
        return self.path.attribute_names()

    def resolve(self, expand: Callable[[str], str]) -> Pattern:
        return replace(self, path=self.path.resolve(expand))

    def evaluate(self, entity: dict[str, Any], datasetid_any: bool) -> bool:
        compiled = compile_pattern(self.regex)
        for target in self.path.targets(entity, datasetid_any):
            strings = [leaf for leaf in _leaves([target]) if isinstance(leaf, str)]
            found = any(compiled.search(s) for s in strings)
            if self.negated:
                if strings and not found:
                    return True
            elif found:
                return True
        return False


def matches(q: QExpr, entity: dict[str, Any], *, datasetid_any: bool = True) -> bool:
    """Evaluate ``q`` on a canonical entity (resolve ``q`` first so that names are IRIs).

    With ``datasetid_any`` False only default instances (no datasetId) are considered.
    """
    return q.evaluate(entity, datasetid_any)


def instance_leaves(entity: dict[str, Any], attribute: str) -> list[list[Any]]:
    """For each instance of ``attribute`` that has a value (any datasetId), the scalars q compares
    with (:func:`_leaves` of :meth:`AttrPath.targets`): what a store indexes to answer q on
    top-level attributes exactly as :func:`matches` does."""
    return [list(_leaves([target])) for target in AttrPath(attribute).targets(entity, True)]


# -- q: evaluation helpers -----------------------------------------------------------------------

_ABSENT = object()
_MISMATCH = object()
_ORDERINGS: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _instance_value(node: dict[str, Any]) -> Any:
    kind = node.get("type")
    if kind == "LanguageProperty":
        language_map = node.get("languageMap")
        return list(language_map.values()) if isinstance(language_map, dict) else _ABSENT
    if kind == "ListRelationship":
        objects = node.get("objectList")
        if not isinstance(objects, list):
            return _ABSENT
        return [item.get("object") if isinstance(item, dict) else item for item in objects]
    member = VALUE_MEMBER.get(kind, "value") if isinstance(kind, str) else "value"
    return node.get(member, _ABSENT)


def _members(values: list[Any], key: str) -> Iterator[Any]:
    for value in values:
        if isinstance(value, dict):
            if key in value:
                yield value[key]
        elif isinstance(value, list):
            yield from _members(value, key)


def _leaves(values: list[Any]) -> Iterator[Any]:
    """Scalars inside (nested) lists, with JSON-LD value objects such as typed DateTimes unwrapped."""
    for value in values:
        if isinstance(value, list):
            yield from _leaves(value)
        elif isinstance(value, dict) and "@value" in value:
            yield value["@value"]
        else:
            yield value


def _utc(moment: Any) -> Any:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _coerce(leaf: Any, literal: Scalar) -> Any:
    """``leaf`` in the literal's domain, or ``_MISMATCH`` when the two cannot be compared."""
    if isinstance(literal, bool):
        return leaf if isinstance(leaf, bool) else _MISMATCH
    if isinstance(literal, int | float):
        return leaf if isinstance(leaf, int | float) and not isinstance(leaf, bool) else _MISMATCH
    if isinstance(literal, str | Uri):
        return leaf if isinstance(leaf, str) else _MISMATCH
    if not isinstance(leaf, str):
        return _MISMATCH
    try:
        if isinstance(literal, datetime):
            return _utc(datetime.fromisoformat(leaf))
        if isinstance(literal, date):
            return date.fromisoformat(leaf)
        return _utc(time.fromisoformat(leaf))
    except ValueError:
        return _MISMATCH


def _equals(leaf: Any, literal: Scalar) -> bool:
    value = _coerce(leaf, literal)
    return value is not _MISMATCH and value == (literal.value if isinstance(literal, Uri) else literal)


def _ordered(leaf: Any, literal: Scalar, compare: Callable[[Any, Any], bool]) -> bool:
    value = _coerce(leaf, literal)
    return value is not _MISMATCH and compare(value, literal)


# -- q: parser -----------------------------------------------------------------------------------

_OPERATORS = ("!~=", "==", "!=", ">=", "<=", "~=", ">", "<")
_NAME = re.compile(r"[\w:@-]+")
_VALUE_END = r"(?=\.\.|[;|),\s]|\Z)"
_ZONE = r"(?:Z|[+-]\d{2}(?::?\d{2})?)?"


def _to_number(token: str) -> int | float:
    if not any(c in token for c in ".eE"):
        return int(token)
    number = float(token)
    if not math.isfinite(number):
        raise ValueError(token)
    return number


_VALUE_TOKENS: tuple[tuple[re.Pattern[str], Callable[[str], Scalar], str], ...] = (
    (
        re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?" + _ZONE + _VALUE_END, re.ASCII),
        lambda token: _utc(datetime.fromisoformat(token)),
        "DateTime",
    ),
    (re.compile(r"\d{4}-\d{2}-\d{2}" + _VALUE_END, re.ASCII), date.fromisoformat, "Date"),
    (
        re.compile(r"\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?" + _ZONE + _VALUE_END, re.ASCII),
        lambda token: _utc(time.fromisoformat(token)),
        "Time",
    ),
    (re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?" + _VALUE_END, re.ASCII), _to_number, "number"),
    (re.compile(r"(?:true|false)" + _VALUE_END, re.ASCII), lambda token: token == "true", "boolean"),
    (re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s;|(),\"]+"), Uri, "URI"),
)


def _parse_token(sc: _Scanner, pattern: re.Pattern[str], expected: str) -> str:
    token = sc.take_match(pattern)
    if token is None:
        raise sc.error(expected)
    return token


def _parse_path(sc: _Scanner) -> AttrPath:
    start = sc.pos
    names = [_parse_token(sc, _NAME, "an attribute name")]
    while sc.take("."):
        names.append(_parse_token(sc, _NAME, "a sub-attribute or metadata name"))
    keys: list[str] = []
    while sc.take("["):
        keys.append(_parse_token(sc, _NAME, "a compound value key"))
        while sc.take("."):
            keys.append(_parse_token(sc, _NAME, "a compound value key"))
        if not sc.take("]"):
            raise sc.error("'.' or ']'")
    metadata = names.pop() if len(names) > 1 and names[-1] in METADATA_NAMES else None
    if metadata is not None and keys:
        raise sc.fail(f"metadata {metadata!r} cannot be followed by a compound value key", start)
    misplaced = next((name for name in names[1:] if name in METADATA_NAMES), None)
    if misplaced is not None:
        raise sc.fail(f"metadata {misplaced!r} must end the attribute path", start)
    if names[0] == "id" and (len(names) > 1 or metadata is not None or keys):
        raise sc.fail("'id' has no sub-attributes, metadata or compound value keys", start)
    return AttrPath(names[0], tuple(names[1:]), metadata, tuple(keys))


def _parse_quoted(sc: _Scanner) -> str:
    """A ``"..."`` string; ``\\"`` and ``\\\\`` are the only escapes, other backslashes stay as they are."""
    start, text = sc.pos, sc.text
    chars: list[str] = []
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == '"':
            sc.pos = i + 1
            return "".join(chars)
        if char == "\\" and text[i + 1 : i + 2] in ('"', "\\"):
            chars.append(text[i + 1])
            i += 2
            continue
        chars.append(char)
        i += 1
    raise sc.fail("unterminated quoted string", start)


def _parse_value(sc: _Scanner) -> Scalar:
    start = sc.pos
    if sc.peek() == '"':
        return _parse_quoted(sc)
    for pattern, convert, kind in _VALUE_TOKENS:
        token = sc.take_match(pattern)
        if token is not None:
            try:
                return convert(token)
            except ValueError:
                raise sc.error(f"a valid {kind}", start) from None
    raise sc.error("a value (number, quoted string, true, false, DateTime, Date, Time or URI)")


def _is_comparable(value: Scalar) -> bool:
    return not isinstance(value, bool | Uri)


def _parse_operand(sc: _Scanner, op: str) -> Scalar | ValueList | Range:
    start = sc.pos
    first = _parse_value(sc)
    if sc.take(".."):
        if op not in ("==", "!="):
            raise sc.fail(f"a range is only allowed with == and !=, not {op}", start)
        high_start = sc.pos
        high = _parse_value(sc)
        for bound, at in ((first, start), (high, high_start)):
            if not _is_comparable(bound):
                raise sc.error("a number, quoted string, DateTime, Date or Time as range bound", at)
        return Range(first, high)
    if sc.peek() == ",":
        if op not in ("==", "!="):
            raise sc.fail(f"a value list is only allowed with == and !=, not {op}", start)
        values = [first]
        while sc.take(","):
            values.append(_parse_value(sc))
        return ValueList(tuple(values))
    if op in _ORDERINGS and not _is_comparable(first):
        raise sc.error(f"a number, quoted string, DateTime, Date or Time after {op}", start)
    return first


def _scan_unquoted_regex(sc: _Scanner) -> str:
    """An unquoted pattern ends at `;` or `|` outside its own groups, or at a `)` closing an outer group.

    Quote the pattern to use a top-level alternation: ``name~="(?i)^a|b$"``.
    """
    text, start = sc.text, sc.pos
    depth, in_class, i = 0, False, start
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
        elif char == ")":
            if depth == 0:
                break
            depth -= 1
        elif char in ";|" and depth == 0:
            break
        i += 1
    sc.pos = min(i, len(text))
    return text[start : sc.pos]


def _parse_regex(sc: _Scanner) -> str:
    start = sc.pos
    regex = _parse_quoted(sc) if sc.peek() == '"' else _scan_unquoted_regex(sc)
    if not regex:
        raise sc.error("a regular expression", start)
    try:
        compile_pattern(regex)
    except ValueError as exc:
        raise sc.fail(f"invalid regular expression: {exc}", start) from None
    return regex


def _parse_q_term(sc: _Scanner) -> QExpr:
    if sc.take("!"):
        return NotExists(_parse_path(sc))
    path = _parse_path(sc)
    sc.skip_spaces()
    op = next((op for op in _OPERATORS if sc.take(op)), None)
    if op is None:
        if sc.peek() in ("", ";", "|", ")"):
            return Exists(path)
        raise sc.error("a comparison operator (==, !=, >, >=, <, <=, ~=, !~=), ';', '|' or ')'")
    sc.skip_spaces()
    if op in ("~=", "!~="):
        return Pattern(path, _parse_regex(sc), negated=op == "!~=")
    return Comparison(path, op, _parse_operand(sc, op))


def parse_q(text: str) -> QExpr:
    """Parse a (URL-decoded) q expression of clause 4.9."""
    return _LogicParser("q", text, _parse_q_term, QAnd, QOr).parse()


# -- scopeQ --------------------------------------------------------------------------------------


class ScopeExpr(ABC):
    __slots__ = ()

    @abstractmethod
    def matches(self, entity: dict[str, Any]) -> bool: ...


@dataclass(frozen=True, slots=True)
class ScopePattern(ScopeExpr):
    """``/a/+/c`` (``+`` is any one level), ``/a/#`` (``/a`` and its descendants), ``/#`` (any scope)."""

    levels: tuple[str, ...]
    descendants: bool = False

    def matches(self, entity: dict[str, Any]) -> bool:
        return any(
            self.matches_scope(scope) for scope in _as_list(entity.get("scope")) if isinstance(scope, str)
        )

    def matches_scope(self, scope: str) -> bool:
        parts = [part for part in scope.split("/") if part]
        if len(parts) < len(self.levels) or (not self.descendants and len(parts) > len(self.levels)):
            return False
        return all(want == "+" or want == got for want, got in zip(self.levels, parts, strict=False))


@dataclass(frozen=True, slots=True)
class ScopeAnd(ScopeExpr):
    terms: tuple[ScopeExpr, ...]

    def matches(self, entity: dict[str, Any]) -> bool:
        return all(term.matches(entity) for term in self.terms)


@dataclass(frozen=True, slots=True)
class ScopeOr(ScopeExpr):
    terms: tuple[ScopeExpr, ...]

    def matches(self, entity: dict[str, Any]) -> bool:
        return any(term.matches(entity) for term in self.terms)


_SCOPE_LEVEL = re.compile(r"[^/;|,()#+\s]+")


def _parse_scope_term(sc: _Scanner) -> ScopeExpr:
    if not sc.take("/"):
        raise sc.error("'/' starting a scope")
    levels: list[str] = []
    while True:
        if sc.take("#"):
            return ScopePattern(tuple(levels), descendants=True)
        if sc.take("+"):
            levels.append("+")
        else:
            levels.append(_parse_token(sc, _SCOPE_LEVEL, "a scope level, '+' or '#'"))
        if not sc.take("/"):
            return ScopePattern(tuple(levels))


def parse_scope_q(text: str) -> ScopeExpr:
    """Parse a scopeQ of clause 4.19; ``,`` is an OR like ``|``, ``;`` binds tighter."""
    return _LogicParser("scopeQ", text, _parse_scope_term, ScopeAnd, ScopeOr, ("|", ",")).parse()


# -- entity type selection -----------------------------------------------------------------------


class TypeExpr(ABC):
    __slots__ = ()

    @abstractmethod
    def names(self) -> set[str]: ...

    @abstractmethod
    def resolve(self, expand: Callable[[str], str]) -> TypeExpr: ...

    @abstractmethod
    def matches(self, types: list[str]) -> bool: ...

    def as_simple_list(self) -> list[str] | None:
        """The types when the expression is a plain OR of names (an index lookup), else None."""
        return None


@dataclass(frozen=True, slots=True)
class TypeName(TypeExpr):
    name: str

    def names(self) -> set[str]:
        return {self.name}

    def resolve(self, expand: Callable[[str], str]) -> TypeName:
        return TypeName(expand(self.name))

    def matches(self, types: list[str]) -> bool:
        return self.name in types

    def as_simple_list(self) -> list[str] | None:
        return [self.name]


@dataclass(frozen=True, slots=True)
class TypeAnd(TypeExpr):
    terms: tuple[TypeExpr, ...]

    def names(self) -> set[str]:
        return set().union(*(term.names() for term in self.terms))

    def resolve(self, expand: Callable[[str], str]) -> TypeAnd:
        return TypeAnd(tuple(term.resolve(expand) for term in self.terms))

    def matches(self, types: list[str]) -> bool:
        return all(term.matches(types) for term in self.terms)


@dataclass(frozen=True, slots=True)
class TypeOr(TypeExpr):
    terms: tuple[TypeExpr, ...]

    def names(self) -> set[str]:
        return set().union(*(term.names() for term in self.terms))

    def resolve(self, expand: Callable[[str], str]) -> TypeOr:
        return TypeOr(tuple(term.resolve(expand) for term in self.terms))

    def matches(self, types: list[str]) -> bool:
        return any(term.matches(types) for term in self.terms)

    def as_simple_list(self) -> list[str] | None:
        lists = [term.as_simple_list() for term in self.terms]
        if any(names is None for names in lists):
            return None
        return list(dict.fromkeys(name for names in lists for name in names or ()))


_TYPE_NAME = re.compile(r"[^,;|()\s]+")


def _parse_type_term(sc: _Scanner) -> TypeExpr:
    return TypeName(_parse_token(sc, _TYPE_NAME, "an entity type name"))


def parse_type_expr(text: str) -> TypeExpr:
    """Parse an entity type selection of clause 4.17; ``,`` is an OR like ``|``, ``;`` binds tighter."""
    return _LogicParser("type", text, _parse_type_term, TypeAnd, TypeOr, ("|", ",")).parse()


# -- attribute lists -----------------------------------------------------------------------------


def parse_attrs_list(text: str, name: str = "attrs") -> list[str]:
    """The value of parameter ``name`` (``attrs``, ``id``, ``datasetId``, ``keep`` ...): comma-separated
    names, blanks trimmed, duplicates dropped. The one parser of such lists."""
    names = [item.strip() for item in text.split(",")]
    if not all(names):
        raise BadRequestData(f"Parameter {name} has an empty item")
    return list(dict.fromkeys(names))


# -- pick / omit projections ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Projection:
    """A ``pick`` / ``omit`` of clause 4.21 (v1.9): entity members, each with an optional projection
    in braces that applies to the entities a Relationship of that name links to (``join``).

    ``id,locatedAt{id,name}`` keeps ``id`` and ``locatedAt`` and, of the linked City, ``id`` and
    ``name``; as an omit, ``name,locatedAt{name}`` drops ``name`` here and in the linked entity,
    while ``locatedAt`` itself, having a projection of its own, stays.
    """

    members: tuple[tuple[str, Projection | None], ...]

    def names(self) -> frozenset[str]:
        return frozenset(name for name, _ in self.members)

    def plain_names(self) -> frozenset[str]:
        """Members named without a nested projection (what an omit really removes)."""
        return frozenset(name for name, nested in self.members if nested is None)

    def linked(self, name: str) -> Projection | None:
        return next((nested for member, nested in self.members if member == name), None)

    def resolve(self, expand: Callable[[str], str]) -> Projection:
        return Projection(
            tuple(
                (
                    name if name in ENTITY_MEMBER_NAMES else expand(name),
                    None if nested is None else nested.resolve(expand),
                )
                for name, nested in self.members
            )
        )


ENTITY_MEMBER_NAMES = frozenset({"id", "type", "scope"})
# A member name: anything but the projection syntax and the characters clause 4.6.2 forbids in names.
_PROJECTION_NAME = re.compile(r"[^,{}\s<>\"'=;()]+")


def parse_projection(text: str, language: str = "pick") -> Projection:
    """Parse a pick or omit; empty items, stray or unbalanced braces and forbidden characters are 400."""
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise BadRequestData(f"Invalid {language}: longer than {MAX_EXPRESSION_LENGTH} characters")
    sc = _Scanner(language, text)
    projection = _parse_members(sc, 0)
    if sc.pos < len(sc.text):
        if sc.peek() == "}":
            raise sc.fail("unbalanced '}'")
        raise sc.error("',', '{' or end of input")
    return projection


def _parse_members(sc: _Scanner, depth: int) -> Projection:
    members: list[tuple[str, Projection | None]] = []
    while True:
        name = _parse_token(sc, _PROJECTION_NAME, "an entity member or attribute name")
        nested = None
        if sc.take("{"):
            if depth >= MAX_NESTING:
                raise sc.fail(f"braces nested deeper than {MAX_NESTING} levels", sc.pos - 1)
            nested = _parse_members(sc, depth + 1)
            if not sc.take("}"):
                raise sc.error("',' or '}'")
        members.append((name, nested))
        if not sc.take(","):
            return Projection(tuple(members))


# -- orderBy -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderKey:
    """One ``path[;asc|desc]`` of ``orderBy`` (v1.9): ``id``, ``type``, ``createdAt``, ``modifiedAt``
    or an attribute path as in q (``name``, ``name.subProperty``, ``name.observedAt``)."""

    path: AttrPath
    descending: bool = False

    def value(self, entity: dict[str, Any]) -> Any:
        name = self.path.attribute
        if not self.path.sub_attributes and self.path.metadata is None and not self.path.compound:
            if name in ("createdAt", "modifiedAt"):
                return entity.get(name, _ABSENT)
            if name == "type":
                types = entity.get("type") or ()
                return min(types) if types else _ABSENT
        for leaf in _leaves(self.path.targets(entity, False)):
            if isinstance(leaf, dict) and "@value" in leaf:
                leaf = leaf["@value"]
            if isinstance(leaf, bool | int | float | str):
                return leaf
        return _ABSENT


@dataclass(frozen=True, slots=True)
class OrderBy:
    keys: tuple[OrderKey, ...]

    def resolve(self, expand: Callable[[str], str]) -> OrderBy:
        return OrderBy(
            tuple(
                key
                if key.path.attribute in _ORDER_MEMBERS and not key.path.sub_attributes
                else replace(key, path=key.path.resolve(expand))
                for key in self.keys
            )
        )

    def sort(self, entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """A stable multi-key sort; entities lacking a key's value come last in either direction."""
        ordered = list(entities)
        for key in reversed(self.keys):
            present = [(key.value(e), e) for e in ordered]
            missing = [e for v, e in present if v is _ABSENT]
            ranked = [(v, e) for v, e in present if v is not _ABSENT]
            ranked.sort(key=lambda item: _sort_rank(item[0]), reverse=key.descending)
            ordered = [e for _, e in ranked] + missing
        return ordered


_ORDER_MEMBERS = frozenset({"id", "type", "createdAt", "modifiedAt"})


def _sort_rank(value: Any) -> tuple[int, Any]:
    """Values of different JSON types never compare: numbers, then strings, then booleans."""
    if isinstance(value, bool):
        return (2, value)
    if isinstance(value, int | float):
        return (0, value)
    return (1, str(value))


def parse_order_by(text: str) -> OrderBy:
    """Parse ``orderBy``: comma-separated attribute paths, each optionally ``;asc`` or ``;desc``."""
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise BadRequestData(f"Invalid orderBy: longer than {MAX_EXPRESSION_LENGTH} characters")
    sc = _Scanner("orderBy", text)
    keys: list[OrderKey] = []
    while True:
        path = _parse_path(sc)
        descending = False
        if sc.take(";"):
            direction = sc.take_match(re.compile(r"asc|desc"))
            if direction is None:
                raise sc.error("'asc' or 'desc'")
            descending = direction == "desc"
        keys.append(OrderKey(path, descending))
        if not sc.take(","):
            break
    if sc.pos < len(sc.text):
        raise sc.error("';asc', ';desc', ',' or end of input")
    return OrderBy(tuple(keys))


# -- geoQ ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GeoQuery:
    """A validated geoQuery; the relation is that of the entity's geometry to ``geometry``."""

    georel: str
    geometry: BaseGeometry
    geoproperty: str = DEFAULT_GEOPROPERTY
    max_distance: float | None = None
    min_distance: float | None = None

    def matches(self, geojson_geometry: dict[str, Any]) -> bool:
        try:
            candidate = geojson_to_shape(geojson_geometry)
            if candidate.is_empty:
                return False
            if self.georel == "near":
                distance = self.distance_to(candidate)
                return (self.max_distance is None or distance <= self.max_distance) and (
                    self.min_distance is None or distance >= self.min_distance
                )
            return self._relates(candidate)
        except (ShapelyError, ValueError, TypeError, KeyError, IndexError, AttributeError):
            return False

    def _relates(self, candidate: BaseGeometry) -> bool:
        """The georel as a DE-9IM predicate; a self-intersecting polygon (valid GeoJSON, invalid
        for GEOS) is retried in its repaired form when GEOS refuses the original."""
        predicate = _PREDICATES[self.georel]
        try:
            return bool(predicate(candidate, self.geometry))
        except ShapelyError:
            return bool(predicate(shapely.make_valid(candidate), shapely.make_valid(self.geometry)))

    def distance_to(self, candidate: BaseGeometry) -> float:
        """Metres from the query point: haversine to points, else on a local equirectangular plane.

        The plane is centred on the query point, which keeps the error well under 0.5% at city
        scale; longitudes are wrapped so that geometries across the antimeridian stay close.
        """
        lon0, lat0 = self.geometry.x, self.geometry.y
        if candidate.geom_type == "Point":
            return _haversine(lon0, lat0, candidate.x, candidate.y)
        scale = np.array([METRES_PER_DEGREE * math.cos(math.radians(lat0)), METRES_PER_DEGREE])

        def project(coords: np.ndarray) -> np.ndarray:
            offsets = coords - (lon0, lat0)
            offsets[:, 0] = (offsets[:, 0] + 180) % 360 - 180
            return offsets * scale

        return float(shapely.transform(candidate, project).distance(shapely.Point(0, 0)))

    def bbox(self) -> tuple[float, float, float, float] | None:
        """(minlon, minlat, maxlon, maxlat) every match's bbox intersects, for an R*Tree prefilter.

        None when no box bounds the matches (disjoint, near with only minDistance).
        """
        if self.georel == "disjoint":
            return None
        if self.georel == "near":
            if self.max_distance is None:
                return None
            return _distance_box(self.geometry.x, self.geometry.y, self.max_distance)
        minlon, minlat, maxlon, maxlat = self.geometry.bounds
        return (minlon, minlat, maxlon, maxlat)


_PREDICATES: dict[str, Callable[[BaseGeometry, BaseGeometry], Any]] = {
    "within": shapely.within,
    "contains": shapely.contains,
    "intersects": shapely.intersects,
    "disjoint": shapely.disjoint,
    "equals": shapely.equals,
    "overlaps": shapely.overlaps,
}


def _haversine(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    half_dphi, half_dlambda = (phi2 - phi1) / 2, math.radians(lon2 - lon1) / 2
    a = math.sin(half_dphi) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(half_dlambda) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def _distance_box(lon: float, lat: float, metres: float) -> tuple[float, float, float, float]:
    """The box holding every point within ``metres`` of (lon, lat), by haversine or the local plane.

    The widest longitude offset on the sphere is asin(sin(d/R) / cos(lat)); the plane's is
    (d/R) / cos(lat); the larger is taken, with a small margin against rounding.
    """
    angle = metres / EARTH_RADIUS_M * (1 + 1e-6) + 1e-12
    dlat = math.degrees(angle)
    minlat, maxlat = max(-90.0, lat - dlat), min(90.0, lat + dlat)
    cos_lat = math.cos(math.radians(lat))
    if minlat <= -90 or maxlat >= 90 or angle >= math.pi / 2 or math.sin(angle) >= cos_lat:
        return (-180.0, minlat, 180.0, maxlat)
    dlon = math.degrees(max(math.asin(math.sin(angle) / cos_lat), angle / cos_lat))
    if lon - dlon < -180 or lon + dlon > 180:
        return (-180.0, minlat, 180.0, maxlat)
    return (lon - dlon, minlat, lon + dlon, maxlat)


def _coordinates_error(where: str, problem: str) -> BadRequestData:
    return BadRequestData(f"Invalid coordinates: {where} {problem}")


def _check_position(value: Any, where: str) -> None:
    if (
        not isinstance(value, list)
        or len(value) not in (2, 3)
        or not all(isinstance(n, int | float) and not isinstance(n, bool) for n in value)
    ):
        raise _coordinates_error(where, "must be a position [longitude, latitude] or [lon, lat, altitude]")
    if any(isinstance(n, float) and not math.isfinite(n) for n in value):
        raise _coordinates_error(where, "must hold finite numbers")
    if not -180 <= value[0] <= 180:
        raise _coordinates_error(where, f"has longitude {value[0]} outside [-180, 180]")
    if not -90 <= value[1] <= 90:
        raise _coordinates_error(where, f"has latitude {value[1]} outside [-90, 90]")


def _check_array(value: Any, where: str, minimum: int, what: str) -> list[Any]:
    if not isinstance(value, list) or len(value) < minimum:
        raise _coordinates_error(where, f"must be an array of at least {minimum} {what}")
    return value


def _check_positions(value: Any, where: str, minimum: int) -> None:
    for i, position in enumerate(_check_array(value, where, minimum, "positions")):
        _check_position(position, f"{where}[{i}]")


def _check_line(value: Any, where: str) -> None:
    _check_positions(value, where, 2)


def _check_polygon(value: Any, where: str) -> None:
    for i, ring in enumerate(_check_array(value, where, 1, "linear rings")):
        _check_positions(ring, f"{where}[{i}]", 4)
        if ring[0] != ring[-1]:
            raise _coordinates_error(
                f"{where}[{i}]", "is not a closed ring (first and last positions differ)"
            )


def _check_each(check: Callable[[Any, str], None], what: str) -> Callable[[Any, str], None]:
    def check_all(value: Any, where: str) -> None:
        for i, item in enumerate(_check_array(value, where, 1, what)):
            check(item, f"{where}[{i}]")

    return check_all


_GEOMETRY_CHECKS: dict[str, Callable[[Any, str], None]] = {
    "Point": _check_position,
    "MultiPoint": _check_each(_check_position, "positions"),
    "LineString": _check_line,
    "MultiLineString": _check_each(_check_line, "line strings"),
    "Polygon": _check_polygon,
    "MultiPolygon": _check_each(_check_polygon, "polygons"),
}
_DISTANCE = re.compile(r"(maxDistance|minDistance)==([0-9]+(?:\.[0-9]+)?)")


def _parse_georel(georel: str) -> tuple[str, dict[str, float]]:
    relation, *modifiers = georel.split(";")
    if relation not in GEORELS:
        raise BadRequestData(
            f"Invalid georel {georel[:100]!r}: expected near;maxDistance==<metres>, "
            f"near;minDistance==<metres> or one of {', '.join(GEORELS[1:])}"
        )
    if relation != "near":
        if modifiers:
            raise BadRequestData(f"Invalid georel {georel[:100]!r}: {relation} takes no modifiers")
        return relation, {}
    distances: dict[str, float] = {}
    for modifier in modifiers:
        found = _DISTANCE.fullmatch(modifier)
        if found is None:
            raise BadRequestData(
                f"Invalid georel {georel[:100]!r}: expected maxDistance==<metres> or minDistance==<metres>, "
                f"found {modifier[:100]!r}"
            )
        if found[1] in distances:
            raise BadRequestData(f"Invalid georel {georel[:100]!r}: {found[1]} given twice")
        distances[found[1]] = float(found[2])
    if not distances:
        raise BadRequestData(
            f"Invalid georel {georel[:100]!r}: near needs maxDistance==<metres> or minDistance"
        )
    return relation, distances


def parse_geoq(
    georel: str, geometry: str, coordinates: str | list[Any], geoproperty: str | None = None
) -> GeoQuery:
    """Validate the geoQuery parameters of clause 4.10 (``coordinates`` as JSON text or parsed)."""
    relation, distances = _parse_georel(georel)
    if geometry not in GEOMETRIES:
        raise BadRequestData(f"Invalid geometry {geometry[:100]!r}: expected one of {', '.join(GEOMETRIES)}")
    if relation == "near" and geometry != "Point":
        raise BadRequestData(f"Invalid geoQuery: near needs a Point geometry, not {geometry}")
    if isinstance(coordinates, str):
        try:
            coordinates = orjson.loads(coordinates)
        except orjson.JSONDecodeError as exc:
            raise BadRequestData(f"Invalid coordinates: not a JSON array ({exc})") from None
    _GEOMETRY_CHECKS[geometry](coordinates, "coordinates")
    # A self-intersecting polygon is still a GeoJSON Polygon (RFC 7946 only asks for closed rings),
    # and the ETSI suite queries with such polygons (019_11), so it is accepted, not refused.
    shape = geojson_to_shape({"type": geometry, "coordinates": coordinates})
    if geoproperty is not None and not geoproperty.strip():
        raise BadRequestData("Invalid geoproperty: empty name")
    return GeoQuery(
        relation,
        shape,
        geoproperty or DEFAULT_GEOPROPERTY,
        distances.get("maxDistance"),
        distances.get("minDistance"),
    )
