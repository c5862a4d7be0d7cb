"""``orderBy`` (v1.9): the keys a page of entities is sorted by, parsed and applied.

A key is an attribute path as in q, so it is parsed and read with q's paths
(:class:`~kizuna.query.q.AttrPath`); entities lacking a key's value sort last either way.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from kizuna.errors import BadRequestData
from kizuna.query.grammar import MAX_EXPRESSION_LENGTH, Scanner
from kizuna.query.q import AttrPath, leaves, parse_path

_NO_VALUE = object()  # an entity without a value for a key


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
                return entity.get(name, _NO_VALUE)
            if name == "type":
                types = entity.get("type") or ()
                return min(types) if types else _NO_VALUE
        for leaf in leaves(self.path.targets(entity, False)):
            if isinstance(leaf, dict) and "@value" in leaf:
                leaf = leaf["@value"]
            if isinstance(leaf, bool | int | float | str):
                return leaf
        return _NO_VALUE


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
            missing = [e for v, e in present if v is _NO_VALUE]
            ranked = [(v, e) for v, e in present if v is not _NO_VALUE]
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
    sc = Scanner("orderBy", text)
    keys: list[OrderKey] = []
    while True:
        path = parse_path(sc)
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
