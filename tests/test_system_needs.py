"""`make test` on a machine without the mail system, the browser or SpamAssassin, or
without root: every test that needs one gives way with one line saying what to install,
and the run is green; under CI=1 the same run is red, so CI keeps running them all.

These run the test suite itself, in a process of its own: the process (its PATH,
its user, its exit status) is what is under test.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.conftest import ROOT, as_root, system_program

#: A test of each kind that needs something of the system.
NEEDS_PROGRAMS = [
    "tests/test_checks.py::test_shipped_letter_scores_well_under_the_spam_line",
    "tests/test_browser.py",
    "tests/test_mailsystem.py",
    "tests/test_full_disk.py",
]
NEEDS_ROOT = ["tests/test_mailsystem.py", "tests/test_full_disk.py"]


def run_suite(
    tests: list[str], cwd: Path, env: Mapping[str, str], user: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *tests]
    return subprocess.run(
        [*(user or []), *command],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def environ(**changes: str) -> dict[str, str]:
    """This process's environment, outside CI and outside this run's pytest, with ``changes``."""
    own = ("CI", "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_ADDOPTS")
    return {**{k: v for k, v in os.environ.items() if k not in own}, **changes}


def skip_reasons(output: str) -> list[str]:
    """The reason of each skip, from pytest's ``-rs`` summary."""
    return re.findall(r"^SKIPPED \[\d+\] [^:]+:\d+: (.*)$", output, re.M)


def assert_green_with_install_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert " failed" not in output, output
    assert " error" not in output, output
    reasons = skip_reasons(done.stdout)
    assert reasons, output
    for reason in reasons:
        assert "apt-get install " in reason or "needs root" in reason, reason
    return reasons


@pytest.fixture
def empty_path(tmp_path: Path) -> str:
    """A PATH on which none of the system's programs is found."""
    folder = tmp_path / "bin"
    folder.mkdir()
    return str(folder)


def test_without_the_system_programs_each_test_skips_naming_what_to_install(
    empty_path: str,
) -> None:
    done = run_suite(NEEDS_PROGRAMS, ROOT, environ(PATH=empty_path))
    reasons = assert_green_with_install_lines(done)
    assert "spamassassin is not installed: apt-get install spamassassin" in reasons
    assert "chromium is not installed: apt-get install chromium" in reasons
    assert "postfix is not installed: apt-get install postfix dovecot-imapd" in reasons
    assert "mount is not installed: apt-get install mount" in reasons


@pytest.mark.parametrize("ci", ["1", "true"])
def test_in_ci_a_missing_system_program_is_a_failure(empty_path: str, ci: str) -> None:
    done = run_suite(NEEDS_PROGRAMS, ROOT, environ(PATH=empty_path, CI=ci))
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "CI must run every test: install it there" in output
    assert skip_reasons(done.stdout) == []


@pytest.fixture
def readable_copy() -> Iterator[Path]:
    """The project's code and tests where a user other than root can read them."""
    folder = Path(tempfile.mkdtemp(prefix="outreach-tests-"))
    try:
        for name in ("outreach", "tests", "templates"):
            shutil.copytree(
                ROOT / name, folder / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        for name in ("pyproject.toml", "contacts.csv"):
            shutil.copy(ROOT / name, folder / name)
        for path in [folder, *folder.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield folder
    finally:
        shutil.rmtree(folder)


@pytest.fixture
def as_nobody() -> Iterator[list[str]]:
    """The command prefix that runs a program as the user ``nobody``.

    ``nobody`` runs this virtual environment's Python: a clone made in a
    folder only its owner may enter (``mktemp -d`` makes one) is opened to
    others for the test, to pass through and no more, and closed again.
    """
    as_root("running the tests as another user")
    setpriv = system_program("setpriv")
    opened = []
    for folder in [Path(sys.prefix), *Path(sys.prefix).parents]:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
            opened.append((folder, stat.S_IMODE(mode)))
    try:
        yield [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]
    finally:
        for folder, mode in opened:
            folder.chmod(mode)


def test_as_a_user_other_than_root_each_test_that_needs_root_skips(
    readable_copy: Path, as_nobody: list[str], tmp_path: Path
) -> None:
    env = environ(HOME=str(readable_copy))
    done = run_suite(NEEDS_ROOT, readable_copy, env, as_nobody)
    reasons = assert_green_with_install_lines(done)
    assert all("needs root: run the tests as root (sudo make test)" in r for r in reasons)


def test_in_ci_a_test_that_needs_root_fails_without_it(
    readable_copy: Path, as_nobody: list[str]
) -> None:
    env = environ(HOME=str(readable_copy), CI="1")
    done = run_suite(NEEDS_ROOT, readable_copy, env, as_nobody)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "needs root: run the tests as root (sudo make test) (CI must run every test" in output
