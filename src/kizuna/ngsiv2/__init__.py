"""A read-only NGSI v2 subset over the node's NGSI-LD entities, in Orion's shapes, for the
clients that speak v2 only (CADDE's consumer connector, Orion tools)."""
