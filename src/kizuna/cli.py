"""The ``kizuna`` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import sys
from collections.abc import Iterator
from dataclasses import asdict, fields
from typing import Any

import orjson

from kizuna.config import Settings, env_name, flag_name, kind_of


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="kizuna", description="Kizuna data-space node")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the node (NGSI-LD API, health)")
    add_settings_flags(serve)
    keygen = commands.add_parser("keygen", help="create an Ed25519 key file for DSP request signing")
    keygen.add_argument("--key-file", required=True, help="where to write the private key (PEM)")
    keygen.add_argument("--force", action="store_true", help="replace an existing key file")
    add_apikey_commands(commands)
    add_simulation_commands(commands)
    for name, what in (
        ("backup", "copy a store, while its node serves, to FILE (docs/operations.md)"),
        ("restore", "load FILE, made by kizuna backup, into a new, empty store"),
    ):
        command = commands.add_parser(name, help=what)
        command.add_argument("--store", required=True, help="the store URL, as kizuna serve --store")
        command.add_argument("file", help="the backup file (SQLite: a database; PostgreSQL: pg_dump's)")
    add_bulk_commands(commands)
    add_migrate_command(commands)
    args = parser.parse_args(argv)
    if args.command == "migrate":
        from kizuna.store.migrate import migrate

        migrate(args.source, args.target, args.batch_size, args.stop_after)
        return
    if args.command in ("import", "export"):
        run_bulk(args)
        return
    if args.command in ("backup", "restore"):
        from pathlib import Path

        from kizuna.store import backup

        (backup.backup if args.command == "backup" else backup.restore)(args.store, Path(args.file))
        return
    if args.command in ("simulate", "risk"):
        run_application(args)
        return
    if args.command == "apikey":
        asyncio.run(apikey(args))
        return
    if args.command == "keygen":
        from kizuna.dataspace.auth import generate_key_file

        try:
            public = generate_key_file(args.key_file, force=args.force)
        except FileExistsError:
            parser.exit(1, f"{args.key_file} exists: it is this node's identity; --force replaces it\n")
        print(public)  # the public key, for counterparties' trusted lists
        return
    settings = Settings.from_env(**{k: v for k, v in vars(args).items() if k != "command"})
    if args.command == "serve":
        serve_node(settings)


def add_apikey_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser("apikey", help="create, list and revoke API keys (docs/security.md)")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="print a new key (shown once) as JSON")
    create.add_argument("--subject", required=True, help="the subject requests with this key act as")
    create.add_argument("--role", action="append", default=[], help="a role of the subject (repeatable)")
    create.add_argument("--tenant", help="the one tenant the key works for (default: all)")
    create.add_argument("--expires", help="lifetime, e.g. 90d, 12h or P1Y (default: never)")
    actions.add_parser("list", help="print every key's record (never the key) as JSON lines")
    revoke = actions.add_parser("revoke", help="stop a key working (within 2 s on running nodes)")
    revoke.add_argument("id", help="the key's id, as printed by create and list")
    for action in actions.choices.values():
        action.add_argument("--store", required=True, help="the node's store URL")


async def apikey(args: argparse.Namespace) -> None:
    from kizuna.access.apikeys import ApiKeys
    from kizuna.ngsild.temporal_params import parse_retention
    from kizuna.store import open_store

    store = open_store(args.store)
    await store.open()
    try:
        keys = ApiKeys(store)
        by = _operator()
        if args.action == "create":
            lifetime = parse_retention(args.expires) if args.expires else None
            record, key = await keys.create(by, args.subject, tuple(args.role), args.tenant, lifetime)
            print(orjson.dumps({"id": record.id, "key": key, "subject": record.subject}).decode())
        elif args.action == "list":
            for record in await keys.all():
                shown = {k: v for k, v in asdict(record).items() if k not in ("salt", "digest")}
                print(orjson.dumps(shown).decode())
        elif not await keys.revoke(by, args.id):
            raise SystemExit(f"kizuna: no API key {args.id}")
    finally:
        await store.close()


def add_simulation_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``kizuna simulate duisburg`` and ``kizuna risk`` (docs/simulator.md, docs/risk.md)."""
    simulate = commands.add_parser("simulate", help="drive a node as a city's IoT platform would")
    cities = simulate.add_subparsers(dest="city", required=True)
    duisburg = cities.add_parser("duisburg", help="Duisburg in a box (docs/simulator.md)")
    duisburg.add_argument("--scale", choices=("small", "city"), default="small", help="small or city")
    duisburg.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second")
    duisburg.add_argument(
        "--duration", help="simulated time to run, e.g. 2h, 90m, 1d (default: until stopped)"
    )
    duisburg.add_argument("--start", help="simulated start, ISO 8601 (default: now)")
    duisburg.add_argument("--seed", type=int, default=7, help="the same seed makes the same city")
    duisburg.add_argument("--interval", type=float, default=1.0, help="real seconds between writes")
    duisburg.add_argument(
        "--lockstep",
        action="store_true",
        help="advance --interval x --speed simulated seconds per write, as fast as the node takes them",
    )
    duisburg.add_argument(
        "--fault-rate", type=float, default=0.001, help="faults per light per simulated day"
    )
    duisburg.add_argument("--repair-hours", type=float, default=48.0, help="mean simulated hours to a repair")
    duisburg.add_argument("--accidents-per-hour", type=float, help="city-wide (default: the scale's)")
    risk = commands.add_parser("risk", help="road segment risk from a node's live data (docs/risk.md)")
    risk.add_argument(
        "--listen-port", type=int, default=0, help="loopback port for notifications (default: free)"
    )
    for command in (duisburg, risk):
        command.add_argument("--url", default="http://127.0.0.1:1026", help="the node's base URL")
        command.add_argument("--tenant", help="NGSILD-Tenant to write to (default: the default tenant)")
        command.add_argument("--api-key", help="an API key (X-API-Key) for a node with --auth oidc")
        command.add_argument("--token", help="a bearer token for a node with --auth oidc")
        command.add_argument(
            "--batch-size", type=int, default=1000, help="entities per batch (<= the node's limit)"
        )


