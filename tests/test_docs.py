"""The README and config.example.env stay true to the code."""

from __future__ import annotations

import re
import subprocess

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


MAKEFILE = (ROOT / "Makefile").read_text(encoding="utf-8")
TARGETS = re.findall(r"^([a-z-]+):.*## ", MAKEFILE, re.M)


@pytest.mark.parametrize("target", [t for t in TARGETS if t != "help"])
def test_every_make_target_is_in_the_readme(target: str) -> None:
    assert f"make {target}" in README


def test_every_make_command_the_readme_or_a_message_names_exists() -> None:
    messages = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "outreach").rglob("*.py"))
    named = set(re.findall(r"`make ([a-z-]+)", README + messages))
    assert named - set(TARGETS) == set()
    assert {"send", "inbox"} <= named


@pytest.mark.parametrize(
    ("asked", "runs"),
    [
        (["send", "ARGS=--retry-bounced"], "/outreach send --retry-bounced"),
        (["report", "ARGS=--format html --out report.html"], "/outreach report --format html"),
        (["test-send", "TO=you@example.org"], '/outreach test-send --to "you@example.org"'),
    ],
)
def test_options_reach_the_command_through_make(asked: list[str], runs: str) -> None:
    shown = subprocess.run(
        ["make", "--dry-run", "--always-make", "--no-print-directory", *asked],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert runs in shown.splitlines()[-1]


def test_a_test_send_without_an_address_says_how_to_give_one() -> None:
    done = subprocess.run(
        ["make", "--no-print-directory", "test-send", "STAMP="],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "make test-send TO=you@your-organisation.org" in done.stderr
