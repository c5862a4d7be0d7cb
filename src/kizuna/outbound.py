"""The outbound gate: every connection the node opens because a caller named an address.

Subscriptions, registrations, @context URLs, DSP counterparties and callbacks all make the node
connect somewhere on a caller's word. Without a gate that is a way into the city's internal
network (or a cloud's metadata service) from anyone who may create a subscription. So each such
connection goes through :class:`OutboundGate`:

- the host is resolved, and the connection is refused if any address it resolves to is not a
  public unicast address (loopback, private, link-local, shared, multicast, unspecified,
  reserved, the metadata services), unless the address is inside ``--outbound-allow``;
- the connection is then made to the address that was checked, so a name cannot resolve to a
  public address for the check and to an internal one for the connection (DNS rebinding); for
  HTTPS the certificate is still verified against the name;
- redirects are never followed (every client here is built with ``follow_redirects=False``).

With ``--auth none`` on a loopback ``--host`` (``make run``) the default allow list is loopback,
so local receivers keep working; everywhere else it is empty. Addresses the operator configures
(the OIDC issuer, the store) do not go through the gate.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from kizuna.errors import BadRequestData

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

LOOPBACK = ("127.0.0.0/8", "::1/128")
# Global by the registries' tables, yet a cloud's instance metadata service: refused always
# unless explicitly allowed.
METADATA = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "100.100.100.200", "fd00:ec2::254", "169.254.170.2")
)
DEFAULT_PORTS = {"http": 80, "https": 443, "mqtt": 1883, "mqtts": 8883}
RESOLVE_SECONDS = 5.0


class Refused(httpx.ConnectError):
    """A connection the gate did not open; a transport error, so every caller that handles an
    unreachable target handles this one too, with the reason as its message."""


# What a request to a caller's address may raise when the target fails it: the transport's
# errors (the gate's refusals among them), a URL the client cannot use, and the socket's own.
UNREACHABLE: tuple[type[BaseException], ...] = (httpx.HTTPError, httpx.InvalidURL, OSError)


def parse_networks(text: str) -> tuple[Network, ...]:
    """``CIDR[,CIDR...]`` (a bare address is its /32 or /128); ValueError on a bad one."""
    try:
        return tuple(
            ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip()
        )
    except ValueError as error:
        raise ValueError(f"--outbound-allow: {error}") from None


def _refusal(address: Address) -> str | None:
    """Why a connection to ``address`` is refused by default (``None``: it is not)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return _refusal(address.ipv4_mapped)
    if address in METADATA:
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_link_local:
        return "a link-local address"
    if not address.is_global:
        return "a private or reserved address"
    return None


@dataclass(frozen=True, slots=True)
class OutboundGate:
    """What the node may connect to: public addresses, and those inside ``allow``."""

    allow: tuple[Network, ...] = ()

    @classmethod
    def for_node(cls, allow: str | None, *, open_loopback_node: bool) -> OutboundGate:
        """The gate of a node: ``allow`` as given, else loopback for a node that is itself open
        on loopback only (nothing it could reach there is out of its user's reach already)."""
        if allow is None:
            allow = ",".join(LOOPBACK) if open_loopback_node else ""
        return cls(parse_networks(allow))

    def refusal(self, address: Address) -> str | None:
        if any(address in network for network in self.allow if network.version == address.version):
            return None
        return _refusal(address)

    async def resolve(self, host: str, port: int) -> str:
        """The address to connect to for ``host``: every address the name resolves to must be
        allowed (a name that resolves to one public and one internal address is refused)."""
        if not 0 < port < 65536:
            raise Refused(f"{host}:{port} is not a valid port")
        try:
            literal: Address | None = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            candidates = [literal]
        else:
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(RESOLVE_SECONDS):
                    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except (OSError, TimeoutError):
                raise Refused(f"{host} could not be resolved") from None
            candidates = [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]
        if not candidates:
            raise Refused(f"{host} could not be resolved")
        for address in candidates:
            reason = self.refusal(address)
            if reason is not None:
                raise Refused(f"{host} is {reason}, which this node does not connect to (--outbound-allow)")
        return str(candidates[0])

    async def vet(self, url: str, what: str) -> None:
        """Refuse, as BadRequestData, an address a caller gives that the node would never
        connect to, or could not parse. A name that does not resolve now is accepted: it may
        exist at delivery, where it is checked again."""
        host, port = target(url, what)
        try:
            await self.resolve(host, port)
        except Refused as refused:
            if "could not be resolved" not in str(refused):
                raise BadRequestData(f"{what}: {refused}") from None

    def client(self, **options: Any) -> httpx.AsyncClient:
        """An HTTP client whose every connection goes through the gate; never follows redirects
        and ignores proxy settings from the environment (a proxy would bypass the check)."""
        limits = options.pop("limits", httpx.Limits(max_connections=100, max_keepalive_connections=20))
        return httpx.AsyncClient(
            transport=GatedTransport(self, limits=limits),
            follow_redirects=False,
            trust_env=False,
            **options,
        )


class GatedTransport(httpx.AsyncBaseTransport):
    """Connects to the address :meth:`OutboundGate.resolve` checked, with the original name as
    the ``Host`` header and as the TLS server name."""

    def __init__(self, gate: OutboundGate, **options: Any) -> None:
        self.gate = gate
        self._inner = httpx.AsyncHTTPTransport(**options)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        host = url.host
        address = await self.gate.resolve(host, url.port or DEFAULT_PORTS.get(url.scheme, 80))
        if address != host:
            request.url = url.copy_with(host=address)
            request.extensions = {**request.extensions, "sni_hostname": host}
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def target(url: str, what: str) -> tuple[str, int]:
    """The host and port a caller's URL names, or BadRequestData: a URL that the HTTP and MQTT
    clients would fail to parse at delivery is refused when it is given."""
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise BadRequestData(f"{what} {url!r} contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
        httpx.URL(url)
    except (ValueError, httpx.InvalidURL):
        raise BadRequestData(f"{what} {url!r} is not a valid URL") from None
    if not host:
        raise BadRequestData(f"{what} {url!r} names no host")
    port = port if port is not None else DEFAULT_PORTS.get(parts.scheme.lower(), 80)
    if not 0 < port < 65536:
        raise BadRequestData(f"{what} {url!r} has an invalid port")
    return host, port


def summary(error: BaseException) -> str:
    """What a caller is told about a failed outbound request: the gate's reason, or that the
    target could not be reached. Never the transport's own message (nor whether it timed out),
    which tells a closed port from a filtered one from an open one that spoke something else."""
    if isinstance(error, Refused):
        return str(error)
    return "could not be reached"


def allowed_header(name: str, value: str) -> bool:
    """May ``receiverInfo`` / ``contextSourceInfo`` set this header? Not the ones that frame
    the message or say who sends it: those belong to the node (``Authorization`` only as the
    ``urn:ngsi-ld:request`` pass-through of the caller's own)."""
    lowered = name.lower()
    if lowered == "authorization":
        return value == PASS_THROUGH
    return lowered not in RESERVED_HEADERS and not lowered.startswith(("proxy-", "sec-"))


PASS_THROUGH = "urn:ngsi-ld:request"
RESERVED_HEADERS = frozenset(
    {
        "host",
        "via",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "cookie",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
        "ngsild-tenant",
    }
)


def header_names(pairs: Iterable[tuple[str, str]]) -> list[str]:
    """The names among ``pairs`` that :func:`allowed_header` refuses."""
    return [name for name, value in pairs if not allowed_header(name, value)]
