"""``kizuna import`` and ``kizuna export``: entities in bulk through a node's public API, streamed
both ways so that a million entities take the memory of one batch (docs/operations.md).

Import reads JSON Lines (one entity per line) or one JSON array, and writes batch upserts of
``batch_size`` entities: a line that is no JSON object, and an entity the node refuses, is
reported with its line and the reason, and everything else is committed. Export pages through
``GET /entities`` of the types asked for and writes one entity per line, each with its
``@context``, which is what import reads back.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from kizuna.client import LD, NodeError, Target, check, post

UPSERT = "/ngsi-ld/v1/entityOperations/upsert"
ENTITIES = "/ngsi-ld/v1/entities"
_CHUNK = 1 << 16


@dataclass(slots=True)
class ImportReport:
    committed: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)


def read_entities(stream: IO[bytes]) -> Iterator[tuple[int, Any]]:
    """(line number, entity or the reason it is none) for each entity of a JSON Lines stream
    or of one JSON array, without holding more than one piece of the array at a time."""
    head = stream.read(_CHUNK)
    while head.isspace():  # up to the first character, which tells the two apart
        more = stream.read(_CHUNK)
        if not more:
            return
        head += more
    if head.lstrip().startswith(b"["):
        yield from _array_items(head, stream)
        return
    for number, line in enumerate(_lines(head, stream), 1):
        if line.strip():
            yield number, _entity(line)


def _lines(head: bytes, stream: IO[bytes]) -> Iterator[bytes]:
    pending = head
    while True:
        *complete, pending = pending.split(b"\n")
        yield from complete
        more = stream.read(_CHUNK)
        if not more:
            break
        pending += more
    if pending:
        yield pending


def _entity(text: bytes) -> Any:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        return ValueError(f"not JSON: {error}")
    return value if isinstance(value, dict) else ValueError("not a JSON object")


def _array_items(head: bytes, stream: IO[bytes]) -> Iterator[tuple[int, Any]]:
    """The items of a JSON array, decoded one by one from a buffer refilled as needed; the
    "line" is the item's position in the array."""
    decoder, utf8 = json.JSONDecoder(), codecs.getincrementaldecoder("utf-8")()
    text = utf8.decode(head)
    at = text.index("[") + 1
    position = 0
    while True:
        while True:  # skip what separates items, reading on at the end of the buffer
            while at < len(text) and text[at] in " \t\r\n,":
                at += 1
            if at < len(text):
                break
            more = stream.read(_CHUNK)
            if not more:
                raise ValueError("the JSON array is not closed")
            text, at = utf8.decode(more), 0
        if text[at] == "]":
            return
        while True:
            try:
                value, end = decoder.raw_decode(text, at)
                break
            except json.JSONDecodeError as error:
                more = stream.read(_CHUNK)
                if not more:
                    raise ValueError(f"item {position + 1} of the array is not JSON: {error}") from None
                text = text[at:] + utf8.decode(more)
                at = 0
        position += 1
        yield position, value if isinstance(value, dict) else ValueError("not a JSON object")
        text, at = text[end:], 0


async def import_entities(target: Target, stream: IO[bytes]) -> ImportReport:
    """Entities that carry their ``@context`` go as JSON-LD, the others as JSON (the core
    context): NGSI-LD takes no mix of the two in one request, so each kind has its batch."""
    report = ImportReport()
    async with target.client() as client:
        await check(client, target)
        batches: dict[bool, list[tuple[int, dict[str, Any]]]] = {True: [], False: []}
        for number, entity in read_entities(stream):
            if isinstance(entity, ValueError):
                report.rejected.append((number, str(entity)))
                continue
            batch = batches["@context" in entity]
            batch.append((number, entity))
            if len(batch) == target.batch_size:
                await _upsert(client, batch, report)
                batch.clear()
        for batch in batches.values():
            if batch:
                await _upsert(client, batch, report)
    return report


async def _upsert(client: Any, batch: list[tuple[int, dict[str, Any]]], report: ImportReport) -> None:
    content_type = LD if "@context" in batch[0][1] else "application/json"
    answer = await post(client, UPSERT, orjson.dumps([entity for _, entity in batch]), content_type)
    if answer.status_code in (201, 204):
        report.committed += len(batch)
        return
    if answer.status_code != 207:
        if answer.status_code in (401, 403):
            raise NodeError(f"the node refuses the import ({answer.status_code}): {answer.text[:300]}")
        for number, _ in batch:
            report.rejected.append((number, f"{answer.status_code} {answer.text[:200]}"))
        return
    lines: dict[str, list[int]] = {}
    for number, entity in batch:
        lines.setdefault(str(entity.get("id")), []).append(number)
    errors = answer.json().get("errors", [])
    for error in errors:
        reason = error.get("error", {})
        why = reason.get("detail") or reason.get("title") or "refused"
        for number in lines.get(str(error.get("entityId")), [0]):
            report.rejected.append((number, why))
    report.committed += len(batch) - sum(len(lines.get(str(e.get("entityId")), [0])) for e in errors)


async def export_entities(
    target: Target, types: list[str], out: IO[bytes], *, context: str | None = None
) -> int:
    """Write every entity of ``types`` to ``out``, one per line; returns how many."""
    headers = {"Accept": LD}
    if context:
        headers["Link"] = f'<{context}>; rel="http://www.w3.org/ns/json-ld#context"; type="{LD}"'
    written = 0
    async with target.client() as client:
        await check(client, target)
        async for entity in _pages(client, ",".join(types), headers, target.batch_size):
            out.write(orjson.dumps(entity) + b"\n")
            written += 1
    return written


async def _pages(client: Any, types: str, headers: dict[str, str], size: int) -> AsyncIterator[Any]:
    offset = 0
    while True:
        params = {"type": types, "limit": str(size), "offset": str(offset)}
        answer = await client.get(ENTITIES, params=params, headers=headers)
        if answer.status_code != 200:
            raise NodeError(f"GET {ENTITIES} answered {answer.status_code}: {answer.text[:300]}")
        page = answer.json()
        for entity in page:
            yield entity
        if len(page) < size:
            return
        offset += len(page)
