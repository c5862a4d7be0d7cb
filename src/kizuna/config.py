"""One Settings object: every flag of ``kizuna serve`` and its ``KIZUNA_*`` environment twin."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 1026
    store: str = "sqlite:///var/kizuna.db"
    context_map: str | None = None
    workers: int = 1
    log_level: str = "info"
    max_body_bytes: int = 8 * 1024 * 1024
    context_fetch_timeout: float = 3.0
    max_context_bytes: int = 1_000_000
    default_limit: int = 20
    max_limit: int = 1000
    history_retention: str | None = None  # e.g. 90d, 12h, P1Y: older history is deleted
    temporal_instance_limit: int = 10  # instances per attribute in one temporal answer (206 beyond)
    forward_timeout: float = 3.0  # seconds a context source has to answer a forwarded request
    registration_cache_seconds: float = 1.0  # how long a process may use registrations it read
    # Dataspace connector (DSP 2025-1)
    participant_id: str = "urn:kizuna:node"  # this node's participant id in the data space
    public_url: str | None = None  # how counterparties reach this node (default http://host:port)
    dsp_auth: str = "signed"  # "signed" (Ed25519 request tokens) or "none" (conformance runs)
    dsp_key_file: str | None = None  # Ed25519 private key (PEM); `kizuna keygen` makes one
    dsp_trusted_participants: str | None = None  # JSON: participant id -> publicKey, region, memberships
    dsp_token_lifetime: float = 600.0  # seconds a pull-transfer bearer token is valid

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Flags given on the command line win over ``KIZUNA_<FLAG>``, which wins over defaults."""
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = os.environ.get("KIZUNA_" + f.name.upper())
            if raw is not None:
                values[f.name] = _coerce(f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


def _coerce(kind: object, raw: str) -> object:
    text = str(kind)
    if text.startswith("int"):
        return int(raw)
    if text.startswith("float"):
        return float(raw)
    return raw
