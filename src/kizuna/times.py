"""ISO 8601 instants, parsed and written one way for the whole node.

NGSI-LD system times carry milliseconds (peers and the ETSI suite expect them); DSP messages
carry seconds; history answers keep the precision an instant has. A DateTime without an offset
is UTC, as clause 4.6.3 reads it.
"""

from __future__ import annotations

import functools
import time
from datetime import UTC, datetime


def parse_instant(text: str) -> datetime:
    """An aware datetime; ValueError when the text is no ISO 8601 DateTime."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def epoch(text: str) -> float:
    """POSIX seconds of an ISO 8601 DateTime; ValueError when it is none."""
    return parse_instant(text).timestamp()


def iso_millis(seconds: float) -> str:
    """2020-08-01T12:00:00.250Z: the form of createdAt, modifiedAt and notifiedAt."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds * 1000) % 1000:03d}Z"


def now_iso() -> str:
    return iso_millis(time.time())


def iso_seconds(moment: datetime) -> str:
    """2020-08-01T12:00:00Z: the form of DSP timestamps and ODRL dateTime operands."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@functools.lru_cache(maxsize=8192)
def iso(seconds: float) -> str:
    """An instant as 2020-08-01T12:00:00Z, with milliseconds (.250Z) or microseconds if it has
    them. Cached: aggregation periods repeat (every entity of a query has the same buckets)."""
    moment = datetime.fromtimestamp(seconds, UTC)
    if moment.year < 1000:  # isoformat pads the year, strftime does not; history keeps strftime's form
        return _iso_strftime(moment)
    micro = moment.microsecond
    if micro == 0:
        return moment.isoformat(timespec="seconds")[:-6] + "Z"
    if micro % 1000 == 0:
        return moment.isoformat(timespec="milliseconds")[:-6] + "Z"
    return moment.isoformat(timespec="microseconds")[:-6] + "Z"


def _iso_strftime(moment: datetime) -> str:
    if moment.microsecond == 0:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    if moment.microsecond % 1000 == 0:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
