"""How much one request may make the node parse, walk and hold.

The body size (``--max-body-bytes``) bounds bytes, not work: 1.5 MB of JSON held a
200,000-element array (200,008 index rows, 3.9 s on the event loop), and 280 levels of
nesting overflowed the stack of the recursive code behind the parser. So every JSON body is
checked, in one iterative walk right after parsing and before anything else looks at it, for
nesting depth, array length, members per object (an entity's attributes are its members) and
positions per GeoJSON geometry; batches are bounded by entity count. Each limit is a setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from kizuna.errors import BadRequestData, InvalidRequest


@dataclass(frozen=True, slots=True)
class PageLimits:
    """How many results one page holds when a query names no ``limit``, and at most."""

    default: int = 20
    maximum: int = 1000


@dataclass(frozen=True, slots=True)
class InputLimits:
    json_depth: int = 64
    array_items: int = 10_000
    object_members: int = 1_000
    batch_entities: int = 1_000
    geometry_positions: int = 10_000

    def parse(self, raw: bytes) -> Any:
        """The JSON value of a request body, checked against the limits."""
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            raise InvalidRequest(f"The body is not valid JSON: {error}") from None
        self.check(value)
        return value

    def check(self, value: Any) -> None:
        """BadRequestData naming the first limit ``value`` exceeds (iteratively: refusing what
        would exhaust a recursive walk is the point)."""
        stack: list[tuple[Any, int]] = [(value, 1)]
        while stack:
            item, depth = stack.pop()
            if isinstance(item, dict):
                if len(item) > self.object_members:
                    raise BadRequestData(
                        f"An object has more than {self.object_members} members (--max-attributes)"
                    )
                coordinates = item.get("coordinates")
                if isinstance(coordinates, list) and _positions(coordinates) > self.geometry_positions:
                    raise BadRequestData(
                        f"A geometry has more than {self.geometry_positions} positions"
                        " (--max-geometry-positions)"
                    )
                children: Any = item.values()
            elif isinstance(item, list):
                if len(item) > self.array_items:
                    raise BadRequestData(
                        f"An array has more than {self.array_items} items (--max-array-items)"
                    )
                children = item
            else:
                continue
            for child in children:
                if isinstance(child, dict | list):
                    if depth >= self.json_depth:
                        raise BadRequestData(
                            f"The body nests arrays and objects more than {self.json_depth} levels deep"
                            " (--max-json-depth)"
                        )
                    stack.append((child, depth + 1))

    def check_batch(self, items: Any) -> None:
        if isinstance(items, list) and len(items) > self.batch_entities:
            raise BadRequestData(
                f"A batch may hold at most {self.batch_entities} entities (--max-batch-entities)"
            )


def _positions(coordinates: list[Any]) -> int:
    """The positions (innermost arrays of numbers) in GeoJSON ``coordinates`` of any depth."""
    count, stack = 0, [coordinates]
    while stack:
        item = stack.pop()
        if item and all(isinstance(c, list) for c in item):
            stack.extend(item)
        else:
            count += 1
    return count
