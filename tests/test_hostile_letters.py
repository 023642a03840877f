"""Hostile contact values and broken templates: no injected header, no script, no escape.

Contact data comes partly from outside and templates are edited by hand. A
value may try to add a header or a recipient, or to put a script into the
HTML letter; a template may try to reach Python's internals. Each case is
driven through `outreach send --yes` against a real SMTP server on loopback,
and the header cases also straight at ``build_message``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
from datetime import UTC, datetime
from html.parser import HTMLParser

import pytest

from outreach import Campaign, load_settings
from outreach.contacts import Contact
from outreach.errors import MessageError
from outreach.message import build_letter, build_message
from outreach.render import Rendered
from tests.test_hostile_contacts import CHILE, HEADER, Story, story

__all__ = ["story"]  # the fixture, shared

EVIL = "Bcc: evil@attacker.example"
NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def contacts_with(**values: str) -> str:
    """A file of one row, Chile, with ``values`` in their columns (new ones added),
    quoted as a spreadsheet would."""
    fields = dict(zip(HEADER.split(","), CHILE.split(","), strict=True))
    fields.update(values)
    out = io.StringIO()
    # Every field quoted: csv leaves a lone CR unquoted, which no spreadsheet does.
    writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writerow(fields.keys())
    writer.writerow(fields.values())
    return out.getvalue()


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


# --- Header injection --------------------------------------------------------------------------

#: How a value can try to start a new header line, and what the refusal names.
FORMS = [
    pytest.param(lambda v: f"{v}\r{EVIL}", "U+000D", id="CR"),
    pytest.param(lambda v: f"{v}\n{EVIL}", "U+000A", id="LF"),
    pytest.param(lambda v: f"{v}\r\n{EVIL}", "U+000D", id="CRLF"),
    pytest.param(lambda v: f"{v}\u2028{EVIL}", "U+2028", id="line-separator"),
    pytest.param(lambda v: f"{v}\u0085{EVIL}", "U+0085", id="next-line"),
    pytest.param(
        lambda v: f"=?utf-8?q?{v}=0D=0ABcc:_evil@attacker.example?=",
        "an RFC 2047 encoded-word",
        id="encoded-word-q",
    ),
    pytest.param(
        lambda v: "=?utf-8?b?Q2hpbGUNCkJjYzogZXZpbEBhdHRhY2tlci5leGFtcGxl?=",
        "an RFC 2047 encoded-word",
        id="encoded-word-b",
    ),
]

#: The columns whose values reach a header, what the value was, and its column number.
HEADER_COLUMNS = [
    pytest.param("mission", "Permanent Mission of Chile", 3, {}, id="mission"),
    pytest.param("country", "Chile", 2, {"mission": ""}, id="country-as-the-to-name"),
    pytest.param("country", "Chile", 2, {}, id="country-beside-a-mission"),
    pytest.param("email", "chl@missions.example", 6, {}, id="email"),
    pytest.param("cc", "desk@chile.example", 7, {}, id="cc"),
]


@pytest.mark.parametrize(("column", "value", "number", "others"), HEADER_COLUMNS)
@pytest.mark.parametrize(("form", "reason"), FORMS)
def test_a_header_injection_in_the_contacts_is_refused(
    story: Story,
    column: str,
    value: str,
    number: int,
    others: dict[str, str],
    form: object,
    reason: str,
) -> None:
    assert callable(form)
    story.write_contacts(contacts_with(**{column: form(value)}, **others))
    [error] = story.refused(story.send())
    assert error.startswith(f"contacts.csv, line 2, column {number} ({column}): ")
    assert reason in error


@pytest.mark.parametrize(("form", "reason"), FORMS)
def test_a_header_injection_through_the_subject_template_is_refused(
    story: Story, form: object, reason: str
) -> None:
    assert callable(form)
    (story.project / "templates" / "en" / "subject.txt.j2").write_text(
        "A letter for {{ name_in_text }}\n", encoding="utf-8"
    )
    story.write_contacts(contacts_with(name_in_text=form("Chile")))
    [error] = story.refused(story.send())
    if reason in ("U+000D", "U+000A"):
        assert error == "templates/en/subject.txt.j2: the subject must be one line (contact CHL)"
    else:
        assert error.startswith(
            "the subject for CHL (line 2) (from the column name_in_text) cannot go into a "
            "mail header: it holds"
        )
        assert reason in error


@pytest.mark.parametrize(("form", "reason"), FORMS)
def test_a_header_injection_through_mail_from_name_is_refused(
    story: Story, form: object, reason: str
) -> None:
    assert callable(form)
    [error] = story.refused(story.send(MAIL_FROM_NAME=form("The Coalition")))
    assert error.startswith("MAIL_FROM_NAME is not valid: it holds")
    assert reason in error


def test_a_line_break_written_into_env_is_refused(story: Story) -> None:
    (story.project / ".env").write_text(
        'MAIL_FROM_NAME="The Coalition\\nBcc: evil@attacker.example"\n', encoding="utf-8"
    )
    env = story.server.env()
    del env["MAIL_FROM_NAME"]
    result = story.run_cli("send", "--yes", env=env)
    story.refused(result, "MAIL_FROM_NAME is not valid: it holds the control character U+000A")


@pytest.mark.parametrize("column", ["title", "representative", "name_in_text", "salutation"])
def test_columns_of_the_letter_body_never_reach_a_header(story: Story, column: str) -> None:
    values = {"representative": "Jane Doe", column: f"Chile\r\n{EVIL}\r\n\r\nBody"}
    story.write_contacts(contacts_with(**values))
    result = story.send()
    assert result.code == 0, result.stderr
    [received] = story.server.received
    assert received.recipients == ["chl@missions.example"]
    head = received.data.split(b"\r\n\r\n", 1)[0].decode()
    names = [line.split(":")[0] for line in head.split("\r\n") if not line.startswith((" ", "\t"))]
    assert sorted(names) == sorted(
        ["From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type"]
    )
    assert "evil" not in head


# The library itself refuses each form for each header-bound value, whoever builds the Contact.


@pytest.fixture
def campaign(story: Story) -> Campaign:
    return Campaign.open(load_settings(environ=story.server.env(), env_file=None))


def contact(**changes: object) -> Contact:
    base = Contact(
        id="CHL",
        country="Chile",
        to=("chl@missions.example",),
        cc=("desk@chile.example",),
        language="en",
        line=2,
        fields={"mission": "Permanent Mission of Chile", "country": "Chile"},
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


RENDERED = Rendered(subject="Request", text="t", html="<p>h</p>", language="en")


@pytest.mark.parametrize(("form", "reason"), FORMS)
@pytest.mark.parametrize(
    ("where", "build", "expected"),
    [
        pytest.param(
            "email",
            lambda c, s, v: build_message(contact(to=(v,)), RENDERED, s, now=NOW),
            "contact CHL (line 2), mission cannot go into a mail header",
            id="email",
        ),
        pytest.param(
            "cc",
            lambda c, s, v: build_message(contact(cc=(v,)), RENDERED, s, now=NOW),
            "contact CHL (line 2), cc cannot go into a mail header",
            id="cc",
        ),
        pytest.param(
            "mail-from-name",
            lambda c, s, v: build_message(
                contact(), RENDERED, dataclasses.replace(s, mail_from_name=v), now=NOW
            ),
            "MAIL_FROM_NAME/MAIL_FROM cannot go into a mail header",
            id="mail-from-name",
        ),
        pytest.param(
            "mail-from",
            lambda c, s, v: build_message(
                contact(), RENDERED, dataclasses.replace(s, mail_from=v), now=NOW
            ),
            "MAIL_FROM_NAME/MAIL_FROM cannot go into a mail header",
            id="mail-from",
        ),
        pytest.param(
            "reply-to",
            lambda c, s, v: build_message(
                contact(), RENDERED, dataclasses.replace(s, mail_reply_to=v), now=NOW
            ),
            "MAIL_REPLY_TO cannot go into a mail header",
            id="reply-to",
        ),
        pytest.param(
            "test-address",
            lambda c, s, v: build_letter(contact(), RENDERED, s, now=NOW, test_to=v),
            "the test address cannot go into a mail header",
            id="test-send-address",
        ),
        pytest.param(
            "subject-column",
            lambda c, s, v: build_message(
                contact(fields={"mission": "M", "country": "Chile", "note": v}),
                dataclasses.replace(RENDERED, subject=f"About {v}"),
                s,
                now=NOW,
            ),
            "the subject for CHL (line 2) (from the column note) cannot go into a mail header",
            id="subject-from-a-column",
        ),
    ],
)
def test_build_message_refuses_every_form_in_every_header(
    campaign: Campaign, where: str, build: object, expected: str, form: object, reason: str
) -> None:
    assert callable(build)
    assert callable(form)
    base = "evil@attacker.example" if where not in ("mail-from-name", "subject-column") else "X"
    value = form(base)
    with pytest.raises(MessageError) as caught:
        build(campaign, campaign.settings, value)
    assert expected in str(caught.value)
    assert reason in str(caught.value)


# --- HTML and script injection -----------------------------------------------------------------

PAYLOADS = [
    pytest.param('<script>alert("x")</script>', id="script"),
    pytest.param('"><img src=x onerror=alert(1)>', id="attribute-break-out"),
    pytest.param('<a href="javascript:alert(1)">click</a>', id="javascript-link"),
    pytest.param("&lt;b&gt; &amp; <!-- comment --> ]]>", id="entities-and-comment"),
]


class Markup(HTMLParser):
    """The tags, attributes and visible text of an HTML part."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str | None]] = []
        self.text: list[str] = []
        self.comments: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += attrs

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def handle_comment(self, data: str) -> None:
        self.comments.append(data)


