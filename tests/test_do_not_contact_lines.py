"""A do-not-contact line written as staff really write it holds the mission back, in
``preview`` and ``check`` as in ``send``; a line that names nobody is an error, never a
mission silently written to."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import RunCli
from tests.smtp import SmtpServer
from tests.test_follow_up import FIRST, REMINDER


@pytest.mark.parametrize(
    "line",
    [
        pytest.param("KOR # asked on 2026-10-02", id="hash-note"),
        pytest.param("KOR; asked", id="semicolon"),
        pytest.param("KOR\tasked", id="tab"),
        pytest.param("KOR asked on 2026-10-02", id="space"),
        pytest.param("kor", id="lower-case"),
        pytest.param('"KOR", asked', id="quoted"),
        pytest.param(
            '"Permanent Mission of Korea, Republic of" <kor@missions.example>, asked on 2026-10-02',
            id="name-with-comma-and-address",
        ),
        pytest.param(
            "Permanent Mission of Korea <KOR@missions.example>; asked", id="address-semicolon"
        ),
        pytest.param("kor@missions.example # asked", id="address-hash"),
        pytest.param("kor@missions.example\tasked", id="address-tab"),
    ],
)
def test_a_line_as_staff_write_it_holds_korea_back(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer, line: str
) -> None:
    (project / "do-not-contact.csv").write_text("# missions that asked\n" + line + "\n")
    result = run_cli("send", "--yes", "--only", "KOR,KEN", env=smtp_server.env())
    assert result.code == 0, result.stdout + result.stderr
    assert "Held back:     1 on the do-not-contact list (do-not-contact.csv): KOR" in result.stdout
    assert [r.recipients for r in smtp_server.received] == [["ken@missions.example"]]


@pytest.mark.parametrize(
    ("line", "entry"),
    [
        pytest.param("Republic of Korea, asked", "Republic", id="a-country-s-name"),
        pytest.param("KORR, asked", "KORR", id="a-typing-slip"),
        pytest.param("Korea; asked", "Korea", id="name-and-semicolon"),
    ],
)
def test_a_line_that_names_no_contact_stops_every_command(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer, line: str, entry: str
) -> None:
    (project / "do-not-contact.csv").write_text("# notes\n" + line + "\n")
    for command in (["check"], ["preview"], ["send", "--yes"]):
        result = run_cli(*command, env=smtp_server.env())
        assert result.code == 2, result.stdout + result.stderr
        assert (
            f"Error: do-not-contact.csv, line 2: {entry!r} is neither an address nor the id of a "
            "contact in contacts.csv" in result.stderr
        )
    assert smtp_server.received == []


def test_preview_and_check_show_no_letter_for_a_held_mission(
    run_cli: RunCli, project: Path
) -> None:
    (project / "do-not-contact.csv").write_text("FRA, asked on 2026-10-02\n")
    preview = run_cli("preview", "--only", "CHL,FRA,KEN")
    assert preview.code == 0, preview.stderr
    letters = sorted(p.stem for p in (project / "out" / "preview" / "letters").glob("*.eml"))
    assert letters == ["CHL", "KEN"]
    assert "Wrote 2 letters" in preview.stdout
    assert "Held back: 1 on the do-not-contact list (do-not-contact.csv), no letter: FRA" in (
        preview.stdout
    )
    check = run_cli("check")
    assert check.code == 0, check.stderr
    assert "Letters:   194 rendered" in check.stdout
    assert "Held back: 1 on the do-not-contact list (do-not-contact.csv), no letter: FRA" in (
        check.stdout
    )


def test_a_reminder_s_preview_and_check_leave_out_the_held_mission(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer
) -> None:
    first = run_cli("send", "--yes", "--only", "CHL,FRA,KEN", env=smtp_server.env(CAMPAIGN=FIRST))
    assert first.code == 0, first.stderr
    (project / "do-not-contact.csv").write_text("FRA # asked after the first letter\n")
    env = smtp_server.env(CAMPAIGN=REMINDER, FOLLOW_UP_OF=FIRST)
    preview = run_cli("preview", "--out", "reminders", env=env)
    assert preview.code == 0, preview.stderr
    letters = sorted(p.stem for p in (project / "reminders" / "letters").glob("*.eml"))
    assert letters == ["CHL", "KEN"]
    check = run_cli("check", env=env)
    assert check.code == 0, check.stderr
    assert "Letters:   2 rendered" in check.stdout
    assert "no letter: FRA" in check.stdout
