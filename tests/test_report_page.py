"""The HTML report on a 1024-pixel laptop and a 1440-pixel screen, in headless Chromium.

A campaign's report holds what no one wrote to fit a page: Exchange's
long diagnostics, Message-IDs of 70 characters, an address with hyphens.
The page must not scroll sideways, and "what to do", the column staff act
on, must be wide enough to read.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from outreach.sendlog import LogRow, SendLog
from tests.conftest import RunCli
from tests.test_browser import screenshot

pytestmark = pytest.mark.browser

LONG = "protocol-office.permanent-mission-of-argentina@missions.example"
DIAGNOSTIC = (
    "smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address "
    "lookup [notice <AM0PR01MB1234ABCDEF0123456789@AM0PR01MB1234.eurprd01.prod.exchangelabs.com>]"
)
QUEUED = "2.6.0 <x> [InternalId=123456789, Hostname=AM0PR01MB1234.prod] Queued mail for delivery"
GREYLISTED = f"4.7.1 <{LONG}>: Recipient address rejected: greylisted, try again in 300 seconds"
ANSWER = (
    "2026-11-30 09:12 UTC, from Permanent Mission of Antigua and Barbuda <atg@missions.example>, "
    "subject: Re: Request to endorse the Code of Conduct regarding Security Council action "
    "[notice <CAF4lunch1234567890abcdef@mail.gmail.com>]"
)
BOUNCED = ("AFG", "ALB", "DZA", "AND", "AGO", "ARM")


def a_campaign_weeks_on(project: Path) -> Path:
    """120 letters over two days: six bounced, one deferred at a long address, one answered."""
    set_address(project, "ARG", LONG)
    start = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    contacts = (project / "contacts.csv").read_text(encoding="utf-8").splitlines()
    ids = [line.split(",")[0] for line in contacts[1:121]]
    log = project / "logs" / "send-log.csv"
    with SendLog(log) as out:
        for n, contact_id in enumerate(ids):
            when = start + timedelta(days=n // 60, seconds=2 * n)
            address = LONG if contact_id == "ARG" else f"{contact_id.lower()}@missions.example"
            row = partial(
                LogRow,
                campaign="default",
                contact_id=contact_id,
                email=address,
                attempt=1,
                message_id=f"<outreach.code-of-conduct.{contact_id.lower()}.9f3a6c2b7e1d@coalition.org>",
            )
            out.append(row(time=when, status="sending"))
            if contact_id == "ARG":
                out.append(row(time=when, status="deferred", smtp_code=451, smtp_reply=GREYLISTED))
                continue
            out.append(row(time=when, status="sent", smtp_code=250, smtp_reply=QUEUED))
            later = when + timedelta(days=3)
            if contact_id in BOUNCED:
                out.append(
                    row(time=later, status="bounced", smtp_code="5.1.10", smtp_reply=DIAGNOSTIC)
                )
            if contact_id == "ATG":
                out.append(row(time=later, status="replied", smtp_reply=ANSWER))
    return log


def set_address(project: Path, contact_id: str, address: str) -> None:
    contacts = project / "contacts.csv"
    old = f"{contact_id.lower()}@missions.example"
    contacts.write_text(contacts.read_text(encoding="utf-8").replace(old, address, 1))


@pytest.mark.parametrize("width", [1024, 1440])
def test_the_report_page_fits_the_screen_and_what_to_do_is_readable(
    browser: Browser,
    run_cli: RunCli,
    project: Path,
    width: int,
) -> None:
    a_campaign_weeks_on(project)
    out = project / "out" / "report.html"
    assert run_cli("report", "--format", "html", "--out", str(out)).code == 0
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    try:
        page.goto(out.as_uri())
        page.evaluate("document.getElementById('all').open = true")
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        columns = page.locator("#problems thead th").evaluate_all(
            "cells => cells.map(c => [c.textContent, c.getBoundingClientRect().width])"
        )
        widths = dict(columns)
        assert widths["what to do"] >= 0.25 * width  # ~40 characters a line at 1024
        assert widths["what to do"] == max(widths.values())
        # An address is never broken at its hyphen or dot: each that fits is on one line.
        for address in page.locator("#problems .address").all():
            if address.inner_text() == LONG:
                continue  # wider than its column at 1024: it alone may break
            box = address.bounding_box()
            line = address.evaluate("a => parseFloat(getComputedStyle(a).lineHeight)")
            assert box is not None
            assert box["height"] < 1.5 * line, address.inner_text()
        # A command to run is never broken at a hyphen.
        command = page.locator("#problems .command").first
        assert command.inner_text() == "make send ARGS=--retry-bounced"
        page.locator("#problems").scroll_into_view_if_needed()
        screenshot(page, f"report-{width}")
    finally:
        context.close()
