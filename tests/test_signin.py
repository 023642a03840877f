"""Signing in the way providers now require: tokens (XOAUTH2, OAUTHBEARER), password
commands, provider presets, and the provider's refusals in words.

The server is aiosmtpd on loopback with STARTTLS and a certificate from a
private CA, offering only what Microsoft 365 offers after STARTTLS (LOGIN and
XOAUTH2) or what a test asks; it checks each initial response byte for byte
and answers a refused token as Microsoft and Google do: a 334 carrying a JSON
error, then, after the client's empty line, 535.
"""

from __future__ import annotations

import base64
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from outreach.sendlog import read_log
from tests.conftest import RunCli
from tests.smtp import DROP, Handler, SmtpServer, free_port, tls_material

USER = "campaign@coalition.example"


class TokenHandler(Handler):
    """The scripted handler of tests/smtp.py, signing in with OAuth2 tokens only."""

    def __init__(self) -> None:
        super().__init__()
        self.valid: set[str] = set()
        self.seen: list[str] = []
        #: An answer to give every AUTH instead, such as "535 5.7.139 …".
        self.refuse_with = ""
        self.echo = False

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> AuthResult:
        return await self._check(server, args, "user={user}\x01auth=Bearer {token}\x01\x01")

    async def auth_OAUTHBEARER(self, server: Any, args: list[str]) -> AuthResult:
        return await self._check(server, args, "n,a={user},\x01auth=Bearer {token}\x01\x01")

    async def _check(self, server: Any, args: list[str], form: str) -> AuthResult:
        if self.refuse_with:
            return AuthResult(success=False, handled=False, message=self.refuse_with)
        response = base64.b64decode(args[1]).decode() if len(args) > 1 else ""
        self.seen.append(response)
        token = response.split("auth=Bearer ")[-1].split("\x01")[0]
        if response == form.format(user=USER, token=token) and token in self.valid:
            return AuthResult(success=True, auth_data=token)
        error = json.dumps({"status": "401", "schemes": "bearer", "scope": "SMTP.Send"})
        await server.challenge_auth(error)
        message = "535 5.7.3 Authentication unsuccessful"
        if self.echo:
            message += " " + args[1]
        return AuthResult(success=False, handled=False, message=message)


@contextlib.contextmanager
def serving_tokens(folder: Path, exclude: tuple[str, ...] = ("PLAIN",)) -> Iterator[SmtpServer]:
    """STARTTLS required; after it, the AUTH mechanisms of a real provider, less ``exclude``."""
    handler = TokenHandler()
    port = free_port()
    context, ca_file = tls_material(folder)
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        auth_require_tls=True,
        auth_exclude_mechanism=list(exclude),
        authenticator=lambda *args: AuthResult(success=False, handled=False),
    )
    controller.start()
    try:
        yield SmtpServer(handler, controller, port, ca_file)
    finally:
        controller.stop()


@pytest.fixture
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpServer]:
    """AUTH LOGIN XOAUTH2 OAUTHBEARER after STARTTLS."""
    with serving_tokens(tmp_path_factory.mktemp("tls")) as server:
        yield server


def token_command(folder: Path, *tokens: str, fail: int = 0) -> str:
    """A command that prints the next token of ``tokens`` each time it runs."""
    script = folder / "tokens.py"
    script.write_text(
        "import pathlib, sys\n"
        f"runs = pathlib.Path({str(folder / 'runs')!r})\n"
        "n = len(runs.read_text().splitlines()) if runs.exists() else 0\n"
        "runs.write_text('run\\n' * (n + 1))\n"
        f"if {fail}:\n"
        "    print('leaked-token-xyz'); print('leaked-token-xyz', file=sys.stderr)\n"
        f"    sys.exit({fail})\n"
        f"tokens = {list(tokens)!r}\n"
        "print(tokens[min(n, len(tokens) - 1)])\n"
    )
    return f"{sys.executable} {script}"


def runs(folder: Path) -> int:
    path = folder / "runs"
    return len(path.read_text().splitlines()) if path.exists() else 0


def env_for(server: SmtpServer, **extra: str) -> dict[str, str]:
    assert server.ca_file is not None
    return server.env(
        SMTP_SECURITY="starttls",
        SMTP_CA_FILE=str(server.ca_file),
        SMTP_USERNAME=USER,
        **extra,
    )


