"""Temporal history: one row per attribute instance in each tenant schema; reads of several
entities in one statement (lastN as a lateral index walk) and aggregation in SQL."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson

from kizuna.patterns import compile_pattern
from kizuna.store import AggregateSeries, Entity, HistoryQuery
from kizuna.store.common import (
    TEMPORAL_COLUMNS,
    Sql,
    TouchesOnce,
    extended_temporal_entity,
    history_columns,
    literal_prefix,
    new_history_instance,
    temporal_row,
)
from kizuna.store.dialect import POSTGRES, aggregate_series, aggregate_sql, fixed_keys, history_where
from kizuna.store.postgres.connection import (
    PgBase,
    PgTransaction,
    _guarded,
    _numbered,
    _pack_bytes,
    _quote,
    _unpack,
)


class PgHistory(PgBase):
    """The temporal reads of :class:`~kizuna.store.postgres.PostgresStore`."""

    # -- temporal history ------------------------------------------------------------------------

    @_guarded
    async def get_temporal_entity(self, tenant: str, entity_id: str) -> Entity | None:
        schema = await self._schema(tenant)
        if schema is None:
            return None
        return await _temporal_entity(self.pool, schema, entity_id)

    @_guarded
    async def query_temporal_entities(
        self,
        tenant: str,
        types: Sequence[str] | None,
        ids: Sequence[str] | None,
        id_pattern: str | None,
    ) -> list[Entity]:
        schema = await self._schema(tenant)
        if schema is None:
            return []
        where = ["TRUE"]
        params: list[Any] = []
        if types is not None:
            where.append("types && ?::text[]")
            params.append(list(types))
        if ids is not None:
            where.append("id = ANY(?::text[])")
            params.append(list(ids))
        prefix = "" if id_pattern is None else literal_prefix(id_pattern)
        if prefix:
            where.append("id >= ? AND id < ?")
            params += [prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)]
        rows = await self.pool.fetch(
            _numbered(
                f"SELECT {TEMPORAL_COLUMNS} FROM {schema}.temporal_entities"
                f" WHERE {' AND '.join(where)} ORDER BY seq"
            ),
            *params,
        )
        matcher = None if id_pattern is None else compile_pattern(id_pattern)
        return [_temporal_row(row) for row in rows if matcher is None or matcher.search(row[0]) is not None]

    @_guarded
    async def history_attributes(self, tenant: str, entity_id: str) -> list[str]:
        schema = await self._schema(tenant)
        if schema is None:
            return []
        sql, params = _attribute_pairs(schema, [entity_id], None)
        rows = await self.pool.fetch(_numbered(f"SELECT p.a FROM {sql}"), *params)
        return [attribute for (attribute,) in rows]

    async def read_history(
        self, tenant: str, entity_id: str, query: HistoryQuery
    ) -> list[tuple[str, dict[str, Any]]]:
        return (await self.read_histories(tenant, [entity_id], query)).get(entity_id, [])

    @_guarded
    async def read_histories(
        self, tenant: str, entity_ids: Sequence[str], query: HistoryQuery
    ) -> dict[str, list[tuple[str, dict[str, Any]]]]:
        schema = await self._schema(tenant)
        if schema is None or not entity_ids:
            return {}
        limit = query.last_n if query.last_n is not None else query.first_n
        if limit is None:
            where, params, when = _history_where(None, query, entity_ids=entity_ids)
            sql = (
                f"SELECT entity_id, attribute, instance_id, doc, raw FROM {schema}.attribute_history"
                f" WHERE {where} ORDER BY entity_id, attribute, {when}, pk"
            )
        else:
            # Per (entity, attribute), the first ``limit`` rows of an index walk
            # (attribute_history_when), instead of reading each whole series.
            pairs, pair_params = _attribute_pairs(schema, entity_ids, query.attributes)
            where, params, when = _history_where(None, query, entity_sql="p.e", attribute_sql="p.a")
            direction = "DESC" if query.last_n is not None else "ASC"
            sql = (
                f"SELECT p.e, p.a, h.instance_id, h.doc, h.raw FROM {pairs}"
                " CROSS JOIN LATERAL (SELECT instance_id, doc, raw, pk, "
                f"{when} AS t FROM {schema}.attribute_history WHERE {where}"
                f" ORDER BY {when} {direction}, pk {direction} LIMIT ?) h ORDER BY p.e, p.a, h.t, h.pk"
            )
            params = [*pair_params, *params, limit]
        out: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for entity_id, attribute, instance_id, doc, raw in await self.pool.fetch(_numbered(sql), *params):
            instance = _unpack(doc, raw)
            instance["instanceId"] = instance_id
            out.setdefault(entity_id, []).append((attribute, instance))
        return out

    @_guarded
    async def prune_history(self, before: float) -> int:
        pruned = 0
        async with self._transaction() as (conn, _):
            for (name,) in await conn.fetch("SELECT schema_name FROM kizuna.tenants"):
                schema = _quote(name)
                status = await conn.execute(
                    f"DELETE FROM {schema}.attribute_history WHERE COALESCE(observed_at, created_at) < $1",
                    before,
                )
                pruned += int(status.split()[-1])
                await conn.execute(
                    f"DELETE FROM {schema}.temporal_entities t WHERE NOT EXISTS (SELECT 1 FROM"
                    f" {schema}.attribute_history h WHERE h.entity_id = t.id) AND t.modified_at <"
                    " to_char(to_timestamp($1) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
                    before,
                )
        return pruned

    @_guarded
    async def aggregate_histories(
        self,
        tenant: str,
        entity_ids: Sequence[str],
        query: HistoryQuery,
        methods: Sequence[str],
        period: float | None,
        origin: float | None,
    ) -> list[AggregateSeries]:
        schema = await self._schema(tenant)
        if schema is None or not entity_ids:
            return []
        fixed = fixed_keys(entity_ids, query)
        if "entity_id" in fixed:
            where, params, when = _history_where(fixed["entity_id"], query)
        else:
            where, params, when = _history_where(None, query, entity_ids=entity_ids)
        # One statement over all the entities.
        sql, values = aggregate_sql(
            POSTGRES,
            (f"{schema}.attribute_history", []),
            (where, params),
            when,
            methods,
            period,
            origin,
            fixed,
        )
        # Both statements on one connection: each acquire costs a round trip (the pool's reset).
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(_numbered(sql), *values)
            out = aggregate_series(rows, methods, period, origin, query.end, fixed)
            if out:
                pairs = {(s.entity_id, s.attribute) for s in out}
                kinds = await _history_kinds(conn, schema, query, pairs)
                for series in out:
                    series.kind = kinds.get((series.entity_id, series.attribute))
        return out


class HistoryWrites(PgTransaction, TouchesOnce):
    """The history half of :class:`~kizuna.store.postgres.PgWrite`."""

    __slots__ = ()

    async def temporal_entity(self, entity_id: str) -> Entity | None:
        return await _temporal_entity(self.conn, self.schema, entity_id)

    async def touch_temporal_entity(
        self, entity_id: str, types: list[str], scope: list[str] | None, now: str
    ) -> bool:
        self.touched.clear()  # the temporal entity may change: touch it again next time
        row = await self.conn.fetchrow(
            f"SELECT {TEMPORAL_COLUMNS} FROM {self.schema}.temporal_entities WHERE id = $1 FOR UPDATE",
            entity_id,
        )
        if row is None:
            created = await self.conn.fetchval(
                f"INSERT INTO {self.schema}.temporal_entities (id, types, scope, created_at, modified_at)"
                " VALUES ($1, $2, $3, $4, $4) ON CONFLICT (id) DO NOTHING RETURNING true",
                entity_id,
                list(types),
                None if scope is None else orjson.dumps(scope).decode(),
                now,
            )
            if created:
                return True
            row = await self.conn.fetchrow(
                f"SELECT {TEMPORAL_COLUMNS} FROM {self.schema}.temporal_entities WHERE id = $1 FOR UPDATE",
                entity_id,
            )
        extended = extended_temporal_entity(_temporal_row(row), types, scope)
        if extended is not None:
            merged, new_scope = extended
            await self.conn.execute(
                f"UPDATE {self.schema}.temporal_entities SET types = $1, scope = $2, modified_at = $3"
                " WHERE id = $4",
                merged,
                None if new_scope is None else orjson.dumps(new_scope).decode(),
                now,
                entity_id,
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
        rows = []
        for (attribute, instance), (instance_id, _) in zip(instances, made, strict=True):
            *columns, doc = history_columns(instance)
            rows.append((entity_id, attribute, instance_id, *columns, *_pack_bytes(doc)))
        await self.conn.executemany(
            f"INSERT INTO {self.schema}.attribute_history (entity_id, attribute, instance_id, dataset_id,"
            " observed_at, created_at, modified_at, deleted_at, value_number, value_key, doc, raw)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::text::jsonb, $12)",
            rows,
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
            status = await self.conn.execute(
                f"DELETE FROM {self.schema}.attribute_history WHERE entity_id = $1", entity_id
            )
            await self.conn.execute(f"DELETE FROM {self.schema}.temporal_entities WHERE id = $1", entity_id)
            return int(status.split()[-1])
        sql = f"DELETE FROM {self.schema}.attribute_history WHERE entity_id = $1 AND attribute = $2"
        params: list[Any] = [entity_id, attribute]
        if not all_datasets:
            sql += " AND dataset_id IS NOT DISTINCT FROM $3::text"
            params.append(dataset_id)
        status = await self.conn.execute(sql, *params)
        return int(status.split()[-1])

    async def update_history_instance(
        self, entity_id: str, attribute: str, instance_id: str, instance: dict[str, Any]
    ) -> bool:
        *columns, doc = history_columns(instance)
        status = await self.conn.execute(
            f"UPDATE {self.schema}.attribute_history SET dataset_id = $1, observed_at = $2, created_at = $3,"
            " modified_at = $4, deleted_at = $5, value_number = $6, value_key = $7, doc = $8::text::jsonb,"
            " raw = $9 WHERE entity_id = $10 AND attribute = $11 AND instance_id = $12",
            *columns,
            *_pack_bytes(doc),
            entity_id,
            attribute,
            instance_id,
        )
        return status == "UPDATE 1"

    async def delete_history_instance(self, entity_id: str, attribute: str, instance_id: str) -> bool:
        status = await self.conn.execute(
            f"DELETE FROM {self.schema}.attribute_history WHERE entity_id = $1 AND attribute = $2"
            " AND instance_id = $3",
            entity_id,
            attribute,
            instance_id,
        )
        return status == "DELETE 1"


# -- temporal helpers ------------------------------------------------------------------------------


def _temporal_row(row: Sequence[Any]) -> Entity:
    entity_id, types, scope, created_at, modified_at = row
    return temporal_row(entity_id, list(types), scope, created_at, modified_at)


async def _temporal_entity(
    conn: asyncpg.Connection | asyncpg.Pool, schema: str, entity_id: str
) -> Entity | None:
    row = await conn.fetchrow(
        f"SELECT {TEMPORAL_COLUMNS} FROM {schema}.temporal_entities WHERE id = $1", entity_id
    )
    return _temporal_row(row) if row else None


def _attribute_pairs(schema: str, entity_ids: Sequence[str], attributes: Sequence[str] | None) -> Sql:
    """A FROM item ``p(e, a)`` (``?`` placeholders) of each entity and each of its attributes
    that have history: ``attributes`` for every entity if given (a pair without history reads
    nothing), else a skip scan of attribute_history_observed, one index seek per attribute,
    instead of a DISTINCT that reads every instance of every entity."""
    if attributes is not None:
        return "(SELECT e, a FROM unnest(?::text[]) AS e CROSS JOIN unnest(?::text[]) AS a) AS p", [
            list(entity_ids),
            sorted(set(attributes)),
        ]
    table = f"{schema}.attribute_history"
    sql = (
        "(WITH RECURSIVE s(e, a) AS ("
        f" SELECT ids.e, (SELECT min(attribute) FROM {table} WHERE entity_id = ids.e)"
        " FROM unnest(?::text[]) AS ids(e)"
        f" UNION ALL SELECT s.e, (SELECT min(attribute) FROM {table} WHERE entity_id = s.e"
        " AND attribute > s.a) FROM s WHERE s.a IS NOT NULL"
        ") SELECT e, a FROM s WHERE a IS NOT NULL) AS p"
    )
    return sql, [list(entity_ids)]


async def _history_kinds(
    conn: asyncpg.Connection, schema: str, query: HistoryQuery, pairs: set[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """The kind (type) of the newest instance ``query`` selects of each (entity, attribute):
    per pair, an index walk that stops at the first row (attribute_history_when)."""
    where, params, when = _history_where(None, query, entity_sql="p.e", attribute_sql="p.a")
    ordered = sorted(pairs)
    sql = (
        "SELECT p.e, p.a, h.kind, h.raw FROM unnest(?::text[], ?::text[]) AS p(e, a) CROSS JOIN LATERAL"
        " (SELECT doc ->> 'type' AS kind, CASE WHEN doc IS NULL THEN raw END AS raw"
        f" FROM {schema}.attribute_history WHERE {where} ORDER BY {when} DESC, pk DESC LIMIT 1) h"
    )
    rows = await conn.fetch(_numbered(sql), [e for e, _ in ordered], [a for _, a in ordered], *params)
    return {(e, a): kind if kind is not None else orjson.loads(raw)["type"] for e, a, kind, raw in rows}


def _history_where(
    entity_id: str | None,
    query: HistoryQuery,
    *,
    entity_ids: Sequence[str] | None = None,
    entity_sql: str | None = None,
    attribute_sql: str | None = None,
) -> tuple[str, list[Any], str]:
    """The WHERE clause (``?`` placeholders) of a history read of one entity (or of each of
    ``entity_ids``, or of the entity and attribute SQL expressions given), its parameters and the
    time expression it orders by (see :func:`kizuna.store.dialect.history_where`). An attribute
    expression comes from a lateral join over every attribute: ``query.attributes`` still applies."""
    if entity_sql is not None:
        head: Sql = (f"entity_id = {entity_sql}", [])
    elif entity_ids is not None:
        head = ("entity_id = ANY(?::text[])", [list(entity_ids)])
    else:
        head = ("entity_id = ?", [entity_id])
    if attribute_sql is not None:
        head = (f"{head[0]} AND attribute = {attribute_sql}", head[1])
    return history_where(POSTGRES, query, head)
