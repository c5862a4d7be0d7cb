"""The layout of the SQLite file and its numbered, forward-only migrations.

``schema_migrations`` records each migration applied; :func:`migrate` applies the missing ones
at open, each in its own transaction (``BEGIN IMMEDIATE``, so processes opening one file together
take turns and the later ones find the work done), and refuses a file that a newer release has
migrated further than this code knows. A file without the table was written by a release before
it (c2d3ca2 and earlier): migration 1 is that release's schema, written to find its tables in
place, so such a file is opened as version 1 without change (and files older still get the
columns and indexes that release added at open).

To change the schema, append one migration to :data:`MIGRATIONS`; never edit one that shipped.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

from kizuna.store import SchemaTooNew
from kizuna.store.sqlite.indexes import _backfill_indexes, _fill_kinds

RELEASE_1 = """CREATE TABLE IF NOT EXISTS tenants (
    name TEXT PRIMARY KEY
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entities (
    pk INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    doc BLOB NOT NULL,
    UNIQUE (tenant, id)
);
CREATE TABLE IF NOT EXISTS entity_types (
    tenant TEXT NOT NULL,
    type TEXT NOT NULL,
    pk INTEGER NOT NULL,
    owner TEXT,
    PRIMARY KEY (tenant, type, pk)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entity_types_by_pk ON entity_types (pk);
CREATE TABLE IF NOT EXISTS attr_values (
    tenant TEXT NOT NULL,
    attribute TEXT NOT NULL,
    kind INTEGER NOT NULL,
    val NOT NULL,
    pk INTEGER NOT NULL,
    inst INTEGER NOT NULL,
    PRIMARY KEY (tenant, attribute, kind, val, pk, inst)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS attr_values_by_pk ON attr_values (pk, attribute, inst);
CREATE TABLE IF NOT EXISTS geo_entries (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    pk INTEGER NOT NULL,
    geoproperty TEXT NOT NULL,
    shapes BLOB
);
CREATE INDEX IF NOT EXISTS geo_entries_by_pk ON geo_entries (pk);
CREATE VIRTUAL TABLE IF NOT EXISTS geo_rtree USING rtree(id, min_x, max_x, min_y, max_y);
CREATE TABLE IF NOT EXISTS store_indexes (
    name TEXT PRIMARY KEY
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hosted_contexts (
    local_id TEXT PRIMARY KEY,
    document BLOB NOT NULL,
    created_at REAL NOT NULL,
    owner TEXT,
    tenant TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS subscriptions (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    doc BLOB NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE TABLE IF NOT EXISTS documents (
    kind TEXT NOT NULL,
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    doc BLOB NOT NULL,
    PRIMARY KEY (kind, tenant, id)
);
CREATE TABLE IF NOT EXISTS temporal_entities (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    types TEXT NOT NULL,
    scope TEXT,
    created_at TEXT NOT NULL,
    modified_at TEXT NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE TABLE IF NOT EXISTS attribute_history (
    pk INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    attribute TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    dataset_id TEXT,
    observed_at REAL,
    created_at REAL NOT NULL,
    modified_at REAL NOT NULL,
    deleted_at REAL,
    value_number REAL,
    value_key TEXT,
    doc BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS attribute_history_observed
    ON attribute_history (tenant, entity_id, attribute, observed_at);
CREATE INDEX IF NOT EXISTS attribute_history_created
    ON attribute_history (tenant, entity_id, attribute, created_at);
CREATE UNIQUE INDEX IF NOT EXISTS attribute_history_instance ON attribute_history (tenant, instance_id);
CREATE TABLE IF NOT EXISTS subscription_versions (
    tenant TEXT PRIMARY KEY,
    version INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS notification_outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    trigger TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS notification_outbox_by_subscription
    ON notification_outbox (tenant, subscription_id, seq);
CREATE TABLE IF NOT EXISTS notification_leases (
    tenant TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    until REAL NOT NULL,
    PRIMARY KEY (tenant, subscription_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    key TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_trail (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    subject TEXT NOT NULL,
    tenant TEXT NOT NULL,
    operation TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_trail_by_subject ON audit_trail (subject, at);
CREATE INDEX IF NOT EXISTS audit_trail_by_time ON audit_trail (at);
CREATE TABLE IF NOT EXISTS notification_status (
    tenant TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    doc BLOB NOT NULL,
    PRIMARY KEY (tenant, subscription_id)
) WITHOUT ROWID;
"""


# -- the entity change log (kizuna.store.ChangeLog): every entity write with its commit's sequence.
# Writers are serialised (BEGIN IMMEDIATE), so AUTOINCREMENT numbers changes in commit order,
# one sequence over all tenants. ``doc`` and ``owner`` are kept for deletes only (the entity as
# it was, for the access decision); the horizon is the newest seq pruned per tenant.
ENTITY_CHANGES = """
CREATE TABLE IF NOT EXISTS entity_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    op TEXT NOT NULL,
    at REAL NOT NULL,
    types BLOB NOT NULL,
    doc BLOB,
    owner TEXT
);
CREATE INDEX IF NOT EXISTS entity_changes_by_tenant ON entity_changes (tenant, seq);
CREATE INDEX IF NOT EXISTS entity_changes_by_time ON entity_changes (at);
CREATE INDEX IF NOT EXISTS entity_changes_deletes
    ON entity_changes (tenant, entity_id, seq) WHERE op = 'delete';
CREATE TABLE IF NOT EXISTS entity_change_horizon (
    tenant TEXT PRIMARY KEY,
    pruned INTEGER NOT NULL
) WITHOUT ROWID;
"""


# -- how many entities of each (tenant, type): count=true of a type listing reads one row instead
# of walking the type's entity_types keys (50,000 of them: ~2 ms). Triggers on entity_types keep
# it, in the writing transaction, on every path that writes the type index (create, replace with
# a type change, delete, batch operations); writers are serialised, so the row is never contended.
# ``INSERT OR IGNORE`` of a row already there fires no trigger, so an entity is counted once.
# Idempotent, as migration 1 is: a file that lost its schema_migrations is counted afresh.
ENTITY_TYPE_COUNTS = [
    """CREATE TABLE IF NOT EXISTS entity_type_counts (
        tenant TEXT NOT NULL,
        type TEXT NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (tenant, type)
    ) WITHOUT ROWID""",
    """CREATE TRIGGER IF NOT EXISTS entity_type_counted AFTER INSERT ON entity_types BEGIN
        INSERT INTO entity_type_counts (tenant, type, n) VALUES (new.tenant, new.type, 1)
            ON CONFLICT (tenant, type) DO UPDATE SET n = n + 1;
    END""",
    """CREATE TRIGGER IF NOT EXISTS entity_type_uncounted AFTER DELETE ON entity_types BEGIN
        UPDATE entity_type_counts SET n = n - 1 WHERE tenant = old.tenant AND type = old.type;
    END""",
    "DELETE FROM entity_type_counts",
    """INSERT INTO entity_type_counts (tenant, type, n)
        SELECT tenant, type, count(*) FROM entity_types GROUP BY tenant, type""",
]


def _entity_type_counts(db: sqlite3.Connection) -> None:
    """:data:`ENTITY_TYPE_COUNTS`, statement by statement (its triggers hold semicolons)."""
    for statement in ENTITY_TYPE_COUNTS:
        db.execute(statement)


# -- the notification outbox as one row per change (kizuna.store.common.change_rows) and a cursor
# per subscription (the newest change delivered to it), instead of one row per notification:
# rows queued by an older release are carried over, each as a change naming its one subscription
# (same seq, so the order holds), and are delivered after the upgrade.
NOTIFICATION_CHANGES = """
CREATE TABLE IF NOT EXISTS notification_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    targets TEXT NOT NULL,
    payloads BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS notification_changes_by_tenant ON notification_changes (tenant, seq);
CREATE TABLE IF NOT EXISTS notification_cursors (
    tenant TEXT NOT NULL,
    subscription_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (tenant, subscription_id)
) WITHOUT ROWID
"""
CARRY_OUTBOX = """
INSERT INTO notification_changes (seq, tenant, entity_id, targets, payloads, created_at)
    SELECT seq, tenant, entity_id, json_object(subscription_id, json_array(trigger, 0)),
        '[' || CAST(payload AS TEXT) || ']', created_at
    FROM notification_outbox ORDER BY seq;
DROP TABLE notification_outbox
"""


def _notification_changes(db: sqlite3.Connection) -> None:
    """:data:`NOTIFICATION_CHANGES`, then the old outbox's rows carried over if it is still there.

    Idempotent, as migrations 1 and 3 are: a file that lost its schema_migrations runs every
    migration again, and migration 1 then brings back an empty ``notification_outbox``."""
    for statement in NOTIFICATION_CHANGES.split(";"):
        db.execute(statement)
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'notification_outbox'").fetchone():
        for statement in CARRY_OUTBOX.split(";"):
            db.execute(statement)


# -- the geo boxes per (tenant, geoproperty, type): see kizuna.store.sqlite.indexes.KIND_BITS. A
# within query of one type over a district searched both types' boxes in geo_rtree and looked up
# each box's geo_entries row and type (2.7 ms for 822 boxes); here it reads its type's 411 boxes
# from the R*Tree alone (0.8 ms). Idempotent: the tables are kept, their rows made afresh.
GEO_KINDS = """
CREATE TABLE IF NOT EXISTS geo_kinds (
    code INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    geoproperty TEXT NOT NULL,
    type TEXT NOT NULL,
    UNIQUE (tenant, geoproperty, type)
);
CREATE VIRTUAL TABLE IF NOT EXISTS geo_kind_rtree USING rtree(id, min_x, max_x, min_y, max_y, min_k, max_k)
"""


def _geo_kinds(db: sqlite3.Connection) -> None:
    """:data:`GEO_KINDS`, then its rows from the geo index and the type index."""
    for statement in GEO_KINDS.split(";"):
        db.execute(statement)
    _fill_kinds(db)


def _release_1(db: sqlite3.Connection) -> None:
    """The schema of every release before numbered migrations: idempotent, like it was."""
    for statement in RELEASE_1.split(";"):
        if statement.strip():
            db.execute(statement)
    _backfill_indexes(db)


Migration = tuple[int, str, str | Callable[[sqlite3.Connection], None]]

# (version, what it adds, SQL or a function of the connection), in order.
MIGRATIONS: list[Migration] = [
    (1, "the schema of the releases before numbered migrations", _release_1),
    (2, "the entity change log the console's event streams follow", ENTITY_CHANGES),
    (3, "per-(tenant, type) entity counts kept by triggers on entity_types", _entity_type_counts),
    (4, "the notification outbox as one row per change and a cursor per subscription", _notification_changes),
    (5, "the geo boxes per (tenant, geoproperty, type), in an R*Tree of their own", _geo_kinds),
]


def latest() -> int:
    return MIGRATIONS[-1][0]


def applied(db: sqlite3.Connection) -> int:
    """The newest migration applied to the file (0: none, a new file)."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_migrations'").fetchone() is None:
        return 0
    return db.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0]


def mismatch(db: sqlite3.Connection) -> str | None:
    """Why the file's schema is not the one this code writes (None: it is)."""
    version, known = applied(db), latest()
    if version == known:
        return None
    return f"the store's schema is at version {version}, this release's at {known}"


def migrate(db: sqlite3.Connection, path: str) -> None:
    """Apply the pending migrations, each in its own transaction; refuse a newer file."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations"
        " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    for version, name, step in MIGRATIONS:
        db.execute("BEGIN IMMEDIATE")
        try:
            done = applied(db)
            if done > latest():
                raise SchemaTooNew(
                    f"kizuna: the store {path} is at schema version {done}, newer than this release"
                    f" knows ({latest()}): run the release that migrated it, or a newer one"
                )
            if version > done:
                if callable(step):
                    step(db)
                else:
                    for statement in step.split(";"):
                        if statement.strip():
                            db.execute(statement)
                db.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (version, name, time.time()),
                )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
