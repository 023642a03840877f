"""A full disk: one clear line naming the file, exit status 2, nothing sent, nothing lost.

The disk is real: a small tmpfs filled to the last byte, mounted for the
test (which needs root, as CI has; elsewhere the test is skipped).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from aiosmtpd.smtp import Envelope

from outreach.sink import SinkHandler
from tests.conftest import RunCli, full_disk_at
from tests.smtp import SmtpServer


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A folder on a file system with no byte left."""
    with full_disk_at(tmp_path / "full") as folder:
        yield folder


def test_a_send_log_on_a_full_disk_stops_before_any_letter_goes(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer, full_disk: Path
) -> None:
    result = run_cli(
        "send", "--yes", "--only", "CHL,FRA", env=smtp_server.env(LOG_DIR=str(full_disk))
    )
    assert result.code == 2, result.stdout + result.stderr
    assert (
        f"Error: {full_disk}/send-log.csv: cannot be written (No space left on device); "
        "stopped so that no letter goes out unrecorded"
    ) in result.stderr
    assert smtp_server.received == []


def test_a_preview_on_a_full_disk_names_the_folder_and_keeps_the_last_one(
    run_cli: RunCli, project: Path, full_disk: Path
) -> None:
    result = run_cli("preview", "--only", "CHL", "--out", str(full_disk / "preview"))
    assert result.code == 2
    assert "cannot be written (No space left on device)" in result.stderr
    assert str(full_disk) in result.stderr


def test_a_report_on_a_full_disk_is_one_line(
    run_cli: RunCli, project: Path, full_disk: Path
) -> None:
    result = run_cli("report", "--format", "html", "--out", str(full_disk / "report.html"))
    assert result.code == 2
    assert result.stderr.startswith(f"Error: --out {full_disk}/report.html: cannot be written")


def test_the_sink_on_a_full_disk_refuses_for_now_and_says_why(full_disk: Path) -> None:
    handler = SinkHandler(full_disk / "sink")
    envelope = Envelope()
    envelope.mail_from = "a@b.example"
    envelope.rcpt_tos = ["c@d.example"]
    envelope.original_content = b"Subject: x\r\n\r\nbody\r\n" * 1000
    # A thread of its own, as the server's: the main thread may hold Chromium's running loop.
    with ThreadPoolExecutor(max_workers=1) as thread:
        reply = thread.submit(asyncio.run, handler.handle_DATA(None, None, envelope)).result()
    assert reply.startswith("452 4.3.1 ")
    assert "No space left on device" in reply
