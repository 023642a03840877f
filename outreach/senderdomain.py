"""Will the letters arrive? The DNS records of MAIL_FROM's domain, read before sending.

The gateways of foreign ministries and of the UN judge a letter by the
domain it says it comes from, through three records its administrator
publishes: SPF (the servers that may send for the domain), DKIM (the key
the letters are signed with) and DMARC (what a receiver does with a letter
that neither passes). An organisation sending from Microsoft 365 or Google
Workspace often has SPF but never turned DKIM on for its own domain: the
provider then signs as ``*.onmicrosoft.com`` or ``*.gappssmtp.com``, which
does not align with the From address, and a strict receiver quarantines
the letter. Nobody is told.

This module asks DNS (with dnspython) and turns each record into one line,
``ok``, ``warning`` or ``problem``, saying in plain words what to ask the
domain's administrator. It never stops a send: no answer from DNS
(offline, a blocked network) is one line, "sender domain not checked", and
every query is bounded by DNS_TIMEOUT, the whole check by a few times that.
A domain reserved for examples (``.example``, ``.test``, ``.invalid``,
``.localhost``) is never looked up.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import dns.exception
import dns.name
import dns.nameserver
import dns.resolver

from outreach.addresses import is_loopback, is_reserved_domain, organisational_domain
from outreach.settings import Settings

OK, WARNING, PROBLEM = "ok", "warning", "problem"
#: RFC 7208 4.6.4: receivers give up (permerror) on an SPF record needing more.
SPF_LOOKUP_LIMIT = 10
#: The whole check may take this many times DNS_TIMEOUT, however many queries.
BUDGET_TIMEOUTS = 4
#: What each provider publishes, and how it names itself to staff.
PROVIDER_NAMES = {"microsoft365": "Microsoft 365", "google": "Google Workspace"}
PROVIDER_SPF = {"microsoft365": "spf.protection.outlook.com", "google": "_spf.google.com"}
PROVIDER_SELECTORS = {"microsoft365": ("selector1", "selector2"), "google": ("google",)}
#: The SMTP servers of the providers, for a setup that names SMTP_HOST without SMTP_PROVIDER.
PROVIDER_HOSTS = {
    "smtp.office365.com": "microsoft365",
    "smtp-mail.outlook.com": "microsoft365",
    "smtp.gmail.com": "google",
    "smtp-relay.gmail.com": "google",
}
_ASK = "ask your domain's administrator to"
#: What a check says of its record: a level and what to do.
_Said = tuple[str, str]
_SHOWN = 90


class _NotChecked(Exception):
    """DNS gave no usable answer: the check stops, and says why in one line."""


@dataclass(frozen=True)
class Finding:
    """One record's verdict: ``ok``, ``warning`` or ``problem``, and what to do."""

    record: str
    level: str
    text: str

    def line(self) -> str:
        """The finding as staff see it; DNS data is anybody's, so nothing unprintable shows."""
        text = "".join(c if c.isprintable() else "?" for c in self.text)
        return f"{self.level}: {self.record}: {text}"


@dataclass(frozen=True)
class DomainCheck:
    """What DNS says of MAIL_FROM's domain, or why it was not asked."""

    domain: str
    findings: tuple[Finding, ...] = ()
    #: Why the domain was not checked ("" when it was).
    not_checked: str = ""

    def lines(self) -> list[str]:
        """One line per finding; exactly one when the domain was not checked."""
        if self.not_checked:
            return [f"sender domain not checked: {self.not_checked}"]
        return [finding.line() for finding in self.findings]

    @property
    def in_order(self) -> bool:
        """No warning and no problem (a domain not checked has none to show)."""
        return all(f.level == OK for f in self.findings)

    def summary(self) -> str:
        """The check in one line, for the plan of ``send``."""
        if self.not_checked:
            return f"not checked: {self.not_checked}"
        if self.in_order:
            records = ", ".join(f.record for f in self.findings)
            return f"{self.domain}: {records} in order"
        parts = []
        for level in (PROBLEM, WARNING):
            named = [f.record for f in self.findings if f.level == level]
            if named:
                parts.append(f"{level}{'s' if len(named) > 1 else ''} with {', '.join(named)}")
        return (
            f"{self.domain}: {'; '.join(parts)} (`make check` says what to ask your administrator)"
        )


@dataclass(frozen=True)
class _Answer:
    """One query's records as text, the name CNAMEs led to ("" if none), whether it exists."""

    records: tuple[str, ...]
    target: str
    exists: bool


