"""Before sending, staff learn what is wrong with a letter that still renders."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from outreach import Campaign, load_settings
from outreach.checks import (
    INSTALL_SPAMASSASSIN,
    SpamChecker,
    letter_warnings,
    links_of,
    parse_spamassassin_report,
)
from outreach.errors import OutreachError
from outreach.message import build_letter
from outreach.render import Rendered
from tests.conftest import RunCli

NOW = datetime(2015, 8, 31, 12, tzinfo=UTC)
needs_spamassassin = pytest.mark.usefixtures("spamassassin")


@pytest.fixture
def campaign(project: Path) -> Campaign:
    return Campaign.open(load_settings(environ={}, env_file=None))


def html_page(body: str) -> str:
    return f"<!DOCTYPE html><html lang='en'><body><p>Excellency,</p>{body}</body></html>"


@pytest.mark.parametrize(
    ("subject", "html", "text", "expected"),
    [
        pytest.param(
            "Request",
            html_page('<a href="http://act.example/code">the Code</a>'),
            "",
            "link 'http://act.example/code' is not https: or mailto:",
            id="http-link",
        ),
        pytest.param(
            "Request",
            html_page('<a href="javascript:alert(1)">sign</a>'),
            "",
            "link 'javascript:alert(1)' is not https: or mailto:",
            id="javascript-link",
        ),
        pytest.param(
            "Request",
            "",
            "Read the Code at ftp://files.example/code.pdf",
            "link 'ftp://files.example/code.pdf' is not https: or mailto:",
            id="link-in-text-part",
        ),
        pytest.param(
            "Request",
            html_page('<img src="https://act.example/logo.png">'),
            "",
            "image 'https://act.example/logo.png' has no alt text",
            id="image-without-alt",
        ),
        pytest.param(
            "Request",
            html_page("<p>" + "x" * (101 * 1024) + "</p>"),
            "",
            "the HTML part is 101 KB: Gmail clips messages over 102 KB",
            id="html-over-100-kb",
        ),
        pytest.param(
            "Request to endorse the Code of Conduct regarding Security Council action, urgently",
            html_page(""),
            "",
            "the subject is 82 characters long: inboxes cut it after about 78",
            id="subject-over-78",
        ),
        pytest.param(
            "Request",
            html_page("<p>Dear {{ representative }</p>"),
            "",
            "template markup '{{' left in the letter",
            id="template-leftover",
        ),
    ],
)
def test_letter_warnings_name_what_a_reader_would_trip_over(
    campaign: Campaign, subject: str, html: str, text: str, expected: str
) -> None:
    (contact,) = campaign.contacts.select(["AFG"])
    rendered = Rendered(subject=subject, text=text or "Excellency,\n", html=html, language="en")
    letter = build_letter(contact, rendered, campaign.settings, now=NOW)
    warnings = letter_warnings(rendered, letter, contact)
    assert any(expected in w for w in warnings), warnings


@pytest.mark.parametrize(
    "body",
    [
        pytest.param('<a href="https://act.example/code">the Code</a>', id="https-link"),
        pytest.param('<a href="mailto:act@coalition.example">write</a>', id="mailto-link"),
        pytest.param('<img src="https://act.example/logo.png" alt="">', id="decorative-image"),
        pytest.param('<a href="#footnote-1">1</a>', id="footnote-anchor"),
    ],
)
def test_fine_links_and_images_give_no_warning(campaign: Campaign, body: str) -> None:
    (contact,) = campaign.contacts.select(["AFG"])
    rendered = Rendered("Request", "Excellency,\n", html_page(body), "en")
    letter = build_letter(contact, rendered, campaign.settings, now=NOW)
    assert letter_warnings(rendered, letter, contact) == []


def test_links_are_listed_once_each_from_both_parts() -> None:
    rendered = Rendered(
        "Request",
        "Write to mailto:act@coalition.example or see https://act.example/code.\n",
        html_page('<a href="https://act.example/code">Code</a><a href="https://act.example/code">'),
        "en",
    )
    assert links_of(rendered) == ["https://act.example/code", "mailto:act@coalition.example"]


@pytest.mark.parametrize(
    ("text", "links"),
    [
        pytest.param(
            "Write to MAILTO:Act@Coalition.example today.", ["MAILTO:Act@Coalition.example"]
        ),
        pytest.param("See HTTP://act.example/code, please.", ["HTTP://act.example/code"]),
        pytest.param(
            "ftp://files.example/x and https://a.example",
            ["ftp://files.example/x", "https://a.example"],
        ),
        pytest.param("No link: only a colon, and mailto without one.", []),
    ],
)
def test_links_in_the_text_part_alone_are_found(text: str, links: list[str]) -> None:
    rendered = Rendered("Request", text + "\n", html_page("<p>No link here.</p>"), "en")
    assert links_of(rendered) == links


def test_shipped_letter_has_no_links_and_no_warnings_in_its_own_language(
    campaign: Campaign,
) -> None:
    result = campaign.check(campaign.select(["AFG", "VAT", "GBR"]), spam=None)
    assert result.letters == 3
    assert result.links == {}
    assert result.warnings == {}
    assert len(result.placeholders) == 3
    assert result.spam_note == INSTALL_SPAMASSASSIN  # no score asked for


def test_contact_language_without_templates_is_a_warning(campaign: Campaign) -> None:
    (french,) = [c for c in campaign.contacts if c.language == "fr"][:1]
    result = campaign.check([french], spam=None)
    assert result.warnings == {
        french.id: ["in 'en', not in the contact's language 'fr': there is no templates/fr/ folder"]
    }


SPAMASSASSIN_OUTPUT = """\
X-Spam-Checker-Version: SpamAssassin 4.0.1 (2024-03-25) on vm
X-Spam-Status: No, score=1.3 required=5.0 tests=HTML_MESSAGE,NO_RECEIVED,
\tNO_RELAYS,WORD_INVIS_MANY autolearn=no autolearn_force=no version=4.0.1
Subject: Request

