"""Which context source registrations a question selects (clause 5.12), no HTTP, no store.

Discovery (clause 5.10.2), forwarding and the notifications of csource subscriptions
(:mod:`kizuna.notify.csource`) all decide "does this registration match?" through one
:class:`RegistrationFilter`, built from query parameters (:meth:`RegistrationFilter.from_params`)
or from a stored csource subscription (:meth:`RegistrationFilter.from_subscription`). The
registrations themselves (validation, storage, output) are :mod:`kizuna.ngsild.csources`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kizuna import query as ql
from kizuna.errors import BadRequestData
from kizuna.jsonld.terms import TermMap
from kizuna.ngsild.csources import GEO_MEMBERS, MEMBERS, READ_ONLY, Registration
from kizuna.ngsild.model import is_datetime, is_uri
from kizuna.ngsild.subscription_members import Subscription
from kizuna.patterns import search
from kizuna.times import parse_instant

# A stored subscription's geoQ names its geoproperty by IRI (see subscriptions.parse_members).
GEO_MEMBER_OF_IRI = {f"https://uri.etsi.org/ngsi-ld/{name}": name for name in GEO_MEMBERS}
TIMERELS = ("before", "after", "between")
# timeproperty of a temporal query -> the registration interval it is evaluated on (clause 5.10.2)
TIME_PROPERTIES = {
    "observedAt": "observationInterval",
    "createdAt": "managementInterval",
    "modifiedAt": "managementInterval",
}


@dataclass(frozen=True, slots=True)
class EntitySelector:
    """What a query asks for of an entity: types (an expression of IRIs), ids, an id pattern."""

    types: ql.TypeExpr | None = None
    ids: frozenset[str] | None = None
    id_pattern: str | None = None

    def covers(self, info: Mapping[str, str], *, ids_settled: bool = False) -> bool:
        """Does a registration's EntityInfo fall under this selector?

        A registered ``idPattern`` is taken to cover a wanted id it matches; a type-only EntityInfo
        does not answer an id question (discovery by id asks for registrations naming that id).
        """
        if self.types is not None and not self.types.matches([info["type"]]):
            return False
        reg_id, reg_pattern = info.get("id"), info.get("idPattern")
        if self.ids is not None and not ids_settled:
            if reg_id is not None:
                if reg_id not in self.ids:
                    return False
            elif reg_pattern is None or not any(search(reg_pattern, wanted) for wanted in self.ids):
                return False
        return self.id_pattern is None or reg_id is None or search(self.id_pattern, reg_id)


@dataclass(frozen=True, slots=True)
class TimeFilter:
    timerel: str
    time_at: datetime
    end_time_at: datetime | None = None
    interval: str = "observationInterval"

    def matches(self, reg: Registration) -> bool:
        """A registration without the interval is not limited in time and always matches."""
        interval = reg.get(self.interval)
        if not isinstance(interval, dict):
            return True
        start = parse_instant(interval["startAt"])
        end = parse_instant(interval["endAt"]) if "endAt" in interval else None
        if self.timerel == "before":
            return start < self.time_at
        if self.timerel == "after":
            return end is None or end > self.time_at
        assert self.end_time_at is not None
        return start < self.end_time_at and (end is None or end > self.time_at)


@dataclass(frozen=True, slots=True)
class RegistrationFilter:
    """Which registrations a discovery query or a csource subscription selects (clause 5.12).

    A registration matches if one of its RegistrationInfo matches both the entity selectors
    (when given: an EntityInfo under one of them, or no ``entities`` at all) and the attribute
    names (when given: a common name, or no names at all), and if q, csf, the geo-query and the
    temporal query hold. ``registration_ids`` are also accepted as an answer to the ``id``
    question: the ETSI suite queries registrations by their own ids.
    """

    selectors: tuple[EntitySelector, ...] = ()
    attrs: frozenset[str] | None = None
    q: ql.QExpr | None = None
    csf: ql.QExpr | None = None
    geo: ql.GeoQuery | None = None
    time: TimeFilter | None = None
    registration_ids: frozenset[str] | None = field(default=None)

    def matches(self, reg: Registration) -> bool:
        ids_settled = self.registration_ids is not None and reg["id"] in self.registration_ids
        if not any(self._info_matches(info, ids_settled) for info in reg.get("information", ())):
            return False
        if self.q is not None or self.csf is not None:
            probe = _probe(reg)
            if self.q is not None and not ql.matches(self.q, probe):
                return False
            if self.csf is not None and not ql.matches(self.csf, probe):
                return False
        if self.geo is not None:
            geometry = reg.get(self.geo.geoproperty)
            if not isinstance(geometry, dict) or not self.geo.matches(geometry):
                return False
        return self.time is None or self.time.matches(reg)

    def relevant(self, reg: Registration) -> Registration:
        """The registration with only its RegistrationInfo elements that match (all of them if
        none does): what a csource notification carries, as clause 5.11.7 advises (ETSI 047_03)."""
        ids_settled = self.registration_ids is not None and reg["id"] in self.registration_ids
        info = [item for item in reg.get("information", ()) if self._info_matches(item, ids_settled)]
        return {**reg, "information": info} if info else reg

    def _info_matches(self, info: Mapping[str, Any], ids_settled: bool) -> bool:
        if self.selectors:
            if "entities" not in info:
                # registered attributes of any entity: no answer to a question by entity id
                if not ids_settled and any(s.ids is not None for s in self.selectors):
                    return False
            elif not any(
                s.covers(e, ids_settled=ids_settled) for s in self.selectors for e in info["entities"]
            ):
                return False
        if self.attrs is not None:
            names = set(info.get("propertyNames", ())) | set(info.get("relationshipNames", ()))
            if names and not names & self.attrs:
                return False
        return True

    @classmethod
    def from_params(
        cls,
        terms: TermMap,
        *,
        ids: list[str] | None = None,
        types: str | None = None,
        id_pattern: str | None = None,
        attrs: list[str] | None = None,
        q: str | None = None,
        csf: str | None = None,
        georel: str | None = None,
        geometry: str | None = None,
        coordinates: str | None = None,
        geoproperty: str | None = None,
        timerel: str | None = None,
        time_at: str | None = None,
        end_time_at: str | None = None,
        timeproperty: str | None = None,
    ) -> RegistrationFilter:
        """The filter of a discovery query (clause 5.10.2); raises BadRequestData on bad input."""
        if not any(p is not None for p in (ids, types, id_pattern, attrs, q, csf, georel, timerel)):
            raise BadRequestData(
                "Discovering context sources needs at least one of id, type, idPattern, attrs, q, csf, "
                "a geo-query or a temporal query"
            )
        if ids is not None:
            for entity_id in ids:
                if not is_uri(entity_id):
                    raise BadRequestData(f"id {entity_id!r} is not a URI")
        selector = EntitySelector(
            types=None if types is None else ql.parse_type_expr(types).resolve(terms.expand),
            ids=None if ids is None else frozenset(ids),
            id_pattern=None if id_pattern is None else ql.check_regex(id_pattern),
        )
        use_selector = types is not None or ids is not None or id_pattern is not None
        return cls(
            selectors=(selector,) if use_selector else (),
            attrs=None if attrs is None else frozenset(terms.expand(name) for name in attrs),
            q=None if q is None else ql.parse_q(q).resolve(terms.expand),
            csf=None if csf is None else ql.parse_q(csf).resolve(terms.expand),
            geo=_geo_filter(georel, geometry, coordinates, geoproperty),
            time=time_filter(timerel, time_at, end_time_at, timeproperty),
            registration_ids=selector.ids,
        )

    @classmethod
    def from_subscription(cls, sub: Subscription, q_terms: TermMap) -> RegistrationFilter:
        """The registrations a (canonical, stored) csource subscription is about; ``q_terms`` is
        the term map of the subscription's ``_qContext``, which its q and csf were written in."""
        q, csf = sub.get("q"), sub.get("csf")
        selectors = tuple(
            EntitySelector(
                types=ql.parse_type_expr(s["type"]),
                ids=frozenset([s["id"]]) if "id" in s else None,
                id_pattern=s.get("idPattern"),
            )
            for s in sub.get("entities", ())
        )
        geo_q = sub.get("geoQ")
        return cls(
            selectors=selectors,
            attrs=frozenset(sub["watchedAttributes"]) if "watchedAttributes" in sub else None,
            q=None if q is None else ql.parse_q(q).resolve(q_terms.expand),
            csf=None if csf is None else ql.parse_q(csf).resolve(q_terms.expand),
            geo=None
            if geo_q is None
            else _geo_filter(geo_q["georel"], geo_q["geometry"], geo_q["coordinates"], geo_member(geo_q)),
        )


