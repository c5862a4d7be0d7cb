"""The query indexes kept beside the documents (attribute values, geometry boxes and shapes), written
in the transaction of each entity write, and built once for entities written before they existed."""

from __future__ import annotations

import sqlite3

import orjson

from kizuna import query as ql
from kizuna.store import Entity
from kizuna.store.common import attribute_rows, geometry_boxes, shapes
from kizuna.store.sqlite.connection import _PAGE

_INDEX_VERSION = "entity-indexes-1"
_SHAPES_VERSION = "geo-shapes-1"  # geo_entries.shapes filled for the rows written before it


# geo_kind_rtree: the boxes again, in a third dimension per (tenant, geoproperty, type), the
# code of its geo_kinds row, so that a geoQuery of one type searches that type's boxes alone and
# reads the entity's pk from the R*Tree id, (pk << KIND_BITS) | code, in pk order. The third
# dimension runs from code to code + SIMPLE_SPREAD when the shapes are simple points
# (:func:`kizuna.query.simple_points`: the box alone can decide, without reading the shapes), to
# code + OTHER_SPREAD otherwise; never of no extent, which makes every volume 0 and leaves the
# R*Tree's choice of subtree blind (it then searched 20x longer). A kind whose code does not fit
# (over a million kinds) has no boxes there; its queries take geo_rtree.
KIND_BITS = 20
KIND_LIMIT = 1 << KIND_BITS
SIMPLE_SPREAD, OTHER_SPREAD = 0.5, 0.75  # exact in the R*Tree's 32-bit floats below KIND_LIMIT


