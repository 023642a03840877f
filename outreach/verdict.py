"""The test letter's verdict: what the receiving server thought of it.

``outreach test-send`` puts one real letter, marked ``[TEST]``, in a
mailbox; when ``outreach inbox`` reads it back (from the campaign's own
mailbox, or ``--from`` the saved message), the headers the receiving server
added say whether the letter would pass a strict gateway:

- ``Authentication-Results`` (RFC 8601), parsed with the ``authres``
  library: SPF, DKIM with the domain that signed, DMARC. Microsoft 365
  writes the header without the name of the server that judged
  (``spf=pass (sender IP is …) smtp.mailfrom=…; dkim=pass … header.d=…``);
  it is read the same way. Only the topmost header counts: it is the last
  server's, the one that delivered the letter; older ones may be anybody's.
- whether DKIM aligns with the From domain: a letter signed only as
  ``*.onmicrosoft.com`` or ``*.gappssmtp.com`` passes DKIM and still fails
  a strict DMARC policy.
- the spam verdicts Microsoft 365 (``X-Forefront-Antispam-Report``: SCL,
  SFV, CAT; ``X-Microsoft-Antispam``: BCL) and Gmail (``X-Gm-Spam``,
  ``X-Gm-Phishy``) add, and a plain ``X-Spam-Flag``, when present.

A message is taken for a test letter only when its Message-ID is that of a
``test`` row of the send log: test-send makes that id afresh, at random, and
nobody outside has seen it, so a stranger's mail cannot pose as the test
letter and plant a false "pass". The latest verdict is kept in
``LOG_DIR/test-letter.json`` (written atomically), for ``outreach report``.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, replace
from datetime import UTC
from email.message import EmailMessage
from email.utils import parseaddr, parsedate_to_datetime
from pathlib import Path
from typing import Any

import authres

from outreach.addresses import organisational_domain
from outreach.errors import SendLogError
from outreach.files import write_atomically, writing
from outreach.notices import clean

VERDICT_FILE = "test-letter.json"
OK, WARNING, PROBLEM = "ok", "warning", "problem"
#: Microsoft's spam confidence level from which a letter goes to Junk.
SCL_SPAM = 5
#: Microsoft's bulk complaint level from which its default policy files a letter as bulk.
BCL_BULK = 7
#: Microsoft's SFV for spam, marked spam by a rule, a blocked sender, blocked.
_SFV_SPAM = {"SPM", "SKS", "SKB", "BLK"}
_CAT_SPAM = {"SPM", "HSPM", "PHSH", "HPHSH", "SPOOF", "GIMP", "UIMP", "DIMP", "MALW"}
_LONGEST = 120


@dataclass(frozen=True)
class Verdict:
    """What the receiving server said of one test letter."""

    message_id: str
    #: When the test letter was sent (its Date), in UTC, ISO 8601; "" when unknown.
    sent: str
    from_domain: str
    #: The server that wrote the Authentication-Results header ("" when unnamed, as Microsoft).
    judged_by: str = ""
    found: bool = False
    spf: str = ""
    spf_domain: str = ""
    #: Each DKIM signature's result and signing domain.
    dkim: tuple[tuple[str, str], ...] = ()
    dkim_aligned: bool = False
    dmarc: str = ""
    #: One line per spam verdict header, e.g. "Microsoft 365: not spam (SCL 1, SFV:NSPM)".
    spam: tuple[str, ...] = ()
    spam_flagged: bool = False
    #: An Authentication-Results header was there but could not be read.
    unreadable: bool = False

    @property
    def level(self) -> str:
        if not self.found:
            return WARNING
        if self.dmarc == "fail" or self.spam_flagged:
            return PROBLEM
        if not self.dkim_aligned or self.spf != "pass" or self.dmarc != "pass":
            return WARNING
        return OK

    def lines(self) -> list[str]:
        """The verdict for staff: a heading line, then one line per record."""
        when = self.sent.replace("T", " ").replace("+00:00", " UTC") if self.sent else "undated"
        who = f" by {self.judged_by}" if self.judged_by else ""
        heading = {
            OK: "in order",
            WARNING: "passed, with a warning" if self.found else "not judged",
            PROBLEM: "at risk of the spam folder",
        }[self.level]
        lines = [f"Test letter of {when}, as judged{who}: {heading}"]
        if self.unreadable:
            lines.append("  its Authentication-Results header could not be read")
        elif not self.found:
            lines.append(
                "  no Authentication-Results header: the server that delivered it judged nothing "
                "(a letter within one organisation often is not); send the test letter to a "
                "mailbox of another provider"
            )
        else:
            spf_on = f" ({self.spf_domain})" if self.spf_domain else ""
            lines.append(f"  SPF {self.spf or 'none'}{spf_on}")
            lines.append(f"  DKIM {self._dkim_text()}")
            lines.append(f"  DMARC {self.dmarc or 'none'}{self._dmarc_text()}")
        lines.extend(f"  Spam: {line}" for line in self.spam)
        return lines

    def _dkim_text(self) -> str:
        if not self.dkim:
            return f"none: the letter is not signed, so it cannot align with {self.from_domain}"
        signed = ", ".join(f"{result} by {domain or '?'}" for result, domain in self.dkim)
        if self.dkim_aligned:
            return f"{signed}: aligned with the From domain {self.from_domain}"
        return (
            f"{signed}: not aligned with the From domain {self.from_domain}, so DKIM is not "
            f"turned on for {self.from_domain} (`make check` says what to ask your administrator)"
        )

    def _dmarc_text(self) -> str:
        if self.dmarc == "fail":
            return ": receivers with a strict policy put such a letter in spam or refuse it"
        if self.dmarc in ("", "none"):
            return ": no DMARC policy was applied"
        return ""

    def to_data(self) -> dict[str, Any]:
        return {**asdict(self), "level": self.level}  # its tuples are JSON's lists

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Verdict:
        return cls(
            message_id=str(data["message_id"]),
            sent=str(data["sent"]),
            from_domain=str(data["from_domain"]),
            judged_by=str(data.get("judged_by", "")),
            found=bool(data.get("found", False)),
            spf=str(data.get("spf", "")),
            spf_domain=str(data.get("spf_domain", "")),
            dkim=tuple((str(r), str(d)) for r, d in data.get("dkim", [])),
            dkim_aligned=bool(data.get("dkim_aligned", False)),
            dmarc=str(data.get("dmarc", "")),
            spam=tuple(str(line) for line in data.get("spam", [])),
            spam_flagged=bool(data.get("spam_flagged", False)),
            unreadable=bool(data.get("unreadable", False)),
        )


def aligned(signer: str, from_domain: str) -> bool:
    """DKIM's relaxed alignment (RFC 7489 3.1.1): both domains of one organisation.

    ``coalition.org`` aligns with ``news.coalition.org``; ``coalition.onmicrosoft.com``
    and ``coalition-org.20230601.gappssmtp.com`` do not align with ``coalition.org``.
    """
    if not signer or not from_domain:
        return False
    return organisational_domain(signer) == organisational_domain(from_domain)


def _authentication_results(message: EmailMessage) -> Any | None:
    """The topmost Authentication-Results header, parsed; None when there is none.

    Raises ``authres.AuthResError`` when the header is there but does not read.
    """
    headers = message.get_all("Authentication-Results", [])
    if not headers:
        return None
    value = " ".join(str(headers[0]).split()).rstrip("; ")  # Microsoft ends with a ';'

    if "=" in value.split(";", 1)[0]:  # Microsoft 365 names no server before the first result
        value = f"unnamed.invalid; {value}"
    return authres.AuthenticationResultsHeader.parse_value(value)


def _property(result: Any, kind: str, name: str) -> str:
    for prop in getattr(result, "properties", []):
        if prop.type == kind and prop.name == name:
            return clean(str(prop.value), _LONGEST)
    return ""


def _microsoft(message: EmailMessage) -> tuple[list[str], bool]:
    report = str(message.get("X-Forefront-Antispam-Report", ""))
    antispam = str(message.get("X-Microsoft-Antispam", ""))
    if not report and not antispam:
        return [], False
    pairs = (part.partition(":") for part in reversed(f"{report};{antispam}".split(";")))
    fields = {key.strip().upper(): value.strip() for key, _, value in pairs}  # the first counts
    shown, flagged = [], False
    scl = fields.get("SCL", "")
    if scl.lstrip("-").isdigit():
        shown.append(f"SCL {scl}")
        flagged |= int(scl) >= SCL_SPAM
    for key, spam in (("SFV", _SFV_SPAM), ("CAT", _CAT_SPAM)):
        value = fields.get(key, "").upper()
        if value and (key, value) != ("CAT", "NONE"):
            shown.append(f"{key}:{clean(value, 8)}")
            flagged |= value in spam
    bcl = fields.get("BCL", "")
    if bcl.isdigit():
        shown.append(f"BCL {bcl}")
    bulk = bcl.isdigit() and int(bcl) >= BCL_BULK
    word = "spam" if flagged else "bulk" if bulk else "not spam"
    return [f"Microsoft 365: {word} ({', '.join(shown)})"], flagged or bulk


def _others(message: EmailMessage) -> tuple[list[str], bool]:
    shown, flagged = [], False
    gmail = [(name, str(message.get(name, "")).strip()) for name in ("X-Gm-Spam", "X-Gm-Phishy")]
    found = [(name, value) for name, value in gmail if value]
    if found:
        marked = any(value == "1" for _, value in found)
        flagged |= marked
        said = ", ".join(f"{name} {clean(value, 4)}" for name, value in found)
        shown.append(f"Gmail: {'spam' if marked else 'not spam'} ({said})")
    flag = str(message.get("X-Spam-Flag", "")).strip()
    if flag:
        marked = flag.upper() == "YES"
        flagged |= marked
        shown.append(f"X-Spam-Flag {clean(flag, 8)}: {'spam' if marked else 'not spam'}")
    return shown, flagged


def _sent(message: EmailMessage) -> str:
    with contextlib.suppress(TypeError, ValueError, IndexError):
        moment = parsedate_to_datetime(str(message.get("Date", "")))
        if moment.tzinfo is not None:
            return moment.astimezone(UTC).isoformat(timespec="seconds")
    return ""


def read_verdict(message: EmailMessage, message_id: str) -> Verdict:
    """The verdict written into a test letter that came back."""
    from_domain = parseaddr(str(message.get("From", "")))[1].rpartition("@")[2].lower()
    spam, flagged = _microsoft(message)
    more, more_flagged = _others(message)
    base = Verdict(
        message_id=clean(message_id, _LONGEST),
        sent=_sent(message),
        from_domain=clean(from_domain, _LONGEST),
        spam=(*spam, *more),
        spam_flagged=flagged or more_flagged,
    )
    try:
        header = _authentication_results(message)
    except authres.AuthResError:
        return replace(base, unreadable=True)
    if header is None:
        return base
    spf, spf_domain, dmarc = "", "", ""
    dkim: list[tuple[str, str]] = []
    for result in header.results:
        method, outcome = str(result.method).lower(), clean(str(result.result).lower(), 20)
        if method == "spf" and not spf:
            spf = outcome
            spf_domain = _property(result, "smtp", "mailfrom").rpartition("@")[2]
        elif method == "dkim":
            signer = _property(result, "header", "d") or _property(result, "header", "i")
            if outcome != "none":  # "dkim=none (message not signed) header.d=none"
                dkim.append((outcome, signer.rpartition("@")[2].lower()))
        elif method == "dmarc" and not dmarc:
            dmarc = outcome
    judged_by = str(header.authserv_id)
    return replace(
        base,
        judged_by="" if judged_by == "unnamed.invalid" else clean(judged_by, 60),
        found=True,
        spf=spf,
        spf_domain=spf_domain,
        dkim=tuple(dkim),
        dkim_aligned=any(r == "pass" and aligned(d, from_domain) for r, d in dkim),
        dmarc=dmarc,
    )


# -- the latest verdict, kept for the report -----------------------------------------------


def latest(log_dir: Path) -> Verdict | None:
    """The verdict ``outreach inbox`` last recorded, or None (a damaged file counts as none)."""
    try:
        data = json.loads((log_dir / VERDICT_FILE).read_text(encoding="utf-8"))
        return Verdict.from_data(data["verdict"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def record_verdict(log_dir: Path, verdicts: list[Verdict]) -> None:
    """Keep the latest of ``verdicts`` (and of the one kept before), atomically.

    The latest is the test letter sent last: reading an older one again
    later does not replace the verdict on a newer one.
    """
    if not verdicts:
        return
    newest = max(verdicts, key=lambda v: v.sent)
    kept = latest(log_dir)
    if kept is not None and kept.sent > newest.sent:
        return
    path = log_dir / VERDICT_FILE
    text = json.dumps({"version": 1, "verdict": newest.to_data()}, indent=2, sort_keys=True)
    with writing(path, SendLogError):
        write_atomically(path, (text + "\n").encode("utf-8"))
