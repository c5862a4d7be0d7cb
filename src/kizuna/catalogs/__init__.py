"""The node's datasets in the catalog formats portals and harvesters read: the CKAN Action API
(:mod:`.ckan`) and DCAT-AP 3.0 (:mod:`.dcat_ap`), both read-only mappings of what
:mod:`.listing` says of each dataset record of the management API."""
