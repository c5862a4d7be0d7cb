"""The ``kizuna`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import fields

from kizuna.config import Settings, env_name, flag_name, kind_of


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="kizuna", description="Kizuna data-space node")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the node (NGSI-LD API, health)")
    add_settings_flags(serve)
    keygen = commands.add_parser("keygen", help="create an Ed25519 key file for DSP request signing")
    keygen.add_argument("--key-file", required=True, help="where to write the private key (PEM)")
    args = parser.parse_args(argv)
    if args.command == "keygen":
        from kizuna.dataspace.auth import generate_key_file

        print(generate_key_file(args.key_file))  # the public key, for counterparties' trusted lists
        return
    settings = Settings.from_env(**{k: v for k, v in vars(args).items() if k != "command"})
    if args.command == "serve":
        serve_node(settings)


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


def serve_node(settings: Settings) -> None:
    import uvicorn

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
    uvicorn.run(
        "kizuna.app:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        access_log=False,
        proxy_headers=False,
        server_header=False,
    )


def _as_env(settings: Settings) -> dict[str, str]:
    from dataclasses import asdict

    return {"KIZUNA_" + k.upper(): str(v) for k, v in asdict(settings).items() if v is not None}


if __name__ == "__main__":
    main()