def handler(server: SmtpServer) -> TokenHandler:
    assert isinstance(server.handler, TokenHandler)
    return server.handler


def nowhere(project: Path, result_text: str, *secrets: str) -> None:
    """None of ``secrets`` in the output, nor in any file of the campaign folder."""
    for secret in secrets:
        assert secret not in result_text
        for path in project.rglob("*"):
            if path.is_file() and path.name not in ("tokens.py", "runs"):
                assert secret.encode() not in path.read_bytes(), path


@pytest.mark.parametrize(
    ("mechanism", "initial"),
    [
        pytest.param("xoauth2", f"user={USER}\x01auth=Bearer token-1\x01\x01", id="xoauth2"),
        pytest.param(
            "oauthbearer", f"n,a={USER},\x01auth=Bearer token-1\x01\x01", id="oauthbearer"
        ),
    ],
)
def test_a_campaign_sends_with_a_token_from_a_command(
    run_cli: RunCli, project: Path, token_server: SmtpServer, mechanism: str, initial: str
) -> None:
    handler(token_server).valid = {"token-1"}
    command = token_command(project, "token-1")
    env = env_for(token_server, SMTP_AUTH=mechanism, SMTP_TOKEN_COMMAND=command)
    result = run_cli("send", "--yes", "--only", "CHL,FRA,KEN", env=env)
    assert result.code == 0, result.stdout + result.stderr
    assert len(token_server.received) == 3
    assert all(r.tls and r.authenticated for r in token_server.received)
    assert handler(token_server).seen == [initial]
    assert runs(project) == 1  # once per connection
    nowhere(project, result.stdout + result.stderr, "token-1")


def test_a_refused_token_is_asked_for_again_once(
    run_cli: RunCli, project: Path, token_server: SmtpServer
) -> None:
    """An expired token: 334 with the JSON error, 535; the command gives a fresh one."""
    handler(token_server).valid = {"token-2"}
    command = token_command(project, "token-1", "token-2")
    result = run_cli(
        "send", "--yes", "--only", "CHL", env=env_for(token_server, SMTP_TOKEN_COMMAND=command)
    )
    assert result.code == 0, result.stdout + result.stderr
    assert runs(project) == 2
    assert [s.split("Bearer ")[1][:7] for s in handler(token_server).seen] == ["token-1", "token-2"]


def test_a_token_that_expires_mid_run_is_fetched_anew_with_the_next_connection(
    run_cli: RunCli, project: Path, token_server: SmtpServer
) -> None:
    server = handler(token_server)
    server.valid = {"token-1"}
    server.script.mail.extend(["250 OK", DROP])  # the second letter loses its connection

    original = server.handle_MAIL

    async def expire_then_mail(*args: Any) -> str:
        if len(server.received) == 1:
            server.valid = {"token-2"}  # token-1 has expired by now
        return await original(*args)

    server.handle_MAIL = expire_then_mail  # type: ignore[method-assign]
    command = token_command(project, "token-1", "token-2")
    result = run_cli(
        "send",
        "--yes",
        "--only",
        "CHL,FRA,KEN",
        env=env_for(token_server, SMTP_TOKEN_COMMAND=command),
    )
    assert result.code == 0, result.stdout + result.stderr
    assert len(token_server.received) == 3
    assert runs(project) >= 2


def test_a_token_command_that_fails_stops_the_run_before_anything_is_sent(
    run_cli: RunCli, project: Path, token_server: SmtpServer
) -> None:
    command = token_command(project, fail=3)
    result = run_cli(
        "send", "--yes", "--only", "CHL", env=env_for(token_server, SMTP_TOKEN_COMMAND=command)
    )
    assert result.code == 2
    assert f"Error: SMTP_TOKEN_COMMAND: '{sys.executable}' exited with status 3" in result.stderr
    assert token_server.received == []
    nowhere(project, result.stdout + result.stderr, "leaked-token-xyz")


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        pytest.param(
            "no-such-token-program --json",
            "cannot run 'no-such-token-program' (no such program)",
            id="missing",
        ),
        pytest.param("true", "'true' printed nothing", id="prints-nothing"),
    ],
)
def test_a_token_command_that_cannot_give_a_token_is_one_line(
    run_cli: RunCli, token_server: SmtpServer, command: str, expected: str
) -> None:
    result = run_cli(
        "send", "--yes", "--only", "CHL", env=env_for(token_server, SMTP_TOKEN_COMMAND=command)
    )
    assert result.code == 2
    assert f"Error: SMTP_TOKEN_COMMAND: {expected}" in result.stderr
    assert token_server.received == []


