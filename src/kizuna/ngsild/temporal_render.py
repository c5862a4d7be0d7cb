"""The temporal representations of an entity read (clauses 4.5.8, 4.5.9, 4.5.19): normalized or
concise instances, temporalValues series and aggregated values, compacted with the request's
@context; the only place temporal answers are shaped."""

from __future__ import annotations

import functools
from typing import Any

from kizuna.jsonld.terms import TermMap
from kizuna.members import VALUE_MEMBER
from kizuna.ngsild.render import View, render_instance
from kizuna.ngsild.temporal import TemporalEntity
from kizuna.ngsild.temporal_params import TemporalParams, time_of
from kizuna.store import AggregateSeries
from kizuna.times import iso

Instance = dict[str, Any]

TEMPORAL_VALUES_KEY = {
    "Property": "values",
    "GeoProperty": "values",
    "Relationship": "objects",
    "LanguageProperty": "languageMaps",
    "VocabProperty": "vocabs",
    "JsonProperty": "jsons",
    "ListProperty": "valueLists",
    "ListRelationship": "objectLists",
}


# Kinds whose temporalValues items wrap each value in its member, as the ETSI suite expects
# (020_12_02, 020_15_02, 020_16_02): [{"languageMap": {...}}, time].
WRAPPED_VALUES = frozenset({"LanguageProperty", "JsonProperty", "VocabProperty"})


def render_temporal(
    entity: TemporalEntity,
    terms: TermMap,
    params: TemporalParams,
    *,
    pick: frozenset[str] | None = None,
    omit: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The temporal representation asked for: normalized/concise, temporalValues or aggregated."""
    core = entity.core

    def keep(member: str) -> bool:
        return (pick is None or member in pick) and member not in omit

    out: dict[str, Any] = {}
    if keep("id"):
        out["id"] = core["id"]
    if keep("type"):
        types = [terms.compact(t) for t in core["type"]]
        out["type"] = types[0] if len(types) == 1 else types
    if keep("scope") and "scope" in core:
        out["scope"] = core["scope"][0] if len(core["scope"]) == 1 else core["scope"]
    if params.sys_attrs:
        out["createdAt"] = core["createdAt"]
        out["modifiedAt"] = core["modifiedAt"]
    if params.form == "aggregatedValues":
        for iri, rendered in _aggregated(entity, params).items():
            if keep(iri):
                out[terms.compact(iri)] = rendered
        return out
    for iri, instances in entity.attributes.items():
        if not keep(iri):
            continue
        if params.form == "temporalValues":
            kind = entity.kinds.get(iri, "Property")
            out[terms.compact(iri)] = _temporal_values(instances, kind, terms, params.history.timeproperty)
        else:
            view = View(form=params.form, sys_attrs=params.sys_attrs)
            out[terms.compact(iri)] = [_render_one(i, terms, view) for i in instances]
    return out


def _render_one(instance: Instance, terms: TermMap, view: View) -> Any:
    rendered = render_instance(instance, terms, view)
    if "deletedAt" in instance and isinstance(rendered, dict):
        rendered["deletedAt"] = instance["deletedAt"]
    return rendered


def _temporal_values(instances: list[Instance], kind: str, terms: TermMap, timeproperty: str) -> Any:
    """Clause 4.5.9: per datasetId, {"type", "values": [[value, time], ...]} (objects, ...);
    an attribute whose instances a truncation removed keeps an empty series of its ``kind``."""
    groups: dict[str | None, list[Instance]] = {}
    for instance in instances:
        groups.setdefault(instance.get("datasetId"), []).append(instance)
    if not groups:
        return {"type": kind, TEMPORAL_VALUES_KEY[kind]: []}
    view = View(form="keyValues")
    rendered = []
    for dataset_id, members in groups.items():
        kind = members[0]["type"]
        series = [[_value_of(i, terms, view), time_of(i, timeproperty)] for i in members]
        item: dict[str, Any] = {"type": kind, TEMPORAL_VALUES_KEY[kind]: series}
        if dataset_id is not None:
            item["datasetId"] = dataset_id
        rendered.append(item)
    return rendered[0] if len(rendered) == 1 else rendered


def _value_of(instance: Instance, terms: TermMap, view: View) -> Any:
    value = render_instance(instance, terms, view)
    if instance["type"] in WRAPPED_VALUES:
        return {VALUE_MEMBER[instance["type"]]: value}
    return value


def _aggregated(entity: TemporalEntity, params: TemporalParams) -> dict[str, Any]:
    """Clause 4.5.19: per attribute (and datasetId), each method's [[value, start, end], ...].
    A series' buckets are the store's rows: each method's list is one pass over them, and a
    bucket's times are formatted once for all its methods (see :func:`_spans`)."""
    methods = params.aggr_methods
    series: dict[str, dict[str | None, dict[str, Any]]] = {}
    for aggregated in entity.aggregates:
        by_dataset = series.setdefault(aggregated.attribute, {})
        item = by_dataset.get(aggregated.dataset_id)
        if item is None:
            item = by_dataset[aggregated.dataset_id] = {
                "type": entity.kinds.get(aggregated.attribute, "Property")
            }
            if aggregated.dataset_id is not None:
                item["datasetId"] = aggregated.dataset_id
            for method in methods:
                item[method] = []
        buckets = aggregated.buckets
        spans = _spans(aggregated)
        for column, method in enumerate(methods, 1):
            item[method] += [
                [row[column], start, end]
                for row, (start, end) in zip(buckets, spans, strict=True)
                if row[column] is not None
            ]
    out: dict[str, Any] = {}
    for iri, by_dataset in series.items():
        items = list(by_dataset.values())
        out[iri] = items[0] if len(items) == 1 else items
    return out


# Up to this many buckets a period's formatted times are kept (about 150 bytes a bucket).
PERIOD_TABLE_BUCKETS = 4096


def _spans(series: AggregateSeries) -> list[tuple[str, str]]:
    """The formatted (start, end) of each bucket of ``series``. A dense series of a period
    takes them from :func:`_period_table`; a sparse one (few buckets of a long range) or a
    long one formats its own."""
    buckets = series.buckets
    if series.period is not None and buckets:
        count = buckets[-1][0] + 1
        if count <= min(2 * len(buckets), PERIOD_TABLE_BUCKETS):
            table = _period_table(series.origin, series.period, count)
            return [table[row[0]] for row in buckets]
    return [(iso(start), iso(end)) for start, end in series.bounds()]


@functools.lru_cache(maxsize=64)
def _period_table(origin: float, period: float, count: int) -> tuple[tuple[str, str], ...]:
    """The formatted (start, end) of buckets 0 to ``count`` - 1 of a period from ``origin``,
    as :meth:`AggregateSeries.bounds` computes them: the same for every series of a query and
    for the same query asked again (a dashboard's chart), where formatting them was most of
    rendering 750 hourly buckets."""
    return tuple((iso(start := origin + k * period), iso(start + period)) for k in range(count))
