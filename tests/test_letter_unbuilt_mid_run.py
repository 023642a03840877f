"""Letters go as they were checked; one composed again after midnight may fail, alone.

Every letter is composed and checked before the first goes, and the checked
letter is the one sent, dated as it goes: staff who replace a mission's annex
while a long run is under way change nothing of this run. A letter dated in
its text is composed again once the day has changed (so that it never goes
out dated the day before); should it no longer build then (its annex
replaced by one too large, or deleted), letters have gone already: stopping
with exit status 2 ("nothing was sent") would be untrue, and would leave
every later mission without its letter. That letter stays owed, named.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest

from outreach.campaign import Composed, KeptLetters
from outreach.message import Letter
from outreach.sendlog import read_log
from tests.conftest import FakeClock, RunCli, chile, full_disk_at, write_csv
from tests.smtp import SmtpServer

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"


@pytest.fixture
def four_missions(project: Path) -> Path:
    """Four missions, each with an annex of its own."""
    folder = project / "annexes"
    folder.mkdir()
    for mission in ("chl", "fra", "gha", "ken"):
        (folder / f"{mission}.pdf").write_bytes(PDF)
    write_csv(
        project / "contacts.csv",
        "id,country,email,attachments\n"
        "CHL,Chile,chl@missions.example,annexes/chl.pdf\n"
        "FRA,France,fra@missions.example,annexes/fra.pdf\n"
        "GHA,Ghana,gha@missions.example,annexes/gha.pdf\n"
        "KEN,Kenya,ken@missions.example,annexes/ken.pdf\n",
    )
    return folder


def after_letters(server: SmtpServer, count: int, change: Callable[[], None]) -> None:
    """Run ``change`` once the server has taken ``count`` letters, before it answers the last.

    The sender waits for that answer before it takes the next letter: the
    change lands mid-run, at the same letter however busy the machine.
    """
    handler = server.handler
    taken = handler.handle_DATA

    async def handle_data(*args: Any) -> str:
        answer: str = await taken(*args)
        if len(handler.received) == count:
            change()
        return answer

    handler.handle_DATA = handle_data  # type: ignore[method-assign]


def midnight(clock: FakeClock) -> Callable[[], None]:
    """Move the clock to the next day (it starts at 09:00); with LETTER_DATE empty, the
    letters' text is dated the day each goes."""

    def move() -> None:
        clock.elapsed += timedelta(hours=15).total_seconds()

    return move


def both(*changes: Callable[[], None]) -> Callable[[], None]:
    def each() -> None:
        for change in changes:
            change()

    return each


def annex_of(message: EmailMessage) -> bytes:
    parts = [p for p in message.iter_attachments() if p.get_filename()]
    data = parts[0].get_content()
    assert isinstance(data, bytes)
    return data


def too_large(annex: Path) -> None:
    annex.write_bytes(os.urandom(2 * 1024 * 1024))


def deleted(annex: Path) -> None:
    annex.unlink()


def test_an_annex_replaced_mid_run_changes_nothing_of_the_letters_checked(
    run_cli: RunCli, smtp_server: SmtpServer, four_missions: Path, clock: FakeClock
) -> None:
    """What the check passed is what goes: the replaced annex waits for the next campaign."""
    annex = four_missions / "gha.pdf"
    after_letters(smtp_server, 2, lambda: too_large(annex))

    result = run_cli("send", "--yes", env=smtp_server.env(MAX_MESSAGE_MB="1"), clock=clock)

    assert result.code == 0, result.stdout + result.stderr
    assert "Done: 4 sent." in result.stdout
    assert annex_of(smtp_server.received[2].message) == PDF


def test_a_long_list_composed_on_every_core_is_sent_as_checked_too(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer, clock: FakeClock
) -> None:
    """120 missions: the check composes them in worker processes; the kept letters go."""
    folder = project / "annexes"
    folder.mkdir()
    rows = ["id,country,email,attachments"]
    for n in range(120):
        (folder / f"m{n:03}.pdf").write_bytes(PDF)
        rows.append(f"M{n:03},Country {n},m{n:03}@missions.example,annexes/m{n:03}.pdf")
    write_csv(project / "contacts.csv", "\n".join(rows) + "\n")
    after_letters(smtp_server, 2, lambda: deleted(folder / "m060.pdf"))

    result = run_cli("send", "--yes", env=smtp_server.env(LETTER_DATE=""), clock=clock)

    assert result.code == 0, result.stdout + result.stderr
    assert len(smtp_server.received) == 120
    assert annex_of(smtp_server.received[60].message) == PDF
    text = smtp_server.received[60].message.get_body(("plain",))
    assert "27 November 2026" in text.get_content()  # type: ignore[union-attr]


def test_each_letter_is_dated_as_it_goes_not_as_it_was_checked(
    run_cli: RunCli, smtp_server: SmtpServer, four_missions: Path, clock: FakeClock
) -> None:
    def an_hour_later() -> None:
        clock.elapsed += 3600

    after_letters(smtp_server, 2, an_hour_later)

    result = run_cli("send", "--yes", env=smtp_server.env(), clock=clock)

    assert result.code == 0, result.stdout + result.stderr
    dates = [parsedate_to_datetime(smtp_server.received[i].message["Date"]) for i in range(4)]
    assert dates[0] == clock.start
    assert dates[2] - dates[0] >= timedelta(hours=1)
    assert dates[0].date() == dates[2].date()


