"""The embedded store: one SQLite file in WAL mode.

SQLite answers a primary-key read in microseconds, less than the cost of handing the call to a
thread, so statements run directly on the event loop. Write transactions are serialised by an
asyncio lock (one connection per process) and by SQLite itself across processes
(``BEGIN IMMEDIATE`` with a busy timeout).

Queries run in SQL on indexes kept beside the documents, in the transaction of each write:

- ``entity_types``: the type index, with each entity's owner, so that a restricted subject's type
  query tests ownership on the index row it walks instead of looking up each candidate entity.
  ``entity_type_counts`` holds how many entities each (tenant, type) has, kept by triggers on
  ``entity_types``, so that ``count=true`` of a bare type listing reads one row.
- ``attr_values``: one row per scalar a q expression compares with (number, string, boolean; the
  leaves of each attribute instance, found by :func:`kizuna.query.instance_leaves`, so that
  SQL and :func:`kizuna.query.matches` see the same values), keyed
  ``(tenant, attribute, kind, val, pk, inst)``. A separate table rather than ``json_extract`` on
  the document: attributes are user-defined, so no expression index could cover them, and a
  range ``speed < 20`` or ``intensity == 800..1200`` on this table is one B-tree range scan over
  the attribute's values instead of a parse of every document. ``val`` has no type affinity, so
  numbers stay numbers (integers exact) and strings stay strings (BINARY collation orders UTF-8 by
  code point, as Python does); ``kind`` keeps booleans apart from numbers, as q does. Marker rows
  (kind 3: an instance without scalars; kind 4: a key without any valued instance) make
  existence and the per-instance ``!=`` exact.
- ``geo_rtree`` (an R*Tree of boxes) with ``geo_entries`` (rtree id -> tenant, entity pk,
  geoproperty IRI, and ``shapes``: the GeoJSON values of the property's instances): one box per
  (entity, property holding GeoJSON), the union of its instances. A geoQuery reads candidates
  through :meth:`GeoQuery.bbox` and checks only those exactly with shapely, on ``shapes`` (a few
  bytes to decode, not the document; points in one vectorised call). The R*Tree stores 32-bit
  floats rounded outwards, so a box never shrinks.
- ``geo_kind_rtree``: the same boxes once per type of the entity, in a third dimension per
  (tenant, geoproperty, type) (``geo_kinds``), the entity's pk in the id: a geoQuery of one type
  and nothing else reads its type's boxes alone, and a point whose box lies inside a within /
  intersects geometry matches without its shapes being read (see
  :data:`kizuna.store.sqlite.indexes.KIND_BITS`).

q compiles to SQL for top-level attribute paths with ``==`` ``!=`` ``>`` ``>=`` ``<`` ``<=``
against numbers, strings, booleans and URIs, ranges, value lists, ``~=``, existence, ``!`` and
``;`` / ``|``; an AND keeps its compilable terms in SQL and leaves the others to Python. The
rest (sub-attributes, metadata, compound keys, ``id``, DateTime/Date/Time literals, ``!~=``)
and scopeQ are evaluated in Python on the rows SQL selects.
"""

from kizuna.store.sqlite.store import SqliteStore, SqliteWrite

__all__ = ["SqliteStore", "SqliteWrite"]
