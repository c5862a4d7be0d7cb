"""Whether a process on this host still runs: the dispatcher frees a dead process's leases, and
a scrape drops a killed worker's live gauges, by the pid each left behind."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it runs
        return True
    return True
