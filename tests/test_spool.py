"""Each letter composed once for the check, and those very bytes sent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from outreach import Campaign
from outreach.cli import cli
from outreach.compose import Campaign as CampaignClass
from outreach.message import Letter
from outreach.spool import Spool
from tests.smtp import SmtpServer


def letters(count: int) -> list[Letter]:
    return [
        Letter(
            contact_id=f"C{n}",
            sender="campaign@coalition.example",
            recipients=(f"c{n}@missions.example",),
            message_id=f"<{n}@coalition.example>",
            subject="Subject",
            data=b"x" * n,
        )
        for n in range(count)
    ]


def test_the_spool_gives_back_every_letter_in_order() -> None:
    kept = letters(500)
    with Spool() as spool:
        for letter in kept:
            spool.keep(letter)
        assert list(spool.letters()) == kept
        assert list(spool.letters()) == kept  # and again, for a second pass


def test_the_spool_lies_beside_the_send_log_with_no_name(tmp_path: Path) -> None:
    """On the send log's disk (a temporary folder may be memory), yet nobody else
    can open it, and it is gone with the process however it ends."""
    with Spool(tmp_path) as spool:
        spool.keep(letters(1)[0])
        descriptor = spool._file.fileno()
        target = os.readlink(f"/proc/self/fd/{descriptor}")
        assert target.startswith(str(tmp_path)), target
        assert target.endswith("(deleted)"), target
        assert os.stat(descriptor).st_mode & 0o077 == 0
        assert list(tmp_path.iterdir()) == []


@pytest.fixture
def compose_count(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The contacts composed, in order, counted in this process."""
    composed: list[str] = []
    original = CampaignClass.compose

    def counting(self: Campaign, contact, **kwargs):  # type: ignore[no-untyped-def]
        composed.append(contact.id)
        return original(self, contact, **kwargs)

    monkeypatch.setattr(CampaignClass, "compose", counting)
    return composed


IN_FILE_ORDER = ["BOL", "CHL", "FRA", "VAT", "KEN"]


def send(server: SmtpServer, rate: str) -> None:
    environment = server.env(SEND_RATE_PER_MINUTE=rate)
    result = CliRunner().invoke(
        cli, ["send", "--yes", "--only", "CHL,BOL,VAT,FRA,KEN"], env=environment
    )
    assert result.exit_code == 0, result.output


@pytest.mark.usefixtures("project")
def test_a_send_sends_the_letters_its_check_composed(
    smtp_server: SmtpServer, compose_count: list[str]
) -> None:
    send(smtp_server, "0")
    assert compose_count == IN_FILE_ORDER  # once each
    got = [r.recipients for r in smtp_server.received]
    assert got == [[f"{i.lower()}@missions.example"] for i in IN_FILE_ORDER]


@pytest.mark.usefixtures("project")
def test_at_a_slow_rate_each_letter_is_composed_again_just_before_it_goes(
    smtp_server: SmtpServer, compose_count: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """So that its Date is when it went, not when the check ran minutes before."""
    monkeypatch.setattr("outreach.spool.SPOOL_MINUTES", 0)
    send(smtp_server, "6000")
    assert compose_count == IN_FILE_ORDER * 2  # for the check, then to send
    got = [r.recipients for r in smtp_server.received]
    assert got == [[f"{i.lower()}@missions.example"] for i in IN_FILE_ORDER]
