"""The SQL the two stores share, written once and parametrised by what their dialects spell apart.

Both stores keep the same history, outbox and audit tables; their statements differed only in a
cast, a function name or how a list is bound, and were kept as near-identical copies. Here each
statement is written once with ``?`` placeholders (the PostgreSQL store numbers them, see
:func:`kizuna.store.postgres.connection._numbered`) against a :class:`Dialect`, as
:class:`kizuna.store.common.QCompiler` does for q. What the stores do differently by design (the
SQLite index walks, the PostgreSQL lateral joins) stays in each store.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from typing import Any

from kizuna.store import AggregateSeries, HistoryQuery
from kizuna.store.common import TIME_COLUMN, Sql


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one SQL dialect spells what the shared statements need."""

    float_cast: str  # after a float parameter: "" (SQLite's are typed by value) or "::float8"
    greatest: str  # the two-argument maximum: SQLite's scalar max(), PostgreSQL's greatest()
    same: str  # null-safe equality
    nulls_first: str  # ORDER BY suffix that puts NULL first (SQLite's default)
    text_list: bool  # lists bind as one text[] parameter (= ANY) rather than one ? each (IN)
    integer_quotient: str  # {offset} divided by the period parameter, rounded down to an integer

    def in_list(self, column: str, values: Collection[str]) -> Sql:
        """``column`` is one of ``values``."""
        if self.text_list:
            return f"{column} = ANY(?::text[])", [list(values)]
        return f"{column} IN ({','.join('?' * len(values))})", list(values)

    def bucket(self, offset: str) -> str:
        """The period bucket (an integer from 0) of a time ``offset`` from the origin, divided by
        the period parameter that follows (offsets are never negative: truncation is floor)."""
        return self.integer_quotient.format(offset=offset)


SQLITE = Dialect(
    float_cast="",
    greatest="max",
    same="IS",
    nulls_first="",
    text_list=False,
    integer_quotient="CAST({offset} / ? AS INTEGER)",
)
POSTGRES = Dialect(
    float_cast="::float8",
    greatest="greatest",
    same="IS NOT DISTINCT FROM",
    nulls_first=" NULLS FIRST",
    text_list=True,
    integer_quotient="floor({offset} / ?::float8)::bigint",
)


# -- temporal history -------------------------------------------------------------------------------


def history_where(
    d: Dialect, query: HistoryQuery, head: Sql, *, attribute_sql: str | None = None
) -> tuple[str, list[Any], str]:
    """The WHERE clause of a history read, its parameters and the time expression it orders by
    (and aggregates on).

    ``head`` holds the store's own conditions on the rows (tenant, entity or entities) with their
    parameters; ``attribute_sql`` is an SQL expression for the attribute in place of
    ``query.attributes``, written right after ``head`` (so that its parameters, if any, are the
    caller's to insert there)."""
    column = TIME_COLUMN[query.timeproperty]
    where, params = [head[0]], list(head[1])
    if attribute_sql is not None:
        where.append(f"attribute = {attribute_sql}")
    elif query.attributes is not None:
        sql, values = d.in_list("attribute", query.attributes)
        where.append(sql)
        params += values
    where.append("deleted_at IS NOT NULL" if query.timeproperty == "deletedAt" else "deleted_at IS NULL")
    if query.start is not None:
        where.append(f"{column} {'>' if query.start_exclusive else '>='} ?{d.float_cast}")
        params.append(query.start)
    if query.end is not None:
        where.append(f"{column} < ?{d.float_cast}")
        params.append(query.end)
    if query.dataset_ids is not None:
        named = [i for i in query.dataset_ids if i is not None]
        alternatives = []
        if named:
            sql, values = d.in_list("dataset_id", named)
            alternatives.append(sql)
            params += values
        if None in query.dataset_ids:
            alternatives.append("dataset_id IS NULL")
        where.append(f"({' OR '.join(alternatives)})")
    # An instance without the time property is timed by its creation; but only observed_at may
    # be null, and a bound on it already leaves out the rows without it: then the time is the
    # column itself, which an index serves and an aggregate need not evaluate per row.
    bounded = query.start is not None or query.end is not None
    when = column if column != "observed_at" or bounded else f"COALESCE({column}, created_at)"
    return " AND ".join(where), params, when


def aggregate_columns(d: Dialect, methods: Sequence[str], v: str, k: str) -> list[str]:
    """SQL of each aggregation method, over numeric values ``v`` and value keys ``k``: numeric
    aggregates skip non-numeric values (NULL ``v``; a sum of none is NULL)."""
    stddev = (
        f"CASE WHEN count({v}) > 1 THEN sqrt({d.greatest}(0, (sum({v} * {v}) - sum({v}) * sum({v})"
        f" / count({v})) / (count({v}) - 1))) WHEN count({v}) = 1 THEN 0.0 END"
    )
    sql = {
        "totalCount": "count(*)",
        "distinctCount": f"count(DISTINCT {k})",
        "sum": f"sum({v})",
        "avg": f"avg({v})",
        "min": f"min({v})",
        "max": f"max({v})",
        "stddev": stddev,
        "sumsq": f"sum({v} * {v})",
    }
    return [sql.get(method, "NULL") for method in methods]


SERIES_KEYS = ("entity_id", "attribute", "dataset_id")


