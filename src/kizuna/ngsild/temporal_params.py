"""Temporal query parameters (clauses 5.7.3-5.7.4, GS CIM 009 clause 4.11): what to read of
each entity's history and how to represent it, validated once for the temporal API and the data
plane alike."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kizuna.errors import BadRequestData, InvalidRequest
from kizuna.ngsild import model
from kizuna.store import HistoryQuery
from kizuna.times import epoch, iso

Instance = dict[str, Any]

TIMERELS = ("before", "after", "between")


TIMEPROPERTIES = ("observedAt", "createdAt", "modifiedAt", "deletedAt")


AGGREGATION_METHODS = ("totalCount", "distinctCount", "sum", "avg", "min", "max", "stddev", "sumsq")


FORMS = ("normalized", "concise", "temporalValues", "aggregatedValues")


OPTIONS = frozenset({"temporalValues", "aggregatedValues", "sysAttrs", "concise", "normalized"})


_RETENTION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")


_RETENTION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


_DURATION = re.compile(
    r"^P(?!$)(?:(\d+(?:\.\d+)?)Y)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)W)?(?:(\d+(?:\.\d+)?)D)?"
    r"(?:T(?=\d)(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$"
)


_DURATION_UNITS = (365 * 86400, 30 * 86400, 7 * 86400, 86400, 3600, 60, 1)


@dataclass(slots=True)
class TemporalParams:
    """What to read of each entity's history and how to represent it."""

    history: HistoryQuery = field(default_factory=HistoryQuery)
    form: str = "normalized"
    sys_attrs: bool = False
    aggr_methods: tuple[str, ...] = ()
    aggr_period: float | None = None
    aggr_origin: float | None = None
    timerel: str | None = None
    time_at: float | None = None
    end_time_at: float | None = None


@dataclass(slots=True, frozen=True)
class InstanceRange:
    """What a partial temporal answer covers (clause 6.3.10): the ``Content-Range`` header."""

    start: float
    end: float
    size: int | None  # lastN, None for "*"

    def header(self) -> str:
        return f"date-time {iso(self.start)}-{iso(self.end)}/{'*' if self.size is None else self.size}"


def parse_datetime(text: str, name: str) -> float:
    if not model.is_datetime(text):
        raise BadRequestData(f"{name} must be a DateTime such as 2020-08-01T12:00:00Z, not {text!r}")
    return epoch(text)


def parse_duration(text: str, name: str = "aggrPeriodDuration") -> float:
    """Seconds of an ISO 8601 duration (P1D, PT1H, P1Y2M3DT4H5M6S); PT0 is 0."""
    found = _DURATION.match(text)
    if found is None:
        raise BadRequestData(f"{name} must be an ISO 8601 duration such as PT1H, not {text!r}")
    return sum(float(part) * unit for part, unit in zip(found.groups(), _DURATION_UNITS, strict=True) if part)


def parse_retention(text: str) -> float:
    """Seconds of a retention such as ``90d``, ``12h``, ``2w`` or an ISO 8601 duration (P90D)."""
    found = _RETENTION.match(text.strip())
    if found is not None:
        return float(found.group(1)) * _RETENTION_UNITS[found.group(2)]
    seconds = parse_duration(text.strip(), "A history retention (90d, 12h, P1Y, ...)")
    if seconds <= 0:
        raise BadRequestData(f"A history retention must be positive, not {text!r}")
    return seconds


def parse_temporal_params(
    params: dict[str, str],
    options: set[str],
    *,
    attrs: Sequence[str] | None = None,
    dataset_ids: frozenset[str | None] | None = None,
) -> TemporalParams:
    """Validate the temporal query parameters (clause 5.7.3/5.7.4; GS CIM 009 clause 4.11)."""
    unknown = options - OPTIONS
    if unknown:
        raise InvalidRequest(f"Unknown options: {', '.join(sorted(unknown))}")
    form = params.get("format")
    if form is not None:
        if form in ("simplified", "keyValues"):
            form = "temporalValues"
        if form not in FORMS:
            raise InvalidRequest(f"Unknown format {form!r}; use one of {', '.join(FORMS)}")
    elif "temporalValues" in options:
        form = "temporalValues"
    elif "aggregatedValues" in options:
        form = "aggregatedValues"
    elif "concise" in options:
        form = "concise"
    else:
        form = "normalized"
    out = TemporalParams(form=form, sys_attrs="sysAttrs" in options)
    history = out.history
    history.attributes = list(attrs) if attrs is not None else None
    history.dataset_ids = dataset_ids

    timeproperty = params.get("timeproperty") or "observedAt"
    if timeproperty not in TIMEPROPERTIES:
        raise BadRequestData(f"timeproperty must be one of {', '.join(TIMEPROPERTIES)}, not {timeproperty!r}")
    history.timeproperty = timeproperty

    timerel, time_at, end_time_at = params.get("timerel"), params.get("timeAt"), params.get("endTimeAt")
    if timerel is None:
        if time_at is not None or end_time_at is not None:
            raise BadRequestData("timeAt and endTimeAt need a timerel (before, after or between)")
    else:
        if timerel not in TIMERELS:
            raise BadRequestData(f"timerel must be before, after or between, not {timerel!r}")
        if not time_at:
            raise BadRequestData(f"timerel={timerel} needs a timeAt")
        at = out.time_at = parse_datetime(time_at, "timeAt")
        if timerel == "between":
            if not end_time_at:
                raise BadRequestData("timerel=between needs an endTimeAt")
            end = out.end_time_at = parse_datetime(end_time_at, "endTimeAt")
            if end <= at:
                raise BadRequestData("endTimeAt must be later than timeAt")
            history.start, history.end = at, end
            out.aggr_origin = at
        elif end_time_at is not None:
            raise BadRequestData(f"endTimeAt is only allowed with timerel=between, not {timerel}")
        elif timerel == "before":
            history.end = at
        else:
            history.start, history.start_exclusive = at, True
            out.aggr_origin = at
    out.timerel = timerel

    last_n = params.get("lastN")
    if last_n is not None:
        if not last_n.isdigit() or int(last_n) < 1:
            raise BadRequestData(f"lastN must be a positive integer, not {last_n!r}")
        history.last_n = int(last_n)

    if form == "aggregatedValues":
        raw_methods = params.get("aggrMethods")
        if not raw_methods:
            raise BadRequestData("The aggregated temporal representation needs aggrMethods")
        methods = [m.strip() for m in raw_methods.split(",")]
        bad = [m for m in methods if m not in AGGREGATION_METHODS]
        if bad:
            raise BadRequestData(
                f"Unknown aggrMethods {', '.join(bad)}; use {', '.join(AGGREGATION_METHODS)}"
            )
        out.aggr_methods = tuple(dict.fromkeys(methods))
        duration = params.get("aggrPeriodDuration")
        if duration is not None:
            seconds = parse_duration(duration)
            out.aggr_period = seconds or None
    elif params.get("aggrPeriodDuration") is not None:
        parse_duration(params["aggrPeriodDuration"])
    return out


def time_of(instance: Instance, timeproperty: str) -> Any:
    if "deletedAt" in instance:
        return instance["deletedAt"]
    return instance.get(timeproperty) or instance.get("createdAt")
