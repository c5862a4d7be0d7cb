"""The sun's elevation from a position and an instant (NOAA's general solar position formulas).

Street lights switch on the sun, not on a clock: dusk in Duisburg moves by almost four hours
over the year, and the simulated clock may be any date. The formulas (fractional year,
equation of time, declination, hour angle) are accurate to a fraction of a degree, far better
than a photocell's threshold needs.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime


def elevation(when: datetime, latitude: float, longitude: float) -> float:
    """Degrees above the horizon (negative below) of the sun's centre, without refraction."""
    t = when.astimezone(UTC)
    leap = t.year % 4 == 0 and (t.year % 100 != 0 or t.year % 400 == 0)
    hours = t.hour + t.minute / 60 + t.second / 3600
    gamma = 2 * math.pi / (366 if leap else 365) * (t.timetuple().tm_yday - 1 + (hours - 12) / 24)
    eqtime = 229.18 * (
        0.000075
        + 0.001868 * math.cos(gamma)
        - 0.032077 * math.sin(gamma)
        - 0.014615 * math.cos(2 * gamma)
        - 0.040849 * math.sin(2 * gamma)
    )
    decl = (
        0.006918
        - 0.399912 * math.cos(gamma)
        + 0.070257 * math.sin(gamma)
        - 0.006758 * math.cos(2 * gamma)
        + 0.000907 * math.sin(2 * gamma)
        - 0.002697 * math.cos(3 * gamma)
        + 0.00148 * math.sin(3 * gamma)
    )
    true_solar_minutes = hours * 60 + eqtime + 4 * longitude
    hour_angle = math.radians(true_solar_minutes / 4 - 180)
    lat = math.radians(latitude)
    cos_zenith = math.sin(lat) * math.sin(decl) + math.cos(lat) * math.cos(decl) * math.cos(hour_angle)
    return 90 - math.degrees(math.acos(max(-1.0, min(1.0, cos_zenith))))
