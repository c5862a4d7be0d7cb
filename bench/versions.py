"""What a change costs: the same requests against two versions of the node, measured with wrk.

Serves the code of ``--before`` (a git revision, exported to a temp dir) and of the working
tree side by side, each on a fresh store of its own loaded with the same ``--entities`` street
lights, both with the project's venv. Then, ``--rounds`` times, each request runs against
before and after in turn (which goes first alternates), and each figure is the median of its
rounds: on a shared machine throughput drifts by tens of percent within minutes, so measuring
one version after the other would measure the drift. The ratio is after / before: about 1.00
means the change cost nothing.

- ``GET /health`` (the HTTP stack alone);
- ``GET /entities/{id}`` of random lights;
- ``GET /entities?type=Streetlight&limit=20`` (the first page);
- ``GET /entities?type=Streetlight&q=powerState=="on"&limit=20`` (a q on the index);
- ``POST /entities`` (a new light each request).

    .venv/bin/python bench/versions.py --before 030efdb [--entities 20000] [--seconds 5] \\
        [--rounds 5] [--connections 16] [--store postgresql]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import httpx

import _wrk
from _city import API, load
from _server import REPOSITORY, add_store_option, backing_store, export, machine, scratch, serve

ROW = "{:<36} {:>10} {:>10} {:>7} {:>10} {:>10}"
GET_ONE_OF = """
local paths = {}
for line in io.lines(os.getenv("PATHS")) do paths[#paths + 1] = line end
request = function() return wrk.format("GET", paths[math.random(#paths)]) end
"""
CREATE = """
local n = 0
local prefix = os.getenv("PREFIX")
request = function()
  n = n + 1
  local body = string.format('{"id":"urn:ngsi-ld:Streetlight:%s-%d","type":"Streetlight",'
    .. '"powerState":{"type":"Property","value":"on"}}', prefix, n)
  return wrk.format("POST", "/ngsi-ld/v1/entities", {["Content-Type"] = "application/json"}, body)
end
"""


def paths_file(tmp: Path, name: str, paths: list[str]) -> dict[str, str]:
    """The environment of :data:`GET_ONE_OF` for ``paths``: a file of them, one per line."""
    file = tmp / f"{name}.txt"
    file.write_text("".join(f"{path}\n" for path in paths))
    return {"PATHS": str(file)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="git revision to compare the working tree with")
    parser.add_argument(
        "--entities", type=int, default=20_000, help="street lights per store (default 20000)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved runs of each (default 5)")
    _wrk.add_options(parser, seconds=5.0, connections=16)
    add_store_option(parser)
    args = parser.parse_args()
    _wrk.require()
    with scratch("kizuna-bench-versions-") as tmp:
        versions = {"before": export(args.before, tmp / "before"), "after": REPOSITORY / "src"}
        for name in versions:
            (tmp / name / "store").mkdir(parents=True, exist_ok=True)
        ids = [f"{API}/entities/urn:ngsi-ld:Streetlight:{'a' * 30}{n:06d}" for n in range(args.entities)]
        requests = [
            ("GET /health", GET_ONE_OF, paths_file(tmp, "health", ["/health"])),
            ("GET /entities/{id}", GET_ONE_OF, paths_file(tmp, "ids", ids)),
            (
                "GET ?type=Streetlight, first 20",
                GET_ONE_OF,
                paths_file(tmp, "page", [f"{API}/entities?type=Streetlight&limit=20"]),
            ),
            (
                'GET ?type=...&q=powerState=="on"',
                GET_ONE_OF,
                paths_file(tmp, "q", [f'{API}/entities?type=Streetlight&q=powerState=="on"&limit=20']),
            ),
            ("POST /entities", CREATE, {}),
        ]
        runs: dict[tuple[str, str], list[_wrk.Measurement]] = {}
        with (
            backing_store(args.store, tmp / "before" / "store") as before_store,
            backing_store(args.store, tmp / "after" / "store") as after_store,
            serve(before_store, tmp / "before", env={"PYTHONPATH": str(versions["before"])}) as before,
            serve(after_store, tmp / "after", env={"PYTHONPATH": str(versions["after"])}) as after,
        ):
            for port, store in ((before, before_store), (after, after_store)):
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300.0) as client:
                    load(client, args.entities)
                store.analyze()
            for round_ in range(args.rounds):
                for name, script, env in requests:
                    # Which goes first alternates: the second of two runs in a row was seen faster.
                    order = (("before", before), ("after", after))
                    for version, port in order if round_ % 2 == 0 else order[::-1]:
                        unique = {**env, "PREFIX": f"{version}-{round_}"}  # new ids for POST
                        measured = _wrk.measure(port, script, args.seconds, args.connections, tmp, unique)
                        runs.setdefault((name, version), []).append(measured)
        where = machine()

    print(
        f"kizuna versions bench: {args.before} (before) against the working tree (after), each on its own"
        f" {before_store.description} with {args.entities} street lights; wrk, {args.connections}"
        f" connections, median of {args.rounds} interleaved {args.seconds:g} s runs, 1 server worker each,"
        f" {where}"
    )
    print(ROW.format("request", "before/s", "after/s", "ratio", "p50 before", "p50 after"))
    for name, _, _ in requests:
        (rate_b, p50_b), (rate_a, p50_a) = (
            (
                statistics.median(m.rate for m in runs[(name, v)]),
                statistics.median(m.p50 for m in runs[(name, v)]),
            )
            for v in ("before", "after")
        )
        print(
            ROW.format(
                name,
                f"{rate_b:.0f}",
                f"{rate_a:.0f}",
                f"{rate_a / rate_b:.2f}",
                f"{p50_b:.2f}",
                f"{p50_a:.2f}",
            )
        )


if __name__ == "__main__":
    main()
