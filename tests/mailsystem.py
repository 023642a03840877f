"""A real mail system on loopback for the tests: Postfix delivers, Dovecot serves IMAP.

Postfix takes the letters over SMTP on a free loopback port and delivers
them to Maildirs (its ``virtual(8)`` agent). It accepts any address of the
mission domain at RCPT (``smtpd_reject_unlisted_recipient = no``), so that
a letter to a user that does not exist is taken, then bounced by the
delivery agent: Postfix itself writes the RFC 3464 notice (``5.1.1``) back
to the sender's Maildir. Dovecot serves that Maildir over IMAP with TLS
(a certificate from ``trustme``) on another free loopback port. It signs
the mailbox in with its password (PLAIN, LOGIN) or with an OAuth2 access
token (XOAUTH2, OAUTHBEARER), which its ``oauth2`` passdb checks by asking
a small token service on loopback who the token belongs to, as it would ask
Microsoft Graph's ``/me``.

Both run as this machine's root (Postfix's master must), each with a
configuration of its own in a temporary folder (not pytest's, whose parent
only root may enter: Postfix and Dovecot drop to their own users), and in
the foreground as children of the test run: ``postfix start-fg`` and
``dovecot -F``. Teardown stops both and waits for them, so no process is
left behind. Debian's packages: ``postfix`` and ``dovecot-imapd``.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import trustme

from tests.conftest import as_root, system_program
from tests.smtp import free_port

#: The domains of the tests' mail: the missions', and the coalition's (the sender).
MISSIONS = "missions.example"
COALITION = "coalition.example"
SENDER = f"campaign@{COALITION}"
PASSWORD = "a mailbox password"
#: A second sign-in to the same mailbox, whose password is not ASCII.
UTF8_USER = f"secretariat@{COALITION}"
UTF8_PASSWORD = "mot de passe très sûr ✓"
#: The one access token the token service knows: it belongs to SENDER.
TOKEN = "eyJ0eXAiOiJKV1Qi.a-mailbox-access-token"
#: Postfix's ``virtual(8)`` delivers as this user; Dovecot reads as it.
MAIL_USER = "nobody"
START_SECONDS = 20


def require(program: str) -> str:
    """The path of ``program``; the test gives way (a failure in CI) without it or root."""
    found = system_program(program)
    as_root("the mail-system tests start Postfix, which")
    return found


def wait_for_port(port: int, process: subprocess.Popen[bytes], name: str, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    detail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
    raise RuntimeError(f"{name} did not start on 127.0.0.1:{port}:\n{detail}")


@dataclass
class MailSystem:
    """Postfix and Dovecot on loopback, and where their mail is."""

    folder: Path
    smtp_port: int
    imaps_port: int
    imap_port: int
    ca_file: Path
    users: set[str] = field(default_factory=set)

    @property
    def maildir(self) -> Path:
        """The sender's Maildir, which Postfix writes and Dovecot serves."""
        return self.mailbox("campaign", COALITION)

    def mailbox(self, user: str, domain: str = MISSIONS) -> Path:
        return self.folder / "mail" / domain / user / "Maildir"

    def delivered(self, user: str, domain: str = MISSIONS) -> list[Path]:
        """The messages delivered to a user, oldest first."""
        new = self.mailbox(user, domain) / "new"
        cur = self.mailbox(user, domain) / "cur"
        files = [p for d in (new, cur) if d.is_dir() for p in d.iterdir() if p.is_file()]
        return sorted(files, key=lambda p: p.stat().st_mtime_ns)

    def wait_for(self, user: str, count: int, domain: str = MISSIONS) -> list[Path]:
        """Wait (a few seconds at most) until ``count`` messages reached a user."""
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            found = self.delivered(user, domain)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        log = (self.folder / "postfix.log").read_text(errors="replace")[-3000:]
        raise AssertionError(f"{count} messages did not reach {user}@{domain}:\n{log}")

    def env(self, **extra: str) -> dict[str, str]:
        """Settings for outreach: send through Postfix, read the sender's mailbox."""
        values = {
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(self.smtp_port),
            "SMTP_SECURITY": "none",
            "MAIL_FROM": SENDER,
            "MAIL_FROM_NAME": "The Coalition",
            "SEND_RATE_PER_MINUTE": "0",
            "SMTP_TIMEOUT": "10",
            "IMAP_HOST": "127.0.0.1",
            "IMAP_PORT": str(self.imaps_port),
            "IMAP_SECURITY": "ssl",
            "IMAP_CA_FILE": str(self.ca_file),
            "IMAP_USERNAME": SENDER,
            "IMAP_PASSWORD": PASSWORD,
        }
        values.update(extra)
        return values


