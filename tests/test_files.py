"""Private files (kizuna.files): the signing key and the SQLite store are 0600 from the first
byte, and an existing key is never replaced by accident."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from kizuna.cli import main
from kizuna.dataspace.auth import generate_key_file, load_or_create_key, public_key_text
from kizuna.store.sqlite import SqliteStore


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    """The usual umask (022) would make a file created plainly world-readable."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_key_file_is_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "node.pem"
    public = generate_key_file(str(path))
    assert mode(path) == 0o600
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        generate_key_file(str(path))
    assert path.read_bytes() == before
    assert generate_key_file(str(path), force=True) != public
    assert path.read_bytes() != before and mode(path) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["node.pem"]  # no temporary file left behind
    assert public_key_text(load_or_create_key(str(path))) != public


def test_keygen_refuses_to_replace_a_key_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "node.pem"
    main(["keygen", "--key-file", str(path)])
    first = path.read_bytes()
    with pytest.raises(SystemExit) as exited:
        main(["keygen", "--key-file", str(path)])
    assert exited.value.code == 1 and "--force" in capsys.readouterr().err
    assert path.read_bytes() == first
    main(["keygen", "--key-file", str(path), "--force"])
    assert path.read_bytes() != first


def test_a_new_sqlite_store_and_its_journals_are_private(tmp_path: Path) -> None:
    path = tmp_path / "data" / "kizuna.db"

    async def open_and_write() -> None:
        store = SqliteStore(str(path))
        await store.open()
        try:
            await store.insert_document("probe", "t", {"id": "p1"})
            assert {p.name for p in path.parent.iterdir()} >= {"kizuna.db", "kizuna.db-wal"}
            for file in path.parent.iterdir():
                assert mode(file) == 0o600, file
        finally:
            await store.close()

    asyncio.run(open_and_write())
