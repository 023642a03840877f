"""The README and config.example.env stay true to the code."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from outreach.cli import cli
from outreach.settings import KNOWN_SETTINGS, load_settings
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
EXAMPLE = (ROOT / "config.example.env").read_text(encoding="utf-8")
COMMANDS = sorted(cli.commands)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_and_is_documented(command: str) -> None:
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0
    assert f"`outreach {command}" in README
    for option in re.findall(r"(--[a-z][a-z-]+)", result.output):
        if option != "--help":
            assert option in README, f"outreach {command} {option} is not in the README"


@pytest.mark.parametrize("setting", sorted(KNOWN_SETTINGS))
def test_every_setting_is_documented_in_both_places(setting: str) -> None:
    assert f"| `{setting}` |" in README
    assert re.search(rf"^{setting}=", EXAMPLE, re.M), f"{setting} is not in config.example.env"


def test_the_example_settings_load() -> None:
    settings = load_settings(environ={}, env_file=ROOT / "config.example.env")
    assert settings.smtp_security == "starttls"
    assert settings.warnings == ()


@pytest.mark.parametrize(
    "target", ["demo", "test", "preview", "check", "send", "inbox", "report", "lint"]
)
def test_every_make_target_in_the_readme_exists(target: str) -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(rf"^{target}:", makefile, re.M)
    assert f"make {target}" in README
