"""Kizuna: an open-source data-space node (ETSI NGSI-LD broker and Dataspace Protocol connector)."""

__version__ = "0.1.0"
