"""What access control costs: retrieve-by-id and a type query over 100,000 entities, measured
with wrk, as an admin and as a subject who may read 10% of them, each as a ratio to the same
requests on the same store with ``--auth none``.

The bench mints its own tokens from a key it generates (``--auth oidc --oidc-jwks FILE``). The
admin creates 90% of the street lights, the ``reader`` subject (a creator) the other 10%, spread
evenly, so that the reader may read exactly the ones it owns (the filter runs inside the query).
A second node serves the same store with ``--auth none`` beside it, and the same requests run
without credentials. The runs interleave (none, admin, reader, for each request, ``--rounds``
times) and each figure is the median of its rounds: on a shared machine throughput drifts by
tens of percent within minutes, and measuring one configuration after the other would measure
the drift. wrk needs to be on PATH (Debian: ``apt-get install wrk``).

    .venv/bin/python bench/access.py [--entities 100000] [--seconds 5] [--rounds 5] \
        [--connections 16] [--store postgresql]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import RSAKey

import _wrk
from _server import add_store_option, backing_store, machine, scratch, serve

BASE = "/ngsi-ld/v1"
ISSUER = "https://idp.bench.example/realms/kizuna"
ROW = "{:<34} {:>10} {:>9} {:>10} {:>8}"
# Picks one of the paths wrk was given (one per line in PATHS) at random, with the headers.
SCRIPT = """
local paths = {}
for line in io.lines(os.getenv("PATHS")) do paths[#paths + 1] = line end
local token = os.getenv("TOKEN")
if token ~= "" then wrk.headers["Authorization"] = "Bearer " .. token end
request = function()
  return wrk.format("GET", paths[math.random(#paths)])
end
"""


def token(key: RSAKey, subject: str, roles: list[str]) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": "kizuna",
        "sub": subject,
        "iat": now,
        "exp": now + 7200,
        "realm_access": {"roles": roles},
    }
    return jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key, algorithms=["RS256"])


def light(n: int) -> dict[str, Any]:
    return {
        "id": f"urn:ngsi-ld:Streetlight:a-{n:06d}",
        "type": "Streetlight",
        "status": {"type": "Property", "value": "ok" if n % 3 else "defectiveLamp"},
        "circuit": {"type": "Property", "value": f"C-{n % 40}"},
    }


def load(port: int, total: int, admin: str, reader: str) -> float:
    """Every tenth light is the reader's, in batches of 100 so that the reader's lights are
    spread through the store's order as well (the first page finds them as it would in a city's
    mixed data, not after 900 of another owner's); seconds taken."""
    start = time.perf_counter()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120.0) as client:
        for chunk in range(0, total, 100):
            numbers = range(chunk, min(chunk + 100, total))
            for owner, mine in ((admin, False), (reader, True)):
                batch = [light(n) for n in numbers if (n % 10 == 0) == mine]
                response = client.post(
                    f"{BASE}/entityOperations/create",
                    json=batch,
                    headers={"Authorization": f"Bearer {owner}"},
                )
                if response.status_code != 201:
                    raise SystemExit(f"bench: batch create: {response.status_code} {response.text[:200]}")
    return time.perf_counter() - start


def wrk(port: int, paths: Path, bearer: str, seconds: float, connections: int, tmp: Path) -> _wrk.Measurement:
    """Requests/s and latencies of GETs of random ``paths``; every answer must be 200."""
    return _wrk.measure(port, SCRIPT, seconds, connections, tmp, {"PATHS": str(paths), "TOKEN": bearer})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--entities", type=int, default=100_000, help="street lights to load (default 100000)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved runs of each kind (default 5)")
    _wrk.add_options(parser, seconds=5.0, connections=16)
    add_store_option(parser)
    args = parser.parse_args()
    _wrk.require()
    if args.entities < 1000:
        parser.error("--entities must be at least 1000")

    key = RSAKey.generate_key(2048, parameters={"kid": "bench"})
    admin, reader = token(key, "root", ["kizuna-admin"]), token(key, "reader", ["kizuna-creator"])
    with scratch("kizuna-bench-access-") as tmp, backing_store(args.store, tmp) as store:
        jwks = tmp / "jwks.json"
        jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
        # Ids the reader may read (every tenth) and ids anyone else reads: the same kind of row.
        readable = tmp / "readable.txt"
        readable.write_text(
            "".join(
                f"{BASE}/entities/urn:ngsi-ld:Streetlight:a-{n:06d}\n" for n in range(0, args.entities, 10)
            )
        )
        # The first page, as a console or a dashboard asks for it.
        types = tmp / "types.txt"
        types.write_text(f"{BASE}/entities?type=Streetlight&limit=20\n")
        oidc = [
            "--auth",
            "oidc",
            "--oidc-issuer",
            ISSUER,
            "--oidc-audience",
            "kizuna",
            "--oidc-jwks",
            str(jwks),
        ]
        runs: dict[str, list[_wrk.Measurement]] = {}
        with serve(store, tmp, extra=oidc) as port:
            took = load(port, args.entities, admin, reader)
            store.analyze()
            with serve(store, tmp, extra=["--auth", "none"]) as open_port:
                for _ in range(args.rounds):
                    for what, paths in (("retrieve by id", readable), ("type query, first 20", types)):
                        for who, at, bearer in (
                            ("--auth none", open_port, ""),
                            ("admin", port, admin),
                            ("reader (10%)", port, reader),
                        ):
                            measured = wrk(at, paths, bearer, args.seconds, args.connections, tmp)
                            runs.setdefault(f"{what}, {who}", []).append(measured)
        results = {
            key: (statistics.median(m.rate for m in rs), statistics.median(m.p50 for m in rs))
            for key, rs in runs.items()
        }
        where = machine()

    print(
        f"kizuna access bench on {store.description}: {args.entities} street lights loaded in {took:.1f} s; "
        f"wrk, {args.connections} connections, median of {args.rounds} interleaved {args.seconds:g} s runs,"
        f" 1 server worker per node, {where}"
    )
    print(ROW.format("requests", "req/s", "p50 ms", "ratio", "p50 ratio"))
    for what in ("retrieve by id", "type query, first 20"):
        base_rate, base_p50 = results[f"{what}, --auth none"]
        for who in ("--auth none", "admin", "reader (10%)"):
            rate, p50 = results[f"{what}, {who}"]
            print(
                ROW.format(
                    f"{what}, {who}",
                    f"{rate:.0f}",
                    f"{p50:.2f}",
                    f"{rate / base_rate:.2f}",
                    f"{p50 / base_p50:.2f}",
                )
            )


if __name__ == "__main__":
    main()
