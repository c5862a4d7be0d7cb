"""Who is talking: participant identities for DSP requests.

:class:`ParticipantAuth` is the one interface the protocol code uses: sign what we send, identify
who sent what we receive. :class:`SignedTokenAuth` is the default: each node has a participant id
and an Ed25519 key, and every DSP request carries ``Authorization: Bearer <JWS>`` (EdDSA, compact)
over the method, the path and a hash of the body, verified against the trusted-participants file.
:class:`NoAuth` (``--dsp-auth none``) turns it off for conformance runs. The Decentralized Claims
Protocol can replace both by implementing the same two methods (self-issued ID token + verifiable
presentations instead of the trusted-participants file).

The trusted-participants file is JSON: participant id -> ``{"publicKey": <base64url raw Ed25519
public key>, "region"?: "JP", "memberships"?: [...]}``; region and memberships are the facts the
ODRL evaluator uses for spatial and membership constraints.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from kizuna.errors import Unauthenticated
from kizuna.files import write_private

log = logging.getLogger("kizuna.dataspace")
TOKEN_LIFETIME = 60.0  # seconds
CLOCK_SKEW = 30.0


FirstUse = Callable[[str, float], Awaitable[bool]]
"""``first_use(token_id, expires)``: record a one-time token id; False if it was used before, by
any worker of the node (so the record must be shared: see :meth:`kizuna.dataspace.core.Records.first_use`)."""
ReadBody = Callable[[], Awaitable[bytes]]  # reads the request body (once)


@dataclass(frozen=True, slots=True)
class Participant:
    id: str
    region: str | None = None
    memberships: frozenset[str] = frozenset()
    public_key: str | None = None


@dataclass(slots=True)
class Directory:
    """The trusted participants and what we know of them."""

    participants: dict[str, Participant] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | None) -> Directory:
        if not path:
            return cls()
        raw = json.loads(Path(path).read_text())
        if not isinstance(raw, dict):
            raise SystemExit(f"kizuna: {path}: trusted participants must be a JSON object")
        return cls(
            {
                pid: Participant(
                    pid,
                    region=info.get("region"),
                    memberships=frozenset(info.get("memberships", [])),
                    public_key=info.get("publicKey"),
                )
                for pid, info in raw.items()
            }
        )

    def get(self, participant_id: str | None) -> Participant | None:
        return None if participant_id is None else self.participants.get(participant_id)

    def describe(self, participant_id: str | None) -> Participant:
        """What we know of a participant (nothing but its id when it is not listed)."""
        found = self.get(participant_id)
        return found or Participant(participant_id or "")


class ParticipantAuth(Protocol):
    participant_id: str

    def sign(self, method: str, audience: str, path: str, body: bytes) -> dict[str, str]:
        """Headers that prove to the counterparty whose DSP address is ``audience`` that we
        send this request."""

    async def identify(
        self, method: str, path: str, headers: dict[str, str], read_body: ReadBody
    ) -> tuple[str | None, bytes]:
        """The participant id that sent a request (None when authentication is off) and the
        request's body; raise :class:`Unauthenticated` when the sender cannot be established.
        The body is read only once the token is known good but for the body's hash: an
        unauthenticated sender never gets the node to read a body."""


class NoAuth:
    """``--dsp-auth none``: nothing is signed; a sender may name itself in ``Kizuna-Participant``
    (informational only, for the logs and for ODRL facts in conformance runs)."""

    def __init__(self, participant_id: str) -> None:
        self.participant_id = participant_id

    def sign(self, method: str, audience: str, path: str, body: bytes) -> dict[str, str]:
        return {"Kizuna-Participant": self.participant_id}

    async def identify(
        self, method: str, path: str, headers: dict[str, str], read_body: ReadBody
    ) -> tuple[str | None, bytes]:
        return None, await read_body()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_or_create_key(path: str | None) -> Ed25519PrivateKey:
    if not path:
        log.warning("no --dsp-key-file: signing DSP requests with an ephemeral key nobody trusts")
        return Ed25519PrivateKey.generate()
    data = Path(path).read_bytes()
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SystemExit(f"kizuna: {path} is not an Ed25519 private key")
    return key


def generate_key_file(path: str, *, force: bool = False) -> str:
    """Write a new Ed25519 private key (PEM, mode 0600) to ``path``; return its public key
    (base64url). An existing key is the node's identity to its counterparties: replacing it
    takes ``force`` (FileExistsError otherwise)."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private(path, pem, force=force)
    return public_key_text(key)


