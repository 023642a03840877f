"""Checks on each letter before it goes out, and its spam score.

A letter can render without error and still be a bad letter: a link a mail
client will flag, an image a screen reader cannot name, an HTML part that
Gmail clips, a subject cut short in the inbox, or wording that a spam filter
scores high. ``check``, ``preview`` and ``send`` all ask this module, so they
all say the same thing about the same letter.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import lxml.html

from outreach.addresses import is_placeholder
from outreach.contacts import Contact
from outreach.errors import OutreachError, problems_of
from outreach.message import Letter
from outreach.render import Rendered

if TYPE_CHECKING:
    from outreach.campaign import Composed

#: Schemes a letter may link to: anything else (http:, javascript:, data:,
#: file:) is either insecure or a mark of phishing to mail filters.
LINK_SCHEMES = ("https", "mailto")
#: Gmail clips a message whose HTML exceeds 102 KB ("[Message clipped]"),
#: hiding the end of the letter: its signatories. Warn with room to spare.
HTML_LIMIT_BYTES = 100 * 1024
#: RFC 5322's recommended line length; inboxes cut longer subjects short.
SUBJECT_LIMIT = 78
INSTALL_SPAMASSASSIN = (
    "SpamAssassin is not installed, so the letters have no spam score; "
    "install it with: sudo apt-get install spamassassin"
)
_TEXT_URL = re.compile(r"\b(?:[a-z][a-z0-9+.-]*://|mailto:)[^\s<>\"')\]]+", re.IGNORECASE)
_TEMPLATE_LEFTOVER = re.compile(r"\{\{|\}\}|\{%|%\}|\{#|#\}")


class SpamCheckError(OutreachError):
    """SpamAssassin is installed but did not give a score."""


def _html_facts(html: str) -> tuple[list[str], list[str]]:
    """The links and the images without ``alt`` of an HTML part, in one parse.

    lxml, which premailer already uses, parses a letter in a fraction of a
    millisecond; every letter of a campaign goes through here.
    """
    links: list[str] = []
    images: list[str] = []
    if not html.strip():
        return links, images
    root = lxml.html.document_fromstring(html)
    for element in root.iter("a", "area", "img"):
        link = element.get("src" if element.tag == "img" else "href")
        if element.tag == "img" and element.get("alt") is None:
            images.append(link or "(no src)")
        if link:
            links.append(link.strip())
    return links, images


def links_of(rendered: Rendered, html_links: list[str] | None = None) -> list[str]:
    """Every distinct link of a letter, HTML part first, in order of appearance.

    Links in the text part count too: mail clients make them clickable.
    """
    if html_links is None:
        html_links = _html_facts(rendered.html)[0]
    found = list(html_links)
    text = rendered.text
    # The pattern tries every word of the letter; most letters hold no link
    # at all, which two plain searches tell far sooner.
    if "://" in text or "mailto:" in text.lower():
        found += [u.rstrip(".,;:!?") for u in _TEXT_URL.findall(text)]
    return list(dict.fromkeys(link for link in found if link and not link.startswith("#")))


def _scheme(link: str) -> str:
    head, colon, _ = link.partition(":")
    return head.lower() if colon and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", head) else ""


def letter_warnings(rendered: Rendered, letter: Letter, contact: Contact) -> list[str]:
    """What is wrong with a letter that rendered, one line each, worst first."""
    return letter_findings(rendered, letter, contact)[0]


def letter_findings(
    rendered: Rendered, letter: Letter, contact: Contact
) -> tuple[list[str], list[str]]:
    """A letter's warnings (see ``letter_warnings``) and its links, from one parse.

    None of these stop a send: the letter is readable. They are what a
    careful reader would otherwise have to spot by eye in 195 previews.
    """
    warnings: list[str] = []
    # The parts are joined by a line break, which no leftover spans: the first is the subject's.
    match = _TEMPLATE_LEFTOVER.search("\n".join((rendered.subject, rendered.text, rendered.html)))
    if match:
        warnings.append(
            f"template markup {match.group()!r} left in the letter: "
            "a tag was not closed, or a contact value holds template code"
        )
    if not rendered.subject:
        warnings.append("the subject is empty")
    elif len(rendered.subject) > SUBJECT_LIMIT:
        warnings.append(
            f"the subject is {len(rendered.subject)} characters long: inboxes cut it after "
            f"about {SUBJECT_LIMIT} ({rendered.subject_from or 'the subject template'})"
        )
    size = len(rendered.html.encode("utf-8"))
    if size > HTML_LIMIT_BYTES:
        warnings.append(
            f"the HTML part is {size / 1024:.0f} KB: Gmail clips messages over 102 KB and "
            "hides the rest (the signatories) behind a link"
        )
    html_links, images_without_alt = _html_facts(rendered.html)
    links = links_of(rendered, html_links)
    warnings.extend(
        f"link {link!r} is not https: or mailto: (mail filters distrust it, and it may not open)"
        for link in links
        if _scheme(link) not in LINK_SCHEMES
    )
    for source in images_without_alt:
        warnings.append(f"image {source!r} has no alt text (screen readers and blocked images)")
    wanted = contact.language
    if wanted and wanted != rendered.language:
        warnings.append(
            f"in {rendered.language!r}, not in the contact's language {wanted!r}: "
            f"there is no templates/{wanted}/ folder"
        )
    if not letter.recipients:
        warnings.append("the letter has no recipient")
    return warnings, links


# --- spam score ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SpamRule:
    """One SpamAssassin rule that fired, with the points it added."""

    name: str
    points: float
    description: str


@dataclass(frozen=True)
class SpamScore:
    contact_id: str
    score: float
    required: float
    rules: tuple[SpamRule, ...]

    def rules_text(self) -> str:
        scoring = [r for r in self.rules if r.points != 0] or list(self.rules)
        return ", ".join(f"{r.name} {r.points:+.1f}" for r in scoring) or "no rule fired"


_SEPARATOR = "From outreach-check-"
_STATUS = re.compile(r"^X-Spam-Status: \w+, score=(-?[\d.]+) required=(-?[\d.]+)", re.M)
_RULE_LINE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s+([A-Z0-9_]+)\s+(.*)$")


def parse_spamassassin_report(output: str) -> tuple[float, float, tuple[SpamRule, ...]]:
    """Score, spam line and rules from the output of ``spamassassin -t``.

    The score comes from the X-Spam-Status header; the rules, with their
    points and descriptions, from the report table at the bottom.
    """
    status = _STATUS.search(output)
    if status is None:
        raise SpamCheckError(
            "spamassassin gave no X-Spam-Status header (run it by hand to see why)"
        )
    rules: list[SpamRule] = []
    table = output.rpartition("\n---- ")[2].partition("\n")[2]
    for line in table.splitlines():
        if not line.strip():
            break
        match = _RULE_LINE.match(line)
        if match:
            points, name, description = match.groups()
            rules.append(SpamRule(name, float(points), description.strip()))
        elif rules:
            rules[-1] = replace(rules[-1], description=f"{rules[-1].description} {line.strip()}")
    return float(status.group(1)), float(status.group(2)), tuple(rules)


def _mbox_entry(number: int, letter: Letter) -> bytes:
    """One letter as an entry of an mbox, so one SpamAssassin process scores many.

    Starting SpamAssassin takes about two seconds and scoring a letter a
    third of one: one process per letter would make the check ten times
    slower.
    """
    body = letter.data.replace(b"\r\n", b"\n")
    body = re.sub(rb"^(>*From )", rb">\1", body, flags=re.M)
    return f"{_SEPARATOR}{number}@localhost Thu Jan  1 00:00:00 1970\n".encode() + body + b"\n"


class SpamChecker:
    """Scores letters with a local SpamAssassin: no network test, no learning.

    ``--local`` keeps every test local (no DNS blocklists, no Razor or
    Pyzor), so a check neither leaks the letter nor depends on the network;
    Bayes is off because an untrained database only adds noise.
    """

    OPTIONS = ("--local", "--test-mode", "--mbox", "--cf=use_bayes 0", "--cf=bayes_auto_learn 0")

    def __init__(self, executable: str) -> None:
        self.executable = executable
        self.workers = max(1, min(4, os.cpu_count() or 1))

    @classmethod
    def find(cls) -> SpamChecker | None:
        """The installed SpamAssassin, or None when it is not installed."""
        found = shutil.which("spamassassin")
        return cls(found) if found else None

    def score(
        self, letters: Sequence[Letter], progress: Callable[[int], None] = lambda done: None
    ) -> list[SpamScore]:
        """One score per letter, in order, by SpamAssassin.

        The letters to score are split over a few SpamAssassin processes that
        run at once, one per core. Nothing is kept between runs: a check
        scores one letter of each kind, which takes a few seconds.
        """
        if not letters:
            return []
        size = math.ceil(len(letters) / min(self.workers, math.ceil(len(letters) / 8)))
        batches = [list(letters[i : i + size]) for i in range(0, len(letters), size)]
        scores: list[SpamScore] = []
        with ThreadPoolExecutor(max_workers=len(batches)) as pool:
            for batch_scores in pool.map(self._run, batches):
                scores.extend(batch_scores)
                progress(len(scores))
        return scores

    def _run(self, letters: Sequence[Letter]) -> list[SpamScore]:
        """One SpamAssassin process scoring ``letters``, given to it as one mbox."""
        mbox = b"".join(_mbox_entry(number, letter) for number, letter in enumerate(letters))
        command = [self.executable, *self.OPTIONS]
        try:
            done = subprocess.run(command, input=mbox, capture_output=True, timeout=600)
        except OSError as err:
            raise SpamCheckError(f"{self.executable}: cannot be run ({err.strerror})") from err
        except subprocess.TimeoutExpired as err:
            raise SpamCheckError(f"{self.executable} gave no score within 10 minutes") from err
        outputs = done.stdout.decode("utf-8", "replace").split(_SEPARATOR)[1:]
        if done.returncode != 0 or len(outputs) != len(letters):
            detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
            raise SpamCheckError(
                f"{self.executable} scored {len(outputs)} of {len(letters)} letters "
                f"(exit status {done.returncode}): {detail[-1] if detail else 'no message'}"
            )
        return [
            SpamScore(letter.contact_id, *parse_spamassassin_report(output))
            for letter, output in zip(letters, outputs, strict=True)
        ]


def letter_shape(item: Composed) -> tuple[str, str, frozenset[str]]:
    """What a spam filter could score differently between two letters.

    The letters differ only in the contact's values; the wording around them
    changes with the language written in, the contact's status (member or
    observer) and which columns are filled (a named representative, a Cc, an
    own salutation). One letter per such shape is enough to judge the
    wording, in a few seconds instead of a minute for 195 letters.
    """
    assert item.rendered is not None
    filled = frozenset(k for k, v in item.contact.fields.items() if v)
    return (item.rendered.language, item.contact.fields.get("status", ""), filled)


# --- the whole campaign -------------------------------------------------------------------


@dataclass
class CheckResult:
    """What the pre-send check found, per contact and in total."""

    letters: int = 0
    languages: Counter[str] = field(default_factory=Counter)
    placeholders: list[str] = field(default_factory=list)
    warnings: dict[str, list[str]] = field(default_factory=dict)
    links: Counter[str] = field(default_factory=Counter)
    spam: list[SpamScore] = field(default_factory=list)
    spam_note: str = ""
    #: Each file the letters carry, (name, size in bytes), and the letters that carry it.
    files: dict[tuple[str, int], list[str]] = field(default_factory=dict)

    def summary_lines(self) -> list[str]:
        """The findings as lines for a terminal, most important first."""
        lines = []
        if self.placeholders:
            lines.append(
                f"Addresses: {len(self.placeholders)} are placeholders on reserved domains "
                "(.example …): replace them with the missions' real addresses before sending"
            )
        counted = Counter(w for ws in self.warnings.values() for w in ws)
        if counted:
            lines.append(
                f"Warnings:  {counted.total()} in {len(self.warnings)} letters"
                " (outreach preview shows them per letter)"
            )
            lines.extend(f"           {n} × {warning}" for warning, n in counted.most_common())
        else:
            lines.append("Warnings:  none")
        # Each attached file with its size and who gets it: what a letter carries
        # is seen before it goes, not only the words.
        for number, ((name, size), ids) in enumerate(sorted(self.files.items())):
            who = "every letter" if len(ids) == self.letters else _who(ids)
            lines.append(f"{'Files:' if number == 0 else '':<11}{name} ({_size(size)}): {who}")
        if not self.files:
            lines.append("Files:     none attached")
        if self.links:
            lines.append(f"Links:     {len(self.links)} distinct")
            for link, n in sorted(self.links.items()):
                lines.append(f"           {link} (in {n} letters)")
        else:
            lines.append("Links:     none")
        if self.spam:
            worst = max(self.spam, key=lambda s: s.score)
            lines.append(
                f"Spam:      worst score {worst.score:.1f} of {len(self.spam)} letters scored "
                f"by SpamAssassin (spam from {worst.required:.1f}; aim for 1.0 or less)"
            )
            # Letters of one kind score alike: one line per distinct result.
            alike: dict[tuple[float, str], list[str]] = {}
            for score in sorted(self.spam, key=lambda s: -s.score):
                alike.setdefault((score.score, score.rules_text()), []).append(score.contact_id)
            for (points, rules), ids in alike.items():
                flag = "  SPAM" if points >= worst.required else ""
                lines.append(f"           {_who(ids)}: {points:.1f}{flag} ({rules})")
        if self.spam_note:
            lines.append(f"Spam:      {self.spam_note}")
        return lines


def _who(ids: list[str]) -> str:
    """The letters' ids, or for more than three their count and the first."""
    return ", ".join(ids) if len(ids) <= 3 else f"{len(ids)} letters ({ids[0]} …)"


