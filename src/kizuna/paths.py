"""Where the node's APIs live, each root written once.

Routes are declared relative to their root and mounted under it in :mod:`kizuna.app`; the
absolute paths here are for what leaves the node: ``Location`` headers, paging links, hosted
@context URLs and the paths of requests forwarded to context sources (which serve the same API).
"""

NGSI_LD = "/ngsi-ld/v1"
MANAGEMENT = "/management/v1"
DSP = "/dsp"
HOSTED_CONTEXTS = "/jsonldContexts"  # under NGSI_LD (clause 5.13)
NGSI_V2 = "/v2"  # the read-only NGSI v2 subset (kizuna.ngsiv2)
CKAN_ACTIONS = "/api/3/action"
DCAT_CATALOG = "/catalog"
CADDE = "/cadde/api/v4"  # the CADDE v4 provider connector API (kizuna.cadde)
CONSOLE = "/console"  # the web console and its event stream (kizuna.console)