Excellency,

Content analysis details:   (1.3 points, 5.0 required)

 pts rule name              description
---- ---------------------- --------------------------------------------------
-0.0 NO_RELAYS              Informational: message was not relayed via SMTP
 0.3 SOME_LONG_RULE         A description that goes on and on and is folded
                            onto a second line
 1.0 WORD_INVIS_MANY        Multiple individual hidden words

"""


def test_spamassassin_report_is_read_with_rules_and_descriptions() -> None:
    score, required, rules = parse_spamassassin_report(SPAMASSASSIN_OUTPUT)
    assert (score, required) == (1.3, 5.0)
    assert [(r.name, r.points) for r in rules] == [
        ("NO_RELAYS", -0.0),
        ("SOME_LONG_RULE", 0.3),
        ("WORD_INVIS_MANY", 1.0),
    ]
    assert rules[1].description.endswith("is folded onto a second line")


@needs_spamassassin
def test_shipped_letter_scores_well_under_the_spam_line(campaign: Campaign) -> None:
    checker = SpamChecker.find()
    assert checker is not None
    result = campaign.check(campaign.select(["AFG", "VAT"]), spam=checker)
    assert [s.contact_id for s in result.spam] == ["AFG", "VAT"]
    for score in result.spam:
        assert score.required == 5.0
        assert score.score <= 1.0, score.rules_text()
        assert {r.name for r in score.rules} >= {"HTML_MESSAGE"}


@needs_spamassassin
def test_one_letter_of_each_kind_is_scored(campaign: Campaign) -> None:
    """A member's letter and an observer's: the wording differs, so both are scored,
    and each score is the one SpamAssassin gives that very letter."""
    checker = SpamChecker.find()
    assert checker is not None
    contacts = campaign.select(["AFG", "VAT", "CHL", "PSE"])
    result = campaign.check(contacts, spam=checker)
    assert [s.contact_id for s in result.spam] == ["AFG", "VAT"]  # one member, one observer
    assert "2 of 4" in result.spam_note
    sample = [c for c in contacts if c.id in ("AFG", "VAT")]
    letters = [campaign.compose(c, now=NOW)[1] for c in sample]
    fresh = SpamChecker(checker.executable)
    assert [(s.score, s.rules) for s in result.spam] == [
        (s.score, s.rules) for s in fresh._run(letters)
    ]


def counting_spamassassin(folder: Path) -> tuple[SpamChecker, Path]:
    """The real SpamAssassin behind a script that notes each time it is started."""
    real = shutil.which("spamassassin")
    assert real is not None
    started = folder / "started"
    script = folder / "spamassassin"
    script.write_text(f'#!/bin/sh\necho started >> "{started}"\nexec "{real}" "$@"\n')
    script.chmod(0o755)
    return SpamChecker(str(script)), started


def times_started(started: Path) -> int:
    return len(started.read_text().splitlines()) if started.exists() else 0


@needs_spamassassin
def test_a_letter_that_cannot_be_built_stops_the_check_before_spamassassin(
    project: Path, tmp_path: Path
) -> None:
    text = project / "templates" / "en" / "letter.txt.j2"
    text.write_text("{% if country == 'Chile' %}{{ nickname }}{% endif %}\n", encoding="utf-8")
    campaign = Campaign.open(load_settings(environ={}, env_file=None))
    checker, started = counting_spamassassin(tmp_path)
    with pytest.raises(OutreachError, match="'nickname' is undefined"):
        campaign.check(campaign.select(["AFG", "CHL"]), spam=checker)
    assert times_started(started) == 0


@needs_spamassassin
def test_spammy_wording_scores_higher(project: Path) -> None:
    subject = project / "templates" / "en" / "subject.txt.j2"
    subject.write_text("FREE MONEY!!! 100% GUARANTEED, ACT NOW\n", encoding="utf-8")
    text = project / "templates" / "en" / "letter.txt.j2"
    text.write_text(
        "Dear friend, you have WON $1,000,000 cash! Click below, risk free, no obligation.\n"
        "Viagra, cheap meds, lose weight fast. Unsubscribe.\n",
        encoding="utf-8",
    )
    campaign = Campaign.open(load_settings(environ={}, env_file=None))
    checker = SpamChecker.find()
    assert checker is not None
    (score,) = campaign.check(campaign.select(["AFG"]), spam=checker).spam
    assert score.score > 1.0
    assert len([r for r in score.rules if r.points > 0]) >= 2


@needs_spamassassin
def test_check_prints_spam_score_and_rules(run_cli: RunCli) -> None:
    result = run_cli("check")
    assert result.code == 0, result.stderr
    assert "Spam:      worst score " in result.stdout
    # The shipped letter scores well under the spam line: 1.0 or less.
    worst = re.search(r"worst score (-?\d+\.\d) of 2 letters", result.stdout)
    assert worst is not None, result.stdout
    assert float(worst.group(1)) <= 1.0
    assert re.search(r"AFG, VAT: -?\d+\.\d \([A-Z_]+ ", result.stdout), result.stdout
    assert "--spam-all scores every letter" in result.stdout
    assert "Links:     none" in result.stdout
    assert "195 are placeholders" in result.stdout


def test_check_without_spamassassin_says_how_to_install_it(run_cli: RunCli, tmp_path: Path) -> None:
    empty = tmp_path / "no-tools"
    empty.mkdir()
    result = run_cli("check", env={"PATH": str(empty)})
    assert result.code == 0, result.stderr
    assert f"Spam:      {INSTALL_SPAMASSASSIN}" in result.stdout


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        pytest.param(
            '<p><a href="http://act.example/code">the Code</a></p>',
            "195 × link 'http://act.example/code' is not https: or mailto:",
            id="http-link",
        ),
        pytest.param(
            '<p><img src="https://act.example/logo.png"></p>',
            "195 × image 'https://act.example/logo.png' has no alt text",
            id="image-without-alt",
        ),
    ],
)
def test_check_counts_each_warning_over_all_letters(
    run_cli: RunCli, project: Path, template: str, expected: str
) -> None:
    html = project / "templates" / "en" / "letter.html.j2"
    html.write_text(
        html.read_text(encoding="utf-8").replace(
            '<p class="closing">', template + '\n<p class="closing">'
        ),
        encoding="utf-8",
    )
    result = run_cli("check", env={"PATH": str(project)})
    assert result.code == 0, result.stderr
    assert expected in result.stdout
    assert "Letters are in order." in result.stdout
