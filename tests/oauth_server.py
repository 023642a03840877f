"""A Microsoft Entra sign-in service on loopback for the tests, with answers that can be scripted.

It answers over HTTPS (a certificate from a private CA, as tests/smtp.py's
servers) what msal asks of login.microsoftonline.com in the device-code flow
and on a refresh: the tenant's OpenID configuration, the device-code
endpoint and the token endpoint. Tokens are random strings, each unique, so
a test can look for every one of them in what outreach shows; the ID token
is a real, unsigned JWT (msal reads its claims without checking a
signature). Every request is recorded, so tests assert what msal sent.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.smtp import tls_material

CLIENT_ID = "5d9c1b7e-4a0f-4b8e-9c1d-6f2a3e4b5c6d"
TENANT_ID = "8f14e45f-ceea-4c2b-9f1e-2d6a0b3c4d5e"
DOMAIN = "coalition.example"
USERNAME = "campaign@coalition.example"

#: What Entra says for each scripted error (the first line is what matters).
ERRORS = {
    "authorization_pending": "AADSTS70016: OAuth 2.0 device flow error. Authorization is pending.",
    "authorization_declined": "AADSTS70000: The user declined the sign-in request.",
    "expired_token": "AADSTS70020: The provided value for the input parameter 'device_code' "
    "is not valid. This device code has expired.",
    "bad_verification_code": "AADSTS70000: The provided value for the input parameter "
    "'device_code' is not valid.",
    "invalid_grant": "AADSTS700082: The refresh token has expired due to inactivity. The token "
    "was issued on 2026-01-05T09:12:44Z and was inactive for 90.00:00:00.",
    "interaction_required": "AADSTS50076: Due to a configuration change made by your "
    "administrator, or because you moved to a new location, you must use multi-factor "
    "authentication to access 'outlook.office.com'.",
    "invalid_request": "AADSTS50194: Application '{client}'(Outreach) is not configured as a "
    "multi-tenant application. Usage of the /common endpoint is not supported for such "
    "applications created after '10/15/2018'. Use a tenant-specific endpoint or configure the "
    "application to be multi-tenant.",
    "invalid_client": "AADSTS7000218: The request body must contain the following parameter: "
    "'client_assertion' or 'client_secret'.",
    "unauthorized_client": f"AADSTS700016: Application with identifier '{{client}}' was not "
    f"found in the directory '{DOMAIN}'. This can happen if the application has not been "
    "installed by the administrator of the tenant or consented to by any user in the tenant.",
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass
class Request:
    method: str
    path: str
    form: dict[str, str]

    @property
    def grant(self) -> str:
        return self.form.get("grant_type", "")

    @property
    def scopes(self) -> set[str]:
        return set(self.form.get("scope", "").split())


@dataclass
class Script:
    """What the service answers; a test changes it before the request it is about."""

    #: Who signs in on the device-code page.
    username: str = USERNAME
    #: The access tokens' lifetime in seconds (msal counts under 5 minutes left as expired).
    expires_in: int = 3600
    #: The device code's lifetime and the polling interval msal is told to keep.
    code_expires_in: int = 900
    interval: int = 0
    #: Answers to the device-code grant, one per poll, then tokens: error names from ERRORS.
    device: deque[str] = field(default_factory=lambda: deque(["authorization_pending"]))
    #: Answer every further poll with this (say "authorization_pending", for ever).
    device_always: str = ""
    #: Answers to the refresh-token grant, one per request, then tokens.
    refresh: deque[str] = field(default_factory=deque)
    #: An error name for the device-code endpoint itself (a refused app).
    devicecode_error: str = ""
    #: The app is registered for one organisation: "organizations" and "common" refuse it.
    single_tenant: bool = False
    #: Answer every request with this HTTP status (a 503: the service is down) ...
    status: int = 0
    #: ... or every POST with a web page (a network's login page, say).
    page: bool = False


class Handler(BaseHTTPRequestHandler):
    server: SignInServer.HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.owner.handle(self, "GET", {})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = dict(parse_qsl(self.rfile.read(length).decode("utf-8")))
        self.server.owner.handle(self, "POST", form)


class SignInServer:
    """The sign-in service, at ``url``; ``script`` decides its answers."""

    class HTTPServer(ThreadingHTTPServer):
        daemon_threads = True
        owner: SignInServer

    def __init__(self, folder: Path) -> None:
        context, self.ca_file = tls_material(folder)
        self.script = Script()
        self.requests: list[Request] = []
        #: Every access, refresh and ID token handed out, and every device code.
        self.secrets: list[str] = []
        self.access_tokens: list[str] = []
        self.refresh_tokens: list[str] = []
        self.tenants = {"organizations", "common", TENANT_ID, DOMAIN}
        self.lock = threading.Lock()
        self.httpd = self.HTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.owner = self
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        self.oid = str(uuid.uuid4())
        #: The device codes handed out, with the scopes each was asked for.
        self.device_codes: dict[str, str] = {}
        # A short poll, so that stopping takes milliseconds, not half a second.
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()

    def grants(self, grant: str) -> list[Request]:
        """The token requests of one grant type: ``refresh_token`` or the device code's."""
        return [r for r in self.requests if r.grant.endswith(grant)]

    # -- answering -------------------------------------------------------------------

    def handle(self, handler: Handler, method: str, form: dict[str, str]) -> None:
        path = urlsplit(handler.path).path
        kind = "application/json"
        with self.lock:
            self.requests.append(Request(method, path, form))
            status, body = self.answer(method, path, form)
            data = json.dumps(body).encode("utf-8")
            if self.script.status:
                status, data = self.script.status, b'{"error": "temporarily_unavailable"}'
            elif self.script.page and method == "POST":
                status, data, kind = 200, b"<html><body>Welcome! Sign in</body></html>", "text/html"
        handler.send_response(status)
        handler.send_header("Content-Type", f"{kind}; charset=utf-8")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def answer(self, method: str, path: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        parts = path.strip("/").split("/")
        tenant, rest = parts[0], "/".join(parts[1:])
        if tenant not in self.tenants:
            return self.error(
                "invalid_tenant", f"AADSTS90002: Tenant '{tenant}' not found.", status=400
            )
        if method == "GET" and rest == "v2.0/.well-known/openid-configuration":
            return 200, self.configuration(tenant)
        if method == "POST" and rest == "oauth2/v2.0/devicecode":
            return self.devicecode(tenant, form)
        if method == "POST" and rest == "oauth2/v2.0/token":
            return self.token(form)
        return 404, {"error": "not_found"}

    def configuration(self, tenant: str) -> dict[str, Any]:
        base = f"{self.url}/{tenant}/oauth2/v2.0"
        return {
            "issuer": f"{self.url}/{TENANT_ID}/v2.0",
            "authorization_endpoint": f"{base}/authorize",
            "token_endpoint": f"{base}/token",
            "device_authorization_endpoint": f"{base}/devicecode",
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "tenant_region_scope": "EU",
        }

    def devicecode(self, tenant: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("client_id") != CLIENT_ID:
            return self.error("unauthorized_client", client=form.get("client_id", ""))
        if self.script.single_tenant and tenant in ("organizations", "common"):
            return self.error("invalid_request", client=form["client_id"])
        if self.script.devicecode_error:
            return self.error(self.script.devicecode_error, client=form["client_id"])
        device_code = "DAQABAAEAAAD-" + secrets.token_urlsafe(32)
        self.device_codes[device_code] = form.get("scope", "")
        self.secrets.append(device_code)
        user_code = secrets.choice("BCDFGHJKLMNPQRSTVWXZ") + secrets.token_hex(4).upper()
        verification_uri = "https://microsoft.com/devicelogin"
        return 200, {
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": verification_uri,
            "expires_in": self.script.code_expires_in,
            "interval": self.script.interval,
            "message": (
                f"To sign in, use a web browser to open the page {verification_uri} "
                f"and enter the code {user_code} to authenticate."
            ),
        }

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("client_id") != CLIENT_ID:
            return self.error("unauthorized_client", client=form.get("client_id", ""))
        grant = form.get("grant_type", "")
        if grant == "urn:ietf:params:oauth:grant-type:device_code":
            if form.get("device_code") not in self.device_codes:
                return self.error("bad_verification_code")
            if self.script.device:
                return self.error(self.script.device.popleft())
            if self.script.device_always:
                return self.error(self.script.device_always)
            return 200, self.tokens(self.device_codes.pop(form["device_code"]))
        if grant == "refresh_token":
            if self.script.refresh:
                return self.error(self.script.refresh.popleft())
            if form.get("refresh_token") not in self.refresh_tokens:
                return self.error("invalid_grant")
            return 200, self.tokens(form.get("scope", ""))
        return self.error("unsupported_grant_type")

    def tokens(self, scope: str) -> dict[str, Any]:
        """A token answer as Entra's v2.0 endpoint gives it, with new, unique tokens."""
        now = int(time.time())
        claims = {
            "aud": CLIENT_ID,
            "iss": f"{self.url}/{TENANT_ID}/v2.0",
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "name": "Campaign Desk",
            "oid": self.oid,
            "preferred_username": self.script.username,
            "sub": b64url(self.oid.encode()),
            "tid": TENANT_ID,
            "ver": "2.0",
        }
        if not self.script.username:
            del claims["preferred_username"]
        header = b64url(json.dumps({"typ": "JWT", "alg": "none"}).encode())
        id_token = f"{header}.{b64url(json.dumps(claims).encode())}."
        access = "eyJ0eXAiOiJKV1QiLCJub25jZSI6Ik." + secrets.token_urlsafe(48)
        refresh = "1.AQ4A-" + secrets.token_urlsafe(64)
        self.access_tokens.append(access)
        self.refresh_tokens.append(refresh)
        self.secrets.extend([access, refresh, id_token])
        return {
            "token_type": "Bearer",
            # The resource's scopes granted (Entra leaves out openid, profile, offline_access).
            "scope": " ".join(s for s in scope.split() if "://" in s),
            "expires_in": self.script.expires_in,
            "ext_expires_in": self.script.expires_in,
            "access_token": access,
            "refresh_token": refresh,
            "id_token": id_token,
            "client_info": b64url(json.dumps({"uid": self.oid, "utid": TENANT_ID}).encode()),
        }

    def error(
        self, error: str, description: str = "", status: int = 400, client: str = ""
    ) -> tuple[int, dict[str, Any]]:
        trace = uuid.uuid4()
        text = description or ERRORS.get(error, f"AADSTS50000: {error}.").format(client=client)
        return status, {
            "error": error,
            "error_description": f"{text}\r\nTrace ID: {trace}\r\nCorrelation ID: "
            f"{uuid.uuid4()}\r\nTimestamp: 2026-11-02 10:14:07Z",
            "error_codes": [int(text.split(":")[0].removeprefix("AADSTS"))],
            "trace_id": str(trace),
        }


def run_sign_in_server(folder: Path) -> Iterator[SignInServer]:
    server = SignInServer(folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()
