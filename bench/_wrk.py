"""wrk, the native load generator every throughput bench measures with.

One thread (the server under test shares the machine's cores), ``connections`` keep-alive
connections, a Lua script that makes the requests; every answer must be 2xx, or the bench
stops with wrk's report.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple


class Measurement(NamedTuple):
    rate: float  # requests/s
    p50: float  # ms
    p99: float  # ms


def add_options(parser: argparse.ArgumentParser, seconds: float, connections: int) -> None:
    """``--seconds`` and ``--connections`` of every wrk bench, each bench with its own defaults."""
    parser.add_argument(
        "--seconds", type=float, default=seconds, help=f"duration of each wrk run (default {seconds:g})"
    )
    parser.add_argument(
        "--connections", type=int, default=connections, help=f"wrk connections (default {connections})"
    )


def require() -> None:
    """wrk on the PATH; installed from Debian's packages if it is missing and we may."""
    if shutil.which("wrk") is not None:
        return
    if shutil.which("apt-get") is not None and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False, capture_output=True)
    if shutil.which("wrk") is None:
        raise SystemExit("bench: wrk is not installed (Debian: apt-get install wrk)")


def measure(
    port: int,
    script: str,
    seconds: float,
    connections: int,
    tmp: Path,
    env: Mapping[str, str] | None = None,
) -> Measurement:
    """Requests/s and latency percentiles of what ``script`` (Lua) asks of the node on ``port``."""
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
    if rate is None:
        raise SystemExit(f"bench: cannot read wrk's report:\n{out}")
    return Measurement(float(rate.group(1)), _percentile(out, "50"), _percentile(out, "99"))


def _percentile(report: str, which: str) -> float:
    """A latency percentile of wrk's ``--latency`` report, in ms."""
    found = re.search(rf"\b{which}%\s+([\d.]+)(us|ms|s)\b", report)
    if found is None:
        raise SystemExit(f"bench: cannot read wrk's report:\n{report}")
    return float(found.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[found.group(2)]
