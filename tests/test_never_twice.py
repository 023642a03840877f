"""Never twice: a mission gets its letter once, however the campaign is run again.

Each test is a way staff could, by mistake, send a letter a second time:
an id retyped in another case, a campaign name mistyped, the log reached
through a link, a second run started beside the first.
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from outreach.message import message_id_for
from outreach.sendlog import COLUMNS_WITHOUT_SUBJECT, LogRow, SendLog, read_log
from tests.conftest import RunCli, write_csv
from tests.smtp import SmtpServer
from tests.terminal import run_in_terminal

THREE = "CHL,FRA,KEN"


def sends(run_cli: RunCli, server: SmtpServer, *args: str, **env: str) -> tuple[int, str]:
    result = run_cli("send", *args, env=server.env(**env))
    return result.code, result.stdout + result.stderr


# -- an id in another case is the same contact --------------------------------------------


def test_an_id_retyped_in_lower_case_is_the_contact_already_sent(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer
) -> None:
    assert sends(run_cli, smtp_server, "--yes", "--only", "CHL")[0] == 0
    contacts = project / "contacts.csv"
    contacts.write_text(contacts.read_text().replace("\nCHL,", "\nchl,"))
    code, output = sends(run_cli, smtp_server, "--yes", "--only", "chl")
    assert code == 0, output
    assert "Already sent:  1" in output
    assert "Nothing to send." in output
    assert len(smtp_server.received) == 1
    report = run_cli("report", "--format", "csv", env=smtp_server.env()).stdout
    assert sum(1 for line in report.splitlines() if "chl@missions.example" in line) == 1


def test_a_log_written_with_another_case_still_matches(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer
) -> None:
    with SendLog(project / "logs" / "send-log.csv") as log:
        for status in ("sending", "sent"):
            log.append(
                LogRow(
                    datetime(2015, 8, 31, 14, tzinfo=UTC),
                    "default",
                    "chl",
                    "chl@missions.example",
                    status,
                    1,
                    message_id="<old@coalition.example>",
                )
            )
    code, output = sends(run_cli, smtp_server, "--yes", "--only", "CHL")
    assert code == 0, output
    assert "Nothing to send." in output
    assert smtp_server.received == []


def test_the_message_id_does_not_depend_on_the_case_of_the_id() -> None:
    assert message_id_for("c", "chl", "x.org") == message_id_for("c", "CHL", "x.org")


# -- a mistyped campaign name ---------------------------------------------------------------


def test_a_mistyped_campaign_stops_before_sending_anything_again(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer
) -> None:
    sent = sends(run_cli, smtp_server, "--yes", "--only", THREE, CAMPAIGN="code-of-conduct-2015")
    assert sent[0] == 0
    code, output = sends(
        run_cli, smtp_server, "--yes", "--only", THREE, CAMPAIGN="code-of-conduct-2051"
    )
    assert code == 2, output
    assert "Error: 3 of the letters to send would go again" in output
    assert "campaign 'code-of-conduct-2015'" in output
    assert datetime.now().astimezone().strftime("%Y-%m-%d") in output
    assert "--allow-repeat" in output
    assert len(smtp_server.received) == 3
    rows = read_log(project / "logs" / "send-log.csv")
    assert {r.campaign for r in rows} == {"code-of-conduct-2015"}
    code, output = sends(
        run_cli,
        smtp_server,
        "--yes",
        "--allow-repeat",
        "--only",
        THREE,
        CAMPAIGN="code-of-conduct-2051",
    )
    assert code == 0, output
    assert len(smtp_server.received) == 6


def test_a_letter_with_another_subject_is_no_repeat(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer
) -> None:
    assert sends(run_cli, smtp_server, "--yes", "--only", THREE, CAMPAIGN="letter")[0] == 0
    subject = project / "templates" / "en" / "subject.txt.j2"
    subject.write_text("Reminder: " + subject.read_text())
    code, output = sends(run_cli, smtp_server, "--yes", "--only", THREE, CAMPAIGN="reminder-1")
    assert code == 0, output
    assert "Repeats" not in output
    assert len(smtp_server.received) == 6


def test_a_log_from_before_subjects_were_kept_counts_as_the_same_subject(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer
) -> None:
    log = project / "logs" / "send-log.csv"
    log.parent.mkdir()
    log.write_text(
        ",".join(COLUMNS_WITHOUT_SUBJECT)
        + "\n2015-08-31T14:00:00.000+00:00,old,CHL,chl@missions.example,sending,1,,,<a@b>\n"
        + "2015-08-31T14:00:01.000+00:00,old,CHL,chl@missions.example,sent,1,250,ok,<a@b>\n"
    )
    code, output = sends(run_cli, smtp_server, "--yes", "--only", "CHL")
    assert code == 2
    assert "a letter whose subject was not recorded in campaign 'old'" in output
    code, output = sends(run_cli, smtp_server, "--yes", "--allow-repeat", "--only", "CHL")
    assert code == 0, output
    # The older log keeps its own columns: every row of it has the same number.
    assert {len(line.split(",")) for line in log.read_text().splitlines()} == {9}


def test_at_a_terminal_a_repeat_is_a_question_of_its_own(
    project: Path, smtp_server: SmtpServer
) -> None:
    env = smtp_server.env(CAMPAIGN="code-of-conduct-2015")
    first = run_in_terminal(["send", "--only", "CHL"], project, env, {"Send 1 letter now?": "y"})
    assert first.code == 0, first.stdout
    env["CAMPAIGN"] = "code-of-conduct-2051"
    answered_no = run_in_terminal(
        ["send", "--only", "CHL"], project, env, {"again all the same?": "n"}
    )
    assert answered_no.code == 0, answered_no.stdout
    assert "Repeats:       1 of these addresses already got this letter" in answered_no.stdout
    assert "Nothing sent." in answered_no.stdout
    assert "Error" not in answered_no.stdout
    assert len(smtp_server.received) == 1


def test_answering_no_at_the_prompt_is_not_an_error(project: Path, smtp_server: SmtpServer) -> None:
    result = run_in_terminal(
        ["send", "--only", "CHL"], project, smtp_server.env(), {"Send 1 letter now?": "n"}
    )
    assert result.code == 0, result.stdout
    assert "Nothing sent." in result.stdout
    assert "Error" not in result.stdout
    assert smtp_server.received == []


# -- the log, whatever the path to it ------------------------------------------------------


@pytest.mark.parametrize("link", ["symbolic", "hard"])
def test_a_log_reached_through_a_link_is_locked_all_the_same(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer, link: str
) -> None:
    real = project / "shared" / "send-log.csv"
    real.parent.mkdir()
    real.write_text("")
    other = project / "logs" / "send-log.csv"
    other.parent.mkdir()
    if link == "symbolic":
        other.symlink_to(real)
    else:
        os.link(real, other)
    with SendLog(real):
        code, output = sends(run_cli, smtp_server, "--yes", "--only", "CHL")
    assert code == 2
    assert "is in use by another outreach send" in output
    assert smtp_server.received == []


def test_a_lock_file_that_is_a_link_is_never_written_through(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer
) -> None:
    precious = project / "precious.txt"
    precious.write_text("keep me")
    (project / "logs").mkdir()
    (project / "logs" / "send-log.csv.lock").symlink_to(precious)
    code, output = sends(run_cli, smtp_server, "--yes", "--only", "CHL")
    assert code == 0, output
    assert precious.read_text() == "keep me"


def test_a_send_log_that_is_a_folder_is_refused(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer
) -> None:
    (project / "logs" / "send-log.csv").mkdir(parents=True)
    code, output = sends(run_cli, smtp_server, "--yes", "--only", "CHL")
    assert code == 2
    assert "Error: logs/send-log.csv is a folder, not the send log" in output
    assert "Traceback" not in output
    assert smtp_server.received == []


def test_a_copy_of_the_project_shares_nothing_but_what_it_copied(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer
) -> None:
    """The log travels with the project: a copy knows what the original sent."""
    assert sends(run_cli, smtp_server, "--yes", "--only", "CHL")[0] == 0
    copy = project.parent / (project.name + "-copy")
    shutil.copytree(project, copy)
    write_csv(copy / "extra.csv", "id,country,email\nCHL,Chile,chl@missions.example\n")
    result = run_in_terminal(
        ["send", "--only", "CHL"],
        copy,
        {**smtp_server.env(), "CONTACTS_FILE": "extra.csv"},
        {"now?": "y"},
    )
    assert "Nothing to send." in result.stdout, result.stdout
    assert len(smtp_server.received) == 1
