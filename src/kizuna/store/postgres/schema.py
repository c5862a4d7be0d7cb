"""The database layout and its migrations: the global ``kizuna`` schema, one schema per tenant,
and how a tenant's name becomes its schema's."""

from __future__ import annotations

import hashlib

import asyncpg

from kizuna.store import SchemaTooNew

_LOCK_KEY = 0x6B697A756E61  # "kizuna": the advisory lock migrations run under

# -- migrations ------------------------------------------------------------------------------------

GLOBAL_MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "tenants, hosted contexts, notification outbox",
        """
        CREATE EXTENSION IF NOT EXISTS postgis;
        CREATE TABLE kizuna.tenants (
            name text PRIMARY KEY,
            schema_name text NOT NULL UNIQUE,
            version integer NOT NULL
        );
        CREATE TABLE kizuna.hosted_contexts (
            local_id text PRIMARY KEY,
            document bytea NOT NULL,
            created_at double precision NOT NULL
        );
        CREATE TABLE kizuna.notification_outbox (
            seq bigserial PRIMARY KEY,
            tenant text NOT NULL,
            subscription_id text NOT NULL,
            entity_id text NOT NULL,
            trigger text NOT NULL,
            payload bytea NOT NULL,
            created_at double precision NOT NULL
        );
        CREATE INDEX notification_outbox_by_subscription
            ON kizuna.notification_outbox (tenant, subscription_id, seq);
        CREATE TABLE kizuna.notification_leases (
            tenant text NOT NULL,
            subscription_id text NOT NULL,
            owner text NOT NULL,
            until double precision NOT NULL,
            PRIMARY KEY (tenant, subscription_id)
        );
        CREATE INDEX notification_leases_by_owner ON kizuna.notification_leases (owner);
        CREATE TABLE kizuna.notification_status (
            tenant text NOT NULL,
            subscription_id text NOT NULL,
            doc bytea NOT NULL,
            PRIMARY KEY (tenant, subscription_id)
        );
        """,
    ),
    (
        2,
        "audit trail",
        """
        CREATE TABLE kizuna.audit_trail (
            seq bigserial PRIMARY KEY,
            at double precision NOT NULL,
            subject text NOT NULL,
            tenant text NOT NULL,
            operation text NOT NULL,
            target text NOT NULL,
            outcome text NOT NULL,
            detail text NOT NULL
        );
        CREATE INDEX audit_trail_by_subject ON kizuna.audit_trail (subject, at);
        CREATE INDEX audit_trail_by_time ON kizuna.audit_trail (at);
        """,
    ),
    (3, "owners of hosted contexts", "ALTER TABLE kizuna.hosted_contexts ADD COLUMN owner text;"),
    (
        4,
        "tenants of hosted contexts",
        "ALTER TABLE kizuna.hosted_contexts ADD COLUMN tenant text NOT NULL DEFAULT '';",
    ),
    (
        5,
        "how far kizuna migrate has copied each table of a source",
        "CREATE TABLE kizuna.copied_from (source text NOT NULL, step text NOT NULL,"
        " last bigint NOT NULL, done boolean NOT NULL DEFAULT false, PRIMARY KEY (source, step));",
    ),
    (
        6,
        "the notification outbox as one row per change and a cursor per subscription",
        # Rows queued by an older release are carried over, each as a change naming its one
        # subscription (same seq, so the order holds), and are delivered after the upgrade.
        """
        CREATE TABLE kizuna.notification_changes (
            seq bigserial PRIMARY KEY,
            tenant text NOT NULL,
            entity_id text NOT NULL,
            targets jsonb NOT NULL,
            payloads bytea NOT NULL,
            created_at double precision NOT NULL
        );
        CREATE INDEX notification_changes_by_tenant ON kizuna.notification_changes (tenant, seq);
        CREATE TABLE kizuna.notification_cursors (
            tenant text NOT NULL,
            subscription_id text NOT NULL,
            seq bigint NOT NULL,
            PRIMARY KEY (tenant, subscription_id)
        );
        INSERT INTO kizuna.notification_changes (seq, tenant, entity_id, targets, payloads, created_at)
            SELECT seq, tenant, entity_id, jsonb_build_object(subscription_id, jsonb_build_array(trigger, 0)),
                '['::bytea || payload || ']'::bytea, created_at
            FROM kizuna.notification_outbox ORDER BY seq;
        SELECT setval(pg_get_serial_sequence('kizuna.notification_changes', 'seq'),
            (SELECT last_value FROM kizuna.notification_outbox_seq_seq));
        DROP TABLE kizuna.notification_outbox;
        """,
    ),
    (
        7,
        "a hash of each outbox change's targets, to group and compare changes by",
        # Reading the ~5 KB TOASTed targets once per subscription for every change made delivery
        # slower than with a row per notification (store.common.TargetSets). Generated: every
        # writer (the node, kizuna migrate's copy) gets it without naming it. Rows of one hash are
        # deleted together, so two targets must never share one: md5 (sha256 would need a text
        # to bytea conversion, none of which is immutable) of canonical JSON whose keys are
        # subscription ids, URIs of printable characters where a crafted collision needs
        # arbitrary bytes.
        """
        ALTER TABLE kizuna.notification_changes ADD COLUMN IF NOT EXISTS targets_hash bytea
            GENERATED ALWAYS AS (decode(md5(targets::text), 'hex')) STORED;
        """,
    ),
]

