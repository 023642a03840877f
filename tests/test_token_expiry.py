"""An access token that runs out mid-run: the server ends the session with
``421 4.7.0 Access token expired``. That is no throttling: the letter goes again at
once, on a new connection with a fresh token, and the run keeps its pace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FakeClock
from tests.smtp import SmtpServer
from tests.test_send import send
from tests.test_signin import USER, handler, runs, token_command, token_server

__all__ = ["token_server"]  # the fixture: a server that signs in with tokens only

TEN = ["AFG", "ALB", "DZA", "AND", "AGO", "ATG", "ARG", "ARM", "AUS", "AUT"]
#: How many letters a token is good for, on this server.
GOOD_FOR = 4


@pytest.mark.parametrize(
    ("stage", "reply"),
    [
        pytest.param("mail", "421 4.7.0 Access token expired", id="mail-421-expired"),
        pytest.param(
            "mail",
            "451 4.7.0 Temporary server error. The access token is invalid",
            id="mail-451-invalid",
        ),
        pytest.param("rcpt", "421 4.7.0 Access token expired", id="rcpt-421-expired"),
    ],
)
def test_a_token_that_expires_mid_run_means_reconnect_now_not_slow_down(
    project: Path, token_server: SmtpServer, clock: FakeClock, stage: str, reply: str
) -> None:
    server = handler(token_server)
    server.valid = {f"token-{n}" for n in range(1, 10)}
    letters_on: dict[str, int] = {}

    def spent(session: Any) -> bool:
        """Whether the session's token has carried all the letters it may."""
        return letters_on.get(session.auth_data, 0) >= GOOD_FOR

    mail, rcpt = server.handle_MAIL, server.handle_RCPT

    async def handle_mail(srv: Any, session: Any, envelope: Any, *args: Any) -> str:
        if stage == "mail" and spent(session):
            return reply
        return await mail(srv, session, envelope, *args)

    async def handle_rcpt(srv: Any, session: Any, envelope: Any, *args: Any) -> str:
        if stage == "rcpt" and spent(session):
            return reply
        letters_on[session.auth_data] = letters_on.get(session.auth_data, 0) + 1
        return await rcpt(srv, session, envelope, *args)

    server.handle_MAIL = handle_mail  # type: ignore[method-assign]
    server.handle_RCPT = handle_rcpt  # type: ignore[method-assign]
    assert token_server.ca_file is not None
    command = token_command(project, *sorted(server.valid))
    outcome, rows = send(
        token_server,
        clock,
        TEN,
        SMTP_SECURITY="starttls",
        SMTP_CA_FILE=str(token_server.ca_file),
        SMTP_USERNAME=USER,
        SMTP_TOKEN_COMMAND=command,
        SEND_RATE_PER_MINUTE="30",
        SEND_RETRY_WAIT_SECONDS="30",
        SEND_RETRY_MAX_WAIT_SECONDS="300",
    )
    assert outcome.counts["sent"] == 10
    assert len(token_server.received) == 10
    # Two letters met a spent token: each went again at once, with a fresh one.
    assert [r.contact_id for r in rows if r.status == "retry"] == [
        TEN[GOOD_FOR],
        TEN[2 * GOOD_FOR],
    ]
    assert runs(project) == 3
    # The pace of 30 a minute, unbroken: 12 attempts two seconds apart, no pause,
    # no halving of the rate.
    assert clock.elapsed <= 12 * 2.0
    assert all(sleep <= 2.0 for sleep in clock.sleeps)
