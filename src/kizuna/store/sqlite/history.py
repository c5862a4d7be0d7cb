"""Temporal history (clauses 5.6.11-5.6.16): one row per attribute instance, reads (lastN as an
index walk per attribute, several entities at once on a reader) and aggregation in SQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from itertools import groupby
from operator import itemgetter
from typing import Any

import orjson

from kizuna.store import AggregateSeries, Entity, HistoryQuery
from kizuna.store.common import (
    TEMPORAL_COLUMNS,
    Sql,
    TouchesOnce,
    extended_temporal_entity,
    new_history_instance,
    temporal_row,
)
from kizuna.store.common import TIME_COLUMN as _TIME_COLUMN
from kizuna.store.common import history_columns as _history_columns
from kizuna.store.dialect import SQLITE, aggregate_series, aggregate_sql, fixed_keys, history_where
from kizuna.store.sqlite.connection import SqliteBase, SqliteTransaction, marks


class SqliteHistory(SqliteBase):
    """The temporal reads of :class:`~kizuna.store.sqlite.SqliteStore`."""

    async def get_temporal_entity(self, tenant: str, entity_id: str) -> Entity | None:
        return _temporal_entity(self.db, tenant, entity_id)

    async def query_temporal_entities(
        self,
        tenant: str,
        types: Sequence[str] | None,
        ids: Sequence[str] | None,
        id_pattern: str | None,
    ) -> list[Entity]:
        return await self._read(_query_temporal_entities, tenant, types, ids, id_pattern)

    async def history_attributes(self, tenant: str, entity_id: str) -> list[str]:
        return _history_attribute_list(self.db, tenant, entity_id)

    async def read_history(
        self, tenant: str, entity_id: str, query: HistoryQuery
    ) -> list[tuple[str, dict[str, Any]]]:
        return _read_history(self.db, tenant, entity_id, query)

    async def read_histories(
        self, tenant: str, entity_ids: Sequence[str], query: HistoryQuery
    ) -> dict[str, list[tuple[str, dict[str, Any]]]]:
        return await self._read(_read_histories, tenant, entity_ids, query)

    async def prune_history(self, before: float) -> int:
        async with self._immediate() as db:
            pruned = db.execute(
                "DELETE FROM attribute_history WHERE COALESCE(observed_at, created_at) < ?", (before,)
            ).rowcount
            db.execute(
                "DELETE FROM temporal_entities WHERE NOT EXISTS (SELECT 1 FROM attribute_history h"
                " WHERE h.tenant = temporal_entities.tenant AND h.entity_id = temporal_entities.id)"
                " AND modified_at < strftime('%Y-%m-%dT%H:%M:%SZ', ?, 'unixepoch')",
                (before,),
            )
        return pruned

    async def aggregate_histories(
        self,
        tenant: str,
        entity_ids: Sequence[str],
        query: HistoryQuery,
        methods: Sequence[str],
        period: float | None,
        origin: float | None,
    ) -> list[AggregateSeries]:
        if not entity_ids:
            return []
        fixed = fixed_keys(entity_ids, query)
        if "entity_id" in fixed:  # one entity: an equality on the history index
            where, params, when = _history_where(tenant, fixed["entity_id"], query)
            source: Sql = ("attribute_history", [])
        else:  # the entity list drives the history index (CROSS JOIN)
            where, params, when = _history_where(tenant, None, query, entity_sql="ids.value")
            source = (
                "json_each(?) AS ids CROSS JOIN attribute_history",
                [orjson.dumps(list(entity_ids)).decode()],
            )
        # One statement over all the entities, only the aggregates asked for.
        sql, values = aggregate_sql(SQLITE, source, (where, params), when, methods, period, origin, fixed)
        rows = self.db.execute(sql, values).fetchall()
        out = aggregate_series(rows, methods, period, origin, query.end, fixed)
        if out:
            kinds = self._history_kinds(tenant, query, {(s.entity_id, s.attribute) for s in out})
            for series in out:
                series.kind = kinds.get((series.entity_id, series.attribute))
        return out

    def _history_kinds(
        self, tenant: str, query: HistoryQuery, pairs: set[tuple[str, str]]
    ) -> dict[tuple[str, str], str]:
        """The kind (type) of the newest instance ``query`` selects of each (entity, attribute),
        in one statement: a walk of the history index that stops at the first row, per pair."""
        entity, attribute = "json_extract(p.value, '$[0]')", "json_extract(p.value, '$[1]')"
        where, params, _ = _history_where(tenant, None, query, entity_sql=entity, attribute_sql=attribute)
        bounded = query.start is not None or query.end is not None
        newest, copies = _ends_select(where, _TIME_COLUMN[query.timeproperty], True, bounded=bounded)
        sql = (
            f"SELECT {entity}, {attribute}, (SELECT doc FROM ({newest}) ORDER BY t DESC, pk DESC LIMIT 1)"
            " FROM json_each(?) AS p"
        )
        kinds: dict[tuple[str, str], str] = {}
        pairs_json = orjson.dumps(sorted(pairs)).decode()
        for entity_id, attribute, doc in self.db.execute(sql, [*[*params, 1] * copies, pairs_json]):
            if doc is not None:
                kinds[(entity_id, attribute)] = orjson.loads(doc)["type"]
        return kinds


class HistoryWrites(SqliteTransaction, TouchesOnce):
    """The history half of :class:`~kizuna.store.sqlite.SqliteWrite`."""

    __slots__ = ()

    async def temporal_entity(self, entity_id: str) -> Entity | None:
        return _temporal_entity(self.db, self.tenant, entity_id)

    async def touch_temporal_entity(
        self, entity_id: str, types: list[str], scope: list[str] | None, now: str
    ) -> bool:
        self.touched.clear()  # the temporal entity may change: touch it again next time
        current = _temporal_entity(self.db, self.tenant, entity_id)
        if current is None:
            self.db.execute(
                "INSERT INTO temporal_entities (tenant, id, types, scope, created_at, modified_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    self.tenant,
                    entity_id,
                    orjson.dumps(list(types)).decode(),
                    None if scope is None else orjson.dumps(scope).decode(),
                    now,
                    now,
                ),
            )
            return True
        extended = extended_temporal_entity(current, types, scope)
        if extended is not None:
            merged, new_scope = extended
            self.db.execute(
                "UPDATE temporal_entities SET types = ?, scope = ?, modified_at = ?"
                " WHERE tenant = ? AND id = ?",
                (
                    orjson.dumps(merged).decode(),
                    None if new_scope is None else orjson.dumps(new_scope).decode(),
                    now,
                    self.tenant,
                    entity_id,
                ),
            )
        return False

    async def append_histories(
        self,
        entity_id: str,
        types: list[str],
        instances: Sequence[tuple[str, dict[str, Any]]],
        *,
        scope: list[str] | None = None,
    ) -> list[str]:
        if not instances:
            return []
        made = [new_history_instance(instance) for _, instance in instances]
        await self.touch_once(entity_id, types, scope, made[0][1])
        self.db.executemany(
            "INSERT INTO attribute_history (tenant, entity_id, attribute, instance_id, dataset_id,"
            " observed_at, created_at, modified_at, deleted_at, value_number, value_key, doc)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (self.tenant, entity_id, attribute, instance_id, *_history_columns(instance))
                for (attribute, instance), (instance_id, _) in zip(instances, made, strict=True)
            ],
        )
        return [instance_id for instance_id, _ in made]

    async def delete_history(
        self,
        entity_id: str,
        attribute: str | None = None,
        dataset_id: str | None = None,
        *,
        all_datasets: bool = True,
    ) -> int:
        self.touched.clear()
        if attribute is None:
            cursor = self.db.execute(
                "DELETE FROM attribute_history WHERE tenant = ? AND entity_id = ?", (self.tenant, entity_id)
            )
            self.db.execute(
                "DELETE FROM temporal_entities WHERE tenant = ? AND id = ?", (self.tenant, entity_id)
            )
            return cursor.rowcount
        sql = "DELETE FROM attribute_history WHERE tenant = ? AND entity_id = ? AND attribute = ?"
        params: list[Any] = [self.tenant, entity_id, attribute]
        if not all_datasets:
            sql += " AND dataset_id IS ?"
            params.append(dataset_id)
        return self.db.execute(sql, params).rowcount

    async def update_history_instance(
        self, entity_id: str, attribute: str, instance_id: str, instance: dict[str, Any]
    ) -> bool:
        cursor = self.db.execute(
            "UPDATE attribute_history SET dataset_id = ?, observed_at = ?, created_at = ?, modified_at = ?,"
            " deleted_at = ?, value_number = ?, value_key = ?, doc = ?"
            " WHERE tenant = ? AND entity_id = ? AND attribute = ? AND instance_id = ?",
            (*_history_columns(instance), self.tenant, entity_id, attribute, instance_id),
        )
        return cursor.rowcount == 1

    async def delete_history_instance(self, entity_id: str, attribute: str, instance_id: str) -> bool:
        cursor = self.db.execute(
            "DELETE FROM attribute_history WHERE tenant = ? AND entity_id = ? AND attribute = ?"
            " AND instance_id = ?",
            (self.tenant, entity_id, attribute, instance_id),
        )
        return cursor.rowcount == 1


def _temporal_row(row: tuple[Any, ...]) -> Entity:
    entity_id, types, scope, created_at, modified_at = row
    return temporal_row(entity_id, orjson.loads(types), scope, created_at, modified_at)


def _temporal_entity(db: sqlite3.Connection, tenant: str, entity_id: str) -> Entity | None:
    row = db.execute(
        f"SELECT {TEMPORAL_COLUMNS} FROM temporal_entities WHERE tenant = ? AND id = ?", (tenant, entity_id)
    ).fetchone()
    return _temporal_row(row) if row else None


def _history_where(
    tenant: str,
    entity_id: str | None,
    query: HistoryQuery,
    *,
    entity_sql: str | None = None,
    attribute_sql: str | None = None,
) -> tuple[str, list[Any], str]:
    """The WHERE clause of a history read, its parameters and the time expression it orders by
    (see :func:`kizuna.store.dialect.history_where`).

    ``entity_sql`` is an SQL expression in place of ``entity_id`` (``entity_id`` then None), e.g.
    the value of a ``json_each`` of several; ``attribute_sql`` one for the attribute, in place of
    ``query.attributes`` (its parameters, if any, are the caller's: they go after the first two)."""
    if entity_sql is None:
        head: Sql = ("tenant = ? AND entity_id = ?", [tenant, entity_id])
    else:
        head = (f"tenant = ? AND entity_id = {entity_sql}", [tenant])
    return history_where(SQLITE, query, head, attribute_sql=attribute_sql)


def _ends_select(where: str, column: str, newest: bool, *, bounded: bool = False) -> tuple[str, int]:
    """SQL of the last (``newest``) or first ``LIMIT ?`` history rows matching ``where`` in time
    order: (attribute, instance_id, doc, t, pk), unordered; and how many times its parameters
    (``where``'s, then the limit) are to be given.

    The time is ``COALESCE(column, created_at)``. When the column is set that is an ordered walk
    of the (tenant, entity, attribute, column) index, served in order (the rowid, pk, ends each
    index entry); observed_at may be null, and the rows without it are a second walk, by
    created_at: the caller merges the two and keeps the first ``limit``. A ``bounded`` query (a
    start or end on the column) has none: the walk is not made (it would scan the range)."""
    direction = "DESC" if newest else "ASC"
    select = "SELECT attribute, instance_id, doc, {t} AS t, pk FROM attribute_history{by} WHERE {where}"
    if column != "observed_at" or bounded:  # created_at, modified_at NOT NULL; deletedAt: deleted_at set
        sql = (
            select.format(t=column, by="", where=where)
            + f" ORDER BY {column} {direction}, pk {direction} LIMIT ?"
        )
        return sql, 1
    timed = select.format(t=column, by="", where=f"{where} AND {column} IS NOT NULL")
    # Left to itself the planner walks the created_at index in order, reading every row to find
    # the (usually no) rows without observed_at; these are an equality on the observed_at index.
    by = " INDEXED BY attribute_history_observed"
    untimed = select.format(t="created_at", by=by, where=f"{where} AND {column} IS NULL")
    return (
        f"SELECT * FROM ({timed} ORDER BY {column} {direction}, pk {direction} LIMIT ?) UNION ALL"
        f" SELECT * FROM ({untimed} ORDER BY created_at {direction}, pk {direction} LIMIT ?)",
        2,
    )


def _history_attribute_list(db: sqlite3.Connection, tenant: str, entity_id: str) -> list[str]:
    """The attributes an entity has history of, in order: one index seek each (a skip scan)."""
    rows = db.execute(
        """
        WITH RECURSIVE a(name) AS (
            SELECT min(attribute) FROM attribute_history WHERE tenant = ?1 AND entity_id = ?2
            UNION ALL
            SELECT (SELECT min(attribute) FROM attribute_history
                    WHERE tenant = ?1 AND entity_id = ?2 AND attribute > a.name)
            FROM a WHERE a.name IS NOT NULL
        )
        SELECT name FROM a WHERE name IS NOT NULL
        """,
        (tenant, entity_id),
    )
    return [name for (name,) in rows]


def _query_temporal_entities(
    db: sqlite3.Connection,
    tenant: str,
    types: Sequence[str] | None,
    ids: Sequence[str] | None,
    id_pattern: str | None,
) -> list[Entity]:
    """:meth:`SqliteStore.query_temporal_entities` on ``db`` (a reader's, in a thread)."""
    where = ["tenant = ?"]
    params: list[Any] = [tenant]
    if types is not None:
        where.append(f"EXISTS (SELECT 1 FROM json_each(types) WHERE value IN ({marks(types)}))")
        params += list(types)
    if ids is not None:
        where.append(f"id IN ({','.join('?' * len(ids))})")
        params += list(ids)
    if id_pattern is not None:
        where.append("regexp(?, id)")
        params.append(id_pattern)
    rows = db.execute(
        f"SELECT {TEMPORAL_COLUMNS} FROM temporal_entities WHERE {' AND '.join(where)} ORDER BY rowid",
        params,
    )
    return [_temporal_row(row) for row in rows]


def _read_histories(
    db: sqlite3.Connection, tenant: str, entity_ids: Sequence[str], query: HistoryQuery
) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """:meth:`SqliteStore.read_histories` on ``db``. In-process reads cost microseconds: one
    entity at a time walks the indexes best; lastN (or the first N) is one statement for all."""
    limit = query.last_n if query.last_n is not None else query.first_n
    if limit is not None:
        return _history_ends(db, tenant, entity_ids, query, limit)
    out: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for entity_id in entity_ids:
        if rows := _read_history(db, tenant, entity_id, query):
            out[entity_id] = rows
    return out


def _read_history(
    db: sqlite3.Connection, tenant: str, entity_id: str, query: HistoryQuery
) -> list[tuple[str, dict[str, Any]]]:
    limit = query.last_n if query.last_n is not None else query.first_n
    if limit is not None:
        return _history_ends(db, tenant, [entity_id], query, limit).get(entity_id, [])
    where, params, when = _history_where(tenant, entity_id, query)
    out: list[tuple[str, dict[str, Any]]] = []
    for attribute, instance_id, doc in db.execute(
        f"SELECT attribute, instance_id, doc FROM attribute_history WHERE {where}"
        f" ORDER BY attribute, {when}, pk",
        params,
    ):
        instance = orjson.loads(doc)
        instance["instanceId"] = instance_id
        out.append((attribute, instance))
    return out


def _history_ends(
    db: sqlite3.Connection, tenant: str, entity_ids: Sequence[str], query: HistoryQuery, limit: int
) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """lastN (or the first N) instances of each attribute of each entity, oldest first, by
    entity (those with none left out), in one statement: per (entity, attribute), a walk of the
    (entity, attribute, time) index that stops after ``limit`` rows, instead of ranking the
    whole series (see :func:`_ends_select`); a statement per entity cost more than its walks.
    The attributes of an entity, unless ``query`` names them, come from a skip scan each."""
    named = sorted(set(query.attributes)) if query.attributes is not None else None
    pairs = [
        (entity_id, attribute)
        for entity_id in dict.fromkeys(entity_ids)
        for attribute in (named if named is not None else _history_attribute_list(db, tenant, entity_id))
    ]
    if not pairs:
        return {}
    entity, attribute = "json_extract(p.value, '$[0]')", "json_extract(p.value, '$[1]')"
    where, params, when = _history_where(tenant, None, query, entity_sql=entity, attribute_sql=attribute)
    newest = query.last_n is not None
    bounded = query.start is not None or query.end is not None
    ends, copies = _ends_select(where, _TIME_COLUMN[query.timeproperty], newest, bounded=bounded)
    rows = db.execute(
        f"SELECT p.key, h.instance_id, h.doc, {when} AS t, h.pk FROM json_each(?) AS p"
        f" JOIN attribute_history h ON h.pk IN (SELECT pk FROM ({ends})) ORDER BY p.key, t, h.pk",
        [orjson.dumps(pairs).decode(), *[*params, limit] * copies],
    ).fetchall()
    out: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for key, members in groupby(rows, key=itemgetter(0)):
        found = list(members)
        if copies > 1:  # two index walks (time column set / null): keep the ``limit`` nearest the end
            found = found[-limit:] if newest else found[:limit]
        entity_id, name = pairs[key]
        target = out.setdefault(entity_id, [])
        for _, instance_id, doc, _, _ in found:
            instance = orjson.loads(doc)
            instance["instanceId"] = instance_id
            target.append((name, instance))
    return out