def _postfix_config(folder: Path, port: int, users: set[str]) -> Path:
    config = folder / "postfix"
    config.mkdir()
    (folder / "queue").mkdir()
    mailboxes = [f"{SENDER} {COALITION}/campaign/Maildir/"]
    mailboxes += [f"{u}@{MISSIONS} {MISSIONS}/{u}/Maildir/" for u in sorted(users)]
    (config / "mailboxes").write_text("\n".join(mailboxes) + "\n")
    nobody = pwd.getpwnam(MAIL_USER)
    (config / "main.cf").write_text(
        f"""\
compatibility_level = 3.6
queue_directory = {folder}/queue
data_directory = {folder}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mail.{COALITION}
mydomain = {COALITION}
myorigin = {COALITION}
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
# Take mail for any address of the domains, so that an unknown user is bounced
# by the delivery agent (a DSN to the sender), not refused at RCPT.
smtpd_reject_unlisted_recipient = no
smtpd_peername_lookup = no
virtual_mailbox_domains = {MISSIONS} {COALITION}
virtual_mailbox_base = {folder}/mail
virtual_mailbox_maps = texthash:{config}/mailboxes
virtual_uid_maps = static:{nobody.pw_uid}
virtual_gid_maps = static:{nobody.pw_gid}
alias_maps =
alias_database =
local_recipient_maps =
smtp_dns_support_level = disabled
biff = no
maillog_file_prefixes = {folder}
maillog_file = {folder}/postfix.log
"""
    )
    services = [
        f"127.0.0.1:{port} inet n - n - - smtpd",
        "pickup unix n - n 60 1 pickup",
        "cleanup unix n - n - 0 cleanup",
        "qmgr unix n - n 300 1 qmgr",
        "rewrite unix - - n - - trivial-rewrite",
        "bounce unix - - n - 0 bounce",
        "defer unix - - n - 0 bounce",
        "trace unix - - n - 0 bounce",
        "verify unix - - n - 1 verify",
        "flush unix n - n 1000? 0 flush",
        "proxymap unix - - n - - proxymap",
        "smtp unix - - n - - smtp",
        "showq unix n - n - - showq",
        "error unix - - n - - error",
        "retry unix - - n - - error",
        "discard unix - - n - - discard",
        "virtual unix - n n - - virtual",
        "anvil unix - - n - 1 anvil",
        "scache unix - - n - 1 scache",
        "postlog unix-dgram n - n - 1 postlogd",
    ]
    (config / "master.cf").write_text("\n".join(services) + "\n")
    return config


