"""NGSI-LD member names that the query language and the model both read.

They live here, beside neither, so that :mod:`kizuna.query` (which the store uses) can read an
attribute instance's value without importing the NGSI-LD layer that builds the instances.
"""

from __future__ import annotations

VALUE_MEMBER = {
    "Property": "value",
    "GeoProperty": "value",
    "Relationship": "object",
    "LanguageProperty": "languageMap",
    "VocabProperty": "vocab",
    "JsonProperty": "json",
    "ListProperty": "valueList",
    "ListRelationship": "objectList",
}
"""The member holding an attribute instance's value, by the instance's ``type``."""
