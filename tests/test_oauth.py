"""Signing in to Microsoft 365: `outreach login` once, then tokens without asking.

msal runs for real against a sign-in service on loopback (tests/oauth_server.py)
over HTTPS; it trusts that service's private CA through REQUESTS_CA_BUNDLE, the
variable requests (msal's HTTP client) reads, set for the test only. No test
reaches any other host: name lookups of anything but loopback fail and are
recorded.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from outreach import oauth
from outreach.errors import OutreachError, SettingsError
from outreach.oauth import IMAP_SCOPE, SMTP_SCOPE, access_token, login, logout, token_cache_path
from outreach.settings import Settings
from tests.conftest import full_disk_at
from tests.oauth_server import (
    CLIENT_ID,
    DOMAIN,
    TENANT_ID,
    USERNAME,
    SignInServer,
    run_sign_in_server,
)

DEVICE_GRANT = "device_code"
REFRESH_GRANT = "refresh_token"


@pytest.fixture
def outside(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every host msal tried to look up beyond loopback (none, in every test)."""
    tried: list[str] = []
    real = socket.getaddrinfo

    def loopback_only(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in ("127.0.0.1", "localhost", "::1"):
            tried.append(str(host))
            raise socket.gaierror(socket.EAI_NONAME, "the tests reach no host but this one")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    return tried


@pytest.fixture
def server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, outside: list[str]
) -> Iterator[SignInServer]:
    """The sign-in service, trusted by msal, with the saved sign-in in the test's own folder."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    yield from run_sign_in_server(tmp_path)
    assert outside == [], f"msal reached beyond the sign-in service: {outside}"


@pytest.fixture
def trusted(server: SignInServer, monkeypatch: pytest.MonkeyPatch) -> SignInServer:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.ca_file))
    return server


def settings_for(server: SignInServer, **changes: Any) -> Settings:
    return dataclasses.replace(
        Settings(oauth_client_id=CLIENT_ID, oauth_authority=server.url), **changes
    )


def signed_in(server: SignInServer, **changes: Any) -> tuple[Settings, list[str]]:
    """`outreach login` done: the settings used, and what it showed."""
    settings = settings_for(server, **changes)
    shown: list[str] = []
    login(settings, shown.append)
    return settings, shown


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def error_of(call: Any, *args: Any, **kwargs: Any) -> OutreachError:
    with pytest.raises(OutreachError) as caught:
        call(*args, **kwargs)
    return caught.value


def assert_tells(error: OutreachError, server: SignInServer, *words: str) -> None:
    """One line for campaign staff, saying what to do, with no secret in it."""
    message = str(error)
    assert len(error.problems) == 1, message
    assert "\n" not in message, message
    for word in words:
        assert word in message, message
    for secret in server.secrets:
        assert secret not in message
        assert secret not in repr(error)
    assert "Traceback" not in message


# -- the story: sign in once, then tokens without asking ---------------------------------


def test_login_shows_the_address_and_the_code_then_keeps_the_sign_in_for_this_user_only(
    trusted: SignInServer,
) -> None:
    settings, shown = signed_in(trusted)

    assert len(shown) == 1
    assert "https://microsoft.com/devicelogin" in shown[0]
    (devicecode,) = [r for r in trusted.requests if r.path.endswith("/devicecode")]
    assert devicecode.form["client_id"] == CLIENT_ID
    assert {SMTP_SCOPE, "offline_access"} <= devicecode.scopes
    polls = trusted.grants(DEVICE_GRANT)
    assert len(polls) == 2  # pending once, then the tokens
    assert all(p.form["client_id"] == CLIENT_ID for p in polls)

    cache = token_cache_path()
    assert mode(cache) == 0o600
    assert mode(cache.parent) == 0o700
    assert trusted.refresh_tokens[0] in cache.read_text(encoding="utf-8")

    # `outreach send`: the token signed in with, without a second sign-in or a refresh.
    assert access_token(settings) == trusted.access_tokens[0]
    assert trusted.grants(REFRESH_GRANT) == []
    assert len(trusted.grants(DEVICE_GRANT)) == 2
    assert all(r.path.startswith("/organizations/") for r in trusted.requests)


def test_login_returns_the_account_that_signed_in(trusted: SignInServer) -> None:
    trusted.script.username = "Desk@Coalition.Example"
    assert login(settings_for(trusted), print) == "Desk@Coalition.Example"


def test_an_expired_token_is_refreshed_silently_with_the_refresh_token(
    trusted: SignInServer,
) -> None:
    # msal counts a token with less than five minutes left as expired.
    trusted.script.expires_in = 60
    settings, _ = signed_in(trusted)
    trusted.script.expires_in = 3600

    token = access_token(settings)

    (refresh,) = trusted.grants(REFRESH_GRANT)
    assert refresh.form["refresh_token"] == trusted.refresh_tokens[0]
    assert refresh.form["client_id"] == CLIENT_ID
    assert SMTP_SCOPE in refresh.scopes
    assert token == trusted.access_tokens[1] != trusted.access_tokens[0]
    # The new token and the new refresh token were kept: the next send asks nobody.
    assert trusted.refresh_tokens[1] in token_cache_path().read_text(encoding="utf-8")
    assert access_token(settings) == token
    assert len(trusted.grants(REFRESH_GRANT)) == 1
    assert mode(token_cache_path()) == 0o600


def test_the_mailbox_scope_is_asked_for_on_its_own(trusted: SignInServer) -> None:
    settings, _ = signed_in(trusted, smtp_username=USERNAME)
    token = access_token(settings, scopes=(IMAP_SCOPE,))
    (refresh,) = trusted.grants(REFRESH_GRANT)
    assert IMAP_SCOPE in refresh.scopes
    assert SMTP_SCOPE not in refresh.scopes
    assert token == trusted.access_tokens[-1]


def test_one_login_can_cover_sending_and_the_mailbox(trusted: SignInServer) -> None:
    settings = settings_for(trusted)
    login(settings, print, scopes=(SMTP_SCOPE, IMAP_SCOPE))
    (devicecode,) = [r for r in trusted.requests if r.path.endswith("/devicecode")]
    assert {SMTP_SCOPE, IMAP_SCOPE} <= devicecode.scopes


@pytest.mark.parametrize(
    "username",
    [USERNAME, USERNAME.upper(), "Campaign@Coalition.EXAMPLE"],
    ids=["same", "upper-case", "mixed-case"],
)
def test_smtp_username_finds_its_account_whatever_its_case(
    trusted: SignInServer, username: str
) -> None:
    settings, _ = signed_in(trusted)
    token = access_token(dataclasses.replace(settings, smtp_username=username))
    assert token == trusted.access_tokens[0]


def test_with_two_accounts_signed_in_smtp_username_picks_one(trusted: SignInServer) -> None:
    signed_in(trusted)
    trusted.oid = "0b7f6a3c-2d1e-4f5a-8b9c-0d1e2f3a4b5c"
    trusted.script.username = "press@coalition.example"
    settings, _ = signed_in(trusted)

    error = error_of(access_token, settings)
    assert_tells(error, trusted, USERNAME, "press@coalition.example", "SMTP_USERNAME")

    press = access_token(dataclasses.replace(settings, smtp_username="press@coalition.example"))
    desk = access_token(dataclasses.replace(settings, smtp_username=USERNAME))
    assert press == trusted.access_tokens[1]
    assert desk == trusted.access_tokens[0]


# -- when there is no usable sign-in ---------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        ("invalid_grant", "AADSTS700082: The refresh token has expired due to inactivity"),
        ("interaction_required", "AADSTS50076"),
    ],
    ids=["refresh-token-expired", "multi-factor-needed"],
)
def test_a_refused_refresh_says_to_log_in_again(
    trusted: SignInServer, answer: str, said: str
) -> None:
    trusted.script.expires_in = 60
    settings, _ = signed_in(trusted)
    trusted.script.refresh.append(answer)

    error = error_of(access_token, settings)

    assert_tells(error, trusted, "run `outreach login`", USERNAME, said, answer)
    assert len(trusted.grants(REFRESH_GRANT)) == 1


def test_no_saved_sign_in_says_to_log_in(trusted: SignInServer) -> None:
    error = error_of(access_token, settings_for(trusted))
    assert_tells(error, trusted, "nobody has signed in", "run `outreach login`")
    assert trusted.requests == []  # nothing to refresh: the service is not even asked


def test_no_saved_sign_in_names_the_account_to_sign_in_as(trusted: SignInServer) -> None:
    error = error_of(access_token, settings_for(trusted, smtp_username=USERNAME))
    assert_tells(error, trusted, f"run `outreach login` and sign in as {USERNAME}")


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{",
        b'{"AccessToken": {',
        b"\xff\xfe\x00garbage",
        b"[]",
        b"null",
        b'{"Account": []}',
        b'{"Account": {"x": "not an entry"}}',
    ],
    ids=[
        "empty",
        "one-brace",
        "cut-short",
        "not-utf8",
        "a-list",
        "null",
        "a-list-of-accounts",
        "an-entry-that-is-text",
    ],
)
def test_a_damaged_saved_sign_in_says_to_log_in_again(
    trusted: SignInServer, content: bytes
) -> None:
    path = token_cache_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(content)

    error = error_of(access_token, settings_for(trusted))

    assert_tells(error, trusted, str(path), "cannot be read", "run `outreach login`")
    # And `outreach login` mends it.
    login(settings_for(trusted), print)
    assert access_token(settings_for(trusted)) == trusted.access_tokens[0]


def test_a_saved_sign_in_without_its_refresh_token_says_to_log_in_again(
    trusted: SignInServer,
) -> None:
    trusted.script.expires_in = 60  # so that only the refresh token could help
    settings, _ = signed_in(trusted, smtp_username=USERNAME)
    path = token_cache_path()
    kept = json.loads(path.read_text(encoding="utf-8"))
    del kept["RefreshToken"]
    path.write_text(json.dumps(kept), encoding="utf-8")

    error = error_of(access_token, settings)

    assert_tells(error, trusted, f"the sign-in of {USERNAME}", f"sign in as {USERNAME}")
    assert trusted.grants(REFRESH_GRANT) == []


def test_a_saved_sign_in_that_cannot_be_opened_is_one_line(trusted: SignInServer) -> None:
    path = token_cache_path()
    path.mkdir(parents=True)  # a folder where the file should be
    for call in (
        lambda: access_token(settings_for(trusted)),
        lambda: login(settings_for(trusted), print),
    ):
        error = error_of(call)
        assert_tells(error, trusted, f"{path}: the saved sign-in cannot be read (Is a directory)")


def test_one_scope_given_as_a_string_is_one_scope(trusted: SignInServer) -> None:
    login(settings_for(trusted), print, scopes=SMTP_SCOPE)
    (devicecode,) = [r for r in trusted.requests if r.path.endswith("/devicecode")]
    assert SMTP_SCOPE in devicecode.scopes


def test_smtp_username_not_signed_in_is_named(trusted: SignInServer) -> None:
    settings, _ = signed_in(trusted)
    other = "treasurer@coalition.example"

    error = error_of(access_token, dataclasses.replace(settings, smtp_username=other))

    assert_tells(
        error,
        trusted,
        f"SMTP_USERNAME={other} has not signed in",
        f"signed in: {USERNAME}",
        f"sign in as {other}",
    )


# -- login that cannot work, or does not finish --------------------------------------------


def test_login_without_a_client_id_names_the_setting(trusted: SignInServer) -> None:
    settings = settings_for(trusted, oauth_client_id="")
    for call in (lambda: login(settings, print), lambda: access_token(settings)):
        error = error_of(call)
        assert isinstance(error, SettingsError)
        assert_tells(error, trusted, "OAUTH_CLIENT_ID is not set")
    assert trusted.requests == []


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        ("authorization_declined", "the sign-in was declined"),
        ("expired_token", "the code was not entered in time"),
        ("bad_verification_code", "the code was not recognised"),
    ],
)
def test_a_declined_or_expired_code_is_one_line(
    trusted: SignInServer, answer: str, said: str
) -> None:
    trusted.script.device.append(answer)
    shown: list[str] = []

    error = error_of(login, settings_for(trusted), shown.append)

    assert_tells(error, trusted, said, "run `outreach login` again")
    assert len(shown) == 1  # the code was shown before the wait
    assert not token_cache_path().exists()


def test_a_code_nobody_enters_expires_with_one_line(trusted: SignInServer) -> None:
    # msal stops polling when the code's time is up, with "still pending" in hand.
    trusted.script.code_expires_in = 1
    trusted.script.interval = 1
    trusted.script.device_always = "authorization_pending"

    error = error_of(login, settings_for(trusted), print)

    assert_tells(error, trusted, "the code was not entered in time")
    assert not token_cache_path().exists()


@pytest.mark.parametrize(
    ("where", "answer", "said"),
    [
        ("devicecode", "unauthorized_client", "AADSTS700016"),
        ("token", "invalid_client", "'Allow public client flows' to Yes"),
    ],
    ids=["app-not-registered", "public-client-flows-off"],
)
def test_an_app_registration_that_cannot_work_says_what_to_change(
    trusted: SignInServer, where: str, answer: str, said: str
) -> None:
    if where == "devicecode":
        trusted.script.devicecode_error = answer
    else:
        trusted.script.device.append(answer)

    error = error_of(login, settings_for(trusted), print)

    assert_tells(error, trusted, said, answer)
    assert not token_cache_path().exists()


def test_an_app_for_one_organisation_asks_for_its_tenant(trusted: SignInServer) -> None:
    trusted.script.single_tenant = True

    error = error_of(login, settings_for(trusted), print)

    assert_tells(error, trusted, "AADSTS50194", "set OAUTH_TENANT to its Directory (tenant) ID")
    settings, _ = signed_in(trusted, oauth_tenant=TENANT_ID)
    assert access_token(settings) == trusted.access_tokens[0]


def test_a_wrong_client_id_is_refused_by_the_service(trusted: SignInServer) -> None:
    settings = settings_for(trusted, oauth_client_id="00000000-0000-0000-0000-000000000000")
    error = error_of(login, settings, print)
    assert_tells(error, trusted, "AADSTS700016", "OAUTH_CLIENT_ID and OAUTH_TENANT")


def test_an_unknown_tenant_names_the_setting(trusted: SignInServer) -> None:
    error = error_of(login, settings_for(trusted, oauth_tenant="coalitoin.example"), print)
    assert isinstance(error, SettingsError)
    assert_tells(error, trusted, "OAUTH_TENANT=coalitoin.example")


def test_a_tenant_given_by_its_domain_signs_in_there(trusted: SignInServer) -> None:
    settings, _ = signed_in(trusted, oauth_tenant=DOMAIN)
    assert access_token(settings) == trusted.access_tokens[0]
    assert all(r.path.startswith(f"/{DOMAIN}/") for r in trusted.requests)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("oauth_authority", "http://login.microsoftonline.com"),
        ("oauth_authority", "https://login.microsoftonline.com/coalition.example"),
        ("oauth_authority", "login.microsoftonline.com"),
        ("oauth_tenant", "coalition.example/v2.0"),
        ("oauth_tenant", "coalition example"),
    ],
)
def test_a_malformed_authority_or_tenant_is_named(
    trusted: SignInServer, setting: str, value: str
) -> None:
    error = error_of(login, settings_for(trusted, **{setting: value}), print)
    assert isinstance(error, SettingsError)
    assert_tells(error, trusted, f"{setting.upper()}='{value}' is not valid")
    assert trusted.requests == []


def test_an_unreachable_service_is_one_line(trusted: SignInServer) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    settings = settings_for(trusted, oauth_authority=f"https://127.0.0.1:{port}")

    error = error_of(login, settings, print)

    assert_tells(error, trusted, f"cannot reach the sign-in service at https://127.0.0.1:{port}")
    assert "it refused the connection; check the connection to the internet" in str(error)


@pytest.mark.parametrize("status", [500, 503])
def test_a_service_with_a_server_error_is_one_line(trusted: SignInServer, status: int) -> None:
    trusted.script.status = status
    error = error_of(login, settings_for(trusted), print)
    assert_tells(error, trusted, "cannot reach the sign-in service", "a server error")


def test_a_web_page_instead_of_an_answer_is_one_line(trusted: SignInServer) -> None:
    trusted.script.page = True
    error = error_of(login, settings_for(trusted), print)
    assert_tells(error, trusted, "something that is not a sign-in answer")


def test_a_sign_in_that_names_no_account_keeps_nothing(trusted: SignInServer) -> None:
    trusted.script.username = ""
    error = error_of(login, settings_for(trusted), print)
    assert_tells(error, trusted, "did not say which account signed in")
    assert not token_cache_path().exists()


def test_a_service_whose_certificate_is_not_trusted_is_one_line(server: SignInServer) -> None:
    # No REQUESTS_CA_BUNDLE here: the private CA is not trusted.
    error = error_of(login, settings_for(server), print)
    assert_tells(error, server, "cannot reach the sign-in service", "certificate is not trusted")


def test_a_name_that_cannot_be_found_is_one_line(server: SignInServer, outside: list[str]) -> None:
    settings = settings_for(server, oauth_authority="https://login.coalition.invalid")
    error = error_of(login, settings, print)
    assert_tells(error, server, "its name cannot be found")
    assert set(outside) == {"login.coalition.invalid"}
    outside.clear()


# -- logout ---------------------------------------------------------------------------------


def test_logout_deletes_the_saved_sign_in(trusted: SignInServer) -> None:
    settings, _ = signed_in(trusted)
    assert token_cache_path().exists()

    assert logout(settings) is True

    assert not token_cache_path().exists()
    assert_tells(error_of(access_token, settings), trusted, "run `outreach login`")


def test_logout_with_nobody_signed_in_is_fine(trusted: SignInServer) -> None:
    assert logout(settings_for(trusted)) is False
    assert logout(settings_for(trusted)) is False


# -- the file: this user's only, at every moment --------------------------------------------


def test_the_saved_sign_in_is_never_readable_by_others_even_for_a_moment(
    trusted: SignInServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    created: list[int] = []
    seen: list[tuple[int, int]] = []
    real_open, real_replace = os.open, os.replace

    def open_(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        descriptor = real_open(path, flags, *args, **kwargs)
        if flags & os.O_CREAT:  # the first moment the file exists
            created.append(stat.S_IMODE(os.fstat(descriptor).st_mode))
        return descriptor

    def replace(source: Any, target: Any) -> None:
        # The moment before the file takes its name: already whole, still 0600.
        seen.append((mode(Path(source)), Path(source).stat().st_size))
        real_replace(source, target)

    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "replace", replace)
    before = os.umask(0)  # a file created with the default mode would be 0666
    try:
        signed_in(trusted)
    finally:
        os.umask(before)

    assert created == [0o600]
    ((renamed_mode, size),) = seen
    assert renamed_mode == 0o600
    assert size == token_cache_path().stat().st_size > 0
    assert mode(token_cache_path()) == 0o600
    assert mode(token_cache_path().parent) == 0o700
    assert [p.name for p in token_cache_path().parent.iterdir()] == ["msal-token-cache.json"]


def test_a_saved_sign_in_others_could_read_is_replaced_by_one_of_this_user_only(
    trusted: SignInServer,
) -> None:
    settings, _ = signed_in(trusted)
    path = token_cache_path()
    path.chmod(0o644)
    path.parent.chmod(0o755)
    inode = path.stat().st_ino

    assert access_token(settings) == trusted.access_tokens[0]  # nothing to refresh

    assert mode(path) == 0o600
    assert path.stat().st_ino != inode  # a new file, not the old one made private
    assert mode(path.parent) == 0o700


def test_the_folder_is_made_private_when_it_exists_already(trusted: SignInServer) -> None:
    folder = token_cache_path().parent
    folder.mkdir(parents=True, mode=0o755)
    folder.chmod(0o755)
    signed_in(trusted)
    assert mode(folder) == 0o700


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A folder on a file system with no byte left, its ``outreach`` folder made first."""
    with full_disk_at(tmp_path / "full", folders=("outreach",)) as folder:
        yield folder


