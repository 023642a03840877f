"""Shared fixtures: a project folder to run in, the seed letter, the CLI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SEED = Path(__file__).resolve().parent / "data" / "seed-letter.txt"


@dataclass(frozen=True)
class Seed:
    """The letter as the coalition wrote it, without its page layout."""

    date: str
    salutation: str
    paragraphs: list[str]
    footnote: str
    closing: str
    signatories: list[str]


def squash(text: str) -> str:
    """Whitespace folded to single spaces: layout is not part of the words."""
    return re.sub(r"\s+", " ", text).strip()


def read_seed() -> Seed:
    blocks = [squash(b) for b in re.split(r"\n\s*\n", SEED.read_text(encoding="utf-8"))]
    blocks = [b for b in blocks if b]
    date, salutation = blocks[0], blocks[1]
    closing_at = blocks.index("Sincerely,")
    body = blocks[2:closing_at]
    # The footnote stands on its own page-bottom block: "1 Often referred …".
    footnote_block = next(b for b in body if b.startswith("1 Often referred"))
    paragraphs = [b for b in body if b != footnote_block]
    signatories = re.findall(r"^\s*\d+\. (.+?)\s*$", SEED.read_text(encoding="utf-8"), re.M)
    return Seed(
        date=date,
        salutation=salutation,
        paragraphs=paragraphs,
        footnote=footnote_block.removeprefix("1 "),
        closing="Sincerely,",
        signatories=signatories,
    )


@pytest.fixture(scope="session")
def seed() -> Seed:
    return read_seed()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the shipped contacts and templates in a folder of its own.

    Tests run in it with no ``.env`` and none of the developer's settings.
    """
    shutil.copy(ROOT / "contacts.csv", tmp_path / "contacts.csv")
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("SMTP_", "MAIL_", "SEND_")) or name in (
            "CAMPAIGN",
            "CONTACTS_FILE",
            "TEMPLATES_DIR",
            "PREVIEW_DIR",
            "LOG_DIR",
            "LETTER_DATE",
        ):
            monkeypatch.delenv(name)
    return tmp_path


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str


RunCli = Callable[..., Result]


@pytest.fixture
def run_cli(project: Path) -> RunCli:
    """Run the real ``outreach`` command in a subprocess, as a user would."""

    def run(
        *args: str, env: Mapping[str, str] | None = None, input: str | None = None
    ) -> Result:
        environment = {
            k: v for k, v in os.environ.items() if not k.startswith(("SMTP_", "MAIL_", "SEND_"))
        }
        environment.update({"COLUMNS": "200", "NO_COLOR": "1", **(env or {})})
        done = subprocess.run(
            [sys.executable, "-m", "outreach", *args],
            cwd=project,
            env=environment,
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    return run


def write_csv(path: Path, text: str, encoding: str = "utf-8") -> Path:
    """Write a contacts file exactly as given (line ends included)."""
    path.write_bytes(text.encode(encoding))
    return path
