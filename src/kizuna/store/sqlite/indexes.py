"""The query indexes kept beside the documents (attribute values, geometry boxes and shapes), written
in the transaction of each entity write, and built once for entities written before they existed."""

from __future__ import annotations

import sqlite3

import orjson

from kizuna.store import Entity
from kizuna.store.common import attribute_rows, geometry_boxes, shapes
from kizuna.store.sqlite.connection import _PAGE

_INDEX_VERSION = "entity-indexes-1"
_SHAPES_VERSION = "geo-shapes-1"  # geo_entries.shapes filled for the rows written before it


def _index_entity(db: sqlite3.Connection, tenant: str, pk: int | None, entity: Entity) -> None:
    """Write the attr_values rows and geometry boxes of one entity (see the module docstring)."""
    rows = [(tenant, key, kind, val, pk, inst) for key, kind, val, inst in attribute_rows(entity)]
    for key, min_x, min_y, max_x, max_y, found in geometry_boxes(entity):
        cursor = db.execute(
            "INSERT INTO geo_entries (tenant, pk, geoproperty, shapes) VALUES (?, ?, ?, ?)",
            (tenant, pk, key, orjson.dumps(found)),
        )
        db.execute(
            "INSERT INTO geo_rtree (id, min_x, max_x, min_y, max_y) VALUES (?, ?, ?, ?, ?)",
            (cursor.lastrowid, min_x, max_x, min_y, max_y),
        )
    db.executemany(
        "INSERT OR IGNORE INTO attr_values (tenant, attribute, kind, val, pk, inst)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )


def _unindex_entity(db: sqlite3.Connection, pk: int) -> None:
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
                _index_entity(db, tenant, pk, orjson.loads(doc))
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