def test_a_full_disk_is_one_line_naming_the_file(
    trusted: SignInServer, full_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(full_disk))

    error = error_of(login, settings_for(trusted), print)

    path = full_disk / "outreach" / "msal-token-cache.json"
    assert_tells(error, trusted, f"{path}: cannot be written (No space left on device)")
    assert [p.name for p in (full_disk / "outreach").iterdir()] == []  # no half-written file


def test_a_folder_that_cannot_be_made_is_one_line_naming_the_file(
    trusted: SignInServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("", encoding="utf-8")
    monkeypatch.setenv("XDG_STATE_HOME", str(blocker))

    error = error_of(login, settings_for(trusted), print)

    assert_tells(error, trusted, f"{token_cache_path()}: cannot be written (Not a directory)")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/srv/state", "/srv/state/outreach/msal-token-cache.json"),
        ("", "~/.local/state/outreach/msal-token-cache.json"),
        (None, "~/.local/state/outreach/msal-token-cache.json"),
        ("relative/state", "~/.local/state/outreach/msal-token-cache.json"),
    ],
    ids=["set", "empty", "unset", "relative"],
)
def test_the_saved_sign_in_lives_in_the_state_folder(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: str
) -> None:
    if value is None:
        monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_STATE_HOME", value)
    assert token_cache_path() == Path(expected).expanduser()


