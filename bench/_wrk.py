"""wrk, the native load generator every throughput bench measures with.

One thread (the server under test shares the machine's cores), ``connections`` keep-alive
connections, a Lua script that makes the requests; every answer must be 2xx, or the bench
stops with wrk's report.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path


def require() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("bench: wrk is not installed (Debian: apt-get install wrk)")


def measure(
    port: int,
    script: str,
    seconds: float,
    connections: int,
    tmp: Path,
    env: Mapping[str, str] | None = None,
) -> tuple[float, float]:
    """(requests/s, p50 ms) of what ``script`` (Lua) asks of the node on ``port``."""
    path = tmp / "wrk.lua"
    path.write_text(script)
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(path)]
    done = subprocess.run(
        [*command, f"http://127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        env={**(env or {}), "PATH": "/usr/bin:/bin"},
        check=True,
    )
    out = done.stdout
    if "Non-2xx" in out:
        raise SystemExit(f"bench: wrk saw error answers:\n{out}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    if rate is None or p50 is None:
        raise SystemExit(f"bench: cannot read wrk's report:\n{out}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p50.group(2)]
    return float(rate.group(1)), float(p50.group(1)) * scale
