"""The checks the bodies of NGSI-LD resources share (subscriptions, registrations), each
failure a 400 BadRequestData in the resource's own words ("Invalid subscription: ...").
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from kizuna.errors import BadRequestData


@dataclass(frozen=True, slots=True)
class Checks:
    prefix: str  # e.g. "Invalid subscription"

    def bad(self, message: str) -> BadRequestData:
        return BadRequestData(f"{self.prefix}: {message}")

    def string(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.bad(f"{where} must be a non-empty string")
        return value

    def positive(self, value: Any, where: str, *, integer: bool = False) -> int | float:
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) or value <= 0:
            raise self.bad(f"{where} must be a positive {'integer' if integer else 'number'}")
        return value

    def boolean(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.bad(f"{where} must be true or false")
        return value

    def members(self, value: Any, allowed: Collection[str], what: str, *, not_object: str) -> dict[str, Any]:
        """``value`` as an object none of whose members is outside ``allowed``."""
        if not isinstance(value, dict):
            raise self.bad(not_object)
        unknown = set(value) - set(allowed)
        if unknown:
            raise self.bad(f"unknown {what} member(s) {', '.join(sorted(unknown))}")
        return value