def _size(size: int) -> str:
    """A file's size as staff read it: bytes, KB or MB."""
    if size < 1024:
        return f"{size} bytes"
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size / 1024 / 1024:.1f} MB"


def check_campaign(
    composed: Iterable[Composed],
    total: int,
    *,
    spam: SpamChecker | None = None,
    spam_all: bool = False,
    progress: Callable[[str, int, int], None] = lambda stage, done, total: None,
) -> CheckResult:
    """Check every composed letter, and score a sample (or all) for spam.

    Raises OutreachError with every problem when a letter cannot be built:
    nothing may be sent then. Only what the spam score needs is kept, so a
    long list is checked in constant memory. ``progress`` is told the stage
    ("Checking", "Spam score"), how many are done and how many in all.
    """
    result = CheckResult()
    errors: list[OutreachError] = []
    shapes: set[tuple[str, str, frozenset[str]]] = set()
    sample: list[Letter] = []
    for done, item in enumerate(composed, start=1):
        progress("Checking", done, total)
        if item.error is not None:
            errors.append(item.error)
            continue
        assert item.rendered is not None
        assert item.letter is not None
        result.letters += 1
        result.languages[item.rendered.language] += 1
        result.placeholders.extend(a for a in item.letter.recipients if is_placeholder(a))
        for name, size, _source in item.letter.attachments:
            result.files.setdefault((name, size), []).append(item.contact.id)
        found, links = letter_findings(item.rendered, item.letter, item.contact)
        result.links.update(links)
        if found:
            result.warnings[item.contact.id] = found
        shape = letter_shape(item)
        if spam_all or shape not in shapes:
            shapes.add(shape)
            sample.append(item.letter)
    if errors:
        raise OutreachError(*problems_of(errors))
    if spam is None:
        result.spam_note = INSTALL_SPAMASSASSIN
        return result
    result.spam = spam.score(sample, lambda done: progress("Spam score", done, len(sample)))
    if not spam_all and len(sample) < result.letters:
        result.spam_note = (
            f"scored one letter of each kind ({len(sample)} of {result.letters}); "
            "--spam-all scores every letter"
        )
    return result