# -- no token anywhere it could be seen ------------------------------------------------------


def test_no_token_shows_in_a_repr(trusted: SignInServer) -> None:
    trusted.script.expires_in = 60
    settings, _ = signed_in(trusted)
    token = access_token(settings)

    assert token == trusted.access_tokens[-1]
    assert f"{token}" == str(token) == trusted.access_tokens[-1]
    assert repr(token) == "AccessToken('********')"
    for secret in trusted.secrets:
        assert secret not in repr(token)
        assert secret not in repr([token])
        assert secret not in repr(settings)


def test_the_module_talks_to_no_one_but_the_authority(trusted: SignInServer) -> None:
    trusted.script.expires_in = 60
    settings, _ = signed_in(trusted)
    access_token(settings)
    paths = {r.path for r in trusted.requests}
    assert paths == {
        "/organizations/v2.0/.well-known/openid-configuration",
        "/organizations/oauth2/v2.0/devicecode",
        "/organizations/oauth2/v2.0/token",
    }


def test_the_module_is_what_the_cli_needs(trusted: SignInServer) -> None:
    assert oauth.SMTP_SCOPE == "https://outlook.office.com/SMTP.Send"
    assert oauth.IMAP_SCOPE == "https://outlook.office.com/IMAP.AccessAsUser.All"
    assert issubclass(oauth.SignInError, OutreachError)