def test_a_fresh_token_refused_too_stops_the_run_and_leaks_nothing(
    run_cli: RunCli, project: Path, token_server: SmtpServer
) -> None:
    """The server even echoes the AUTH string back in its refusal."""
    handler(token_server).valid = set()
    handler(token_server).echo = True
    command = token_command(project, "secret-token-aaaa", "secret-token-bbbb")
    result = run_cli(
        "send", "--yes", "--only", "CHL,FRA", env=env_for(token_server, SMTP_TOKEN_COMMAND=command)
    )
    assert result.code == 2
    assert (
        "refused the login of SMTP_USERNAME=campaign@coalition.example (535 5.7.3" in result.stderr
    )
    assert token_server.received == []
    assert runs(project) == 2
    echoed = base64.b64encode(f"user={USER}\x01auth=Bearer secret-token-bbbb\x01\x01".encode())
    nowhere(
        project,
        result.stdout + result.stderr,
        "secret-token-aaaa",
        "secret-token-bbbb",
        echoed.decode(),
    )


def test_a_mechanism_the_server_does_not_offer_is_named(
    run_cli: RunCli, project: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Microsoft 365 offers LOGIN and XOAUTH2 after STARTTLS: OAUTHBEARER is refused by name."""
    with serving_tokens(tmp_path_factory.mktemp("tls"), ("PLAIN", "OAUTHBEARER")) as server:
        env = env_for(server, SMTP_AUTH="oauthbearer", SMTP_TOKEN_COMMAND="echo t")
        result = run_cli("send", "--yes", "--only", "CHL", env=env)
    assert result.code == 2
    assert "does not offer SMTP_AUTH=oauthbearer (it offers: LOGIN XOAUTH2)" in result.stderr


def test_a_password_from_a_command_never_sits_in_env(
    run_cli: RunCli, project: Path, starttls_server: SmtpServer
) -> None:
    assert starttls_server.ca_file is not None
    script = project / "pass.sh"
    script.write_text("#!/bin/sh\nprintf '%s\\n' 'correct horse battery staple'\n")
    script.chmod(0o700)
    env = starttls_server.env(
        SMTP_SECURITY="starttls",
        SMTP_CA_FILE=str(starttls_server.ca_file),
        SMTP_USERNAME=USER,
        SMTP_PASSWORD_COMMAND=str(script),
    )
    result = run_cli("send", "--yes", "--only", "CHL", env=env)
    assert result.code == 0, result.stdout + result.stderr
    assert starttls_server.received[0].authenticated
    log = (project / "logs" / "send-log.csv").read_text()
    assert "correct horse" not in log + result.stdout + result.stderr


PROVIDER_REFUSALS = [
    pytest.param(
        "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled "
        "for the Tenant",
        "an administrator turns on Authenticated SMTP for campaign@coalition.example",
        id="microsoft-smtp-auth-disabled",
    ),
    pytest.param(
        "550 5.7.30 Basic authentication is not supported for Client Submission",
        "use SMTP_AUTH=xoauth2 and run `outreach login`, or set SMTP_TOKEN_COMMAND",
        id="microsoft-basic-auth-off",
    ),
    pytest.param(
        "535 5.7.3 Authentication unsuccessful",
        "did not accept the credentials of campaign@coalition.example",
        id="microsoft-wrong-credentials",
    ),
    pytest.param(
        "534 5.7.9 Application-specific password required",
        "Google wants an app password for campaign@coalition.example",
        id="google-app-password",
    ),
    pytest.param(
        "535 5.7.8 Username and Password not accepted",
        "the user name and password of campaign@coalition.example were not accepted",
        id="google-not-accepted",
    ),
]


@pytest.mark.parametrize(("reply", "words"), PROVIDER_REFUSALS)
def test_a_provider_s_refusal_of_the_login_says_what_to_do(
    run_cli: RunCli, project: Path, token_server: SmtpServer, reply: str, words: str
) -> None:
    handler(token_server).refuse_with = reply
    env = env_for(token_server, SMTP_TOKEN_COMMAND="echo some-token")
    result = run_cli("send", "--yes", "--only", "CHL", env=env)
    assert result.code == 2
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert reply.split()[1] in line
    assert words in line
    assert token_server.received == []


@pytest.mark.parametrize(
    ("stage", "reply"),
    [
        pytest.param(
            "data",
            "554 5.2.252 SendAsDenied; campaign@coalition.example not allowed to send as x",
            id="after-the-data",
        ),
        pytest.param(
            "mail",
            "550 5.7.60 SMTP; Client does not have permissions to send as this sender",
            id="at-mail",
        ),
    ],
)
def test_a_sender_the_account_may_not_send_as_stops_the_run_with_the_letter_owed(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer, stage: str, reply: str
) -> None:
    queue = smtp_server.script.data if stage == "data" else smtp_server.script.mail
    queue.append(reply)
    env = smtp_server.env()
    result = run_cli("send", "--yes", "--only", "CHL,FRA", env=env)
    assert result.code == 2
    assert "will not send as MAIL_FROM=campaign@coalition.example" in result.stderr
    assert "it is not a mailbox this login may send as" in result.stderr
    rows = read_log(project / "logs" / "send-log.csv")
    assert "failed" not in {r.status for r in rows}
    # Mended, the next run sends both letters.
    again = run_cli("send", "--yes", "--only", "CHL,FRA", env=env)
    assert again.code == 0, again.stdout + again.stderr
    assert sorted(r.recipients[0] for r in smtp_server.received[-2:]) == [
        "chl@missions.example",
        "fra@missions.example",
    ]


@pytest.mark.parametrize(
    ("provider", "preset"),
    [
        pytest.param(
            "microsoft365",
            "SMTP_HOST=smtp.office365.com, SMTP_PORT=587, SMTP_SECURITY=starttls, "
            "SMTP_AUTH=xoauth2, SEND_RATE_PER_MINUTE=30, SEND_DAILY_LIMIT=10000",
            id="microsoft365",
        ),
        pytest.param(
            "google",
            "SMTP_HOST=smtp.gmail.com, SMTP_PORT=587, SMTP_SECURITY=starttls, "
            "SEND_DAILY_LIMIT=2000",
            id="google",
        ),
    ],
)
def test_check_prints_what_a_provider_preset_chose(
    run_cli: RunCli, provider: str, preset: str
) -> None:
    env = {"SMTP_PROVIDER": provider, "SMTP_USERNAME": USER, "PATH": "/nonexistent"}
    result = run_cli("check", env=env)
    assert result.code == 0, result.stderr
    assert f"Provider:  {provider} preset: {preset}" in result.stdout


def test_a_setting_given_explicitly_wins_over_the_preset(run_cli: RunCli) -> None:
    env = {
        "SMTP_PROVIDER": "microsoft365",
        "SMTP_USERNAME": USER,
        "SEND_RATE_PER_MINUTE": "10",
        "PATH": "/nonexistent",
    }
    result = run_cli("check", env=env)
    assert "SEND_RATE_PER_MINUTE" not in result.stdout.split("Provider:")[1].splitlines()[0]
    assert "SMTP:      smtp.office365.com:587 (starttls)" in result.stdout


def test_an_unknown_provider_is_refused(run_cli: RunCli) -> None:
    result = run_cli("check", env={"SMTP_PROVIDER": "yahoo"})
    assert result.code == 2
    assert "SMTP_PROVIDER='yahoo' is not valid: expected one of microsoft365, google" in (
        result.stderr
    )


def test_a_token_command_that_hangs_is_given_up_on(
    run_cli: RunCli, token_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("outreach.credentials.COMMAND_SECONDS", 1)
    env = env_for(token_server, SMTP_TOKEN_COMMAND="sleep 30")
    result = run_cli("send", "--yes", "--only", "CHL", env=env)
    assert result.code == 2
    assert "Error: SMTP_TOKEN_COMMAND: 'sleep' did not finish within 1 s" in result.stderr
    assert token_server.received == []