def geo_member(geo_q: Mapping[str, Any]) -> str | None:
    """The registration member a stored geoQ is about: its geoproperty by short name (a
    registration's geo members are not expanded), ``None`` for the default."""
    geoproperty = geo_q.get("geoproperty")
    return None if geoproperty is None else GEO_MEMBER_OF_IRI.get(geoproperty, geoproperty)


def _probe(reg: Registration) -> dict[str, Any]:
    """The registration as an entity whose attributes are its registration properties, for q/csf."""
    probe: dict[str, Any] = {"id": reg["id"]}
    for name, value in reg.items():
        if name not in MEMBERS and not name.startswith(("_", "@")) and name not in READ_ONLY:
            probe[name] = {"type": "Property", "value": value}
    return probe


def _geo_filter(
    georel: str | None, geometry: str | None, coordinates: Any, geoproperty: str | None
) -> ql.GeoQuery | None:
    given = [p is not None for p in (georel, geometry, coordinates)]
    if not any(given):
        if geoproperty is not None:
            raise BadRequestData("geoproperty needs georel, geometry and coordinates")
        return None
    if not all(given):
        raise BadRequestData("A geo-query needs georel, geometry and coordinates together")
    if geoproperty is not None and geoproperty not in GEO_MEMBERS:
        raise BadRequestData(f"geoproperty of a registration must be one of {', '.join(GEO_MEMBERS)}")
    assert georel is not None and geometry is not None
    return ql.parse_geoq(georel, geometry, coordinates, geoproperty)


