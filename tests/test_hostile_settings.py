"""Settings copied from e-mails, and SMTP servers that will not play along.

Every bad setting is named in an `Error:` line, exit 2, nothing sent and the
send log untouched. Every SMTP failure that no retry can fix stops the run
before the first letter, and the password never shows: not in the output, not
in the send log, not in any file the run leaves in the campaign folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from outreach import load_settings
from tests.conftest import ROOT, Result
from tests.smtp import PASSWORD, USERNAME, SmtpServer, free_port
from tests.test_hostile_contacts import CHILE, Story, story, table

__all__ = ["story"]  # the fixture, shared

SETTINGS = [
    pytest.param(
        {"SMTP_SECURITY": "tls"},
        "SMTP_SECURITY='tls' is not valid: expected one of starttls, ssl, none",
        id="unknown-security",
    ),
    pytest.param(
        {"SMTP_PORT": "submission"},
        "SMTP_PORT='submission' is not valid: expected a port number from 1 to 65535",
        id="port-not-a-number",
    ),
    pytest.param(
        {"SMTP_PORT": "0"},
        "SMTP_PORT='0' is not valid: expected a port number from 1 to 65535",
        id="port-zero",
    ),
    pytest.param(
        {"SMTP_PORT": "65536"},
        "SMTP_PORT='65536' is not valid: expected a port number from 1 to 65535",
        id="port-too-high",
    ),
    pytest.param(
        {"SMTP_PORT": "-587"},
        "SMTP_PORT='-587' is not valid: expected a port number from 1 to 65535",
        id="port-negative",
    ),
    pytest.param(
        {"SMTP_PORT": "587.5"},
        "SMTP_PORT='587.5' is not valid: expected a port number from 1 to 65535",
        id="port-with-a-fraction",
    ),
    pytest.param(
        {"MAIL_FROM": ""},
        "MAIL_FROM is not set: give the address the letters come from",
        id="mail-from-missing",
    ),
    pytest.param(
        {"MAIL_FROM": "campaign.coalition.example"},
        "MAIL_FROM='campaign.coalition.example' is not a valid address: An email address "
        "must have an @-sign.",
        id="mail-from-without-at",
    ),
    pytest.param(
        {"MAIL_FROM": "The Coalition <campaign@coalition.example>"},
        "MAIL_FROM='The Coalition <campaign@coalition.example>' is not a valid address: A "
        "display name and angle brackets",
        id="mail-from-with-a-display-name",
    ),
    pytest.param(
        {"MAIL_FROM": "campaign@coalition.example, evil@attacker.example"},
        "is not a valid address: it holds ','",
        id="mail-from-two-addresses",
    ),
    pytest.param(
        {"MAIL_REPLY_TO": "replies@"},
        "MAIL_REPLY_TO='replies@' is not a valid address",
        id="reply-to-invalid",
    ),
    pytest.param(
        {"SEND_RATE_PER_MINUTE": "-30"},
        "SEND_RATE_PER_MINUTE='-30' is not valid: expected a number from 0 to 6,000 "
        "(0 for no limit",
        id="negative-rate",
    ),
    pytest.param(
        {"SEND_RATE_PER_MINUTE": "nan"},
        "SEND_RATE_PER_MINUTE='nan' is not valid: expected a number from 0 to 6,000",
        id="rate-not-a-number",
    ),
    pytest.param(
        {"SEND_DAILY_LIMIT": "-1"},
        "SEND_DAILY_LIMIT='-1' is not valid: expected a whole number from 0 to 1,000,000",
        id="negative-daily-limit",
    ),
    pytest.param(
        {"SEND_RETRY_WAIT_SECONDS": "-2"},
        "SEND_RETRY_WAIT_SECONDS='-2' is not valid: expected a number from 0 to 3,600",
        id="negative-retry-wait",
    ),
    pytest.param(
        {"SEND_MAX_ATTEMPTS": "1000000"},
        "SEND_MAX_ATTEMPTS='1000000' is not valid: expected a whole number from 1 to 20",
        id="a-million-attempts",
    ),
    pytest.param(
        {"SEND_RETRY_MAX_WAIT_SECONDS": "1e9"},
        "SEND_RETRY_MAX_WAIT_SECONDS='1e9' is not valid: expected a number from 0 to 3,600",
        id="a-wait-of-thirty-years",
    ),
    pytest.param(
        {"SEND_RATE_PER_MINUTE": "1e12"},
        "SEND_RATE_PER_MINUTE='1e12' is not valid: expected a number from 0 to 6,000",
        id="a-rate-no-provider-takes",
    ),
    pytest.param(
        {"SMTP_TIMEOUT": "0"},
        "SMTP_TIMEOUT='0' is not valid: expected a number from 1 to 600",
        id="no-time-to-answer",
    ),
    pytest.param(
        {"SMTP_TIMEOUT": "1e999"},
        "SMTP_TIMEOUT='1e999' is not valid: expected a number from 1 to 600",
        id="infinite-timeout",
    ),
    pytest.param(
        {"SMTP_CA_FILE": "certs/missing.pem"},
        "SMTP_CA_FILE='certs/missing.pem': no such file",
        id="ca-file-missing",
    ),
    pytest.param(
        {"SMTP_HOST": ""},
        "SMTP_HOST is not set: name the SMTP server to send through",
        id="host-missing",
    ),
    pytest.param(
        {"SMTP_USERNAME": USERNAME},
        "SMTP_USERNAME is set but SMTP_PASSWORD is not, and there is no terminal to ask on",
        id="password-missing-without-a-terminal",
    ),
]


@pytest.mark.parametrize(("settings", "error"), SETTINGS)
def test_a_bad_setting_is_named(story: Story, settings: dict[str, str], error: str) -> None:
    story.refused(story.send(**settings), error)


@pytest.mark.parametrize("command", [["send", "--yes"], ["test-send", "--to", "me@coalition.org"]])
def test_the_settings_a_send_needs_are_checked_before_a_password_is_asked_for(
    story: Story, command: list[str]
) -> None:
    """Nobody types a password only to learn that MAIL_FROM was never set."""
    result = story.run(*command, SMTP_USERNAME=USERNAME, MAIL_FROM="")
    assert len(story.refused(result, "MAIL_FROM is not set")) == 1
    assert "password" not in result.stderr.lower()


def test_every_bad_setting_is_reported_at_once(story: Story) -> None:
    errors = story.refused(
        story.send(SMTP_SECURITY="tls", SMTP_PORT="x", SEND_RATE_PER_MINUTE="-1")
    )
    assert [e.split("=")[0] for e in errors] == [
        "SMTP_SECURITY",
        "SMTP_PORT",
        "SEND_RATE_PER_MINUTE",
    ]


ENV_FILES = [
    pytest.param(
        "SMTP_HOST=127.0.0.1\nMAIL_FROM campaign@coalition.example\n",
        ".env, line 2: MAIL_FROM has no '=' after it (write it as MAIL_FROM=value, or "
        "MAIL_FROM= for an empty value)",
        id="missing-equals-sign",
    ),
    pytest.param(
        "SMTP_HOST=127.0.0.1\nSMTP_PASSWORD\nMAIL_FROM=a@coalition.example\n",
        ".env, line 2: SMTP_PASSWORD has no '=' after it",
        id="a-name-alone",
    ),
    pytest.param(
        "export\nSMTP_HOST=127.0.0.1\n",
        ".env, line 1: cannot read this line (write it as NAME=value); it is not shown here",
        id="a-stray-word",
    ),
    pytest.param(
        "SMTP_HOST=127.0.0.1\nSMTP_PASSWORD='open quote\nMAIL_FROM=a@coalition.example\n",
        ".env, line 2: cannot read the value of SMTP_PASSWORD (a quote that is never closed?)",
        id="unterminated-quote",
    ),
    pytest.param(
        'MAIL_FROM_NAME="The Coalition\nSMTP_HOST=127.0.0.1\n',
        ".env, line 1: cannot read 'MAIL_FROM_NAME=\"The Coalition'",
        id="unterminated-double-quote",
    ),
]


@pytest.mark.parametrize(("content", "error"), ENV_FILES)
def test_a_env_file_that_does_not_parse_names_the_line(
    story: Story, content: str, error: str
) -> None:
    (story.project / ".env").write_text(content, encoding="utf-8")
    story.refused(story.send(), error)


SECRET = "Hunter2-TopSecret"


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(f"SMTP_PASSWORD='{SECRET}\n", id="unclosed-single-quote"),
        pytest.param(f'SMTP_PASSWORD="{SECRET}\n', id="unclosed-double-quote"),
        pytest.param(f"{SECRET}\n", id="a-password-on-its-own-line"),
        pytest.param("correct horse battery staple\n", id="a-passphrase-on-its-own-line"),
        pytest.param(f"SMTP_PASSWORD {SECRET}\n", id="a-space-for-the-equals-sign"),
        pytest.param(f"IMAP_TOKEN='{SECRET}\n", id="a-token"),
        pytest.param(f"MY_SECRET='{SECRET}\n", id="any-secret"),
        pytest.param(f"export SMTP_PASSWORD '{SECRET}'\n", id="export-without-equals"),
    ],
)
def test_a_line_of_env_that_does_not_parse_never_shows_a_secret(story: Story, content: str) -> None:
    (story.project / ".env").write_text("MAIL_FROM_NAME=Coalition\n" + content, encoding="utf-8")
    result = story.send()
    story.refused(result, ".env, line 2")
    shown = result.stdout + result.stderr
    assert "Hunter2" not in shown
    assert "TopSecret" not in shown
    assert "correct" not in shown


@pytest.mark.parametrize(
    ("line", "value"),
    [
        pytest.param("MAIL_FROM_NAME='${HOME} & Co'", "${HOME} & Co", id="single-quotes"),
        pytest.param('MAIL_FROM_NAME="${HOME} & Co"', "${HOME} & Co", id="double-quotes"),
        pytest.param("MAIL_FROM_NAME=${HOME}", "${HOME}", id="unquoted"),
        pytest.param("MAIL_FROM_NAME=Coalition # the sender", "Coalition", id="comment"),
        pytest.param("MAIL_FROM_NAME=Coalition#1", "Coalition#1", id="hash-inside"),
        pytest.param("MAIL_FROM_NAME='Coalition # 1'", "Coalition # 1", id="hash-quoted"),
    ],
)
def test_env_values_are_taken_literally_as_readme_says(
    project: Path, line: str, value: str
) -> None:
    (project / ".env").write_text(line + "\n", encoding="utf-8")
    assert load_settings(environ={}, env_file=project / ".env").mail_from_name == value


def test_a_env_file_that_is_not_utf8_is_named(story: Story) -> None:
    (story.project / ".env").write_bytes("MAIL_FROM_NAME=Coalición\n".encode("cp1252"))
    story.refused(story.send(), ".env: not UTF-8 text")


@pytest.mark.parametrize(
    ("line", "warning"),
    [
        (
            "SMTP_PASWORD=x",
            "SMTP_PASWORD is not a setting outreach knows (did you mean SMTP_PASSWORD?)",
        ),
        (
            "MAILFROM=x@example.org",
            "MAILFROM is not a setting outreach knows (did you mean MAIL_FROM?)",
        ),
        ("campaign=x", "campaign is not a setting outreach knows (did you mean CAMPAIGN?)"),
        ("SMTP_SOMETHING=x", "SMTP_SOMETHING is not a setting outreach knows (a typo?)"),
    ],
)
def test_an_unknown_setting_in_env_is_a_warning_naming_it(
    story: Story, line: str, warning: str
) -> None:
    (story.project / ".env").write_text(line + "\n", encoding="utf-8")
    result = story.send("--only", "AFG")
    assert result.code == 0, result.stderr
    assert f"Warning: .env: {warning}" in result.stderr


@pytest.mark.parametrize("where", ["env-file", "environment"])
def test_a_send_connections_left_from_an_earlier_version_is_a_notice_not_an_error(
    story: Story, where: str
) -> None:
    if where == "env-file":
        (story.project / ".env").write_text("SEND_CONNECTIONS=4\n", encoding="utf-8")
        result = story.send("--only", "AFG")
    else:
        result = story.send("--only", "AFG", SEND_CONNECTIONS="4")
    assert result.code == 0, result.stderr
    assert "Warning: SEND_CONNECTIONS is no longer used: letters now go over one connection" in (
        result.stderr
    )
    assert "not a setting outreach knows" not in result.stderr


def test_a_setting_of_another_tool_in_env_is_left_alone(story: Story) -> None:
    (story.project / ".env").write_text("EDITOR=nano\nPYTHONPATH=.\n", encoding="utf-8")
    result = story.send("--only", "AFG")
    assert result.code == 0, result.stderr
    assert "Warning" not in result.stderr


# --- SMTP servers ------------------------------------------------------------------------------


def no_password_anywhere(story: Story, result: Result, password: str) -> None:
    """Not in the output, not in the log, not in any file of the campaign folder."""
    assert password not in result.stdout + result.stderr
    for path in story.project.rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path


def test_connection_refused(story: Story) -> None:
    port = free_port()
    result = story.send(SMTP_PORT=str(port))
    story.refused(
        result, f"cannot connect to 127.0.0.1:{port}: 127.0.0.1:{port} refused the connection"
    )


def test_unknown_host(story: Story) -> None:
    # A real-looking address: placeholders are refused before any connection.
    story.write_contacts(table(CHILE.replace("chl@missions.example", "chl@mission-chile.org")))
    sender = {"MAIL_FROM": "campaign@coalition.org", "SMTP_PORT": "587"}
    result = story.send(SMTP_HOST="smtp.coalition.internal", **sender)
    story.refused(result, "cannot find the SMTP server SMTP_HOST=smtp.coalition.internal")
    result = story.send(SMTP_HOST="smtp.outreach.invalid", **sender)
    story.refused(result, "SMTP_HOST=smtp.outreach.invalid is an example name, not a server")


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_a_certificate_that_does_not_verify_is_refused(
    story: Story, starttls_server: SmtpServer, ssl_server: SmtpServer, security: str
) -> None:
    server = starttls_server if security == "starttls" else ssl_server
    result = story.send(
        SMTP_PORT=str(server.port),
        SMTP_SECURITY=security,
        SMTP_USERNAME=USERNAME,
        SMTP_PASSWORD=PASSWORD,
    )
    story.refused(
        result,
        f"the TLS certificate of 127.0.0.1:{server.port} does not verify (unable to get local "
        "issuer certificate); if the server uses a private certificate authority, set "
        "SMTP_CA_FILE to its certificate",
    )
    assert server.received == []
    no_password_anywhere(story, result, PASSWORD)


def test_the_same_certificate_is_trusted_with_smtp_ca_file(
    story: Story, starttls_server: SmtpServer
) -> None:
    assert starttls_server.ca_file is not None
    result = story.send(
        "--only",
        "CHL",
        SMTP_PORT=str(starttls_server.port),
        SMTP_SECURITY="starttls",
        SMTP_CA_FILE=str(starttls_server.ca_file),
        SMTP_USERNAME=USERNAME,
        SMTP_PASSWORD=PASSWORD,
    )
    assert result.code == 0, result.stderr
    assert [r.recipients for r in starttls_server.received] == [["chl@missions.example"]]
    no_password_anywhere(story, result, PASSWORD)


def test_starttls_required_but_not_offered(story: Story) -> None:
    result = story.send(SMTP_SECURITY="starttls")
    story.refused(
        result,
        f"127.0.0.1:{story.server.port} does not offer STARTTLS, and SMTP_SECURITY=starttls "
        "never sends without encryption",
    )


def test_tls_spoken_to_a_plain_server(story: Story) -> None:
    story.refused(story.send(SMTP_SECURITY="ssl"), f"127.0.0.1:{story.server.port}")


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_a_wrong_password_stops_the_run_and_never_shows(
    story: Story, starttls_server: SmtpServer, ssl_server: SmtpServer, security: str
) -> None:
    server = starttls_server if security == "starttls" else ssl_server
    assert server.ca_file is not None
    wrong = "Tr0ub4dor&3-not-the-password"
    result = story.send(
        SMTP_PORT=str(server.port),
        SMTP_SECURITY=security,
        SMTP_CA_FILE=str(server.ca_file),
        SMTP_USERNAME=USERNAME,
        SMTP_PASSWORD=wrong,
    )
    story.refused(
        result,
        f"127.0.0.1:{server.port} refused the login of SMTP_USERNAME={USERNAME} (535 ",
        "check SMTP_USERNAME and SMTP_PASSWORD",
    )
    assert server.received == []
    no_password_anywhere(story, result, wrong)


def test_a_password_in_env_is_not_copied_anywhere_else(
    story: Story, starttls_server: SmtpServer, tmp_path: Path
) -> None:
    assert starttls_server.ca_file is not None
    (story.project / ".env").write_text(
        f"SMTP_USERNAME={USERNAME}\nSMTP_PASSWORD='wrong {PASSWORD}'\n", encoding="utf-8"
    )
    result = story.send(
        SMTP_PORT=str(starttls_server.port),
        SMTP_SECURITY="starttls",
        SMTP_CA_FILE=str(starttls_server.ca_file),
    )
    story.refused(result, "refused the login")
    (story.project / ".env").unlink()
    no_password_anywhere(story, result, f"wrong {PASSWORD}")


# --- Example values left in place ----------------------------------------------------------


def test_check_reports_the_example_settings_left_in_env(story: Story) -> None:
    shutil.copy(ROOT / "config.example.env", story.project / ".env")
    result = story.run_cli("check")
    assert result.code == 2, result.stderr
    assert "a send refuses them: put in your own" in result.stderr
    assert "Settings:  SMTP_HOST=smtp.example.org is an example name, not a server" in (
        result.stdout
    )
    assert "MAIL_FROM=campaigns@coalition.example is on a reserved domain" in result.stdout
    assert "Everything is in order." not in result.stdout


@pytest.mark.parametrize("name", ["MAIL_FROM", "MAIL_REPLY_TO"])
def test_a_sender_on_a_reserved_domain_never_goes_to_a_real_server(story: Story, name: str) -> None:
    story.write_contacts(table(CHILE.replace("chl@missions.example", "chl@minrel.gob.cl")))
    env = {name: "campaigns@coalition.example", "SMTP_HOST": "192.0.2.1", "SMTP_TIMEOUT": "1"}
    if name == "MAIL_REPLY_TO":
        env["MAIL_FROM"] = "campaigns@coalition.org"
    result = story.send(**env)
    story.refused(result, f"{name}=campaigns@coalition.example is on a reserved domain")
