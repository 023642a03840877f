"""The password typed at a prompt is asked for last: after the plan, the confirmation,
the connection and the server's certificate; never for a run that sends nothing.

A password typed for a server whose certificate does not verify may have gone
to the wrong machine's prompt in someone's mind; one asked before a plan that
turns out to send nothing is asked for nothing. Servers are real, on
loopback, with real TLS (a private CA, ``tests/smtp.py``); only the prompt is
stood in for, in the library's tests, by a function that notes when it is
called. The command's own prompt is tested on a real terminal.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from outreach.campaign import Campaign, read_inbox
from outreach.errors import DeliveryError, InboxError
from outreach.settings import load_settings
from tests.conftest import FakeClock
from tests.hostile_imap import Behaviour, hostile_imap
from tests.smtp import DROP, PASSWORD, USERNAME, SmtpServer, tls_material
from tests.terminal import run_in_terminal
from tests.test_inbox import send_letters

MAIL = Path(__file__).resolve().parent / "data" / "mail"
REPLY = (MAIL / "reply.eml").read_bytes()  # Chile answers
PROMPT = f"Password for {USERNAME} at 127.0.0.1"


def secured_env(server: SmtpServer, mode: str, **extra: str) -> dict[str, str]:
    """Sign in as USERNAME, with no password set: only a prompt can give it."""
    assert server.ca_file is not None
    return server.env(
        SMTP_SECURITY=mode,
        SMTP_CA_FILE=str(server.ca_file),
        SMTP_USERNAME=USERNAME,
        **extra,
    )


@pytest.fixture(params=["starttls", "ssl"])
def secured(request: pytest.FixtureRequest) -> tuple[SmtpServer, str]:
    """A server with TLS and AUTH, STARTTLS on port 587's way or implicit TLS on 465's."""
    server: SmtpServer = request.getfixturevalue(f"{request.param}_server")
    return server, request.param


class Prompt:
    """Stands in for the person at the terminal: types the password, noting what it saw."""

    def __init__(self, password: str, seen: Callable[[], object]) -> None:
        self.password = password
        self.seen = seen
        self.calls: list[object] = []

    def __call__(self) -> str:
        self.calls.append(self.seen())
        return self.password


def send(campaign: Campaign, clock: FakeClock, only: list[str]) -> None:
    with campaign.open_log() as log:
        plan = campaign.plan(log, campaign.select(only), now=clock.now())
        campaign.send(plan, log, clock=clock)


# -- the library: a prompt called at sign-in ---------------------------------------------------


def test_the_password_is_asked_once_the_certificate_is_checked_then_the_letters_go_signed_in(
    project: Path, secured: tuple[SmtpServer, str], clock: FakeClock
) -> None:
    server, mode = secured
    # EHLO is said again after STARTTLS: at the prompt, TLS is up; no letter has gone yet.
    ehlos_once_secured = 2 if mode == "starttls" else 1
    prompt = Prompt(PASSWORD, lambda: (server.handler.connections, len(server.received)))
    settings = load_settings(environ=secured_env(server, mode), env_file=None)
    campaign = Campaign.open(settings).asking_password(prompt)

    send(campaign, clock, ["CHL", "FRA"])

    assert prompt.calls == [(ehlos_once_secured, 0)]
    assert [(r.tls, r.authenticated) for r in server.received] == [(True, True), (True, True)]


def test_a_certificate_that_does_not_verify_stops_the_run_before_the_password_is_asked(
    project: Path, secured: tuple[SmtpServer, str], clock: FakeClock
) -> None:
    server, mode = secured
    prompt = Prompt(PASSWORD, lambda: None)
    env = secured_env(server, mode)
    del env["SMTP_CA_FILE"]  # the private CA is not trusted: the certificate does not verify
    campaign = Campaign.open(load_settings(environ=env, env_file=None)).asking_password(prompt)

    with pytest.raises(DeliveryError, match=r"TLS certificate of 127\.0\.0\.1:\d+ does not verify"):
        send(campaign, clock, ["CHL"])

    assert prompt.calls == []
    assert server.received == []


def test_the_password_is_asked_once_for_the_whole_run_however_often_it_reconnects(
    project: Path, starttls_server: SmtpServer, clock: FakeClock
) -> None:
    starttls_server.script.mail.extend([DROP, DROP])  # the server hangs up twice at MAIL
    prompt = Prompt(PASSWORD, lambda: None)
    settings = load_settings(environ=secured_env(starttls_server, "starttls"), env_file=None)
    campaign = Campaign.open(settings).asking_password(prompt)

    send(campaign, clock, ["CHL", "FRA"])

    assert len(prompt.calls) == 1
    assert [r.recipients for r in starttls_server.received] == [
        ["chl@missions.example"],
        ["fra@missions.example"],
    ]


def test_a_password_given_up_front_is_never_asked_for(
    project: Path, starttls_server: SmtpServer, clock: FakeClock
) -> None:
    """A script may still hand the library the password itself."""
    prompt = Prompt("not this one", lambda: None)
    settings = load_settings(environ=secured_env(starttls_server, "starttls"), env_file=None)
    campaign = Campaign.open(settings).with_password(PASSWORD).asking_password(prompt)

    send(campaign, clock, ["CHL"])

    assert prompt.calls == []
    assert [r.authenticated for r in starttls_server.received] == [True]


def test_a_test_letter_asks_for_the_password_once_the_certificate_is_checked(
    project: Path, ssl_server: SmtpServer
) -> None:
    prompt = Prompt(PASSWORD, lambda: len(ssl_server.received))
    settings = load_settings(environ=secured_env(ssl_server, "ssl"), env_file=None)
    campaign = Campaign.open(settings).asking_password(prompt)

    with campaign.open_log() as log:
        row = campaign.test_send("staff@coalition.example", campaign.select(["CHL"])[0], log)

    assert row.status == "test"
    assert prompt.calls == [0]
    assert [r.recipients for r in ssl_server.received] == [["staff@coalition.example"]]


# -- the mailbox: the same prompt, once the IMAP connection is secured ---------------------------


@pytest.fixture
def sent(project: Path, smtp_server: SmtpServer, clock: FakeClock) -> SmtpServer:
    send_letters(smtp_server, clock, ["CHL", "FRA"])
    return smtp_server


def imap_env(server: SmtpServer, port: int, ca_file: Path | None) -> dict[str, str]:
    settings = {
        "IMAP_HOST": "127.0.0.1",
        "IMAP_PORT": str(port),
        "IMAP_SECURITY": "ssl",
        "IMAP_USERNAME": "campaign@coalition.example",
        "IMAP_PASSWORD": "",
    }
    if ca_file is not None:
        settings["IMAP_CA_FILE"] = str(ca_file)
    return server.env(**settings)


def test_the_mailbox_password_is_asked_once_tls_is_up_and_before_the_sign_in(
    project: Path, sent: SmtpServer, tmp_path: Path
) -> None:
    context, ca_file = tls_material(tmp_path)
    behaviour = Behaviour(messages={1: REPLY})
    prompt = Prompt("imap-secret", lambda: (behaviour.secured, list(behaviour.sign_ins)))
    with hostile_imap(behaviour, tls=context) as port:
        settings = load_settings(environ=imap_env(sent, port, ca_file), env_file=None)
        result = read_inbox(settings, ask_password=prompt)
    assert prompt.calls == [(1, [])]
    assert behaviour.sign_ins == [("LOGIN", "campaign@coalition.example", "imap-secret")]
    assert result.counts == {"replied": 1}


def test_a_mailbox_whose_certificate_does_not_verify_is_never_given_the_password(
    project: Path, sent: SmtpServer, tmp_path: Path
) -> None:
    context, _ = tls_material(tmp_path)
    behaviour = Behaviour(messages={1: REPLY})
    prompt = Prompt("imap-secret", lambda: None)
    with hostile_imap(behaviour, tls=context) as port:
        settings = load_settings(environ=imap_env(sent, port, None), env_file=None)
        with pytest.raises(
            InboxError, match=r"TLS certificate of 127\.0\.0\.1:\d+ does not verify"
        ):
            read_inbox(settings, ask_password=prompt)
    assert prompt.calls == []
    assert behaviour.sign_ins == []


# -- the command, on a real terminal ------------------------------------------------------------


def test_at_a_terminal_the_password_is_asked_after_the_plan_is_confirmed(
    project: Path, starttls_server: SmtpServer
) -> None:
    shown = run_in_terminal(
        ["send", "--only", "CHL"],
        project,
        secured_env(starttls_server, "starttls"),
        {"Send 1 letter now?": "y", PROMPT: PASSWORD},
    )
    assert shown.code == 0, shown.stdout
    plan, confirm, prompt = (
        shown.stdout.index(text) for text in ("To send:       1", "Send 1 letter now?", PROMPT)
    )
    assert plan < confirm < prompt, shown.stdout
    assert shown.stdout.count(PROMPT) == 1
    assert PASSWORD not in shown.stdout
    assert [r.authenticated for r in starttls_server.received] == [True]


def test_at_a_terminal_answering_no_or_having_nothing_to_send_asks_no_password(
    project: Path, starttls_server: SmtpServer
) -> None:
    env = secured_env(starttls_server, "starttls")
    answered_no = run_in_terminal(
        ["send", "--only", "CHL"], project, env, {"Send 1 letter now?": "n", PROMPT: PASSWORD}
    )
    assert answered_no.code == 0, answered_no.stdout
    assert "Nothing sent." in answered_no.stdout
    assert PROMPT not in answered_no.stdout

    sent = run_in_terminal(["send", "--only", "CHL", "--yes"], project, env, {PROMPT: PASSWORD})
    assert sent.code == 0, sent.stdout
    nothing = run_in_terminal(["send", "--only", "CHL"], project, env, {PROMPT: PASSWORD})
    assert nothing.code == 0, nothing.stdout
    assert "Nothing to send." in nothing.stdout
    assert PROMPT not in nothing.stdout
    assert len(starttls_server.received) == 1


def test_at_a_terminal_a_certificate_that_does_not_verify_stops_before_any_prompt(
    project: Path, starttls_server: SmtpServer
) -> None:
    env = secured_env(starttls_server, "starttls")
    del env["SMTP_CA_FILE"]
    shown = run_in_terminal(
        ["send", "--only", "CHL"], project, env, {"Send 1 letter now?": "y", PROMPT: PASSWORD}
    )
    assert shown.code == 2, shown.stdout
    assert "Error: the TLS certificate of 127.0.0.1:" in shown.stdout
    assert PROMPT not in shown.stdout
    assert starttls_server.received == []


def test_at_a_terminal_the_mailbox_password_is_asked_once_tls_is_up(
    project: Path, sent: SmtpServer, tmp_path: Path
) -> None:
    context, ca_file = tls_material(tmp_path)
    behaviour = Behaviour(messages={1: REPLY})
    prompt = "Password for campaign@coalition.example at 127.0.0.1"
    with hostile_imap(behaviour, tls=context) as port:
        shown = run_in_terminal(
            ["inbox"], project, imap_env(sent, port, ca_file), {prompt: "imap-secret"}
        )
    assert shown.code == 0, shown.stdout
    assert shown.stdout.count(prompt) == 1
    assert "Recorded:      1 replied" in shown.stdout
    assert behaviour.sign_ins == [("LOGIN", "campaign@coalition.example", "imap-secret")]


def test_at_a_terminal_no_password_typed_is_one_line_and_nothing_is_sent(
    project: Path, starttls_server: SmtpServer
) -> None:
    """Ctrl-D at the question: the run stops there, saying so, with nothing sent."""
    shown = run_in_terminal(
        ["send", "--only", "CHL"],
        project,
        secured_env(starttls_server, "starttls"),
        {"Send 1 letter now?": "y", PROMPT: "\x04"},
    )
    assert shown.code == 2, shown.stdout
    assert f"Error: no password typed for {USERNAME} at 127.0.0.1: nothing was sent" in (
        shown.stdout
    )
    assert "Traceback" not in shown.stdout
    assert starttls_server.received == []
