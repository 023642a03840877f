"""E-mail addresses: one checker for contacts, settings and command options."""

from __future__ import annotations

import functools
import ipaddress
from typing import TYPE_CHECKING

from email_validator import EmailNotValidError, validate_email

from outreach.headers import unsafe_header_reason

if TYPE_CHECKING:
    from publicsuffixlist import PublicSuffixList

#: Domains that can never receive mail (RFC 2606, RFC 6761); the shipped
#: contacts use ``.example`` so that nothing is delivered by mistake.
RESERVED_SUFFIXES = (".example", ".test", ".invalid", ".localhost")
RESERVED_DOMAINS = ("example.com", "example.net", "example.org")


class AddressError(ValueError):
    """An address that cannot be used, with email-validator's explanation."""


def validate_address(text: str) -> str:
    """The address in the form to put on the envelope, or AddressError.

    No DNS look-up: previews must work offline, and a mission's server being
    down today is not a reason to refuse its address.
    """
    reason = unsafe_header_reason(text)
    if reason:
        raise AddressError(f"it {reason}")
    if "," in text:
        raise AddressError("it holds ','; separate several addresses with ';'")
    try:
        checked = validate_email(
            text,
            check_deliverability=False,
            allow_smtputf8=False,
            allow_display_name=False,
            test_environment=False,
        )
    except EmailNotValidError as err:
        raise AddressError(str(err)) from err
    return checked.ascii_email or checked.normalized


def split_list(cell: str) -> list[str]:
    """The ``;``-separated items of a cell or a setting (addresses, paths, folders),
    blanks dropped: outreach has one list separator, a spreadsheet's own."""
    return [part.strip() for part in cell.split(";") if part.strip()]


def is_placeholder(address: str) -> bool:
    """True for an address on a domain reserved for examples and tests."""
    return is_reserved_domain(address.rpartition("@")[2])


def is_reserved_domain(domain: str) -> bool:
    """True for a domain reserved for examples and tests, which no real server has."""
    domain = domain.lower().rstrip(".")
    return (
        domain.endswith(RESERVED_SUFFIXES)
        or domain in RESERVED_DOMAINS
        or any(domain.endswith("." + d) for d in RESERVED_DOMAINS)
    )


def is_loopback(host: str) -> bool:
    """True for this machine's own addresses, judged without any DNS look-up."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@functools.cache
def _public_suffixes() -> PublicSuffixList:
    from publicsuffixlist import PublicSuffixList  # only the commands that judge a domain

    return PublicSuffixList()  # the list the package ships: nothing is downloaded


def organisational_domain(domain: str) -> str:
    """The domain an organisation registered (RFC 7489 3.2), by the Public Suffix List.

    ``news.coalition.org`` is ``coalition.org``; ``coalition.org.uk`` stays
    itself, where taking the last two labels would give ``org.uk``.
    """
    domain = domain.lower().rstrip(".")
    found = _public_suffixes().privatesuffix(domain)
    return str(found) if found else domain