@pytest.mark.parametrize(
    "column", ["mission", "title", "representative", "name_in_text", "salutation"]
)
@pytest.mark.parametrize("payload", PAYLOADS)
def test_markup_in_any_column_is_escaped_in_html_and_kept_in_text(
    story: Story, column: str, payload: str
) -> None:
    story.write_contacts(contacts_with(**{"representative": "Jane Doe", column: payload}))
    result = story.send()
    assert result.code == 0, result.stderr
    [received] = story.server.received
    assert received.recipients == ["chl@missions.example"]
    message = received.message
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None
    assert html is not None
    assert payload in squash(text.get_content())
    page = Markup()
    page.feed(html.get_content())
    assert "script" not in page.tags
    assert not [name for name, _ in page.attributes if name.startswith("on")]
    assert not [v for _, v in page.attributes if v and "javascript" in v]
    assert not [c for c in page.comments if "comment" in c]
    assert payload in squash("".join(page.text))


# --- Templates ---------------------------------------------------------------------------------


def edit(story: Story, name: str, change: object) -> None:
    path = story.project / "templates" / name
    assert callable(change)
    path.write_text(change(path.read_text(encoding="utf-8")), encoding="utf-8")


def test_a_template_syntax_error_names_file_and_line(story: Story) -> None:
    lines = (story.project / "templates/en/letter.html.j2").read_text().count("\n")
    edit(story, "en/letter.html.j2", lambda t: t + "{% if %}\n")
    story.refused(
        story.send(),
        f"templates/en/letter.html.j2, line {lines + 1}: Expected an expression, got 'end of "
        "statement block'",
    )


