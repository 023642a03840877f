"""Shared fixtures: a project folder to run in, the seed letter, the CLI."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NoReturn

import pytest
from click.testing import CliRunner
from playwright.sync_api import Browser, sync_playwright

from outreach.cli import cli
from outreach.contacts import Contact
from tests.dnsserver import dns_server
from tests.smtp import SmtpServer, run_server

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
SEED = DATA / "seed-letter.txt"
#: The tests' own contacts: the 195 missions on placeholder addresses, as
#: shipped. Never the project's contacts.csv, which staff fill with the
#: real addresses.
CONTACTS = DATA / "contacts.csv"


def in_ci() -> bool:
    """Whether the suite runs in CI (``CI=1``, ``CI=true``): there, every test must run."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing_from_system(what: str, *, module: bool = False) -> NoReturn:
    """The one place a test gives way for want of a system package or of root.

    On a developer's machine the test (or the whole ``module``) is skipped
    with one line saying what to install; in CI that is a failure, so that CI
    keeps running every test.
    """
    if in_ci():
        pytest.fail(f"{what} (CI must run every test: install it there)", pytrace=False)
    pytest.skip(what, allow_module_level=module)


#: What each program the tests drive comes with, as Debian installs it.
INSTALL = {
    "chromium": "apt-get install chromium",
    "spamassassin": "apt-get install spamassassin",
    "postfix": "apt-get install postfix dovecot-imapd",
    "dovecot": "apt-get install postfix dovecot-imapd",
    "mount": "apt-get install mount",
    "setpriv": "apt-get install util-linux",
    "strace": "apt-get install strace",
    "tmux": "apt-get install tmux",
}


def system_program(name: str, *, module: bool = False) -> str:
    """The path of ``name`` on PATH, or the test gives way naming what to install."""
    found = shutil.which(name)
    if found is None:
        missing_from_system(f"{name} is not installed: {INSTALL[name]}", module=module)
    return found


def as_root(why: str) -> None:
    """Go on only as root, or the test gives way saying so."""
    if os.geteuid() != 0:
        missing_from_system(f"{why} needs root: run the tests as root (sudo make test)")


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, as playwright drives it: pages are read in a real browser."""
    chromium = system_program("chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield launched
        launched.close()


@pytest.fixture
def spamassassin() -> str:
    """SpamAssassin's ``spamassassin`` program."""
    return system_program("spamassassin")


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


@pytest.fixture(scope="session", autouse=True)
def cache_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tests' own cache folder (XDG_CACHE_HOME), never the developer's."""
    folder = tmp_path_factory.mktemp("cache")
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(folder)
    yield folder
    if before is None:
        del os.environ["XDG_CACHE_HOME"]
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture(scope="session")
def empty_dns() -> Iterator[str]:
    """A DNS server on loopback that knows no name: what the tests' sender domains meet.

    ``check`` and ``send`` look up MAIL_FROM's domain; a test never asks a
    DNS server off this machine.
    """
    with dns_server({}) as server:
        yield server.setting


#: The tests' Message-ID key: the ids in tests/data/mail/ were made with it.
TEST_ID_KEY = "0f" * 32


@pytest.fixture(scope="session", autouse=True)
def state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tests' own state folder (XDG_STATE_HOME), with the tests' Message-ID key."""
    folder = tmp_path_factory.mktemp("state")
    (folder / "outreach").mkdir(mode=0o700)
    key = folder / "outreach" / "message-id.key"
    key.write_text(TEST_ID_KEY + "\n", encoding="ascii")
    key.chmod(0o600)
    before = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(folder)
    yield folder
    if before is None:
        del os.environ["XDG_STATE_HOME"]
    else:
        os.environ["XDG_STATE_HOME"] = before


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_dns: str) -> Path:
    """The tests' contacts and the shipped templates in a folder of its own.

    Tests run in it with no ``.env`` and none of the developer's settings;
    DNS questions go to a server on loopback that knows no name.
    """
    shutil.copy(CONTACTS, tmp_path / "contacts.csv")
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("SMTP_", "MAIL_", "SEND_", "DNS_", "DKIM_")) or name in (
            "CAMPAIGN",
            "CONTACTS_FILE",
            "TEMPLATES_DIR",
            "PREVIEW_DIR",
            "LOG_DIR",
            "LETTER_DATE",
        ):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DNS_SERVER", empty_dns)
    return tmp_path


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str


RunCli = Callable[..., Result]


