"""The ``kizuna`` command."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import sys
from dataclasses import asdict, fields

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
    args = parser.parse_args(argv)
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

    logging.basicConfig(
        level=settings.log_level.upper(),
        format='{"time":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","message":"%(message)s"}',
        stream=sys.stderr,
    )
    try:
        _, warning = access_mode(settings)
    except ValueError as error:
        raise SystemExit(f"kizuna: {error}") from None
    if warning:
        logging.getLogger("kizuna").warning(warning)
    # The factory re-reads the settings from the environment in each worker process.
    for name, value in _as_env(settings).items():
        import os

        os.environ[name] = value
    if settings.http_server == "granian":
        _serve_granian(settings)
        return
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
    since the app's own work is single-threaded per process."""
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
    ).serve()


def _as_env(settings: Settings) -> dict[str, str]:
    return {"KIZUNA_" + k.upper(): str(v) for k, v in asdict(settings).items() if v is not None}


if __name__ == "__main__":
    main()