# -- the entity change log (kizuna.store.ChangeLog) of a tenant: rows are written by the entity
# writes without ``seq``, and numbered in commit order by the first reader after the commit
# (store/postgres/changes.py), under the counter row's lock. ``doc``/``raw``/``owner``: for
# deletes only, the entity as it was. ``pruned``: the newest seq forgotten.
ENTITY_CHANGES = """
CREATE TABLE {s}.entity_changes (
    pk bigserial PRIMARY KEY,
    seq bigint UNIQUE,
    entity_id text NOT NULL,
    op text NOT NULL,
    at double precision NOT NULL,
    types jsonb NOT NULL,
    doc jsonb,
    raw bytea,
    owner text
);
CREATE INDEX entity_changes_unnumbered ON {s}.entity_changes (pk) WHERE seq IS NULL;
CREATE INDEX entity_changes_by_time ON {s}.entity_changes (at);
CREATE INDEX entity_changes_deletes ON {s}.entity_changes (entity_id, seq) WHERE op = 'delete';
CREATE TABLE {s}.entity_change_counter (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    last bigint NOT NULL,
    pruned bigint NOT NULL
);
INSERT INTO {s}.entity_change_counter (last, pruned) VALUES (0, 0);
"""

# Applied to each tenant schema, in order; ``{s}`` is the quoted schema name.
TENANT_MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE {s}.entities (
            pk bigserial PRIMARY KEY,
            id text COLLATE "C" NOT NULL UNIQUE,
            doc jsonb,
            raw bytea
        );
        CREATE TABLE {s}.entity_types (
            type text NOT NULL,
            pk bigint NOT NULL REFERENCES {s}.entities ON DELETE CASCADE
        );
        CREATE INDEX entity_types_by_type ON {s}.entity_types (type, pk);
        CREATE INDEX entity_types_by_pk ON {s}.entity_types (pk);
        CREATE TABLE {s}.attr_values (
            attribute text NOT NULL,
            kind smallint NOT NULL,
            num numeric,
            str bytea,
            pk bigint NOT NULL REFERENCES {s}.entities ON DELETE CASCADE,
            inst integer NOT NULL
        );
        CREATE INDEX attr_values_num ON {s}.attr_values (attribute, kind, num, pk);
        CREATE INDEX attr_values_str ON {s}.attr_values (attribute, kind, str, pk);
        CREATE INDEX attr_values_by_pk ON {s}.attr_values (pk, attribute, inst);
        CREATE TABLE {s}.geo_index (
            pk bigint NOT NULL REFERENCES {s}.entities ON DELETE CASCADE,
            geoproperty text NOT NULL,
            box geometry NOT NULL
        );
        CREATE INDEX geo_index_box ON {s}.geo_index USING gist (box);
        CREATE INDEX geo_index_by_pk ON {s}.geo_index (pk);
        CREATE TABLE {s}.subscriptions (
            seq bigserial,
            id text PRIMARY KEY,
            doc bytea NOT NULL
        );
        CREATE TABLE {s}.subscription_version (
            one boolean PRIMARY KEY DEFAULT true CHECK (one),
            version bigint NOT NULL
        );
        INSERT INTO {s}.subscription_version (version) VALUES (0);
        CREATE TABLE {s}.documents (
            seq bigserial,
            kind text NOT NULL,
            id text NOT NULL,
            doc bytea NOT NULL,
            PRIMARY KEY (kind, id)
        );
        CREATE TABLE {s}.temporal_entities (
            seq bigserial,
            id text COLLATE "C" PRIMARY KEY,
            types text[] NOT NULL,
            scope text,
            created_at text NOT NULL,
            modified_at text NOT NULL
        );
        CREATE TABLE {s}.attribute_history (
            pk bigserial PRIMARY KEY,
            entity_id text COLLATE "C" NOT NULL,
            attribute text COLLATE "C" NOT NULL,
            instance_id text NOT NULL UNIQUE,
            dataset_id text COLLATE "C",
            observed_at double precision,
            created_at double precision NOT NULL,
            modified_at double precision NOT NULL,
            deleted_at double precision,
            value_number double precision,
            value_key text,
            doc jsonb,
            raw bytea
        );
        CREATE INDEX attribute_history_observed ON {s}.attribute_history (entity_id, attribute, observed_at);
        CREATE INDEX attribute_history_created ON {s}.attribute_history (entity_id, attribute, created_at);
        CREATE INDEX attribute_history_time ON {s}.attribute_history ((COALESCE(observed_at, created_at)));
        """,
    ),
    (
        2,
        # lastN walks this index backwards per attribute and stops after N rows (read_history).
        """
        CREATE INDEX attribute_history_when ON {s}.attribute_history
            (entity_id, attribute, (COALESCE(observed_at, created_at)), pk);
        """,
    ),
    (
        3,
        # The GeoJSON values of the box's instances: a geoQuery checks these, not the documents.
        # NULL in rows written before; such a query reads the documents (query_entities).
        """
        ALTER TABLE {s}.geo_index ADD COLUMN shapes jsonb;
        """,
    ),
    (
        4,
        # Who created the entity (access control); NULL for entities written before.
        """
        ALTER TABLE {s}.entities ADD COLUMN owner text;
        """,
    ),
    (5, ENTITY_CHANGES),
]


def global_version() -> int:
    return GLOBAL_MIGRATIONS[-1][0]


def tenant_version() -> int:
    return TENANT_MIGRATIONS[-1][0]


def schema_for(tenant: str) -> str:
    if tenant == "":
        return "tenant_default"
    return "tenant_" + hashlib.sha256(tenant.encode()).hexdigest()[:24]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# -- applying them ---------------------------------------------------------------------------------


async def migrate(conn: asyncpg.Connection) -> None:
    """Apply the pending migrations, each in a transaction of its own (a global one, then each
    tenant schema's steps), under a session advisory lock: processes starting together take
    turns, and the later ones find the work done. Refuses a database migrated further than this
    code knows."""
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await _migrate(conn)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)


async def _versions(conn: asyncpg.Connection) -> tuple[int, int, int]:
    """(global version, lowest and highest tenant schema version; 0s before migration 1)."""
    version = await conn.fetchval("SELECT coalesce(max(version), 0) FROM kizuna.schema_migrations")
    if version == 0:
        return 0, 0, 0
    low, high = await conn.fetchrow(
        "SELECT coalesce(min(version), 0), coalesce(max(version), 0) FROM kizuna.tenants"
    )
    return version, low, high


async def mismatch(conn: asyncpg.Connection) -> str | None:
    """Why the database's schema is not the one this code writes (None: it is)."""
    version, low, high = await _versions(conn)
    if version != global_version():
        return f"the store's schema is at version {version}, this release's at {global_version()}"
    if (low, high) != (tenant_version(), tenant_version()):
        return f"tenant schemas are at versions {low} to {high}, this release's at {tenant_version()}"
    return None


async def _migrate(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "CREATE SCHEMA IF NOT EXISTS kizuna;"
        " CREATE TABLE IF NOT EXISTS kizuna.schema_migrations ("
        " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    version, _, high = await _versions(conn)
    if version > global_version() or high > tenant_version():
        raise SchemaTooNew(
            f"kizuna: the PostgreSQL store is at schema version {version} (tenants {high}), newer than"
            f" this release knows ({global_version()}, tenants {tenant_version()}): run the release"
            " that migrated it, or a newer one"
        )
    for step, name, ddl in GLOBAL_MIGRATIONS:
        if step > version:
            async with conn.transaction():
                await conn.execute(ddl)
                await conn.execute(
                    "INSERT INTO kizuna.schema_migrations (version, name) VALUES ($1, $2)", step, name
                )
    default = schema_for("")
    async with conn.transaction():
        if await conn.fetchval("SELECT 1 FROM kizuna.tenants WHERE name = ''") is None:
            await conn.execute(f"CREATE SCHEMA {_quote(default)}")
            await conn.execute(
                "INSERT INTO kizuna.tenants (name, schema_name, version) VALUES ('', $1, 0)", default
            )
    for name, schema, current in await conn.fetch(
        "SELECT name, schema_name, version FROM kizuna.tenants WHERE version < $1", tenant_version()
    ):
        for step, ddl in TENANT_MIGRATIONS:
            if step > current:
                async with conn.transaction():
                    await conn.execute(ddl.format(s=_quote(schema)))
                    await conn.execute("UPDATE kizuna.tenants SET version = $1 WHERE name = $2", step, name)