def test_an_unclosed_block_names_file_and_line(story: Story) -> None:
    edit(story, "en/letter.txt.j2", lambda t: "{% for s in signatories %}\n" + t)
    [error] = story.refused(story.send(), "templates/en/letter.txt.j2, line ")
    assert "Unexpected end of template" in error


def test_an_unknown_variable_names_it_and_where_it_is(story: Story) -> None:
    edit(story, "en/letter.txt.j2", lambda t: "{{ ambassador_name }}\n" + t)
    story.refused(
        story.send(),
        "templates/en/letter.txt.j2, line 1: 'ambassador_name' is undefined: the contacts file "
        "has no column 'ambassador_name' (the variables are the contacts columns, letter_date, "
        "letter_language, salutation and signatories)",
    )


def test_an_unknown_column_of_a_data_file_names_it(story: Story) -> None:
    edit(story, "en/letter.txt.j2", lambda t: "{{ signatories[0].website }}\n" + t)
    story.refused(
        story.send(),
        "templates/en/letter.txt.j2, line 1: 'dict object' has no attribute 'website' (the "
        "variables are",
    )


def test_a_missing_template_file_is_named(story: Story) -> None:
    (story.project / "templates/en/letter.txt.j2").unlink()
    story.refused(
        story.send(),
        "templates/en/letter.txt.j2: missing (looked in templates/en and templates)",
    )


def test_a_missing_templates_folder_names_the_setting(story: Story) -> None:
    story.refused(
        story.send(TEMPLATES_DIR="letters"), "letters: no such folder (set TEMPLATES_DIR)"
    )