@pytest.fixture
def run_cli(project: Path) -> RunCli:
    """Run the ``outreach`` command in this process (click's CliRunner), as a user would.

    A bug (any exception but an ``OutreachError``, which the command turns
    into ``Error:`` lines) is raised here, with its traceback. ``clock``: the
    command's time, for a test that moves it on.
    """

    def run(
        *args: str,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
        clock: FakeClock | None = None,
    ) -> Result:
        environment = {"COLUMNS": "200", "NO_COLOR": "1", **(env or {})}
        obj = {"clock": clock} if clock is not None else None
        done = CliRunner().invoke(cli, list(args), env=environment, input=input, obj=obj)
        if done.exception is not None and not isinstance(done.exception, SystemExit):
            raise done.exception
        return Result(done.exit_code, done.stdout, done.stderr)

    return run


def run_python(script: str, cwd: Path, **env: str) -> Result:
    """Run ``script`` in a Python process of its own, in ``cwd``, with ``env`` added.

    Only for what must happen to a process as a whole: a resource limit that
    would hold the test runner too (a file that cannot grow, a full disk).
    """
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def write_csv(path: Path, text: str, encoding: str = "utf-8") -> Path:
    """Write a contacts file exactly as given (line ends included)."""
    path.write_bytes(text.encode(encoding))
    return path


@pytest.fixture
def smtp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpServer]:
    """A plain SMTP server on loopback that accepts everything unless scripted."""
    yield from run_server("plain", tmp_path_factory.mktemp("smtp"))


@pytest.fixture
def starttls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpServer]:
    """STARTTLS required, AUTH after TLS, certificate from a private CA."""
    yield from run_server("starttls", tmp_path_factory.mktemp("smtp"))


@pytest.fixture
def ssl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpServer]:
    """Implicit TLS (port 465 style), AUTH, certificate from a private CA."""
    yield from run_server("ssl", tmp_path_factory.mktemp("smtp"))


class FakeClock:
    """A clock whose sleeps return at once and move time on."""

    def __init__(self) -> None:
        self.start = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
        self.elapsed = 0.0
        self.sleeps: list[float] = []
        self.wakes: list[float] = []
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.elapsed)

    def monotonic(self) -> float:
        return self.elapsed

    def sleep(self, seconds: float) -> None:
        """Sleep until now + seconds; with several threads, time is the latest wake-up."""
        with self._lock:
            self.sleeps.append(seconds)
            wake = self.elapsed + max(seconds, 0.0)
            self.wakes.append(wake)
            self.elapsed = max(self.elapsed, wake)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        self.sleep(seconds)
        return event.is_set()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def chile(**fields: str) -> Contact:
    """The Chilean mission's contact as the shipped file has it, with ``fields`` changed."""
    base = {
        "id": "CHL",
        "country": "Chile",
        "mission": "Permanent Mission of Chile to the United Nations",
        "title": "",
        "representative": "",
        "email": "chl@missions.example",
        "cc": "",
        "language": "en",
        "status": "member",
        "name_in_text": "Chile",
        **fields,
    }
    return Contact(
        id=base["id"],
        country=base["country"],
        to=(base["email"],),
        cc=(),
        language=base["language"],
        line=2,
        fields=base,
    )


@contextlib.contextmanager
def full_disk_at(folder: Path, *, folders: tuple[str, ...] = ()) -> Iterator[Path]:
    """``folder`` on a small file system with no byte left (with ``folders`` made first).

    The disk is real: a tmpfs, mounted for the test, which needs root (as CI
    has); elsewhere the test is skipped.
    """
    folder.mkdir(parents=True, exist_ok=True)
    mount = system_program("mount")
    as_root("mounting a small file system")
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", "size=64k,nr_inodes=1000", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        missing_from_system(
            f"cannot mount a small file system here ({done.stderr.decode().strip()}): "
            "run the tests as root on a machine, not in a container that forbids mount"
        )
    try:
        for name in folders:
            (folder / name).mkdir(mode=0o700)
        filler = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            with contextlib.suppress(OSError):  # ENOSPC: full, as wanted
                while True:
                    os.write(filler, b"x" * 512)
        finally:
            os.close(filler)
        assert os.statvfs(folder).f_bavail == 0
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def with_cc(project: Path, contact_id: str, cc: str) -> None:
    """Give a contact of the tests' contacts file the copies ``cc``."""
    contacts = project / "contacts.csv"
    address = f"{contact_id.lower()}@missions.example"
    text = contacts.read_text(encoding="utf-8").replace(f"{address},,", f"{address},{cc},")
    contacts.write_text(text, encoding="utf-8")
