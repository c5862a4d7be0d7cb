"""The delivery process of ``--notify-delivery process``: one more process of the node that only
delivers the notification outbox, so that the workers' event loops serve requests alone.

With 100 matching subscriptions a write costs its worker one outbox row, but delivering it costs
100 notifications' reading, rendering and sending; on the worker's own loop that took most of it
and the writes slowed to a tenth (docs/benchmarks.md). The process runs the same application
(store, contexts, dispatcher) without serving HTTP; the workers match, queue and wake it through
the store (PostgreSQL ``NOTIFY``, the SQLite change feed). Leases, cursors and at-least-once
delivery are those of any process sharing the store (docs/notifications.md)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace

from starlette.applications import Starlette

from kizuna.config import Settings

log = logging.getLogger("kizuna.notify")
RESPAWN_DELAY = 1.0  # seconds before a delivery process that ended is started again
STOP_TIMEOUT = 10.0  # seconds a delivery process has to finish before it is killed


@contextlib.contextmanager
def delivery_process(settings: Settings) -> Iterator[None]:
    """Keep a delivery process running while the node serves, when the settings ask for one.
    It reads its settings from the environment the node set up, and ends with the node however
    the node ends (``die_with_supervisor``)."""
    if settings.notify_delivery != "process":
        yield
        return
    stopping = threading.Event()
    lock = threading.Lock()
    running: list[subprocess.Popen[bytes]] = []

    def keep() -> None:
        while True:
            with lock:
                if stopping.is_set():
                    return
                process = subprocess.Popen([sys.executable, "-m", "kizuna.delivery_process"])
                running[:] = [process]
            code = process.wait()
            if not stopping.is_set():
                log.error("the delivery process ended (exit %s); starting another", code)
                stopping.wait(RESPAWN_DELAY)

    thread = threading.Thread(target=keep, name="kizuna-delivery", daemon=True)
    thread.start()
    try:
        yield
    finally:
        with lock:
            stopping.set()
        for process in running:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
        thread.join(STOP_TIMEOUT)


async def _deliver(app: Starlette) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with app.router.lifespan_context(app):
        await stop.wait()


def main() -> None:
    import uvloop

    from kizuna.app import create_app
    from kizuna.processes import die_with_supervisor, log_to_stderr

    die_with_supervisor()
    # The node's settings, but delivering here, and the metrics port left to the workers.
    settings = replace(Settings.from_env(), notify_delivery="inline", metrics_port=None)
    log_to_stderr(settings)
    uvloop.run(_deliver(create_app(settings)))


if __name__ == "__main__":
    main()
