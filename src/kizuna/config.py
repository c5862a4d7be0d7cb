"""One Settings object: every flag of ``kizuna serve`` and its ``KIZUNA_*`` environment twin.

Each field carries its help text in its metadata; the ``kizuna serve`` flags and
docs/settings.md are both derived from the fields, so a setting cannot lack either. Regenerate
the document with ``python -m kizuna.config > docs/settings.md``.
"""

from __future__ import annotations

import os
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any


def _setting(
    default: Any, help: str, *, choices: tuple[str, ...] | None = None, shown: str | None = None
) -> Any:
    """A Settings field: ``help`` is the flag's help and the doc's "what"; ``shown`` replaces the
    default in the doc when the real default is computed (e.g. from other settings)."""
    return field(default=default, metadata={"help": help, "choices": choices, "shown": shown})


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = _setting("127.0.0.1", "interface to listen on")
    port: int = _setting(1026, "port")
    store: str = _setting(
        "sqlite:///var/kizuna.db",
        "`sqlite:///relative.db`, `sqlite:////absolute.db`, or `postgresql://user:password@host:port/db[?pool_max=N]`",
    )
    context_map: str | None = _setting(
        None, "JSON object: remote `@context` URL -> local file; those URLs never touch the network"
    )
    workers: int = _setting(1, "worker processes sharing the port (and the store)")
    http_server: str = _setting(
        "uvicorn",
        "the HTTP server that runs the app: `uvicorn` (httptools, uvloop) or `granian` (Rust;"
        " see docs/benchmarks.md for what each gives)",
        choices=("uvicorn", "granian"),
    )
    log_level: str = _setting(
        "info", "JSON log lines on stderr at this level", choices=("debug", "info", "warning", "error")
    )
    # Metrics (docs/operations.md, "Metrics")
    metrics: str = _setting(
        "on",
        "`on` serves Prometheus metrics at `GET /metrics` (admins only under `--auth oidc`); `off`"
        " serves none and counts no requests",
        choices=("on", "off"),
    )
    metrics_port: int | None = _setting(
        None,
        "serve `/metrics` on this port of `--metrics-host` instead, with no credentials asked, and"
        " not on the main port",
        shown="none: the main port",
    )
    metrics_host: str = _setting("127.0.0.1", "the interface `--metrics-port` listens on")
    max_body_bytes: int = _setting(8 * 1024 * 1024, "larger request bodies get 413, on every API root")
    max_json_depth: int = _setting(64, "deepest nesting of arrays and objects in a JSON body (400 beyond)")
    max_array_items: int = _setting(10_000, "longest array in a JSON body (400 beyond)")
    max_attributes: int = _setting(
        1_000, "most members of one JSON object, so most attributes of one entity (400 beyond)"
    )
    max_batch_entities: int = _setting(1_000, "most entities in one batch operation (400 beyond)")
    max_geometry_positions: int = _setting(10_000, "most positions in one GeoJSON geometry (400 beyond)")
    max_tenants: int = _setting(
        1_000, "most tenants the node holds; a write naming a new tenant past it is refused (403)"
    )
    context_fetch_timeout: float = _setting(3.0, "seconds a remote `@context` fetch may take")
    max_context_bytes: int = _setting(1_000_000, "largest remote `@context` document accepted")
    default_limit: int = _setting(20, "entities per page when a query gives no `limit`")
    max_limit: int = _setting(1000, "largest `limit` a query may ask for")
    history_retention: str | None = _setting(
        None, "delete attribute history older than this (`90d`, `12h`, `P1Y`); unset keeps all"
    )
    change_retention: str = _setting(
        "1h",
        "keep the entity change log (what a console stream resumes from after a disconnect) this"
        " long (`90m`, `1h`, `2d`, `PT30M`)",
    )
    console_max_streams: int = _setting(
        100, "most console event streams (`/console/events`) a process holds open (503 beyond)"
    )
    console_stream_lifetime: float = _setting(
        600.0,
        "seconds a console event stream stays open; then the node ends it and the browser"
        " reconnects with `Last-Event-ID`, missing nothing",
    )
    console_heartbeat: float = _setting(
        15.0, "seconds between the comments that keep a quiet console event stream open through proxies"
    )
    temporal_instance_limit: int = _setting(10, "instances per attribute in one temporal answer (206 beyond)")
    forward_timeout: float = _setting(3.0, "seconds a context source has to answer a forwarded request")
    registration_cache_seconds: float = _setting(
        1.0,
        "longest a process uses the context source registrations it read (changes through other"
        " processes also reach it through the change feed)",
    )
    outbound_allow: str | None = _setting(
        None,
        "`CIDR[,CIDR...]` of non-public addresses the node may connect to on a caller's word"
        " (notifications, forwarding, `@context` fetches, DSP counterparties); see docs/security.md",
        shown="loopback with `--auth none` on a loopback `--host`, else none",
    )
    ngsiv2_context: str | None = _setting(
        None,
        "the `@context` URL NGSI v2 requests without a `Link` header name types and attributes in"
        " (e.g. a Smart Data Models context; docs/interop-catalogs.md)",
        shown="the NGSI-LD core context",
    )
    # Notification delivery tuning (see docs/notifications.md)
    notify_backoff_base: float = _setting(0.5, "seconds before the first notification retry")
    notify_backoff_cap: float = _setting(60.0, "longest wait between notification retries")
    notify_timeout: float = _setting(
        10.0, "seconds per notification attempt unless `endpoint.timeout` (ms) says otherwise"
    )
    notify_batch: int = _setting(50, "most entity changes (outbox rows) per notification")
    notify_lease: float = _setting(30.0, "seconds a process owns a subscription's delivery without renewing")
    notify_poll: float = _setting(1.0, "seconds between outbox scans when nothing wakes the dispatcher")
    notify_delivery: str = _setting(
        "inline",
        "`inline`: each worker process delivers notifications beside its requests; `process`: one"
        " more process of the node delivers them all, off the workers' event loops (docs/notifications.md)",
        choices=("inline", "process"),
    )
    # Access control (docs/security.md)
    auth: str | None = _setting(
        None,
        "`oidc` (bearer tokens and API keys checked on every request) or `none` (everyone may do"
        " everything); unset means `none` on a loopback `--host` and refuses to start on any other",
        choices=("none", "oidc"),
    )
    oidc_issuer: str | None = _setting(
        None, "the one trusted token issuer (`iss`), e.g. a Keycloak realm URL"
    )
    oidc_jwks: str | None = _setting(
        None, "file or URL of the issuer's keys (JWKS); unset: discovered from the issuer's metadata"
    )
    oidc_audience: str | None = _setting(None, "the `aud` tokens must name; unset: not checked")
    oidc_roles_claim: str = _setting("realm_access.roles", "dotted path of the roles in a token")
    oidc_groups_claim: str = _setting("groups", "dotted path of the groups in a token")
    auth_config: str | None = _setting(
        None, "JSON file with several issuers (one per tenant); the `--oidc-*` flags are its one-issuer case"
    )
    # The console: static pages under /console over the node's own APIs (docs/console.md)
    console: str = _setting(
        "on", "serve the web console at `/console` (the user's own permissions apply)", choices=("on", "off")
    )
    console_tiles: str | None = _setting(
        None,
        "tile URL template for the console's map (`https://tiles.example/{z}/{x}/{y}.png`); unset:"
        " the bundled district outlines of Duisburg, so the console works offline",
    )
    console_client_id: str | None = _setting(
        None, "the OIDC public client id the console signs in with (authorization code + PKCE)"
    )
    # Dataspace connector (DSP 2025-1)
    participant_id: str = _setting("urn:kizuna:node", "this node's participant id in the data space")
    public_url: str | None = _setting(
        None,
        "the address counterparties and subscribers reach this node at (DSP callbacks, node name,"
        " implicit `@context` links of notifications)",
        shown="http://host:port",
    )
    publisher_name: str | None = _setting(
        None,
        "the name portals show for this node: its CKAN organization and its DCAT-AP publisher"
        " (docs/interop-catalogs.md)",
        shown="the participant id",
    )
    dsp_auth: str = _setting(
        "signed", "`signed` (Ed25519 request tokens) or `none` (conformance runs)", choices=("signed", "none")
    )
    dsp_key_file: str | None = _setting(
        None,
        "Ed25519 private key (PEM) signing this node's DSP requests and sealing the pull tokens it"
        " keeps (without one, tokens do not survive a restart); `kizuna keygen --key-file F` makes one",
    )
    dsp_trusted_participants: str | None = _setting(
        None, "JSON file: participant id -> publicKey, region, memberships"
    )
    dsp_timeout: float = _setting(10.0, "seconds a DSP counterparty has to answer a message or a data pull")
    dsp_token_lifetime: float = _setting(600.0, "seconds a pull-transfer bearer token is valid")
    # CADDE provider connector API (docs/interop-japan.md)
    cadde: str = _setting(
        "off",
        "the CADDE v4 provider connector API under `/cadde/api/v4`: `off` (not served), `open` (open"
        " datasets only) or `all` (also those read under an agreement, with its transfer token)",
        choices=("off", "open", "all"),
    )
    cadde_provider_id: str | None = _setting(
        None,
        "this node's CADDE user id as a provider (`caddec_provider_id` of its catalog)",
        shown="the participant id",
    )

    @property
    def public_base_url(self) -> str:
        """The one public address of this node, without trailing slash: ``public_url`` if set,
        else ``http://host:port``."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Flags given on the command line win over ``KIZUNA_<FLAG>``, which wins over defaults."""
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = os.environ.get(env_name(f))
            if raw is not None:
                values[f.name] = _coerce(f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]