class _Dns:
    """One bounded conversation with the DNS server: any silence ends the whole check."""

    def __init__(self, settings: Settings) -> None:
        self.timeout = settings.dns_timeout
        self.deadline = time.monotonic() + BUDGET_TIMEOUTS * self.timeout
        if settings.dns_servers:
            self.resolver = dns.resolver.Resolver(configure=False)
            self.resolver.nameservers = [
                dns.nameserver.Do53Nameserver(address, port)
                for address, port in settings.dns_servers
            ]
            self.where = "DNS_SERVER=" + ";".join(
                f"[{a}]:{p}" if ":" in a else f"{a}:{p}" for a, p in settings.dns_servers
            )
        else:
            try:
                self.resolver = dns.resolver.Resolver()
            except dns.resolver.NoResolverConfiguration as err:
                raise _NotChecked(
                    "this computer has no DNS server set up (no /etc/resolv.conf); "
                    "set DNS_SERVER to one"
                ) from err
            first = self.resolver.nameservers[0] if self.resolver.nameservers else ""
            self.where = f"the DNS server {first}".rstrip()
        self.resolver.timeout = self.timeout
        self.resolver.lifetime = self.timeout

    def ask(self, name: str, rdtype: str) -> _Answer:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise _NotChecked(
                f"{self.where} answered too slowly (more than {BUDGET_TIMEOUTS * self.timeout:g} s "
                "in all)"
            )
        records: tuple[str, ...] = ()
        try:
            answer = self.resolver.resolve(
                name,
                rdtype,
                lifetime=min(self.timeout, remaining),
                search=False,
                raise_on_no_answer=False,
            )
        except dns.resolver.NXDOMAIN as err:
            canonical, exists = err.canonical_name, False
        except dns.exception.Timeout as err:
            raise _NotChecked(
                f"no answer from {self.where} within {self.timeout:g} s "
                "(offline, or DNS blocked on this network?)"
            ) from err
        except dns.resolver.NoNameservers as err:
            raise _NotChecked(
                f"{self.where} could not answer for {name} (it failed or refused)"
            ) from err
        except dns.exception.DNSException as err:
            raise _NotChecked(f"{self.where} gave no usable answer for {name} ({err})") from err
        else:
            records = tuple(_text(rdata) for rdata in answer.rrset or ())
            canonical, exists = answer.canonical_name, True
        target = canonical.to_text(omit_final_dot=True)
        via_cname = target.lower() != name.lower().rstrip(".")
        return _Answer(records, target if via_cname else "", exists)

    def txt(self, name: str, version: re.Pattern[str]) -> list[str]:
        """The TXT records of ``name`` that begin with ``version`` (SPF's, DMARC's)."""
        return [r for r in self.ask(name, "TXT").records if version.match(r.strip())]

    def addresses(self, name: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        """The A and AAAA records of ``name`` (dnspython has checked that each is an address)."""
        return [ipaddress.ip_address(r) for t in ("A", "AAAA") for r in self.ask(name, t).records]


def _text(rdata: object) -> str:
    """A record as text: a TXT record's strings joined, as RFC 7208 and 6376 read them."""
    strings = getattr(rdata, "strings", None)
    if strings is not None:
        return b"".join(strings).decode("utf-8", "replace")
    return str(rdata.to_text()).rstrip(".")  # type: ignore[attr-defined]


#: The first tag of an SPF record (RFC 7208 4.5) and of a DMARC record (RFC 7489 6.4).
SPF_VERSION = re.compile(r"v=spf1(?:\s|$)", re.IGNORECASE)
DMARC_VERSION = re.compile(r"v\s*=\s*DMARC1\s*(?:;|$)", re.IGNORECASE)


def _shown(record: str) -> str:
    record = "".join(c if c.isprintable() else "?" for c in record)
    return record if len(record) <= _SHOWN else record[: _SHOWN - 1] + "…"


def check_sender_domain(settings: Settings) -> DomainCheck:
    """MAIL_FROM's domain as receivers will judge it: MX, SPF, DKIM, DMARC, one line each.

    Never raises for want of DNS: a silent or missing DNS server makes a
    check with ``not_checked`` set, and nothing else stops.
    """
    if not settings.mail_from:
        return DomainCheck("", not_checked="MAIL_FROM is not set")
    domain = settings.mail_from.rpartition("@")[2].lower().rstrip(".")
    if is_reserved_domain(domain) or is_loopback(domain):
        return DomainCheck(
            domain,
            not_checked=f"{domain} is a name reserved for examples and tests, never looked up",
        )
    try:
        return DomainCheck(domain, tuple(_findings(_Dns(settings), domain, settings)))
    except _NotChecked as why:
        return DomainCheck(domain, not_checked=str(why))


def _findings(asker: _Dns, domain: str, settings: Settings) -> Iterable[Finding]:
    # SMTP_PROVIDER, or the provider SMTP_HOST belongs to; "" for any other server.
    host = settings.smtp_host.lower().rstrip(".")
    provider = settings.smtp_provider or PROVIDER_HOSTS.get(host, "")
    answer = asker.ask(domain, "MX")
    yield Finding("MX", *_mx(domain, answer))
    if not answer.exists:
        return  # no SPF, DKIM or DMARC record can be found under a name that is not there
    yield Finding("SPF", *_spf(asker, domain, provider, settings.smtp_host))
    yield Finding("DKIM", *_dkim(asker, domain, provider, settings.dkim_selectors))
    yield Finding("DMARC", *_dmarc(asker, domain))


# -- MX ------------------------------------------------------------------------------------


def _mx(domain: str, answer: _Answer) -> _Said:
    if not answer.exists:
        return (
            PROBLEM,
            f"{domain} does not exist in DNS: receivers refuse mail from it; check MAIL_FROM",
        )
    hosts = sorted(
        (int(pref), host.rstrip(".").lower())
        for pref, _, host in (r.partition(" ") for r in answer.records)
        if pref.isdigit()
    )
    if not hosts:
        return (
            PROBLEM,
            f"{domain} has no MX record, so replies and bounces to MAIL_FROM cannot arrive, "
            f"and many receivers refuse mail from a domain that takes none; {_ASK} publish "
            "the MX record of your mail provider",
        )
    if [host for _, host in hosts] == [""]:
        return (
            PROBLEM,
            f"{domain} says it takes no mail at all (a null MX record), and receivers refuse "
            f"mail from such a domain; send from another address, or {_ASK} publish an MX record",
        )
    more = f" (and {len(hosts) - 1} more)" if len(hosts) > 1 else ""
    return (OK, f"mail for {domain} goes to {hosts[0][1]}{more}")


# -- SPF -----------------------------------------------------------------------------------


@dataclass
class _SpfWalk:
    """An SPF record and every record it includes, as a receiver would walk them."""

    asker: _Dns
    lookups: int = 0
    includes: list[str] = field(default_factory=list)
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    @property
    def over(self) -> bool:
        return self.lookups > SPF_LOOKUP_LIMIT

    def walk(self, domain: str, record: str) -> None:
        self.seen.add(domain)
        redirect = ""
        for term in record.split()[1:]:
            if self.over:
                return
            name, _, value = term.lstrip("+-~?").partition(":")
            name = name.lower()
            if "=" in name:  # a modifier: redirect=, exp=
                modifier, _, target = term.partition("=")
                if modifier.lower() == "redirect":
                    redirect = target
                continue
            name, _, _cidr = name.partition("/")
            if name in ("include", "a", "mx", "ptr", "exists"):
                self.lookups += 1
            if name == "include" and value:
                self._follow(value)
            elif name == "a":
                self.hosts.append((value.partition("/")[0] or domain).lower())
            elif name in ("ip4", "ip6"):
                try:
                    self.networks.append(ipaddress.ip_network(value, strict=False))
                except ValueError:
                    self.errors.append(f"{term} is not a valid address range")
        if redirect and not self.over:
            self.lookups += 1
            self._follow(redirect)

    def _follow(self, target: str) -> None:
        """Walk the record an include: or redirect= names, counted as included."""
        self.includes.append(target.lower())
        if "%" in target or target.lower() in self.seen or self.over:
            return  # a macro needs the letter's own sender to expand
        records = self.asker.txt(target, SPF_VERSION)
        if not records:
            self.errors.append(
                f"include:{target} has no SPF record, which receivers treat as an error"
            )
            return
        self.walk(target.lower(), records[0])


def _spf(asker: _Dns, domain: str, provider: str, smtp_host: str) -> _Said:
    records = asker.txt(domain, SPF_VERSION)
    service = PROVIDER_NAMES.get(provider, "your SMTP server")
    include = PROVIDER_SPF.get(provider)
    if not records:
        what = f'"v=spf1 include:{include} -all"' if include else "one naming your SMTP server"
        return (
            PROBLEM,
            f"{domain} has no SPF record, so receivers cannot tell that {service} may send for "
            f"it; {_ASK} publish a TXT record on {domain}: {what}",
        )
    if len(records) > 1:
        return (
            PROBLEM,
            f"{domain} has {len(records)} SPF records, which receivers treat as an error "
            f"(permerror) and then fail every letter's SPF; {_ASK} merge them into one TXT "
            "record beginning v=spf1",
        )
    shown = repr(_shown(records[0]))
    walk = _SpfWalk(asker)
    walk.walk(domain, records[0])
    if walk.over:
        return (
            PROBLEM,
            f"{shown} needs more than {SPF_LOOKUP_LIMIT} DNS lookups, so receivers "
            f"stop (permerror) and no letter passes SPF; {_ASK} shorten it (drop includes of "
            "services no longer used, or list their addresses)",
        )
    if walk.errors:
        return (PROBLEM, f"{shown}: {walk.errors[0]}; {_ASK} correct the SPF record")
    counted = f"{walk.lookups} of {SPF_LOOKUP_LIMIT} DNS lookups"
    if not include:
        return _spf_for_server(asker, domain, shown, walk, smtp_host, counted)
    if include in walk.includes:
        return (OK, f"{shown} lets {service} send for {domain} ({counted})")
    return (
        PROBLEM,
        f"{shown} does not include {include}, so receivers will not accept "
        f"that {service} sends for {domain}; {_ASK} add include:{include} to the SPF record",
    )


def _spf_for_server(
    asker: _Dns, domain: str, shown: str, walk: _SpfWalk, smtp_host: str, counted: str
) -> _Said:
    """Whether the record names SMTP_HOST's domain or covers one of its addresses."""
    if not smtp_host or is_loopback(smtp_host) or is_reserved_domain(smtp_host):
        return (OK, f"{shown} ({counted}); SMTP_HOST is not a server to judge it by")
    host = smtp_host.lower().rstrip(".")
    base = ".".join(host.split(".")[-2:])
    named = [n for n in (*walk.includes, *walk.hosts) if n == base or n.endswith("." + base)]
    if named:
        return (OK, f"{shown} names {named[0]}, the domain of SMTP_HOST ({counted})")
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        addresses = asker.addresses(host)
    for network in walk.networks:
        for address in addresses:
            if address.version == network.version and address in network:
                which = "" if str(address) == host else f" ({address})"
                return (OK, f"{shown} covers SMTP_HOST {host}{which} ({counted})")
    for name in walk.hosts:
        if set(asker.addresses(name)) & set(addresses):
            return (OK, f"{shown} covers SMTP_HOST {host} by a:{name} ({counted})")
    return (
        WARNING,
        f"{shown} does not name SMTP_HOST {host} or its addresses, so receivers may not "
        f"accept that it sends for {domain}; {_ASK} add your SMTP server's SPF include "
        "(your provider's documentation names it)",
    )


# -- DKIM ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Key:
    selector: str
    state: str  # "key", "revoked", "dangling" (a CNAME to no key), "missing"
    target: str = ""


def _key(asker: _Dns, domain: str, selector: str) -> _Key:
    answer = asker.ask(f"{selector}._domainkey.{domain}", "TXT")
    keys = [m[1] for r in answer.records if (m := re.search(r"(?:^|;)\s*p\s*=\s*([^;]*)", r))]
    if keys:
        return _Key(selector, "key" if keys[0].strip() else "revoked", answer.target)
    return _Key(selector, "dangling" if answer.target else "missing", answer.target)


def _dkim(asker: _Dns, domain: str, provider: str, configured: tuple[str, ...]) -> _Said:
    selectors = configured or PROVIDER_SELECTORS.get(provider, ())
    if not selectors:
        return (
            WARNING,
            "not checked: set DKIM_SELECTOR to the selector your SMTP server signs with "
            "(ask your provider, or read the s= of the DKIM-Signature of a letter it sent)",
        )
    keys = [_key(asker, domain, selector) for selector in selectors]
    names = " and ".join(f"{k.selector}._domainkey" for k in keys)
    bad = next((k for k in keys if k.state != "key"), None)
    service = PROVIDER_NAMES.get(provider, "your SMTP server")
    if provider == "microsoft365" and not configured:
        if bad is None:
            target = keys[0].target or "a key of its own"
            return (
                OK,
                f"{names} lead to Microsoft 365's keys ({target}): letters are signed as {domain}",
            )
        if any(k.state == "key" for k in keys):
            return (
                WARNING,
                f"{bad.selector}._domainkey.{domain} leads to no key: Microsoft 365 "
                f"switches to it when it rotates its keys, and letters then fail DKIM; {_ASK} "
                "publish both CNAME records the Microsoft Defender portal shows (Email "
                "authentication settings, DKIM)",
            )
        if any(k.state == "dangling" for k in keys):
            first = f"the CNAME records {names} are published but lead to no key"
        else:
            first = f"no CNAME record at {names}"
        return (
            PROBLEM,
            f"not turned on for {domain} ({first}): Microsoft 365 signs the letters as its own "
            "domain, yourorganisation.onmicrosoft.com, which does not align with the From "
            "address, and a receiver with a strict DMARC policy quarantines them; "
            f"{_ASK} publish the CNAME records selector1._domainkey and selector2._domainkey "
            "the Microsoft Defender portal shows (Email authentication settings, DKIM) and "
            f"turn on signing for {domain} there",
        )
    if bad is None:
        via = f" (through {keys[0].target})" if keys[0].target else ""
        return (
            OK,
            f"{names} hold{'s' if len(keys) == 1 else ''} a key{via}: "
            f"letters signed by {service} are signed as {domain}",
        )
    where = f"{bad.selector}._domainkey.{domain}"
    if bad.state == "revoked":
        return (
            PROBLEM,
            f"the key at {where} is revoked (p= is empty), so letters signed with it fail "
            f"DKIM; {_ASK} publish the current key, or set DKIM_SELECTOR to the one in use",
        )
    if provider == "google" and not configured:
        return (
            PROBLEM,
            f"not turned on for {domain} (no key at {where}): Google signs the letters as its "
            "own domain, yourorganisation.gappssmtp.com, which does not align with the From "
            f"address, and a receiver with a strict DMARC policy quarantines them; {_ASK} generate "
            "the DKIM record in the Google Admin console (Apps, Google Workspace, Gmail, "
            "Authenticate email), publish it as TXT google._domainkey, then press Start "
            "authentication",
        )
    how = f"the CNAME record leads to {bad.target}, which holds no key" if bad.target else "no key"
    return (
        PROBLEM,
        f"{where}: {how}, so letters are not signed as {domain} and a receiver with a strict "
        f"DMARC policy quarantines them; {_ASK} turn DKIM on for {domain} with {service} and "
        "publish its key (or set DKIM_SELECTOR to the selector in use)",
    )


# -- DMARC ---------------------------------------------------------------------------------


def _dmarc(asker: _Dns, domain: str) -> _Said:
    # A subdomain without a record of its own takes its organisation's (RFC 7489 6.6.3).
    for place in dict.fromkeys((domain, organisational_domain(domain))):
        records = asker.txt(f"_dmarc.{place}", DMARC_VERSION)
        if records:
            break
    else:
        return (
            WARNING,
            f"{domain} has no DMARC record: each receiver judges a letter that fails SPF or "
            "DKIM by its own rules, and Gmail, Yahoo and Microsoft ask senders for one; "
            f'{_ASK} publish a TXT record on _dmarc.{domain}: "v=DMARC1; p=none; '
            f'rua=mailto:dmarc-reports@{domain}" (p=none only asks for reports)',
        )
    where = f"_dmarc.{place}"
    if len(records) > 1:
        return (
            PROBLEM,
            f"{where} holds {len(records)} DMARC records, so receivers ignore them all; "
            f"{_ASK} keep one",
        )
    tags = {
        key.strip().lower(): value.strip()
        for key, _, value in (part.partition("=") for part in records[0].split(";"))
    }
    policy = tags.get("sp" if place != domain else "p", "") or tags.get("p", "")
    meaning = {
        "none": "receivers only report letters that fail, and deliver them",
        "quarantine": "a letter that fails both SPF and DKIM alignment goes to spam",
        "reject": "a letter that fails both SPF and DKIM alignment is refused",
    }.get(policy.lower())
    if meaning is None:
        return (
            PROBLEM,
            f"{where} {_shown(records[0])!r} has no valid policy (p=none, quarantine or "
            f"reject), so receivers ignore it; {_ASK} correct it",
        )
    inherited = f" (from {where})" if place != domain else ""
    return (OK, f"policy {policy.lower()}{inherited}: {meaning}")
