"""The city's rhythms: local time, demand curves for traffic and people, the school timetable.

Everything takes the simulated instant and answers from Duisburg's local time (Europe/Berlin,
with summer time), since people live by the wall clock while the sun does not.
"""

from __future__ import annotations

import math
from datetime import datetime
from zoneinfo import ZoneInfo

BERLIN = ZoneInfo("Europe/Berlin")
# Lessons of a German secondary school day, local minutes since midnight (start, end).
LESSONS = ((480, 525), (530, 575), (595, 640), (645, 690), (710, 755), (760, 805))


def local(when: datetime) -> datetime:
    return when.astimezone(BERLIN)


def hour_of(when: datetime) -> float:
    t = local(when)
    return t.hour + t.minute / 60


def weekday(when: datetime) -> bool:
    return local(when).weekday() < 5


def _bump(hour: float, centre: float, width: float) -> float:
    return math.exp(-(((hour - centre) / width) ** 2))


def traffic_demand(when: datetime) -> float:
    """Share of a road's capacity in use, 0..~1: rush hours on weekdays, a broad afternoon at
    weekends, little at night."""
    h = hour_of(when)
    if weekday(when):
        return 0.06 + 0.8 * _bump(h, 7.75, 1.1) + 0.5 * _bump(h, 12.5, 3.0) + 0.85 * _bump(h, 17.0, 1.4)
    return 0.05 + 0.5 * _bump(h, 14.0, 3.5)


def lesson_at(when: datetime) -> int | None:
    """The index of the lesson under way (weekdays only), or None in breaks and off hours."""
    if not weekday(when):
        return None
    t = local(when)
    minute = t.hour * 60 + t.minute
    for n, (start, end) in enumerate(LESSONS):
        if start <= minute < end:
            return n
    return None


def school_day(when: datetime) -> bool:
    """Between the first lesson and the last, breaks included."""
    t = local(when)
    minute = t.hour * 60 + t.minute
    return weekday(when) and LESSONS[0][0] <= minute < LESSONS[-1][1]


def zoo_visitors(when: datetime) -> float:
    """Share of the zoo's peak crowd: open 09:00 to 17:00 (Nov-Mar) or 18:00, busier at weekends."""
    t = local(when)
    closing = 17 if t.month in (11, 12, 1, 2, 3) else 18
    h = hour_of(when)
    if not 9 <= h < closing:
        return 0.0
    return (1.0 if not weekday(when) else 0.55) * (0.3 + 0.7 * _bump(h, 13.5, 2.5))


def shoppers(when: datetime) -> float:
    """Share of the shopping street's peak crowd: shops 10:00-20:00 Monday to Saturday."""
    t = local(when)
    h = hour_of(when)
    if t.weekday() == 6:
        return 0.05 + 0.15 * _bump(h, 15, 3)
    if not 10 <= h < 20:
        return 0.03 if 7 <= h < 23 else 0.0
    return 0.4 + 0.6 * _bump(h, 15.5, 2.5)


def tram_in_service(when: datetime) -> bool:
    h = hour_of(when)
    return h >= 5.0 or h < 0.5
