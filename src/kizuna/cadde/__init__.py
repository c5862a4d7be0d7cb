"""CADDE (Japan's cross-domain data exchange) over the node's datasets: the v4 provider
connector API (:mod:`.provider`, detail search and data exchange under the DSP agreements) and
the node as a CADDE consumer of another provider connector (:mod:`.consumer`)."""
