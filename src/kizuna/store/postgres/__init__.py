"""The shared store: PostgreSQL with PostGIS, through an asyncpg connection pool.

Several ``kizuna serve`` processes may share one database: every write is one PostgreSQL
transaction (READ COMMITTED; :meth:`PgWrite.get` locks the row it reads with ``FOR UPDATE`` so a
read-modify-write of one entity never loses a concurrent update), and nothing is cached in the
process that another process could change, except the tenant -> schema names (tenants are never
dropped).

Tenants: one PostgreSQL schema per tenant (``tenant_default`` for the default tenant,
``tenant_<sha256 of the name, 24 hex>`` for the others), listed in ``kizuna.tenants``. Chosen over
a ``tenant`` column because every tenant-scoped statement names its schema, so no statement can
forget a tenant filter and read another tenant's rows; each tenant's indexes cover only its own
rows (a tenant of 46,000 street lights does not slow a tenant of ten); and a tenant can be backed
up, moved or dropped with ordinary schema tools. The cost, a set of tables per tenant, is fine for
the tens to hundreds of tenants a node serves. A schema is created, with its tables, in the
transaction of the tenant's first write, so a failed first write leaves no tenant behind.
Cross-tenant machinery (hosted @contexts, the notification outbox, leases and delivery state)
lives in the ``kizuna`` schema with a ``tenant`` column; it is never read by tenant queries.

Migrations: ``kizuna.schema_migrations`` records each global migration applied, and
``kizuna.tenants.version`` each tenant schema's; :meth:`PostgresStore.open` applies what is
missing under an advisory lock, so processes starting together migrate once.

Per tenant schema:

- ``entities``: the canonical entity as ``jsonb`` (``doc``). JSON text containing ``\\u0000``
  cannot be ``jsonb``; such a (rare) document is kept as orjson bytes in ``raw`` instead.
  ``jsonb`` keeps values but not the order of object members (they come back sorted, shorter keys
  first), which JSON leaves open: responses may list attributes in another order than SQLite's.
- ``entity_types``: the type index.
- ``attr_values``: the q index, the same rows as in the SQLite store
  (:func:`kizuna.store.common.attribute_rows`), with numbers and booleans in ``num numeric``
  (exact: integers and binary floats compare as Python compares them) and strings in
  ``str bytea`` (UTF-8; byte order is code point order, as in Python; NUL is allowed), each with a
  B-tree index led by ``(attribute, kind, ...)`` so that a comparison is one range scan.
- ``geo_index``: one PostGIS ``geometry`` (SRID 4326) per (entity, property holding GeoJSON): the
  box around its instances, under a GiST index. A geoQuery selects candidates with ``&&`` against
  :meth:`GeoQuery.bbox`; the exact georel is checked with shapely on those, on the GeoJSON kept
  beside the box (``shapes``, so that only the documents of the page are read), as the SQLite
  store does, so that both stores answer alike for every geometry the model accepts (PostGIS would
  refuse some GeoJSON that shapely takes, and near/equals have NGSI-LD specific meanings).
- ``attribute_history`` (one row per attribute instance, times as POSIX seconds, with
  ``(entity_id, attribute, observed_at)`` and ``(entity_id, attribute, created_at)`` B-tree
  indexes for range scans) and ``temporal_entities``; aggregation is one SQL statement binning
  each instance to ``floor((t - origin) / period)``, the epoch form of ``date_bin``.
- ``subscriptions``, ``documents`` (registrations, csource subscriptions), ``subscription_version``.

q compiles to SQL as in the SQLite store (:class:`kizuna.store.common.QCompiler`; same coverage, except
``~=``, left to Python because PostgreSQL regular expressions are not Python's); the rest, scopeQ
and the exact geometry check run in Python on the rows SQL selects. The q test that drives a
query is chosen as on SQLite (:func:`kizuna.store.common.compile_q`) and read as an array walked
in pk order, so that a page stops early; the other conditions are left to PostgreSQL's planner
(see ``_PgQ`` in :mod:`.entities`).

Notifications: the outbox rows are written in the transaction of the change they report; a
dispatcher claims a subscription's rows by leasing it (:meth:`PostgresStore.lease_subscriptions`:
one statement that inserts free leases and takes over expired ones ``FOR UPDATE SKIP LOCKED``, so
processes racing for a subscription never wait on each other and exactly one wins it).

Processes keep little in memory (compiled subscriptions, hosted @contexts); the transactions that
change those also ``pg_notify`` the change on the ``kizuna_changes`` channel, as does every
transaction that queues notifications. Each store holds one LISTEN connection
(:meth:`PostgresStore.listen`): PostgreSQL delivers a notification only once its transaction
commits, to every listening process, so other processes drop their copies and wake their
dispatchers as soon as the change is visible to them.

A lost connection makes the request fail with 503 ServiceUnavailable; the pool replaces dead
connections on the next acquire, so the node recovers by itself once PostgreSQL is back. The
LISTEN connection reconnects too, and then tells its listeners that anything may have changed
while it was away.
"""

from kizuna.store.postgres.store import PgWrite, PostgresStore

__all__ = ["PgWrite", "PostgresStore"]
