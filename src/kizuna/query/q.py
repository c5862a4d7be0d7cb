"""q, the query language of clause 4.9 (ETSI GS CIM 009 v1.8): AST, evaluation, parser.

A q expression is parsed once into a frozen AST, its names are expanded through the request
@context with ``resolve()``, and it is then evaluated against many canonical entities (expanded
IRIs, attributes as lists of instances). Evaluation never raises on odd data: a value of the
wrong type simply does not match. Stores compile q into their own indexes from the same AST and
the same leaves (:func:`instance_leaves`), so that SQL and :func:`matches` see the same values.
"""

from __future__ import annotations

import math
import operator
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time
from typing import Any, TypeAlias

from kizuna.members import VALUE_MEMBER
from kizuna.patterns import compile_pattern
from kizuna.query.grammar import LogicParser, Scanner, parse_token

METADATA_NAMES = frozenset({"observedAt", "unitCode", "createdAt", "modifiedAt", "datasetId"})


# -- AST -----------------------------------------------------------------------------------------


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
            for node in as_list(entity.get(self.attribute))
            if isinstance(node, dict) and (datasetid_any or "datasetId" not in node)
        ]
        for name in self.sub_attributes:
            nodes = [sub for node in nodes for sub in as_list(node.get(name)) if isinstance(sub, dict)]
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
        return any(_ordered(leaf, self.value, compare) for leaf in leaves(targets))

    def _equal_target(self, target: Any) -> bool:
        """One instance's value (or any element of it) equals the operand, is in the list or range."""
        value = self.value
        for leaf in leaves([target]):
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
            strings = [leaf for leaf in leaves([target]) if isinstance(leaf, str)]
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
    with (:func:`leaves` of :meth:`AttrPath.targets`): what a store indexes to answer q on
    top-level attributes exactly as :func:`matches` does."""
    return [list(leaves([target])) for target in AttrPath(attribute).targets(entity, True)]


# -- evaluation helpers --------------------------------------------------------------------------

_ABSENT = object()
_MISMATCH = object()
_ORDERINGS: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


def as_list(value: Any) -> list[Any]:
    """A member that holds a list in canonical form (instances, scopes), a lone value or None read alike."""
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


def leaves(values: list[Any]) -> Iterator[Any]:
    """Scalars inside (nested) lists, with JSON-LD value objects such as typed DateTimes unwrapped."""
    for value in values:
        if isinstance(value, list):
            yield from leaves(value)
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


# -- parser --------------------------------------------------------------------------------------

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


def parse_path(sc: Scanner) -> AttrPath:
    """``attr.sub.sub[key.key]`` or ``attr.sub.observedAt``, as both q and orderBy write paths."""
    start = sc.pos
    names = [parse_token(sc, _NAME, "an attribute name")]
    while sc.take("."):
        names.append(parse_token(sc, _NAME, "a sub-attribute or metadata name"))
    keys: list[str] = []
    while sc.take("["):
        keys.append(parse_token(sc, _NAME, "a compound value key"))
        while sc.take("."):
            keys.append(parse_token(sc, _NAME, "a compound value key"))
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


def _parse_quoted(sc: Scanner) -> str:
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


def _parse_value(sc: Scanner) -> Scalar:
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


def _parse_operand(sc: Scanner, op: str) -> Scalar | ValueList | Range:
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


def _scan_unquoted_regex(sc: Scanner) -> str:
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


def _parse_regex(sc: Scanner) -> str:
    start = sc.pos
    regex = _parse_quoted(sc) if sc.peek() == '"' else _scan_unquoted_regex(sc)
    if not regex:
        raise sc.error("a regular expression", start)
    try:
        compile_pattern(regex)
    except ValueError as exc:
        raise sc.fail(f"invalid regular expression: {exc}", start) from None
    return regex


def _parse_q_term(sc: Scanner) -> QExpr:
    if sc.take("!"):
        return NotExists(parse_path(sc))
    path = parse_path(sc)
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
    return LogicParser("q", text, _parse_q_term, QAnd, QOr).parse()
