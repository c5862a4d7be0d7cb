"""The ``kizuna`` command."""

from __future__ import annotations

import argparse
import logging
import sys

from kizuna.config import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="kizuna", description="Kizuna data-space node")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the node (NGSI-LD API, health)")
    serve.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 1026)")
    serve.add_argument(
        "--store",
        help="sqlite:///path/file.db (default sqlite:///var/kizuna.db) or postgresql://user@host:port/db",
    )
    serve.add_argument("--context-map", help="JSON file: remote @context URL -> local file")
    serve.add_argument("--workers", type=int, help="worker processes (default 1)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--max-body-bytes", type=int, help="largest accepted request body")
    serve.add_argument("--history-retention", help="delete attribute history older than this (e.g. 90d)")
    serve.add_argument("--temporal-instance-limit", type=int, help="instances per attribute and answer")
    serve.add_argument(
        "--forward-timeout", type=float, help="seconds a context source has to answer (default 3)"
    )
    serve.add_argument(
        "--registration-cache-seconds",
        type=float,
        help="seconds a process may use the context source registrations it read (default 1)",
    )
    serve.add_argument("--participant-id", help="this node's participant id in the data space")
    serve.add_argument(
        "--public-url", help="URL counterparties reach this node at (default http://host:port)"
    )
    serve.add_argument(
        "--dsp-auth", choices=["signed", "none"], help="authenticate DSP requests (default signed)"
    )
    serve.add_argument("--dsp-key-file", help="Ed25519 private key (PEM) signing this node's DSP requests")
    serve.add_argument(
        "--dsp-trusted-participants", help="JSON file: participant id -> publicKey, region, ..."
    )
    serve.add_argument("--dsp-token-lifetime", type=float, help="seconds a pull-transfer token is valid")
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


def serve_node(settings: Settings) -> None:
    import uvicorn

    logging.basicConfig(
        level=settings.log_level.upper(),
        format='{"time":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","message":"%(message)s"}',
        stream=sys.stderr,
    )
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
