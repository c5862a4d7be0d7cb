"""Bearer token verification: what is accepted, what is refused, and how keys rotate."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import orjson
import pytest
from joserfc.jwk import ECKey, OKPKey

from access_helpers import ISS, FakeIdp, rsa, token
from kizuna.access import oidc
from kizuna.access.oidc import Issuer, TokenVerifier
from kizuna.errors import InvalidCredentials


async def verify(idp: FakeIdp, value: str, request_tenant: str = "", **issuer: Any) -> Any:
    config = Issuer(ISS, audience="kizuna", **issuer)
    return await TokenVerifier([config], idp.fetch_json).verify(value, request_tenant)


async def test_a_valid_token_gives_its_subject_roles_and_groups() -> None:
    key = rsa("k1")
    value = token(key, realm_access={"roles": ["kizuna-creator"]}, groups=["/hospital"])
    subject = await verify(FakeIdp(key), value)
    assert (subject.id, subject.roles, subject.groups) == (
        "alice",
        frozenset({"kizuna-creator"}),
        frozenset({"/hospital"}),
    )


async def test_claim_paths_are_configurable() -> None:
    key = rsa("k1")
    value = token(key, resource_access={"kizuna": {"roles": ["kizuna-admin"]}}, teams="ops")
    subject = await verify(
        FakeIdp(key), value, roles_claim="resource_access.kizuna.roles", groups_claim="teams"
    )
    assert subject.roles == {"kizuna-admin"} and subject.groups == {"ops"}


@pytest.mark.parametrize(
    "make",
    [
        lambda: ECKey.generate_key("P-256", parameters={"kid": "e"}),
        lambda: OKPKey.generate_key("Ed25519", parameters={"kid": "o"}),
    ],
)
async def test_ec_and_eddsa_signatures_are_accepted(make: Any) -> None:
    key = make()
    alg = "ES256" if isinstance(key, ECKey) else "EdDSA"
    assert (await verify(FakeIdp(key), token(key, alg))).id == "alice"


@pytest.mark.parametrize(
    "claims",
    [
        {"iss": "https://evil.example"},
        {"aud": "another-service"},
        {"exp": int(time.time()) - 120},
        {"nbf": int(time.time()) + 120},
        {"exp": None},
        {"sub": None},
    ],
    ids=["issuer", "audience", "expired", "not-yet-valid", "no-exp", "no-sub"],
)
async def test_claims_that_do_not_hold_are_refused(claims: dict[str, Any]) -> None:
    key = rsa("k1")
    with pytest.raises(InvalidCredentials):
        await verify(FakeIdp(key), token(key, **claims))


async def test_small_clock_skew_is_tolerated() -> None:
    key = rsa("k1")
    value = token(key, exp=int(time.time()) - 5, nbf=int(time.time()) + 5)
    assert (await verify(FakeIdp(key), value)).id == "alice"


async def test_a_token_signed_by_another_key_is_refused() -> None:
    with pytest.raises(InvalidCredentials):
        await verify(FakeIdp(rsa("k1")), token(rsa("k1")))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_alg_none_is_refused() -> None:
    claims = {"iss": ISS, "sub": "alice", "aud": "kizuna", "exp": int(time.time()) + 60}
    header = _b64(orjson.dumps({"alg": "none", "kid": "k1"}))
    value = f"{header}.{_b64(orjson.dumps(claims))}."
    with pytest.raises(InvalidCredentials):
        await verify(FakeIdp(rsa("k1")), value)


async def test_hmac_with_the_public_key_as_secret_is_refused() -> None:
    """The classic confusion attack: sign HS256 with the issuer's public key bytes."""
    key = rsa("k1")
    claims = {"iss": ISS, "sub": "mallory", "aud": "kizuna", "exp": int(time.time()) + 60}
    signing_input = f"{_b64(orjson.dumps({'alg': 'HS256', 'kid': 'k1'}))}.{_b64(orjson.dumps(claims))}"
    mac = hmac.new(key.as_pem(private=False), signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{_b64(mac)}"
    with pytest.raises(InvalidCredentials):
        await verify(FakeIdp(key), forged)


async def test_keys_are_discovered_cached_and_reread_on_rotation(monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = rsa("old"), rsa("new")
    idp = FakeIdp(old)
    verifier = TokenVerifier([Issuer(ISS, audience="kizuna")], idp.fetch_json)
    await verifier.verify(token(old), "")
    await verifier.verify(token(old), "")
    assert idp.reads == [ISS + "/.well-known/openid-configuration", ISS + "/certs"]

    idp.keys = [new]  # the IdP rotates; a token with the new kid arrives within the minute
    with pytest.raises(InvalidCredentials):
        await verifier.verify(token(new), "")
    assert len(idp.reads) == 2, "an unknown kid within a minute of the last read must not reread"

    clock = time.monotonic() + oidc.REFRESH_INTERVAL_SECONDS + 1
    monkeypatch.setattr(oidc.time, "monotonic", lambda: clock)
    assert (await verifier.verify(token(new), "")).id == "alice"
    assert len(idp.reads) == 4
    await verifier.verify(token(new), "")
    assert len(idp.reads) == 4


async def test_an_issuer_bound_to_a_tenant_is_refused_for_another() -> None:
    key = rsa("k1")
    assert (await verify(FakeIdp(key), token(key), "hospital", tenant="hospital")).id == "alice"
    with pytest.raises(InvalidCredentials):
        await verify(FakeIdp(key), token(key), "city", tenant="hospital")


async def test_a_jwks_file_is_read_from_disk(tmp_path: Any) -> None:
    key = rsa("k1")
    path = tmp_path / "jwks.json"
    path.write_bytes(orjson.dumps({"keys": [key.as_dict(private=False)]}))
    idp = FakeIdp()
    assert (await verify(idp, token(key), jwks=str(path))).id == "alice"
    assert idp.reads == []


def test_issuer_config_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError):
        Issuer.from_json({"issuer": ISS, "audiance": "typo"})


async def test_a_remembered_token_still_expires_and_stays_bound_to_its_tenant(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = rsa("k1")
    verifier = TokenVerifier([Issuer(ISS, audience="kizuna", tenant="hospital")], FakeIdp(key).fetch_json)
    now = time.time()
    value = token(key, exp=int(now) + 60)
    assert (await verifier.verify(value, "hospital")).id == "alice"
    with pytest.raises(InvalidCredentials):
        await verifier.verify(value, "city")  # the second use is answered from memory
    monkeypatch.setattr(oidc.time, "time", lambda: now + 60 + oidc.CLOCK_SKEW_SECONDS + 1)
    with pytest.raises(InvalidCredentials):
        await verifier.verify(value, "hospital")
