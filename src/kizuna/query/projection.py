"""Which members an answer keeps: attribute lists (``attrs``, ``id``, ...) and pick / omit (4.21).

These name members instead of selecting entities; they are parsed once per request, with a 400
BadRequestData for a malformed list, and the renderer and the joins read the result.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from kizuna.errors import BadRequestData
from kizuna.query.grammar import MAX_EXPRESSION_LENGTH, MAX_NESTING, Scanner, parse_token

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
    sc = Scanner(language, text)
    projection = _parse_members(sc, 0)
    if sc.pos < len(sc.text):
        if sc.peek() == "}":
            raise sc.fail("unbalanced '}'")
        raise sc.error("',', '{' or end of input")
    return projection


def _parse_members(sc: Scanner, depth: int) -> Projection:
    members: list[tuple[str, Projection | None]] = []
    while True:
        name = parse_token(sc, _PROJECTION_NAME, "an entity member or attribute name")
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