def flag_name(f: Field[Any]) -> str:
    return "--" + f.name.replace("_", "-")


def env_name(f: Field[Any]) -> str:
    return "KIZUNA_" + f.name.upper()


def kind_of(f: Field[Any]) -> type:
    text = str(f.type)
    if text.startswith("int"):
        return int
    if text.startswith("float"):
        return float
    return str


def _coerce(kind: object, raw: str) -> object:
    text = str(kind)
    if text.startswith("int"):
        return int(raw)
    if text.startswith("float"):
        return float(raw)
    return raw


def _shown_default(f: Field[Any]) -> str:
    if f.metadata.get("shown"):
        return f"`{f.metadata['shown']}`"
    default = f.default
    if default is None or default is MISSING:
        return "none"
    if isinstance(default, float) and default.is_integer():
        default = int(default)
    return f"`{default}`"


def settings_markdown() -> str:
    """docs/settings.md, generated from the Settings fields (tests/test_docs.py checks it)."""
    lines = [
        "# Settings",
        "",
        "<!-- Generated from src/kizuna/config.py: `python -m kizuna.config > docs/settings.md` -->",
        "",
        "Every setting is a `kizuna serve` flag and a `KIZUNA_*` environment variable; a flag wins",
        "over the environment, which wins over the default. Worker processes read the environment.",
        "",
        "| flag | environment | default | what |",
        "|---|---|---|---|",
    ]
    for f in fields(Settings):
        help_text = f.metadata["help"].replace("|", "\\|")
        lines.append(f"| `{flag_name(f)}` | `{env_name(f)}` | {_shown_default(f)} | {help_text} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(settings_markdown(), end="")