def add_bulk_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``kizuna import`` and ``kizuna export`` (docs/operations.md)."""
    load = commands.add_parser("import", help="batch upsert entities from JSON Lines or a JSON array")
    load.add_argument("file", help="the file to read, or - for standard input")
    dump = commands.add_parser("export", help="write entities as JSON Lines to standard output")
    dump.add_argument("--type", action="append", required=True, help="an entity type (repeatable)")
    dump.add_argument("--context", help="the @context to compact with (a URL; default: the core context)")
    for command in (load, dump):
        command.add_argument("--url", default="http://127.0.0.1:1026", help="the node's base URL")
        command.add_argument("--tenant", help="NGSILD-Tenant (default: the default tenant)")
        command.add_argument("--api-key", help="an API key (X-API-Key) for a node with --auth oidc")
        command.add_argument("--token", help="a bearer token for a node with --auth oidc")
        command.add_argument("--batch-size", type=int, default=1000, help="entities per request")


def add_migrate_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``kizuna migrate`` (docs/operations.md, "Moving to PostgreSQL")."""
    move = commands.add_parser("migrate", help="copy a SQLite store into PostgreSQL, resumably, and check it")
    move.add_argument("--from", dest="source", required=True, help="the SQLite store (its node stopped)")
    move.add_argument("--to", dest="target", required=True, help="the PostgreSQL store, empty or this copy's")
    move.add_argument("--batch-size", type=int, default=5000, help="rows per batch (one commit each)")
    move.add_argument("--stop-after", type=int, help="stop after N batches; run again to go on")


def run_bulk(args: argparse.Namespace) -> None:
    from kizuna import bulk
    from kizuna.client import NodeError, Target

    target = Target(args.url.rstrip("/"), args.tenant, args.api_key, args.token, args.batch_size)
    try:
        if args.command == "export":
            out = sys.stdout.buffer
            count = asyncio.run(bulk.export_entities(target, args.type, out, context=args.context))
            print(f"kizuna export: {count} entities", file=sys.stderr)
            return
        with sys.stdin.buffer if args.file == "-" else open(args.file, "rb") as stream:
            report = asyncio.run(bulk.import_entities(target, stream))
    except (NodeError, ValueError, OSError) as error:
        raise SystemExit(f"kizuna {args.command}: {error}") from None
    for line, reason in report.rejected:
        print(f"kizuna import: line {line}: {reason}", file=sys.stderr)
    print(f"kizuna import: {report.committed} committed, {len(report.rejected)} rejected", file=sys.stderr)
    if report.rejected:
        raise SystemExit(2)


def run_application(args: argparse.Namespace) -> None:
    from kizuna.client import NodeError, Target

    target = Target(args.url.rstrip("/"), args.tenant, args.api_key, args.token, args.batch_size)
    try:
        if args.command == "risk":
            from kizuna.risk.service import RiskService

            asyncio.run(RiskService(target, args.listen_port).run())
            return
        progress = asyncio.run(_simulate(args, target))
    except NodeError as error:
        raise SystemExit(f"kizuna {args.command}: {error}") from None
    except KeyboardInterrupt:
        return
    if progress.errors:
        raise SystemExit(
            f"kizuna simulate: the node refused {progress.errors} writes: {progress.first_error}"
        )