@pytest.mark.parametrize(
    ("expression", "attribute"),
    [
        pytest.param("''.__class__", "'__class__' of 'str'", id="class-of-a-string"),
        pytest.param(
            "''.__class__.__mro__[1].__subclasses__()", "'__class__' of 'str'", id="subclasses"
        ),
        pytest.param("cycler.__init__.__globals__", "'__init__' of 'type'", id="globals"),
        pytest.param("lipsum.__globals__['os']", "'__globals__' of 'function'", id="lipsum"),
        pytest.param("'{0.__class__}'.format(country)", "'__class__' of 'str'", id="format"),
        pytest.param(
            "self._TemplateReference__context",
            "'_TemplateReference__context' of 'TemplateReference'",
            id="template-context",
        ),
        pytest.param("signatories.__len__()", "'__len__' of 'list'", id="dunder-method"),
        pytest.param("signatories[0].__class__", "'__class__' of 'dict'", id="class-of-a-row"),
        pytest.param(
            "signatories[0].__init__.__globals__", "'__init__' of 'dict'", id="row-method-globals"
        ),
    ],
)
def test_a_template_cannot_reach_python_internals(
    story: Story, expression: str, attribute: str
) -> None:
    (story.project / "templates/en/subject.txt.j2").write_text(f"{{{{ {expression} }}}}\n")
    story.refused(
        story.send(),
        f"templates/en/subject.txt.j2, line 1: not allowed in a template (access to attribute "
        f"{attribute} object is unsafe.)",
    )


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        pytest.param("2 ** 100000000", "not allowed in a template (the power", id="huge-power"),
        pytest.param("range(10**9)|list", "OverflowError: Range too big", id="huge-range"),
        pytest.param("1 / 0", "ZeroDivisionError: division by zero", id="division-by-zero"),
        pytest.param("country + 1", "TypeError: can only concatenate str", id="type-error"),
    ],
)
def test_a_runaway_or_broken_expression_fails_fast_with_its_place(
    story: Story, expression: str, expected: str
) -> None:
    (story.project / "templates/en/subject.txt.j2").write_text(f"{{{{ {expression} }}}}\n")
    story.refused(story.send(), f"templates/en/subject.txt.j2, line 1: {expected}")


def test_an_included_template_that_is_missing_is_named(story: Story) -> None:
    (story.project / "templates/en/letter.txt.j2").write_text("{% include 'closing.txt.j2' %}\n")
    story.refused(story.send(), "templates/en/closing.txt.j2: missing")


@pytest.mark.parametrize(
    "template",
    [
        pytest.param("{{ 'a' * 100000000 }}", id="huge-string"),
        pytest.param("{{ signatories * 10000000 }}", id="huge-list"),
        pytest.param("{{ 'a'|center(10**12) }}", id="center"),
        pytest.param("{{ 'a'|indent(10**12) }}", id="indent"),
        pytest.param("{{ '%*s'|format(10**12, 'a') }}", id="format"),
        pytest.param("{{ '%999999999999s'|format('a') }}", id="format-width"),
        pytest.param("{{ '%*s' % (10**12, 'a') }}", id="percent"),
        pytest.param("{{ 'a'.ljust(10**12) }}", id="ljust"),
        pytest.param("{{ '{:>999999999999}'.format('a') }}", id="str-format"),
        pytest.param("{{ ('a' * 1000000).replace('a', 'aaaaaaaaaa') }}", id="replace"),
        pytest.param("{{ lipsum(n=10**7) }}", id="lipsum"),
        pytest.param("{{ signatories|slice(10**9)|list }}", id="slice"),
        pytest.param(
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            id="loops-that-write",
        ),
        pytest.param(
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            id="loops-that-spin",
        ),
        pytest.param(
            "{% macro again(n) %}{{ again(n + 1) }}{% endmacro %}{{ again(0) }}",
            id="recursive-macro",
        ),
        pytest.param(
            "{% set ns = namespace(s='ab') %}{% for i in range(40) %}"
            "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
            id="doubling-in-a-loop",
        ),
        pytest.param(
            "{% set ns = namespace(s='ab') %}{% for i in range(40) %}"
            "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
            id="doubling-that-writes-little",
        ),
    ],
)
def test_a_template_that_would_exhaust_memory_or_time_is_refused_naming_it(
    story: Story, template: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One clear line naming the template, exit 2, nothing sent.

    Memory (``MAX_MEMORY``), time (``MAX_SECONDS``, 2 s here) and the size
    of what it writes bound every render: whichever a bomb meets first stops
    it, so the outcome is the same on a busy machine.
    """
    monkeypatch.setattr("outreach.render.MAX_SECONDS", 2.0)
    (story.project / "templates/en/letter.txt.j2").write_text(template + "\n")
    errors = story.refused(story.send())
    assert any(
        "templates/en/letter.txt.j2" in e
        and ("too large to render" in e or "calls itself too deeply" in e)
        for e in errors
    ), errors
