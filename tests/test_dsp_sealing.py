"""Pull tokens at rest: sealed with a key derived from the DSP key file, bound to their transfer."""

from __future__ import annotations

from pathlib import Path

import pytest

from kizuna.dataspace import transfer
from kizuna.dataspace.auth import generate_key_file
from kizuna.dataspace.sealing import PREFIX, Sealer
from kizuna.errors import Conflict


def test_a_sealed_token_opens_with_the_same_key_file_only_for_its_transfer(tmp_path: Path) -> None:
    generate_key_file(str(tmp_path / "riken.pem"))
    generate_key_file(str(tmp_path / "other.pem"))
    sealed = Sealer.from_key_file(str(tmp_path / "riken.pem")).seal("secret-token", "urn:transfer:1")
    assert sealed.startswith(PREFIX) and "secret-token" not in sealed
    # A restart reading the same key file opens it; another key or another transfer does not.
    assert Sealer.from_key_file(str(tmp_path / "riken.pem")).open(sealed, "urn:transfer:1") == "secret-token"
    assert Sealer.from_key_file(str(tmp_path / "riken.pem")).open(sealed, "urn:transfer:2") is None
    assert Sealer.from_key_file(str(tmp_path / "other.pem")).open(sealed, "urn:transfer:1") is None
    assert Sealer.from_key_file(None).open(sealed, "urn:transfer:1") is None
    assert Sealer.from_key_file(None).open("secret-token", "urn:transfer:1") is None, "plain text is refused"


def test_seals_differ_each_time() -> None:
    sealer = Sealer.from_key_file(None)
    assert sealer.seal("t", "x") != sealer.seal("t", "x")


def record(sealed: str) -> dict:
    return {
        "id": "urn:transfer:1",
        "role": "consumer",
        "state": "STARTED",
        "dataAddress": {
            "endpoint": "http://provider.example/dsp/data",
            "endpointProperties": [{"name": "authorization", "value": sealed}],
        },
    }


def test_a_pull_opens_the_token_or_says_why_it_cannot() -> None:
    sealer = Sealer.from_key_file(None)
    url, token = transfer.pull_address(record(sealer.seal("tok", "urn:transfer:1")), "entities", sealer)
    assert (url, token) == ("http://provider.example/dsp/data/entities", "tok")
    with pytest.raises(Conflict, match="sealed with another key"):
        transfer.pull_address(
            record(Sealer.from_key_file(None).seal("tok", "urn:transfer:1")), "entities", sealer
        )