def public_key_text(key: Ed25519PrivateKey) -> str:
    return _b64(key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def audience_of(address: str) -> str:
    """A DSP address as a token audience: scheme and host in lower case, the default port left
    out, no trailing slash (``HTTP://Node:80/dsp/`` and ``http://node/dsp`` are one audience)."""
    parts = urlsplit(address.strip())
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != {"http": 80, "https": 443}.get(scheme):
        netloc += f":{port}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


class SignedTokenAuth:
    """Ed25519 JWS per request: ``{iss, aud, iat, exp, jti, htm, htu, bsh}`` (aud: the
    counterparty's DSP address, so a token signed for one counterparty is worthless to another;
    bsh: SHA-256 of the body)."""

    def __init__(
        self,
        participant_id: str,
        key: Ed25519PrivateKey,
        directory: Directory,
        first_use: FirstUse,
        audience: str,
    ) -> None:
        self.participant_id = participant_id
        self.key = key
        self.directory = directory
        self.first_use = first_use  # a token is good for one request, whichever worker serves it
        self.audience = audience_of(audience)  # this node's DSP address, as its tokens must name it

    def sign(self, method: str, audience: str, path: str, body: bytes) -> dict[str, str]:
        now = time.time()
        header = {"alg": "EdDSA", "typ": "JWT", "kid": self.participant_id}
        claims = {
            "iss": self.participant_id,
            "aud": audience_of(audience),
            "iat": int(now),
            "exp": int(now + TOKEN_LIFETIME),
            "jti": str(uuid.uuid4()),
            "htm": method.upper(),
            "htu": path,
            "bsh": _b64(hashlib.sha256(body).digest()),
        }
        signing_input = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
        signature = self.key.sign(signing_input.encode())
        return {"Authorization": f"Bearer {signing_input}.{_b64(signature)}"}

    async def identify(
        self, method: str, path: str, headers: dict[str, str], read_body: ReadBody
    ) -> tuple[str | None, bytes]:
        auth = headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            raise Unauthenticated("a DSP request needs an Authorization: Bearer token")
        token = auth[7:].strip()
        try:
            head_b64, claims_b64, sig_b64 = token.split(".")
            header = json.loads(_unb64(head_b64))
            claims = json.loads(_unb64(claims_b64))
            signature = _unb64(sig_b64)
        except (ValueError, json.JSONDecodeError) as error:
            raise Unauthenticated("the token is not a compact JWS") from error
        if not isinstance(header, dict) or header.get("alg") != "EdDSA" or not isinstance(claims, dict):
            raise Unauthenticated("the token must be an EdDSA JWS")
        issuer = claims.get("iss")
        if not isinstance(issuer, str):
            raise Unauthenticated("the token names no issuer")
        participant = self.directory.get(issuer)
        if participant is None or not participant.public_key:
            raise Unauthenticated(f"participant {issuer!r} is not trusted")
        try:
            Ed25519PublicKey.from_public_bytes(_unb64(participant.public_key)).verify(
                signature, f"{head_b64}.{claims_b64}".encode()
            )
        except (InvalidSignature, ValueError) as error:
            raise Unauthenticated("the token's signature does not verify") from error
        now = time.time()
        iat, exp = claims.get("iat", 0), claims.get("exp", 0)
        if not all(isinstance(t, int | float) and not isinstance(t, bool) for t in (iat, exp)):
            raise Unauthenticated("the token's iat and exp must be numbers")
        if not (iat - CLOCK_SKEW <= now <= exp + CLOCK_SKEW):
            raise Unauthenticated("the token has expired")
        audience = claims.get("aud")
        if not isinstance(audience, str) or audience_of(audience) != self.audience:
            raise Unauthenticated(f"the token was issued for another audience than {self.audience}")
        if claims.get("htm") != method.upper() or claims.get("htu") != path:
            raise Unauthenticated("the token was issued for another request")
        body = await read_body()
        if claims.get("bsh") != _b64(hashlib.sha256(body).digest()):
            raise Unauthenticated("the token was issued for another body")
        if not await self.first_use(str(claims.get("jti")), float(exp)):
            raise Unauthenticated("the token was already used (replay)")
        return str(issuer), body


def make_auth(
    mode: str,
    participant_id: str,
    key_file: str | None,
    directory: Directory,
    first_use: FirstUse,
    audience: str,
) -> Any:
    if mode == "none":
        return NoAuth(participant_id)
    if mode != "signed":
        raise SystemExit(f"kizuna: --dsp-auth must be 'signed' or 'none', not {mode!r}")
    return SignedTokenAuth(participant_id, load_or_create_key(key_file), directory, first_use, audience)