def fixed_keys(entity_ids: Sequence[str], query: HistoryQuery) -> dict[str, Any]:
    """The keys of a series that the call fixes (one entity, one attribute, one datasetId), with
    their values: the aggregate statement neither groups on them nor returns them on each row,
    which is most of what it cost over a hand-written statement on a single series."""
    fixed: dict[str, Any] = {}
    if len(entity_ids) == 1:
        fixed["entity_id"] = entity_ids[0]
    if query.attributes is not None and len(set(query.attributes)) == 1:
        fixed["attribute"] = query.attributes[0]
    if query.dataset_ids is not None and len(query.dataset_ids) == 1:
        fixed["dataset_id"] = next(iter(query.dataset_ids))
    return fixed


def aggregate_sql(
    d: Dialect,
    source: Sql,
    where: Sql,
    when: str,
    methods: Sequence[str],
    period: float | None,
    origin: float | None,
    fixed: Collection[str],
) -> Sql:
    """One statement that aggregates the history rows of ``source`` (a FROM clause over
    attribute_history, with its parameters) matching ``where``, per series (the keys not in
    ``fixed``) and bucket, ordered so. Each row is (bucket, *aggregates, [start, last time],
    *the keys not fixed), the start and last time only when they are not the call's: without a
    period (the last time, then, is the one bucket's end) or without an origin (each series
    starts at its first instance; the last time is NULL). Buckets are [origin + k*period,
    origin + (k+1)*period)."""
    (from_sql, from_params), (where_sql, where_params) = source, where
    keys = [key for key in SERIES_KEYS if key not in fixed]
    order = [f"{key}{d.nulls_first}" if key == "dataset_id" else key for key in keys]
    if origin is not None or period is None:
        # The origin is known (or a series is one bucket): one pass, no series to join back.
        head: list[Any] = []
        tail: list[Any] = []
        ends = ""
        if period is None:
            ends = f", {'?' + d.float_cast if origin is not None else f'min({when})'}, max({when})"
            if origin is not None:
                head.append(origin)
        bucket = "0"
        if period is not None:
            bucket = d.bucket(f"({when} - ?{d.float_cast})")
            head = [origin, period]
        if origin is not None:
            tail.append(origin)
        columns = ", ".join(aggregate_columns(d, methods, "value_number", "value_key"))
        since = f" AND {when} >= ?{d.float_cast}" if tail else ""
        sql = (
            f"SELECT {bucket} AS bucket, {columns}{ends}{''.join(f', {key}' for key in keys)}"
            f" FROM {from_sql} WHERE {where_sql}{since}"
            f" GROUP BY {', '.join([*keys, 'bucket'])} ORDER BY {', '.join([*order, 'bucket'])}"
        )
        return sql, [*head, *from_params, *where_params, *tail]
    # Each series starts at its first instance: that needs the series first.
    columns = ", ".join(aggregate_columns(d, methods, "s.v", "s.k"))
    alias = {"entity_id": "e", "attribute": "a", "dataset_id": "d"}
    sql = f"""
    WITH sel AS (
        SELECT entity_id AS e, attribute AS a, dataset_id AS d, {when} AS t,
               value_number AS v, value_key AS k
        FROM {from_sql} WHERE {where_sql}
    ), series AS (
        SELECT e, a, d, min(t) AS o FROM sel GROUP BY e, a, d
    )
    SELECT {d.bucket("(s.t - r.o)")} AS bucket, {columns}, r.o, NULL{"".join(f", s.{alias[k]}" for k in keys)}
    FROM sel s JOIN series r ON s.e = r.e AND s.a = r.a AND s.d {d.same} r.d
    GROUP BY s.e, s.a, s.d, r.o, bucket
    ORDER BY s.e, s.a, s.d{d.nulls_first}, bucket
    """
    return sql, [*from_params, *where_params, period]


def aggregate_series(
    rows: Sequence[Sequence[Any]],
    methods: Sequence[str],
    period: float | None,
    origin: float | None,
    end: float | None,
    fixed: dict[str, Any],
) -> list[AggregateSeries]:
    """The rows of :func:`aggregate_sql` as a series each (their ``kind`` left for the caller),
    the rows kept as they are: a bucket spans its period, or with no period from the first
    instance (``origin``, if given) to ``end`` (the query's end, else the last instance)."""
    keys = [key for key in SERIES_KEYS if key not in fixed]
    ends = period is None or origin is None
    first = 1 + len(methods) + (2 if ends else 0)
    out: list[AggregateSeries] = []
    if keys:
        groups: Iterable[tuple[Any, Iterable[Sequence[Any]]]] = groupby(
            rows, key=itemgetter(*range(first, first + len(keys)))
        )
    else:
        groups = [((), rows)] if rows else []
    for key, members in groups:
        buckets = list(members)
        values = key if len(keys) != 1 else (key,)  # itemgetter of one index: the value itself
        named = {**fixed, **dict(zip(keys, values, strict=True))}
        start, stop = origin, None
        if ends:
            start, last = buckets[0][first - 2], buckets[0][first - 1]
            if period is None:
                stop = end if end is not None else last
        out.append(
            AggregateSeries(
                named["entity_id"], named["attribute"], named["dataset_id"], start, period, stop, buckets
            )
        )
    return out


# -- the audit trail --------------------------------------------------------------------------------

AUDIT_COLUMNS = "at, subject, tenant, operation, target, outcome, detail"


def audit_where(subject: str | None, tenant: str | None, since: float | None) -> Sql:
    """The WHERE clause (``?`` placeholders) of a read of the audit trail, and its parameters."""
    wanted = (("subject = ?", subject), ("tenant = ?", tenant), ("at >= ?", since))
    tests = [(test, value) for test, value in wanted if value is not None]
    return " AND ".join(test for test, _ in tests) or "TRUE", [value for _, value in tests]
