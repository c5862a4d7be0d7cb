"""Content negotiation on an ``Accept`` header: one reading of its weights and wildcards for
every API root (NGSI-LD's JSON / JSON-LD / GeoJSON, DCAT-AP's RDF syntaxes)."""

from __future__ import annotations

from collections.abc import Sequence


def negotiate(header: str, offers: Sequence[str]) -> str | None:
    """The offer ``header`` prefers (highest ``q``, then the earliest in the header), or None
    when it accepts none of them. A wildcard (``*/*``, ``type/*``) stands for the first offer it
    covers, so the order of ``offers`` is the node's own preference."""
    best: tuple[float, int, int] | None = None
    for position, part in enumerate(header.split(",")):
        media, _, params = part.partition(";")
        media = media.strip().lower()
        weight = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        if weight <= 0:
            continue
        candidate = _covered(media, offers)
        if candidate is None:
            continue
        key = (-weight, position, candidate)
        if best is None or key < best:
            best = key
    return None if best is None else offers[best[2]]


def _covered(media: str, offers: Sequence[str]) -> int | None:
    """The index of the first offer ``media`` (a type or a wildcard) names."""
    if media == "*/*":
        return 0 if offers else None
    for index, offer in enumerate(offers):
        if media == offer or (media.endswith("/*") and offer.startswith(media[:-1])):
            return index
    return None