def _index_entity(
    db: sqlite3.Connection, tenant: str, pk: int | None, entity: Entity, *, kinds: bool = True
) -> None:
    """Write the attr_values rows and geometry boxes of one entity (see the module docstring);
    ``kinds`` False leaves geo_kind_rtree out, for migration 1, which runs before it exists."""
    rows = [(tenant, key, kind, val, pk, inst) for key, kind, val, inst in attribute_rows(entity)]
    for key, min_x, min_y, max_x, max_y, found in geometry_boxes(entity):
        cursor = db.execute(
            "INSERT INTO geo_entries (tenant, pk, geoproperty, shapes) VALUES (?, ?, ?, ?)",
            (tenant, pk, key, orjson.dumps(found)),
        )
        box = (min_x, max_x, min_y, max_y)
        db.execute(
            "INSERT INTO geo_rtree (id, min_x, max_x, min_y, max_y) VALUES (?, ?, ?, ?, ?)",
            (cursor.lastrowid, *box),
        )
        if kinds and pk is not None:
            _index_kinds(db, tenant, pk, key, box, found, entity.get("type", []))
    db.executemany(
        "INSERT OR IGNORE INTO attr_values (tenant, attribute, kind, val, pk, inst)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )


def _index_kinds(
    db: sqlite3.Connection,
    tenant: str,
    pk: int,
    geoproperty: str,
    box: tuple[float, float, float, float],
    found: list[dict[str, object]],
    types: list[str],
) -> None:
    """The geo_kind_rtree rows of one box (see ``KIND_BITS``), one per type of the entity (once
    each, as entity_types holds them, should a list name one twice)."""
    spread = SIMPLE_SPREAD if ql.simple_points(found) else OTHER_SPREAD
    for entity_type in dict.fromkeys(types):
        code = _kind_code(db, tenant, geoproperty, entity_type)
        if code < KIND_LIMIT:
            db.execute(
                "INSERT INTO geo_kind_rtree (id, min_x, max_x, min_y, max_y, min_k, max_k)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                ((pk << KIND_BITS) | code, *box, code, code + spread),
            )


def _kind_code(db: sqlite3.Connection, tenant: str, geoproperty: str, entity_type: str) -> int:
    key = (tenant, geoproperty, entity_type)
    sql = "SELECT code FROM geo_kinds WHERE tenant = ? AND geoproperty = ? AND type = ?"
    found = db.execute(sql, key).fetchone()
    if found is None:
        return (
            db.execute("INSERT INTO geo_kinds (tenant, geoproperty, type) VALUES (?, ?, ?)", key).lastrowid
            or 0
        )
    return found[0]


def _unindex_entity(db: sqlite3.Connection, pk: int) -> None:
    """Drop the query index rows of one entity; before its entity_types rows, which tell its
    geo_kind_rtree ids."""
    db.execute(
        "DELETE FROM geo_kind_rtree WHERE id IN (SELECT (g.pk << ?) | k.code FROM geo_entries g"
        " JOIN entity_types t ON t.pk = g.pk JOIN geo_kinds k"
        " ON k.tenant = g.tenant AND k.geoproperty = g.geoproperty AND k.type = t.type WHERE g.pk = ?)",
        (KIND_BITS, pk),
    )
    db.execute("DELETE FROM attr_values WHERE pk = ?", (pk,))
    db.execute("DELETE FROM geo_rtree WHERE id IN (SELECT id FROM geo_entries WHERE pk = ?)", (pk,))
    db.execute("DELETE FROM geo_entries WHERE pk = ?", (pk,))


def _backfill_indexes(db: sqlite3.Connection) -> None:
    """Build the query indexes of entities written before they existed, once per store file.

    A marker row says it was done: an index table may rightly stay empty while entities exist
    (no attribute, no geometry), and the entities must not be re-read at every open. Part of
    migration 1 (:mod:`.schema`), in its transaction."""
    if "owner" not in {row[1] for row in db.execute("PRAGMA table_info(entities)")}:
        db.execute("ALTER TABLE entities ADD COLUMN owner TEXT")  # entities before access control
    hosted_columns = {row[1] for row in db.execute("PRAGMA table_info(hosted_contexts)")}
    if "owner" not in hosted_columns:
        db.execute("ALTER TABLE hosted_contexts ADD COLUMN owner TEXT")  # admins' only, as before
    if "tenant" not in hosted_columns:  # contexts hosted before tenants held them: the default's
        db.execute("ALTER TABLE hosted_contexts ADD COLUMN tenant TEXT NOT NULL DEFAULT ''")
    if "owner" not in {row[1] for row in db.execute("PRAGMA table_info(entity_types)")}:
        db.execute("ALTER TABLE entity_types ADD COLUMN owner TEXT")
        db.execute(
            "UPDATE entity_types SET owner = (SELECT owner FROM entities x WHERE x.pk = entity_types.pk)"
        )
    if "shapes" not in {row[1] for row in db.execute("PRAGMA table_info(geo_entries)")}:
        db.execute("ALTER TABLE geo_entries ADD COLUMN shapes BLOB")  # filled below
    if db.execute("SELECT 1 FROM store_indexes WHERE name = ?", (_INDEX_VERSION,)).fetchone() is None:
        db.execute("DELETE FROM attr_values")
        db.execute("DELETE FROM geo_rtree")
        db.execute("DELETE FROM geo_entries")
        last = 0
        while True:
            rows = db.execute(
                "SELECT pk, tenant, doc FROM entities WHERE pk > ? ORDER BY pk LIMIT ?", (last, _PAGE)
            ).fetchall()
            for pk, tenant, doc in rows:
                _index_entity(db, tenant, pk, orjson.loads(doc), kinds=False)
                last = pk
            if len(rows) < _PAGE:
                break
        db.execute("INSERT INTO store_indexes (name) VALUES (?)", (_INDEX_VERSION,))
    if db.execute("SELECT 1 FROM store_indexes WHERE name = ?", (_SHAPES_VERSION,)).fetchone() is None:
        # Only the geo rows, each from its entity's document: far less than a rebuild.
        last = 0
        while True:
            rows = db.execute(
                "SELECT g.id, g.geoproperty, e.doc FROM geo_entries g JOIN entities e ON e.pk = g.pk"
                " WHERE g.id > ? AND g.shapes IS NULL ORDER BY g.id LIMIT ?",
                (last, _PAGE),
            ).fetchall()
            for geo_id, key, doc in rows:
                found = orjson.dumps(shapes(orjson.loads(doc).get(key)))
                db.execute("UPDATE geo_entries SET shapes = ? WHERE id = ?", (found, geo_id))
                last = geo_id
            if len(rows) < _PAGE:
                break
        db.execute("INSERT INTO store_indexes (name) VALUES (?)", (_SHAPES_VERSION,))


def _fill_kinds(db: sqlite3.Connection) -> None:
    """geo_kind_rtree from the geo rows already written (migration 5, in its transaction)."""
    db.execute("DELETE FROM geo_kind_rtree")
    last = 0
    while True:
        rows = db.execute(
            "SELECT g.id, g.tenant, g.pk, g.geoproperty, g.shapes, r.min_x, r.max_x, r.min_y, r.max_y,"
            " (SELECT json_group_array(t.type) FROM entity_types t WHERE t.pk = g.pk)"
            " FROM geo_entries g JOIN geo_rtree r ON r.id = g.id WHERE g.id > ? ORDER BY g.id LIMIT ?",
            (last, _PAGE),
        ).fetchall()
        for geo_id, tenant, pk, key, found, *box, types in rows:
            # A row without shapes (written by a release before them) is not a simple point.
            shapes_of = orjson.loads(found) if found is not None else []
            _index_kinds(
                db, tenant, pk, key, (box[0], box[1], box[2], box[3]), shapes_of, orjson.loads(types)
            )
            last = geo_id
        if len(rows) < _PAGE:
            break