# -- the whole way: `outreach login`, then a campaign sent with its tokens ----------------------


def test_outreach_login_then_a_campaign_sends_through_a_server_that_takes_only_xoauth2(
    trusted: SignInServer,
    run_cli: Any,
    project: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from tests.test_signin import handler, serving_tokens

    env = {
        "OAUTH_CLIENT_ID": CLIENT_ID,
        "OAUTH_AUTHORITY": trusted.url,
        "SMTP_USERNAME": USERNAME,
    }
    signed = run_cli("login", env=env)
    assert signed.code == 0, signed.stdout + signed.stderr
    assert "Signed in as campaign@coalition.example" in signed.stdout
    assert mode(token_cache_path()) == 0o600
    with serving_tokens(tmp_path_factory.mktemp("tls"), ("PLAIN", "LOGIN")) as smtp:
        token = access_token(settings_for(trusted))
        handler(smtp).valid = {str(token)}
        assert smtp.ca_file is not None
        result = run_cli(
            "send",
            "--yes",
            "--only",
            "CHL,FRA",
            env={
                **env,
                **smtp.env(),
                "SMTP_SECURITY": "starttls",
                "SMTP_CA_FILE": str(smtp.ca_file),
                "SMTP_AUTH": "xoauth2",
            },
        )
    assert result.code == 0, result.stdout + result.stderr
    assert len(smtp.received) == 2
    assert all(r.authenticated for r in smtp.received)
    assert str(token) not in result.stdout + result.stderr
    assert str(token) not in (project / "logs" / "send-log.csv").read_text()
    out = run_cli("logout", env=env)
    assert "Signed out" in out.stdout
    assert not token_cache_path().exists()
