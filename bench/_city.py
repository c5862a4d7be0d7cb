"""The street lights every bench loads: the same entities, loaded the same way.

Ids share a 30-character prefix of ``a`` (so that a pattern such as ``a*a*...*b`` has work to
do on each); half the lights are on.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson

API = "/ngsi-ld/v1"
JSON = {"Content-Type": "application/json"}


def streetlight(n: int) -> dict[str, Any]:
    return {
        "id": f"urn:ngsi-ld:Streetlight:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa{n:06d}",
        "type": "Streetlight",
        "name": {"type": "Property", "value": "a" * 30 + str(n)},
        "powerState": {
            "type": "Property",
            "value": "on" if n % 2 else "off",
            "observedAt": "2026-12-01T00:00:00Z",
        },
    }


def load(client: httpx.Client, count: int) -> None:
    for first in range(0, count, 1000):
        batch = [streetlight(n) for n in range(first, min(first + 1000, count))]
        answer = client.post(f"{API}/entityOperations/upsert", content=orjson.dumps(batch), headers=JSON)
        if answer.status_code not in (201, 204):
            raise SystemExit(f"bench: load: {answer.status_code} {answer.text[:300]}")
