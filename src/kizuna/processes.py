"""The node's processes: whether one on this host still runs (the dispatcher frees a dead
process's leases, and a scrape drops a killed worker's live gauges, by the pid each left
behind), each ending with the ``kizuna serve`` that started it, and each logging alike."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

from kizuna.config import Settings


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it runs
        return True
    return True


SUPERVISOR_ENV = "KIZUNA_SUPERVISOR_PID"  # set by `kizuna serve` for the workers it spawns
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_supervisor() -> None:
    """In a worker process that the HTTP server spawned, end with the ``kizuna serve`` process
    that spawned it, however that ends. A worker outliving its supervisor keeps the port and the
    store: after a ``kill -9`` of the node the old worker went on answering, and a restarted
    node shared the port with it. Granian runs even one worker as a child process; uvicorn
    does with ``--workers`` 2 or more. Linux only (``prctl``); the app in the supervisor's own
    process (uvicorn, one worker) is left alone."""
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if supervisor is None or int(supervisor) == os.getpid() or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != int(supervisor):  # it ended before the prctl: no signal will come
        os._exit(1)


def log_to_stderr(settings: Settings) -> None:
    """One JSON object per line on stderr, in every process of the node."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format='{"time":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","message":"%(message)s"}',
        stream=sys.stderr,
    )
