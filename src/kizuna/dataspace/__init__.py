"""The Eclipse Dataspace Protocol 2025-1 connector: catalog, contract negotiation, transfer
process, ODRL usage policies and the HTTP data plane over the node's own NGSI-LD data.

Domain modules (no HTTP): ``catalog``, ``negotiation``, ``transfer``, ``odrl``, ``dataplane``,
``auth``; the HTTP edge is ``routes``; ``messages`` holds the 2025-1 context, the bundled JSON
Schemas and the protocol's error messages.
"""
