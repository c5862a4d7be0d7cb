"""docs/settings.md and the ``kizuna serve`` flags are derived from Settings: fail when they drift."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

import pytest

from kizuna.cli import add_settings_flags
from kizuna.config import Settings, flag_name, settings_markdown

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_settings_md_is_generated_from_settings() -> None:
    assert (DOCS / "settings.md").read_text() == settings_markdown(), (
        "docs/settings.md is stale: run `python -m kizuna.config > docs/settings.md`"
    )


@pytest.fixture(scope="module")
def serve_flags() -> set[str]:
    parser = argparse.ArgumentParser()
    add_settings_flags(parser)
    return {option for action in parser._actions for option in action.option_strings}


@pytest.mark.parametrize("name", [f.name for f in fields(Settings)])
def test_every_setting_has_a_flag_and_help(name: str, serve_flags: set[str]) -> None:
    f = next(f for f in fields(Settings) if f.name == name)
    assert flag_name(f) in serve_flags
    assert f.metadata.get("help"), f"Settings.{name} has no help text"


def test_every_setting_is_documented() -> None:
    text = (DOCS / "settings.md").read_text()
    for f in fields(Settings):
        assert f"`{flag_name(f)}`" in text


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def _undocumented(parser: argparse.ArgumentParser, text: str) -> tuple[set[str], list[str]]:
    """(the command's options, those ``text`` does not name in backquotes)."""
    options = {o for a in parser._actions for o in a.option_strings if o.startswith("--")}
    options.discard("--help")
    return options, sorted(o for o in options if f"`{o}`" not in text)


@pytest.mark.parametrize("command", ["duisburg", "risk"])
def test_every_simulation_option_is_documented(command: str) -> None:
    """docs/simulator.md is the manual of `kizuna simulate duisburg` and `kizuna risk`."""
    from kizuna.cli import add_simulation_commands

    root = argparse.ArgumentParser()
    add_simulation_commands(root.add_subparsers())
    parsers = _subcommands(root)
    parsers.update(_subcommands(parsers["simulate"]))
    options, missing = _undocumented(parsers[command], (DOCS / "simulator.md").read_text())
    assert len(options) > 5 and not missing, f"docs/simulator.md does not document {missing}"


def test_every_migrate_option_is_documented() -> None:
    """docs/operations.md is the manual of `kizuna migrate`."""
    from kizuna.cli import add_migrate_command

    root = argparse.ArgumentParser()
    add_migrate_command(root.add_subparsers())
    options, missing = _undocumented(_subcommands(root)["migrate"], (DOCS / "operations.md").read_text())
    assert len(options) == 4 and not missing, f"docs/operations.md does not document {missing}"


def test_every_cadde_route_is_documented() -> None:
    """docs/interop-japan.md is the manual of the CADDE routes, provider and consumer."""
    from kizuna.cadde.routes import CaddeConsumerApi, CaddeProviderApi
    from kizuna.paths import MANAGEMENT

    provider = [r.path for r in CaddeProviderApi(None, None).routes()]  # type: ignore[arg-type]
    consumer = [MANAGEMENT + r.path for r in CaddeConsumerApi(None).routes()]  # type: ignore[arg-type]
    text = (DOCS / "interop-japan.md").read_text()
    missing = [path for path in provider + consumer if f" {path}" not in text]
    assert len(provider + consumer) == 4 and not missing, f"docs/interop-japan.md does not document {missing}"