def test_after_midnight_a_letter_is_composed_again_with_the_new_date(
    run_cli: RunCli, smtp_server: SmtpServer, four_missions: Path, clock: FakeClock
) -> None:
    after_letters(smtp_server, 2, midnight(clock))

    result = run_cli("send", "--yes", env=smtp_server.env(LETTER_DATE=""), clock=clock)

    assert result.code == 0, result.stdout + result.stderr
    first, third = smtp_server.received[0].message, smtp_server.received[2].message
    assert "27 November 2026" in first.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "28 November 2026" in third.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert parsedate_to_datetime(third["Date"]).date().isoformat() == "2026-11-28"


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (too_large, "is 2.0 MB, more than the 1 MB a letter may carry (MAX_MESSAGE_MB)"),
        (deleted, "no such file"),
    ],
    ids=["replaced-by-a-file-too-large", "deleted"],
)
def test_a_letter_that_no_longer_builds_after_midnight_stays_owed_and_the_others_go(
    run_cli: RunCli,
    project: Path,
    smtp_server: SmtpServer,
    four_missions: Path,
    clock: FakeClock,
    change: Callable[[Path], None],
    why: str,
) -> None:
    annex = four_missions / "gha.pdf"
    after_letters(smtp_server, 2, both(midnight(clock), lambda: change(annex)))
    env = smtp_server.env(MAX_MESSAGE_MB="1", LETTER_DATE="")

    result = run_cli("send", "--yes", env=env, clock=clock)

    assert result.code == 1, result.stdout + result.stderr
    assert "Error" not in result.stderr
    sent_to = [r.recipients for r in smtp_server.received]
    assert sent_to == [["chl@missions.example"], ["fra@missions.example"], ["ken@missions.example"]]
    assert "Done: 3 sent, 1 not sent." in result.stdout
    assert (
        "  GHA: not sent: its letter could not be built: contact GHA (line 4), attachments: "
        f"'annexes/gha.pdf' {why}; still owed"
    ) in result.stdout
    rows = read_log(project / "logs" / "send-log.csv")
    assert [r.contact_id for r in rows if r.status == "sent"] == ["CHL", "FRA", "KEN"]
    assert "GHA" not in {r.contact_id for r in rows}, "no row may claim anything of GHA's letter"

    # The annex put right, the next run sends GHA's letter, and only it.
    annex.write_bytes(PDF)
    again = run_cli("send", "--yes", env=env, clock=clock)
    assert again.code == 0, again.stdout + again.stderr
    assert [r.recipients for r in smtp_server.received[3:]] == [["gha@missions.example"]]


def test_the_last_letter_going_bad_still_ends_the_run_with_its_summary(
    run_cli: RunCli, smtp_server: SmtpServer, four_missions: Path, clock: FakeClock
) -> None:
    """The last letter of the run cannot be built: the run still ends with its summary."""
    after_letters(smtp_server, 3, both(midnight(clock), lambda: deleted(four_missions / "ken.pdf")))
    result = run_cli("send", "--yes", env=smtp_server.env(LETTER_DATE=""), clock=clock)
    assert result.code == 1, result.stdout + result.stderr
    assert len(smtp_server.received) == 3
    assert "KEN: not sent: its letter could not be built:" in result.stdout
    assert "Send log:" in result.stdout


DAY = datetime(2026, 11, 27, 9, tzinfo=UTC)


def megabyte_letters(count: int) -> list[Composed]:
    """``count`` composed letters of a megabyte each, as the check hands them on."""
    letters = [
        Letter(f"C{n}", "a@b.example", (f"c{n}@d.example",), f"<{n}@b>", "s", os.urandom(1 << 20))
        for n in range(count)
    ]
    return [Composed(chile(id=letter.contact_id), None, letter, None, DAY) for letter in letters]


def test_letters_kept_past_memory_come_back_whole_and_leave_no_file(tmp_path: Path) -> None:
    """Thirty letters of a megabyte: past the 16 MB kept in memory, on disk in LOG_DIR."""
    composed = megabyte_letters(30)
    with KeptLetters(tmp_path) as kept:
        assert list(kept.keep(composed)) == composed
        assert list(tmp_path.iterdir()) == []
        assert kept.take("C29", DAY.date()) == composed[29].letter
        assert kept.take("C3", DAY.date() + timedelta(days=1)) is None, "a letter of yesterday"
        assert [kept.take(f"C{n}", None) for n in (0, 17)] == [c.letter for c in composed[0:18:17]]
        assert kept.take("C0", None) is None, "each letter is taken once"


def test_letters_past_the_limit_are_not_kept_and_go_composed_again(tmp_path: Path) -> None:
    composed = megabyte_letters(6)
    with KeptLetters(tmp_path, limit=3 * (1 << 20) + 1000) as kept:
        assert list(kept.keep(composed)) == composed
        taken = [kept.take(f"C{n}", DAY.date()) for n in range(6)]
    assert taken == [c.letter for c in composed[:3]] + [None, None, None]


def test_on_a_full_disk_no_letter_is_kept_and_none_is_lost(tmp_path: Path) -> None:
    """The 16 MB in memory cannot go to the disk: every letter is composed again as it goes."""
    composed = megabyte_letters(20)
    with full_disk_at(tmp_path / "full") as folder, KeptLetters(folder) as kept:
        assert list(kept.keep(composed)) == composed
        assert [kept.take(f"C{n}", DAY.date()) for n in range(20)] == [None] * 20
