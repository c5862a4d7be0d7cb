"""The checks the bodies of NGSI-LD resources share (subscriptions, registrations), each
failure a 400 BadRequestData in the resource's own words ("Invalid subscription: ...").
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from kizuna import query as ql
from kizuna.errors import BadRequestData
from kizuna.ngsild.model import is_uri


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

    def choice(self, value: Any, where: str, allowed: Collection[str], message: str | None = None) -> str:
        """``value`` as one of the words ``allowed``."""
        if not isinstance(value, str) or value not in allowed:
            raise self.bad(message or f"{where} must be one of {', '.join(sorted(allowed))}")
        return value

    def members(self, value: Any, allowed: Collection[str], what: str, *, not_object: str) -> dict[str, Any]:
        """``value`` as an object none of whose members is outside ``allowed``."""
        if not isinstance(value, dict):
            raise self.bad(not_object)
        unknown = set(value) - set(allowed)
        if unknown:
            raise self.bad(f"unknown {what} member(s) {', '.join(sorted(unknown))}")
        return value

    def new_resource_id(self, body: Any, type_name: str, what: str) -> str:
        """The id of a new resource (``what``, e.g. "subscription") whose body must be an object
        of type ``type_name``: its own ``id`` if it gives one (a URI), else a fresh URN."""
        if not isinstance(body, dict):
            raise BadRequestData(f"A {what} must be a JSON object")
        if body.get("type") != type_name:
            raise self.bad(f"type must be {type_name}")
        if "id" not in body:
            return f"urn:ngsi-ld:{type_name}:{uuid.uuid4()}"
        if not is_uri(body["id"]):
            raise self.bad(f"id {body['id']!r} is not a URI")
        return body["id"]

    def entity_selector(
        self, value: Any, what: str, where: str, *, not_object: str, type_of: Callable[[Any], str]
    ) -> dict[str, str]:
        """An entity selector (a registration's EntityInfo, a subscription's entities[] item):
        a ``type`` (made canonical by ``type_of``), and optionally an ``id`` that is a URI and an
        ``idPattern`` that RE2 accepts; ``where`` prefixes the member names in messages."""
        self.members(value, {"id", "idPattern", "type"}, what, not_object=not_object)
        if "type" not in value:
            raise self.bad(f"each {what} needs a type")
        type_text = type_of(value["type"])
        out: dict[str, str] = {}
        if "id" in value:
            if not is_uri(value["id"]):
                raise self.bad(f"{where}id {value['id']!r} is not a URI")
            out["id"] = value["id"]
        if "idPattern" in value:
            out["idPattern"] = ql.check_regex(self.string(value["idPattern"], f"{where}idPattern"))
        out["type"] = type_text
        return out
