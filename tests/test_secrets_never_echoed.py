"""A password never leaves the machine in any shape: not when a server echoes it back
with its spaces folded, not as IMAP quotes it, not from a ``.env`` line that swallowed
the next one."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.conftest import RunCli
from tests.smtp import USERNAME as SMTP_USER
from tests.smtp import Handler, SmtpServer, free_port

USER = "campaign@coalition.example"


def echoing_authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    """Refuses every login, and says back, word for word, the password it was sent."""
    assert isinstance(auth_data, LoginPassword)
    said = auth_data.password.decode()
    return AuthResult(success=False, handled=False, message=f"535 5.7.8 not accepted: {said}")


@pytest.fixture
def echoing_smtp() -> Iterator[int]:
    port = free_port()
    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=port,
        authenticator=echoing_authenticator,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


PASSWORDS = [
    pytest.param("correct horse  battery\tstaple", id="spaces-and-a-tab"),
    pytest.param("  leading and trailing  ", id="leading-spaces"),
    pytest.param('quote"and\\backslash', id="quote-and-backslash"),
    pytest.param("plain-Secret-42", id="plain"),
]


def words_of(secret: str) -> list[str]:
    """The pieces of a secret that must appear nowhere, in whatever form it was echoed."""
    return [w for w in secret.replace('"', " ").replace("\\", " ").split() if len(w) > 3]


def nowhere(folder: Path, text: str, secret: str) -> None:
    for word in words_of(secret):
        assert word not in text
        for path in folder.rglob("*"):
            if path.is_file() and path.name != ".env":
                assert word.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("password", PASSWORDS)
def test_a_password_an_smtp_server_echoes_is_in_no_error_and_no_log(
    run_cli: RunCli, project: Path, echoing_smtp: int, password: str
) -> None:
    env = {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(echoing_smtp),
        "SMTP_SECURITY": "none",
        "SMTP_USERNAME": USER,
        "SMTP_PASSWORD": password,
        "MAIL_FROM": USER,
        "SEND_RATE_PER_MINUTE": "0",
    }
    result = run_cli("send", "--yes", "--only", "CHL", env=env)
    assert result.code == 2, result.stdout + result.stderr
    assert "refused the login of SMTP_USERNAME=campaign@coalition.example" in result.stderr
    assert "********" in result.stderr
    nowhere(project, result.stdout + result.stderr, password)


class EchoingImap:
    """An IMAP server on loopback that refuses every LOGIN and says its arguments back."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.logins: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = self.listener.accept()
                with connection, connection.makefile("rwb", buffering=0) as stream:
                    self._session(stream)

    def _session(self, stream: Any) -> None:
        stream.write(b"* OK IMAP4rev1 ready\r\n")
        while line := stream.readline():
            tag, _, rest = line.rstrip(b"\r\n").partition(b" ")
            command, _, arguments = rest.partition(b" ")
            name = command.upper()
            if name == b"CAPABILITY":
                stream.write(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + b" OK done\r\n")
            elif name == b"LOGIN":
                self.logins.append(arguments.decode())
                stream.write(tag + b" NO [AUTHENTICATIONFAILED] no login " + arguments + b"\r\n")
            elif name == b"LOGOUT":
                stream.write(b"* BYE\r\n" + tag + b" OK bye\r\n")
                return
            else:
                stream.write(tag + b" BAD unknown\r\n")

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def echoing_imap() -> Iterator[EchoingImap]:
    server = EchoingImap()
    try:
        yield server
    finally:
        server.close()