def time_filter(
    timerel: str | None, time_at: str | None, end_time_at: str | None, timeproperty: str | None
) -> TimeFilter | None:
    """The temporal part of a discovery query or of a csource subscription's temporalQ
    (``None`` without timerel); raises BadRequestData on bad input."""
    if timerel is None:
        if time_at is not None or end_time_at is not None or timeproperty is not None:
            raise BadRequestData("timeAt, endTimeAt and timeproperty need timerel")
        return None
    if timerel not in TIMERELS:
        raise BadRequestData(f"timerel must be one of {', '.join(TIMERELS)}")
    if time_at is None or not is_datetime(time_at):
        raise BadRequestData("timerel needs timeAt as a DateTime")
    if timerel == "between":
        if end_time_at is None or not is_datetime(end_time_at):
            raise BadRequestData("timerel=between needs endTimeAt as a DateTime")
    elif end_time_at is not None:
        raise BadRequestData("endTimeAt is only allowed with timerel=between")
    interval = TIME_PROPERTIES.get(timeproperty or "observedAt")
    if interval is None:
        raise BadRequestData(f"timeproperty must be one of {', '.join(TIME_PROPERTIES)}")
    return TimeFilter(
        timerel,
        parse_instant(time_at),
        None if end_time_at is None else parse_instant(end_time_at),
        interval,
    )
