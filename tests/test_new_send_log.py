"""A send log that is new, facing a real server: the plan says where the old one may be.

A fresh clone on a second computer, with the real ``.env``, has no send log:
every letter the first computer sent would be planned again. The plan says
so in one line before anyone confirms. No test here connects to the server
it names: each plan stops before connecting (no terminal, no --yes).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from outreach.campaign import Campaign
from outreach.sendlog import COLUMNS
from outreach.settings import load_settings
from tests.conftest import RunCli, write_csv
from tests.smtp import SmtpServer

LINE = (
    "Send log:      no send log at logs/send-log.csv: if letters of this campaign went from "
    "another computer, copy its send log here first"
)

#: A server off this machine, as on a real campaign; never reached by these tests.
REMOTE = {
    "SMTP_HOST": "smtp.coalition.org",
    "SMTP_PORT": "587",
    "SMTP_SECURITY": "starttls",
    "MAIL_FROM": "campaigns@coalition.org",
}


@pytest.fixture
def real_addresses(project: Path) -> Path:
    """Two missions at addresses of real-looking domains (a real server refuses placeholders)."""
    return write_csv(
        project / "contacts.csv",
        "id,country,email\n"
        "CHL,Chile,chile.un@minrel.gob.cl\n"
        "FRA,France,france-onu@diplomatie.gouv.fr\n",
    )


@pytest.mark.parametrize(
    "log",
    [None, "", ",".join(COLUMNS) + "\r\n"],
    ids=["no-file", "empty-file", "only-its-header"],
)
def test_a_new_send_log_and_a_real_server_make_the_plan_say_where_the_log_may_be(
    run_cli: RunCli, project: Path, real_addresses: Path, log: str | None
) -> None:
    if log is not None:
        (project / "logs").mkdir()
        (project / "logs" / "send-log.csv").write_text(log)
    result = run_cli("send", env=REMOTE)
    assert LINE in result.stdout.splitlines(), result.stdout + result.stderr
    assert "To send:       2" in result.stdout
    # No terminal and no --yes: the plan is all there is; nothing was sent.
    assert result.code == 2
    assert "Error: no terminal to confirm on" in result.stderr


def test_a_server_on_this_machine_is_a_trial_and_gets_no_such_line(
    run_cli: RunCli, project: Path, real_addresses: Path, smtp_server: SmtpServer
) -> None:
    result = run_cli("send", env=smtp_server.env())
    assert "Send log:      logs/send-log.csv" in result.stdout
    assert "no send log at" not in result.stdout


def test_a_send_log_with_letters_in_it_gets_no_such_line(
    run_cli: RunCli, project: Path, real_addresses: Path, smtp_server: SmtpServer
) -> None:
    """Chile's letter went (to a server here); France's plan, for the real server, is quiet."""
    first = run_cli("send", "--yes", "--only", "CHL", env=smtp_server.env())
    assert first.code == 0, first.stdout + first.stderr
    result = run_cli("send", env=REMOTE)
    assert "To send:       1" in result.stdout, result.stdout + result.stderr
    assert "Send log:      logs/send-log.csv" in result.stdout
    assert "no send log at" not in result.stdout


@pytest.mark.parametrize(
    ("host", "flagged"),
    [("smtp.coalition.org", True), ("127.0.0.1", False), ("localhost", False), ("::1", False)],
)
def test_the_library_s_plan_flags_a_new_log_only_for_a_server_off_this_machine(
    project: Path, real_addresses: Path, host: str, flagged: bool
) -> None:
    settings = load_settings(environ={**REMOTE, "SMTP_HOST": host}, env_file=project / ".env")
    campaign = Campaign.open(settings)
    with campaign.open_log() as log:
        plan = campaign.plan(log)
    assert plan.send_log_is_new is flagged
    assert len(plan.to_send) == 2
