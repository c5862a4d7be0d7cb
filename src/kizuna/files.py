"""Files only the node's user may read: its signing key and its SQLite store.

A key written and chmod-ed afterwards is readable by everyone between the two calls, and a
store created with the process umask (usually 022) is readable by every local user. Both are
created with mode 0600 from the first byte instead.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_private(path: str | Path, data: bytes, *, force: bool = False) -> None:
    """Write ``data`` to ``path`` (mode 0600) all at once: readers see the old file or the whole
    new one. An existing file is kept (FileExistsError) unless ``force``."""
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if force:
            os.replace(temporary, target)
        else:
            os.link(temporary, target)  # fails if the target exists, atomically
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def create_private(path: str | Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (SQLite then opens it as it is and
    gives its -wal and -shm files the same mode)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
