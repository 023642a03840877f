"""Will the letters arrive? MAIL_FROM's domain, as `outreach check` and `send` read it from DNS.

A real DNS server on loopback (tests/dnsserver.py) holds each story's
records; DNS_SERVER points outreach at it, as it would on a network whose
DNS server is not the system's. Each test asserts the line staff see.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from outreach.senderdomain import DomainCheck, check_sender_domain
from outreach.settings import load_settings
from tests.conftest import RunCli, write_csv
from tests.dnsserver import DnsServer, Zone, dns_server, silent_dns_server
from tests.smtp import SmtpServer

DOMAIN = "coalition.org"
KEY = "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu5kq" + "A" * 300
M365_SELECTOR1 = "selector1-coalition-org._domainkey.coalitionorg.onmicrosoft.com"
M365_SELECTOR2 = "selector2-coalition-org._domainkey.coalitionorg.onmicrosoft.com"


def microsoft365() -> dict[str, list[tuple[str, str]]]:
    """coalition.org as an administrator sets it up for Microsoft 365, everything turned on."""
    return {
        DOMAIN: [
            ("MX", "0 coalition-org.mail.protection.outlook.com"),
            ("TXT", "v=spf1 include:spf.protection.outlook.com -all"),
            ("TXT", "MS=ms12345678"),
        ],
        "spf.protection.outlook.com": [
            ("TXT", "v=spf1 ip4:40.92.0.0/15 ip4:40.107.0.0/16 ip6:2a01:111:f400::/48 -all")
        ],
        f"selector1._domainkey.{DOMAIN}": [("CNAME", M365_SELECTOR1)],
        f"selector2._domainkey.{DOMAIN}": [("CNAME", M365_SELECTOR2)],
        M365_SELECTOR1: [("TXT", KEY)],
        M365_SELECTOR2: [("TXT", KEY)],
        f"_dmarc.{DOMAIN}": [("TXT", "v=DMARC1; p=quarantine; rua=mailto:dmarc@coalition.org")],
    }


def google() -> dict[str, list[tuple[str, str]]]:
    return {
        DOMAIN: [
            ("MX", "1 smtp.google.com"),
            ("TXT", "v=spf1 include:_spf.google.com ~all"),
        ],
        "_spf.google.com": [
            (
                "TXT",
                "v=spf1 include:_netblocks.google.com include:_netblocks2.google.com "
                "include:_netblocks3.google.com ~all",
            )
        ],
        "_netblocks.google.com": [("TXT", "v=spf1 ip4:209.85.128.0/17 ~all")],
        "_netblocks2.google.com": [("TXT", "v=spf1 ip6:2001:4860:4000::/36 ~all")],
        "_netblocks3.google.com": [("TXT", "v=spf1 ip4:172.217.0.0/19 ~all")],
        f"google._domainkey.{DOMAIN}": [("TXT", KEY)],
        f"_dmarc.{DOMAIN}": [("TXT", "v=DMARC1; p=reject")],
    }


def without(
    zone: dict[str, list[tuple[str, str]]], *names: str
) -> dict[str, list[tuple[str, str]]]:
    return {name: records for name, records in zone.items() if name not in names}


def checked(server: DnsServer | str, **settings: str) -> DomainCheck:
    where = server if isinstance(server, str) else server.setting
    environ = {
        "MAIL_FROM": f"campaigns@{DOMAIN}",
        "SMTP_PROVIDER": "microsoft365",
        "SMTP_USERNAME": f"campaigns@{DOMAIN}",
        "DNS_SERVER": where,
        "DNS_TIMEOUT": "10",  # a busy machine's loopback server is still far quicker
        **settings,
    }
    return check_sender_domain(load_settings(environ=environ, env_file=None))


# -- the stories ---------------------------------------------------------------------------


def test_a_microsoft_365_domain_with_everything_turned_on_is_in_order() -> None:
    with dns_server(microsoft365()) as server:
        found = checked(server)
    assert found.lines() == [
        "ok: MX: mail for coalition.org goes to coalition-org.mail.protection.outlook.com",
        "ok: SPF: 'v=spf1 include:spf.protection.outlook.com -all' lets Microsoft 365 send for "
        "coalition.org (1 of 10 DNS lookups)",
        "ok: DKIM: selector1._domainkey and selector2._domainkey lead to Microsoft 365's keys "
        f"({M365_SELECTOR1}): letters are signed as coalition.org",
        "ok: DMARC: policy quarantine: a letter that fails both SPF and DKIM alignment goes to "
        "spam",
    ]
    assert found.in_order
    assert found.summary() == "coalition.org: MX, SPF, DKIM, DMARC in order"


def test_a_google_workspace_domain_with_everything_turned_on_is_in_order() -> None:
    with dns_server(google()) as server:
        found = checked(server, SMTP_PROVIDER="google")
    assert found.in_order, found.lines()
    assert found.lines()[1] == (
        "ok: SPF: 'v=spf1 include:_spf.google.com ~all' lets Google Workspace send for "
        "coalition.org (4 of 10 DNS lookups)"
    )
    assert found.lines()[2].startswith("ok: DKIM: google._domainkey holds a key: ")


@pytest.mark.parametrize(
    ("removed", "published"),
    [
        pytest.param(
            (f"selector1._domainkey.{DOMAIN}", f"selector2._domainkey.{DOMAIN}"),
            "no CNAME record at selector1._domainkey and selector2._domainkey",
            id="no-cname",
        ),
        pytest.param(
            (M365_SELECTOR1, M365_SELECTOR2),
            "the CNAME records selector1._domainkey and selector2._domainkey are published but "
            "lead to no key",
            id="cname-to-nothing",
        ),
    ],
)
def test_dkim_not_turned_on_for_microsoft_365_is_one_problem_saying_what_to_ask(
    removed: tuple[str, ...], published: str
) -> None:
    with dns_server(without(microsoft365(), *removed)) as server:
        found = checked(server)
    (dkim,) = [line for line in found.lines() if line.startswith("problem: DKIM")]
    assert dkim == (
        f"problem: DKIM: not turned on for coalition.org ({published}): Microsoft 365 signs the "
        "letters as its own domain, yourorganisation.onmicrosoft.com, which does not align with "
        "the From address, and a receiver with a strict DMARC policy quarantines them; ask your "
        "domain's administrator to publish the CNAME records selector1._domainkey and "
        "selector2._domainkey the Microsoft Defender portal shows (Email authentication "
        "settings, DKIM) and turn on signing for coalition.org there"
    )
    assert found.summary() == (
        "coalition.org: problem with DKIM (`make check` says what to ask your administrator)"
    )


def test_only_one_microsoft_365_selector_is_a_warning() -> None:
    with dns_server(without(microsoft365(), M365_SELECTOR2)) as server:
        found = checked(server)
    assert found.lines()[2].startswith(
        "warning: DKIM: selector2._domainkey.coalition.org leads to no key: Microsoft 365 "
        "switches to it when it rotates its keys"
    )


def test_dkim_not_turned_on_for_google_names_gappssmtp() -> None:
    with dns_server(without(google(), f"google._domainkey.{DOMAIN}")) as server:
        found = checked(server, SMTP_PROVIDER="google")
    assert found.lines()[2].startswith(
        "problem: DKIM: not turned on for coalition.org (no key at "
        "google._domainkey.coalition.org): Google signs the letters as its own domain, "
        "yourorganisation.gappssmtp.com"
    )
    assert "Google Admin console" in found.lines()[2]


def test_no_dmarc_is_a_warning_with_what_it_risks() -> None:
    with dns_server(without(microsoft365(), f"_dmarc.{DOMAIN}")) as server:
        found = checked(server)
    assert found.lines()[3] == (
        "warning: DMARC: coalition.org has no DMARC record: each receiver judges a letter that "
        "fails SPF or DKIM by its own rules, and Gmail, Yahoo and Microsoft ask senders for one; "
        "ask your domain's administrator to publish a TXT record on _dmarc.coalition.org: "
        '"v=DMARC1; p=none; rua=mailto:dmarc-reports@coalition.org" (p=none only asks for '
        "reports)"
    )
    assert found.summary() == (
        "coalition.org: warning with DMARC (`make check` says what to ask your administrator)"
    )


def test_a_subdomain_takes_its_organisations_dmarc_policy() -> None:
    zone = microsoft365()
    zone[f"news.{DOMAIN}"] = zone[DOMAIN]
    zone[f"selector1._domainkey.news.{DOMAIN}"] = [("CNAME", M365_SELECTOR1)]
    zone[f"selector2._domainkey.news.{DOMAIN}"] = [("CNAME", M365_SELECTOR2)]
    zone[f"_dmarc.{DOMAIN}"] = [("TXT", "v=DMARC1; p=none; sp=reject")]
    with dns_server(zone) as server:
        found = checked(server, MAIL_FROM=f"campaigns@news.{DOMAIN}")
    assert found.lines()[3] == (
        "ok: DMARC: policy reject (from _dmarc.coalition.org): a letter that fails both SPF "
        "and DKIM alignment is refused"
    )


def test_two_spf_records_are_a_problem() -> None:
    zone = microsoft365()
    zone[DOMAIN] = [*zone[DOMAIN], ("TXT", "v=spf1 include:servers.mcsv.net ~all")]
    with dns_server(zone) as server:
        found = checked(server)
    assert found.lines()[1] == (
        "problem: SPF: coalition.org has 2 SPF records, which receivers treat as an error "
        "(permerror) and then fail every letter's SPF; ask your domain's administrator to merge "
        "them into one TXT record beginning v=spf1"
    )


def spf_chain(depth: int, per_level: int) -> dict[str, list[tuple[str, str]]]:
    """An SPF record whose includes each cost lookups of their own, ``depth`` levels deep."""
    zone: dict[str, list[tuple[str, str]]] = {}
    for level in range(depth):
        here = f"spf{level}.relay.org"
        deeper = f" include:spf{level + 1}.relay.org" if level + 1 < depth else ""
        mechanisms = " ".join(["a", "mx"][:per_level])
        zone[here] = [("TXT", f"v=spf1 {mechanisms}{deeper} ~all")]
    return zone


@pytest.mark.parametrize(
    ("record", "extra"),
    [
        pytest.param(
            "v=spf1 "
            + " ".join(f"include:s{n}.mailers.org" for n in range(11))
            + " include:spf.protection.outlook.com -all",
            {f"s{n}.mailers.org": [("TXT", "v=spf1 ip4:192.0.2.0/24 -all")] for n in range(11)},
            id="eleven-includes",
        ),
        pytest.param(
            "v=spf1 include:spf.protection.outlook.com include:spf0.relay.org mx a -all",
            spf_chain(4, 2),
            id="nested",
        ),
        pytest.param(
            "v=spf1 include:spf.protection.outlook.com redirect=spf0.relay.org",
            spf_chain(5, 2),
            id="redirect",
        ),
    ],
)
def test_more_than_ten_dns_lookups_is_a_problem(record: str, extra: Zone) -> None:
    zone = {**microsoft365(), **extra}
    zone[DOMAIN] = [("MX", "0 mx.coalition.org"), ("TXT", record)]
    with dns_server(zone) as server:
        found = checked(server)
    spf = found.lines()[1]
    assert spf.startswith("problem: SPF: 'v=spf1 ")
    assert spf.endswith(
        "needs more than 10 DNS lookups, so receivers stop (permerror) and no letter passes "
        "SPF; ask your domain's administrator to shorten it (drop includes of services no "
        "longer used, or list their addresses)"
    )


def test_ten_lookups_are_still_allowed() -> None:
    zone = {
        **microsoft365(),
        **{f"s{n}.mailers.org": [("TXT", "v=spf1 ip4:192.0.2.0/24 -all")] for n in range(9)},
    }
    record = "v=spf1 " + " ".join(f"include:s{n}.mailers.org" for n in range(9))
    zone[DOMAIN] = [
        ("MX", "0 mx.coalition.org"),
        ("TXT", record + " include:spf.protection.outlook.com -all"),
    ]
    with dns_server(zone) as server:
        found = checked(server)
    assert found.lines()[1].startswith("ok: SPF: ")
    assert found.lines()[1].endswith("(10 of 10 DNS lookups)")


def test_spf_without_the_providers_include_is_a_problem() -> None:
    zone = microsoft365()
    zone[DOMAIN] = [("MX", "0 mx.coalition.org"), ("TXT", "v=spf1 include:_spf.google.com -all")]
    zone["_spf.google.com"] = [("TXT", "v=spf1 ip4:209.85.128.0/17 ~all")]
    with dns_server(zone) as server:
        found = checked(server)
    assert found.lines()[1] == (
        "problem: SPF: 'v=spf1 include:_spf.google.com -all' does not include "
        "spf.protection.outlook.com, so receivers will not accept that Microsoft 365 sends for "
        "coalition.org; ask your domain's administrator to add include:spf.protection.outlook.com "
        "to the SPF record"
    )


def test_a_cname_chain_leads_to_the_key() -> None:
    """selector1 → a CNAME → another CNAME → the key, as DNS hosting services sometimes chain."""
    zone = microsoft365()
    zone[f"selector1._domainkey.{DOMAIN}"] = [("CNAME", "dkim1.hosting.net")]
    zone["dkim1.hosting.net"] = [("CNAME", M365_SELECTOR1)]
    with dns_server(zone) as server:
        found = checked(server)
    assert found.lines()[2] == (
        "ok: DKIM: selector1._domainkey and selector2._domainkey lead to Microsoft 365's keys "
        f"({M365_SELECTOR1}): letters are signed as coalition.org"
    )
    assert ("dkim1.hosting.net", "TXT") not in server.asked  # the server followed the chain


def test_a_cname_loop_leads_to_no_key() -> None:
    zone = microsoft365()
    zone[f"selector1._domainkey.{DOMAIN}"] = [("CNAME", "a.hosting.net")]
    zone["a.hosting.net"] = [("CNAME", "b.hosting.net")]
    zone["b.hosting.net"] = [("CNAME", "a.hosting.net")]
    with dns_server(zone) as server:
        found = checked(server)
    # The DNS server fails the loop (SERVFAIL): the domain is not checked, nothing stops.
    assert found.lines() == [
        f"sender domain not checked: DNS_SERVER={server.setting} could not answer for "
        "selector1._domainkey.coalition.org (it failed or refused)"
    ]


@pytest.mark.parametrize(
    ("smtp_host", "records", "expected"),
    [
        pytest.param(
            "smtp.relay.net",
            [("TXT", "v=spf1 ip4:198.51.100.0/24 -all")],
            "ok: SPF: 'v=spf1 ip4:198.51.100.0/24 -all' covers SMTP_HOST smtp.relay.net "
            "(198.51.100.25) (0 of 10 DNS lookups)",
            id="address-covered",
        ),
        pytest.param(
            "smtp.relay.net",
            [("TXT", "v=spf1 include:spf.relay.net -all")],
            "ok: SPF: 'v=spf1 include:spf.relay.net -all' names spf.relay.net, the domain of "
            "SMTP_HOST (1 of 10 DNS lookups)",
            id="domain-named",
        ),
        pytest.param(
            "smtp.relay.net",
            [("TXT", "v=spf1 ip4:203.0.113.0/24 -all")],
            "warning: SPF: 'v=spf1 ip4:203.0.113.0/24 -all' does not name SMTP_HOST "
            "smtp.relay.net or its addresses, so receivers may not accept that it sends for "
            "coalition.org; ask your domain's administrator to add your SMTP server's SPF "
            "include (your provider's documentation names it)",
            id="not-covered",
        ),
    ],
)
def test_spf_for_another_smtp_server_shows_whether_it_covers_it(
    smtp_host: str, records: list[tuple[str, str]], expected: str
) -> None:
    zone: dict[str, list[tuple[str, str]]] = {
        DOMAIN: [("MX", "10 mx.relay.net"), *records],
        "spf.relay.net": [("TXT", "v=spf1 ip4:198.51.100.0/24 -all")],
        "smtp.relay.net": [("A", "198.51.100.25")],
        f"s1._domainkey.{DOMAIN}": [("TXT", KEY)],
        f"_dmarc.{DOMAIN}": [("TXT", "v=DMARC1; p=none")],
    }
    with dns_server(zone) as server:
        found = checked(server, SMTP_PROVIDER="", SMTP_HOST=smtp_host, DKIM_SELECTOR="s1")
    assert found.lines()[1] == expected
    assert found.lines()[2] == (
        "ok: DKIM: s1._domainkey holds a key: letters signed by your SMTP server are signed "
        "as coalition.org"
    )


def test_another_smtp_server_without_dkim_selector_says_how_to_find_it() -> None:
    with dns_server({DOMAIN: [("MX", "10 mx.relay.net")]}) as server:
        found = checked(server, SMTP_PROVIDER="", SMTP_HOST="smtp.relay.net")
    assert found.lines()[2] == (
        "warning: DKIM: not checked: set DKIM_SELECTOR to the selector your SMTP server signs "
        "with (ask your provider, or read the s= of the DKIM-Signature of a letter it sent)"
    )


def test_a_domain_that_does_not_exist_is_one_problem() -> None:
    with dns_server({}) as server:
        found = checked(server)
    assert found.lines() == [
        "problem: MX: coalition.org does not exist in DNS: receivers refuse mail from it; "
        "check MAIL_FROM"
    ]


def test_no_answer_is_one_line_not_checked() -> None:
    with silent_dns_server() as where:
        found = checked(where, DNS_TIMEOUT="0.3")
    assert found.lines() == [
        f"sender domain not checked: no answer from DNS_SERVER={where} within 0.3 s "
        "(offline, or DNS blocked on this network?)"
    ]
    assert found.summary().startswith("not checked: no answer from DNS_SERVER=")


@pytest.mark.parametrize(
    "sender", ["campaigns@coalition.example", "a@example.org", "me@news.example.com"]
)
def test_reserved_names_are_never_looked_up(sender: str) -> None:
    with dns_server(microsoft365()) as server:
        found = checked(server, MAIL_FROM=sender)
        assert server.asked == []
    domain = sender.partition("@")[2]
    assert found.lines() == [
        f"sender domain not checked: {domain} is a name reserved for examples and tests, "
        "never looked up"
    ]


# -- the commands --------------------------------------------------------------------------


def one_real_contact(project: Path) -> dict[str, str]:
    write_csv(project / "real.csv", "id,country,email\nCHL,Chile,chl@minrel.gob.cl\n")
    return {"CONTACTS_FILE": "real.csv", "MAIL_FROM": f"campaigns@{DOMAIN}"}


def test_check_names_dkim_not_turned_on_in_one_line(run_cli: RunCli, project: Path) -> None:
    zone = without(microsoft365(), M365_SELECTOR1, M365_SELECTOR2)
    with dns_server(zone) as server:
        env = {
            **one_real_contact(project),
            "SMTP_PROVIDER": "microsoft365",
            "SMTP_USERNAME": "campaigns@coalition.org",
            "DNS_SERVER": server.setting,
        }
        result = run_cli("check", env=env)
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    start = lines.index("Domain:    coalition.org (MAIL_FROM), as receivers see it:")
    assert lines[start + 1].startswith("           ok: MX: ")
    assert lines[start + 2].startswith("           ok: SPF: ")
    assert lines[start + 3].startswith(
        "           problem: DKIM: not turned on for coalition.org (the CNAME records "
    )
    assert lines[start + 4].startswith("           ok: DMARC: policy quarantine")
    assert "Everything is in order." not in result.stdout


def test_check_offline_says_not_checked_and_exits_as_before(run_cli: RunCli, project: Path) -> None:
    with silent_dns_server() as where:
        env = {**one_real_contact(project), "DNS_SERVER": where, "DNS_TIMEOUT": "0.3"}
        result = run_cli("check", env=env)
    assert result.code == 0, result.stderr
    domain_lines = [line for line in result.stdout.splitlines() if "sender domain" in line]
    assert domain_lines == [
        f"Domain:    sender domain not checked: no answer from DNS_SERVER={where} within 0.3 s "
        "(offline, or DNS blocked on this network?)"
    ]


def test_the_plan_of_send_has_one_line_and_the_letters_still_go(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer
) -> None:
    zone = without(
        microsoft365(), f"selector1._domainkey.{DOMAIN}", f"selector2._domainkey.{DOMAIN}"
    )
    with dns_server(zone) as server:
        env = {
            **smtp_server.env(),
            **one_real_contact(project),
            "DNS_SERVER": server.setting,
            "DKIM_SELECTOR": "selector1;selector2",
        }
        result = run_cli("send", "--yes", env=env)
    assert result.code == 0, result.stderr
    assert (
        "Sender domain: coalition.org: problem with DKIM (`make check` says what to ask your "
        "administrator)"
    ) in result.stdout.splitlines()
    assert len(smtp_server.received) == 1


def test_the_plan_of_send_goes_on_when_dns_is_silent(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer
) -> None:
    with silent_dns_server() as where:
        env = {
            **smtp_server.env(),
            **one_real_contact(project),
            "DNS_SERVER": where,
            "DNS_TIMEOUT": "0.3",
        }
        result = run_cli("send", "--yes", env=env)
    assert result.code == 0, result.stderr
    assert (
        f"Sender domain: not checked: no answer from DNS_SERVER={where} within 0.3 s "
        "(offline, or DNS blocked on this network?)"
    ) in result.stdout.splitlines()
    assert len(smtp_server.received) == 1


# -- the settings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "servers"),
    [
        ("127.0.0.1", (("127.0.0.1", 53),)),
        ("127.0.0.1:5353", (("127.0.0.1", 5353),)),
        ("[::1]:5353", (("::1", 5353),)),
        ("::1", (("::1", 53),)),
        ("10.0.0.53; 10.0.0.54:5300", (("10.0.0.53", 53), ("10.0.0.54", 5300))),
    ],
)
def test_dns_server_takes_addresses_and_ports(
    value: str, servers: tuple[tuple[str, int], ...]
) -> None:
    settings = load_settings(environ={"DNS_SERVER": value}, env_file=None)
    assert settings.dns_servers == servers


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        (
            "DNS_SERVER",
            "dns.coalition.org",
            "Error: DNS_SERVER='dns.coalition.org' is not valid: expected an IP address, with a "
            "port if not 53 (127.0.0.1:5353, [::1]:5353); several separated by ';'",
        ),
        (
            "DNS_SERVER",
            "127.0.0.1:99999",
            "Error: DNS_SERVER='127.0.0.1:99999' is not valid: expected an IP address",
        ),
        (
            "DNS_TIMEOUT",
            "600",
            "Error: DNS_TIMEOUT='600' is not valid: expected a number from 0.1 to 30",
        ),
        (
            "DKIM_SELECTOR",
            "s1._domainkey\nx",
            "Error: DKIM_SELECTOR='s1._domainkey\\nx' is not valid",
        ),
    ],
)
def test_bad_dns_settings_are_one_line_naming_the_setting(
    run_cli: RunCli, project: Path, name: str, value: str, error: str
) -> None:
    result = run_cli("check", env={name: value})
    assert result.code == 2
    assert result.stderr.startswith(error), result.stderr
    assert "Traceback" not in result.stderr


def test_a_mistyped_dns_setting_is_named(run_cli: RunCli, project: Path) -> None:
    one_real_contact(project)
    env_file = "CONTACTS_FILE=real.csv\nDNS_SERVR=127.0.0.1\n"
    (project / ".env").write_text(env_file, encoding="utf-8")
    result = run_cli("check")
    assert (
        "Warning: .env: DNS_SERVR is not a setting outreach knows (did you mean DNS_SERVER?)"
        in (result.stderr)
    )


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        (
            ["v=DMARC1;p=reject"],
            "ok: DMARC: policy reject: a letter that fails both SPF and DKIM alignment is refused",
        ),
        (
            ["v=DMARC1; p=none; rua=mailto:d@coalition.org"],
            "ok: DMARC: policy none: receivers only report letters that fail, and deliver them",
        ),
        (
            ["v=DMARC1; rua=mailto:d@coalition.org"],
            "problem: DMARC: _dmarc.coalition.org 'v=DMARC1; rua=mailto:d@coalition.org' has no "
            "valid policy (p=none, quarantine or reject), so receivers ignore it; ask your "
            "domain's administrator to correct it",
        ),
        (
            ["v=DMARC1; p=none", "v=DMARC1; p=reject"],
            "problem: DMARC: _dmarc.coalition.org holds 2 DMARC records, so receivers ignore "
            "them all; ask your domain's administrator to keep one",
        ),
        (
            ["v=DMARC10; p=reject", "google-site-verification=abc"],
            "warning: DMARC: coalition.org has no DMARC record: each receiver judges",
        ),
    ],
    ids=["no-space", "none", "no-policy", "two", "not-dmarc"],
)
def test_dmarc_records_as_written(records: list[str], expected: str) -> None:
    zone = microsoft365()
    zone[f"_dmarc.{DOMAIN}"] = [("TXT", record) for record in records]
    with dns_server(zone) as server:
        found = checked(server)
    assert found.lines()[3].startswith(expected)


def test_a_revoked_dkim_key_is_a_problem() -> None:
    zone = {
        DOMAIN: [("MX", "10 mx.relay.net"), ("TXT", "v=spf1 ip4:198.51.100.0/24 -all")],
        f"s1._domainkey.{DOMAIN}": [("TXT", "v=DKIM1; k=rsa; p=")],
        f"_dmarc.{DOMAIN}": [("TXT", "v=DMARC1; p=none")],
    }
    with dns_server(zone) as server:
        found = checked(server, SMTP_PROVIDER="", SMTP_HOST="198.51.100.7", DKIM_SELECTOR="s1")
    assert found.lines()[1] == (
        "ok: SPF: 'v=spf1 ip4:198.51.100.0/24 -all' covers SMTP_HOST 198.51.100.7 (0 of 10 "
        "DNS lookups)"
    )
    assert found.lines()[2] == (
        "problem: DKIM: the key at s1._domainkey.coalition.org is revoked (p= is empty), so "
        "letters signed with it fail DKIM; ask your domain's administrator to publish the "
        "current key, or set DKIM_SELECTOR to the one in use"
    )


def test_records_holding_terminal_escapes_are_shown_harmless() -> None:
    zone = microsoft365()
    zone[DOMAIN] = [
        ("MX", "0 coalition-org.mail.protection.outlook.com"),
        ("TXT", "v=spf1 ip4:\x1b[2J\x1b]0;pwned\x07 include:spf.protection.outlook.com -all"),
    ]
    with dns_server(zone) as server:
        found = checked(server)
    shown = "\n".join(found.lines())
    assert "\x1b" not in shown
    assert "\x07" not in shown
    assert found.lines()[1].startswith("problem: SPF: 'v=spf1 ip4:?[2J?]0;pwned? include:")
    assert "is not a valid address range" in found.lines()[1]