class _TokenService(BaseHTTPRequestHandler):
    """``GET /me`` with ``Authorization: Bearer <token>``: whose token it is, or 401."""

    def do_GET(self) -> None:
        known = self.headers.get("Authorization") == f"Bearer {TOKEN}"
        body = json.dumps({"email": SENDER} if known else {"error": "invalid_token"}).encode()
        self.send_response(200 if known else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test run's output is not the place for each request."""


def _dovecot_config(folder: Path, imaps: int, imap: int, tokens: int) -> tuple[Path, Path]:
    home = folder / "dovecot"
    home.mkdir()
    ca = trustme.CA()
    certificate = ca.issue_cert("127.0.0.1", "localhost")
    certificate.cert_chain_pems[0].write_to_path(str(home / "cert.pem"))
    certificate.private_key_pem.write_to_path(str(home / "key.pem"))
    ca_file = home / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    nobody = pwd.getpwnam(MAIL_USER)
    (home / "users").write_text(
        f"{SENDER}:{{PLAIN}}{PASSWORD}:{nobody.pw_uid}:{nobody.pw_gid}::"
        f"{folder}/mail/{COALITION}/campaign\n"
        f"{UTF8_USER}:{{PLAIN}}{UTF8_PASSWORD}:{nobody.pw_uid}:{nobody.pw_gid}::"
        f"{folder}/mail/{COALITION}/campaign\n",
        encoding="utf-8",
    )
    (home / "oauth2.conf.ext").write_text(
        f"introspection_mode = auth\n"
        f"introspection_url = http://127.0.0.1:{tokens}/me\n"
        f"username_attribute = email\n"
    )
    config = home / "dovecot.conf"
    config.write_text(
        f"""\
protocols = imap
listen = 127.0.0.1
base_dir = {home}/run
state_dir = {home}/state
instance_name = outreach-tests-{imaps}
log_path = {home}/dovecot.log
ssl = required
ssl_cert = <{home}/cert.pem
ssl_key = <{home}/key.pem
auth_mechanisms = plain login xoauth2 oauthbearer
# A wrong password is tested: no pause after it, nor for the sign-ins that follow
# (the penalty is off when nobody may use its socket).
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN {home}/users
}}
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {home}/oauth2.conf.ext
}}
userdb {{
  driver = passwd-file
  args = {home}/users
}}
mail_location = maildir:~/Maildir
first_valid_uid = 1
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps}
    ssl = yes
  }}
}}
"""
    )
    return config, ca_file


def run_mail_system(users: set[str]) -> Iterator[MailSystem]:
    """Start Postfix and Dovecot; stop both, and remove their folder, afterwards.

    ``users`` are the mission addresses (local parts) that exist; mail to
    any other address of the missions' domain bounces.
    """
    postfix, dovecot = require("postfix"), require("dovecot")
    folder = Path(tempfile.mkdtemp(prefix="outreach-mail-"))
    folder.chmod(0o755)  # Postfix and Dovecot drop to users of their own
    processes: list[tuple[subprocess.Popen[bytes], list[str]]] = []
    tokens: ThreadingHTTPServer | None = None
    try:
        mail = folder / "mail"
        mail.mkdir()
        nobody = pwd.getpwnam(MAIL_USER)
        os.chown(mail, nobody.pw_uid, nobody.pw_gid)
        system = MailSystem(folder, free_port(), free_port(), free_port(), Path(), set(users))
        postfix_config = _postfix_config(folder, system.smtp_port, system.users)
        tokens = ThreadingHTTPServer(("127.0.0.1", 0), _TokenService)
        threading.Thread(target=tokens.serve_forever, daemon=True).start()
        dovecot_config, system.ca_file = _dovecot_config(
            folder, system.imaps_port, system.imap_port, tokens.server_address[1]
        )
        stop_postfix = [postfix, "-c", str(postfix_config), "stop"]
        started = subprocess.Popen(
            [postfix, "-c", str(postfix_config), "start-fg"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append((started, stop_postfix))
        wait_for_port(system.smtp_port, started, "Postfix", folder / "postfix.log")
        served = subprocess.Popen(
            [dovecot, "-F", "-c", str(dovecot_config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append((served, []))
        wait_for_port(system.imaps_port, served, "Dovecot", folder / "dovecot" / "dovecot.log")
        yield system
    finally:
        for process, stop in reversed(processes):
            if stop:
                subprocess.run(stop, capture_output=True, timeout=30, check=False)
            else:
                process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
        if tokens is not None:
            tokens.shutdown()
            tokens.server_close()
        shutil.rmtree(folder, ignore_errors=True)