@pytest.mark.parametrize("password", PASSWORDS)
def test_an_imap_password_the_server_echoes_is_in_no_error(
    run_cli: RunCli, project: Path, echoing_imap: EchoingImap, password: str
) -> None:
    (project / "logs").mkdir()
    (project / "logs" / "send-log.csv").write_text(
        "time,campaign,contact_id,email,status,attempt,smtp_code,smtp_reply,message_id,subject\n"
    )
    env = {
        "IMAP_HOST": "127.0.0.1",
        "IMAP_PORT": str(echoing_imap.port),
        "IMAP_SECURITY": "none",
        "IMAP_USERNAME": USER,
        "IMAP_PASSWORD": password,
    }
    result = run_cli("inbox", env=env)
    assert result.code == 2, result.stdout + result.stderr
    assert echoing_imap.logins, "the server was never asked"
    assert f"refused the sign-in of IMAP_USERNAME={USER}" in result.stderr
    nowhere(project, result.stdout + result.stderr, password)


@pytest.mark.parametrize(
    ("env_text", "line"),
    [
        pytest.param(
            'SMTP_PORT="587\nSMTP_PASSWORD=hunter2-secret\nMAIL_FROM_NAME=The Coalition"\n',
            1,
            id="port-quote-never-closed",
        ),
        pytest.param(
            "CAMPAIGN=x\nMAIL_FROM_NAME='The Coalition\nSMTP_PASSWORD=hunter2-secret\n"
            "SMTP_HOST=smtp.coalition.org'\n",
            2,
            id="single-quote-never-closed",
        ),
    ],
)
def test_a_quote_that_swallows_the_next_lines_of_env_shows_none_of_them(
    run_cli: RunCli, project: Path, env_text: str, line: int
) -> None:
    (project / ".env").write_text(env_text)
    result = run_cli("check")
    assert result.code == 2
    assert f".env, line {line}: the value of " in result.stderr
    assert "(a quote that is never closed?)" in result.stderr
    assert "hunter2" not in result.stdout + result.stderr


#: A password with a double space and a tab, which a server says back folded.
PASSWORD_SAID_BACK = "correct horse  battery\tstaple"


def signed_in(server: SmtpServer) -> dict[str, str]:
    """The settings of a send that signs in to ``server`` over STARTTLS with the password."""
    server.accounts[SMTP_USER] = PASSWORD_SAID_BACK
    assert server.ca_file is not None
    return server.env(
        SMTP_SECURITY="starttls",
        SMTP_CA_FILE=str(server.ca_file),
        SMTP_USERNAME=SMTP_USER,
        SMTP_PASSWORD=PASSWORD_SAID_BACK,
    )


def test_a_password_a_server_echoes_in_a_refusal_is_not_in_the_send_log(
    run_cli: RunCli, project: Path, starttls_server: SmtpServer
) -> None:
    """Signed in, then refused at RCPT with the password said back, its tab folded."""
    refusal = "550 5.1.1 no mailbox here; you signed in with correct horse battery staple"
    starttls_server.script.always_refuse["fra@missions.example"] = refusal
    env = signed_in(starttls_server)
    result = run_cli("send", "--yes", "--only", "CHL,FRA", env=env)
    assert result.code == 1, result.stdout + result.stderr
    assert len(starttls_server.received) == 1
    log = (project / "logs" / "send-log.csv").read_text()
    assert "550,5.1.1 no mailbox here; you signed in with ********" in log
    nowhere(project, result.stdout + result.stderr, PASSWORD_SAID_BACK)


def test_a_password_a_server_echoes_in_an_unreadable_answer_after_the_data_is_not_in_the_send_log(
    run_cli: RunCli, project: Path, starttls_server: SmtpServer
) -> None:
    """Signed in; after the final dot the server says the password back, with no code."""
    starttls_server.script.data.append("Thank you, you signed in with correct horse battery staple")
    env = signed_in(starttls_server)
    result = run_cli("send", "--yes", "--only", "CHL", env=env)
    assert result.code == 1, result.stdout + result.stderr
    assert "Done: 1 ambiguous." in result.stdout
    log = (project / "logs" / "send-log.csv").read_text()
    assert "could not be read after the data was sent" in log
    assert "********" in log
    nowhere(project, result.stdout + result.stderr, PASSWORD_SAID_BACK)
