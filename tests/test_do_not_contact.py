"""Missions that asked not to be written to never get a letter from any campaign."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import RunCli
from tests.smtp import SmtpServer

LIST = """\
# Missions that asked not to be written to; one a line: an id or an address, then why.
VAT, written to through the nunciature instead
fra@missions.example, asked on 2026-10-02 not to be written to
desk@chile-mission.example
"""


def test_nobody_on_the_list_gets_a_letter_and_the_plan_and_report_say_so(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer
) -> None:
    (project / "do-not-contact.csv").write_text(LIST)
    contacts = project / "contacts.csv"
    contacts.write_text(
        contacts.read_text().replace(
            "chl@missions.example,,", "chl@missions.example,desk@chile-mission.example,"
        )
    )
    env = smtp_server.env()
    result = run_cli("send", "--yes", "--only", "CHL,FRA,VAT,KEN", env=env)
    assert result.code == 0, result.stdout + result.stderr
    assert "Held back:     2 on the do-not-contact list (do-not-contact.csv): FRA, VAT" in (
        result.stdout
    )
    assert [r.recipients for r in smtp_server.received] == [
        ["chl@missions.example"],
        ["ken@missions.example"],
    ]
    # The copy the desk asked not to get is not even named in the letter.
    assert "Cc" not in smtp_server.received[0].message
    report = json.loads(run_cli("report", "--format", "json", env=env).stdout)
    states = {c["id"]: c for c in report["contacts"]}
    assert states["VAT"]["status"] == "held back"
    assert states["VAT"]["smtp_reply"] == "written to through the nunciature instead"
    assert states["FRA"]["status"] == "held back"
    assert report["counts"]["held back"] == 2
    # A later campaign holds them back too.
    again = run_cli(
        "send", "--yes", "--allow-repeat", "--only", "FRA,VAT", env={**env, "CAMPAIGN": "reminder"}
    )
    assert "Nothing to send." in again.stdout
    assert len(smtp_server.received) == 2


def test_a_test_send_to_yourself_is_not_held_back(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer
) -> None:
    (project / "do-not-contact.csv").write_text("FRA\n")
    result = run_cli(
        "test-send", "--to", "me@coalition.example", "--only", "FRA", env=smtp_server.env()
    )
    assert result.code == 0, result.stderr
    assert smtp_server.received[0].recipients == ["me@coalition.example"]


def test_a_list_named_in_the_settings_must_exist(run_cli: RunCli) -> None:
    result = run_cli("check", env={"DO_NOT_CONTACT_FILE": "lists/no-contact.csv"})
    assert result.code == 2
    assert "Error: DO_NOT_CONTACT_FILE='lists/no-contact.csv': no such file" in result.stderr


@pytest.mark.parametrize(
    "line",
    [
        "fra@missions.example",
        "FRA@Missions.Example",
        "   fra@missions.example   ,  asked by phone",
        "Mission of France <fra@missions.example>",
        "Mission of France <FRA@missions.example>, asked on 2026-10-02",
        "fra",
        "Fra, asked",
    ],
)
def test_a_line_as_staff_write_it_holds_the_mission_back(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer, line: str
) -> None:
    (project / "do-not-contact.csv").write_text(line + "\n")
    result = run_cli("send", "--yes", "--only", "FRA,KEN", env=smtp_server.env())
    assert result.code == 0, result.stdout + result.stderr
    assert "Held back:     1 on the do-not-contact list (do-not-contact.csv): FRA" in result.stdout
    assert [r.recipients for r in smtp_server.received] == [["ken@missions.example"]]


def test_a_line_that_is_no_address_is_named(run_cli: RunCli, project: Path) -> None:
    (project / "do-not-contact.csv").write_text("# notes\nCHL\nfra@@missions.example, why\n")
    result = run_cli("check")
    assert result.code == 2
    assert "do-not-contact.csv, line 3: 'fra@@missions.example' is not a valid address" in (
        result.stderr
    )