async def _simulate(args: argparse.Namespace, target: Any) -> Any:
    from datetime import UTC, datetime

    from kizuna.sim.city import City, Options
    from kizuna.sim.driver import Driver

    start = datetime.fromisoformat(args.start) if args.start else datetime.now(UTC).replace(microsecond=0)
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    options = Options(args.scale, args.seed, args.fault_rate, args.repair_hours, args.accidents_per_hour)
    duration = _duration(args.duration) if args.duration else None
    return await Driver(
        City(options, start), target, args.speed, duration, args.interval, lockstep=args.lockstep
    ).run()


def _duration(text: str) -> Any:
    from datetime import timedelta

    from kizuna.ngsild.temporal_params import parse_retention

    try:
        return timedelta(seconds=parse_retention(text))
    except Exception:
        raise SystemExit(f"kizuna simulate: --duration {text!r}: say e.g. 2h, 90m, 1d or PT2H") from None


def _operator() -> str:
    """Who the audit trail names for a key made or revoked from the command line."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return "cli"


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per Settings field, with the field's help text (see docs/settings.md)."""
    for f in fields(Settings):
        parser.add_argument(
            flag_name(f),
            dest=f.name,
            type=kind_of(f),
            choices=f.metadata.get("choices"),
            help=f"{f.metadata['help']} (env {env_name(f)})",
        )


APP_FACTORY = "kizuna.app:app_from_env"


def serve_node(settings: Settings) -> None:
    from kizuna.access.authenticator import access_mode
    from kizuna.processes import SUPERVISOR_ENV, log_to_stderr

    log_to_stderr(settings)
    try:
        _, warning = access_mode(settings)
    except ValueError as error:
        raise SystemExit(f"kizuna: {error}") from None
    if warning:
        logging.getLogger("kizuna").warning(warning)
    import os

    from kizuna.delivery_process import delivery_process

    # The factory re-reads the settings from the environment in each worker process.
    for name, value in _as_env(settings).items():
        os.environ[name] = value
    os.environ[SUPERVISOR_ENV] = str(os.getpid())  # see kizuna.processes.die_with_supervisor
    with _metrics_dir(settings), delivery_process(settings):
        if settings.http_server == "granian":
            _serve_granian(settings)
        else:
            _serve_uvicorn(settings)


@contextlib.contextmanager
def _metrics_dir(settings: Settings) -> Iterator[None]:
    """With several processes (workers, the delivery process), a private directory where each
    keeps its counts (prometheus_client's multiprocess mode), so that a scrape answered by any of
    them adds up all; it goes with the node, since the counts of a node that stopped mean nothing
    to the next."""
    import os
    import shutil
    import tempfile

    if (settings.workers <= 1 and settings.notify_delivery == "inline") or settings.metrics != "on":
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)  # one process counts in memory
        yield
        return

    path = tempfile.mkdtemp(prefix="kizuna-metrics-")  # mode 0700
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    try:
        yield
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _serve_uvicorn(settings: Settings) -> None:
    import uvicorn

    uvicorn.run(
        APP_FACTORY,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        access_log=False,
        proxy_headers=False,
        server_header=False,
    )


def _serve_granian(settings: Settings) -> None:
    """The same app under granian: its HTTP parsing and socket I/O are Rust, so the event loop
    spends more of its time in Kizuna (docs/benchmarks.md). One runtime thread per worker,
    since the app's own work is single-threaded per process. A worker that dies is replaced,
    as uvicorn replaces its own; a worker that has not stopped 5 s after the node was told to
    stop is killed: one told while still starting never stopped, and the node waited for it."""
    from granian.constants import Interfaces, Loops
    from granian.log import LogLevels
    from granian.server import Server

    Server(
        APP_FACTORY,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        factory=True,
        workers=settings.workers,
        loop=Loops.uvloop,
        websockets=False,
        log_level=LogLevels(settings.log_level),
        log_access=False,
        respawn_failed_workers=True,
        workers_kill_timeout=5,
    ).serve()


def _as_env(settings: Settings) -> dict[str, str]:
    return {"KIZUNA_" + k.upper(): str(v) for k, v in asdict(settings).items() if v is not None}


if __name__ == "__main__":
    main()
