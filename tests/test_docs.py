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
