"""The letter reads exactly as the coalition wrote it, for every mission."""

from __future__ import annotations

import html as html_lib
from pathlib import Path

import lxml.html
import pytest

from outreach import Campaign, load_settings
from outreach.errors import TemplateError
from outreach.render import Renderer
from tests.conftest import Seed, chile, squash


def visible_text(html: str) -> str:
    return squash(lxml.html.fromstring(html).body.text_content())


@pytest.fixture
def campaign(project: Path) -> Campaign:
    return Campaign.open(load_settings(environ={}, env_file=None))


contact = chile


@pytest.mark.parametrize("mission_id", ["CHL", "BOL", "VAT", "CIV"])
def test_every_paragraph_footnote_and_signatory_in_both_versions(
    campaign: Campaign, seed: Seed, mission_id: str
) -> None:
    (chosen,) = campaign.contacts.select([mission_id])
    rendered = campaign.renderer.render(chosen)
    text, page = squash(rendered.text), visible_text(rendered.html)

    for version, marker in ((text, "[1]"), (page, "1")):
        assert version.startswith(seed.date)
        assert f" {seed.salutation} " in version
        first, *rest = seed.paragraphs
        # The footnote mark follows the title of the Code in the first paragraph.
        assert first.replace("war crimes.”1", f"war crimes.”{marker}") in version
        for paragraph in rest:
            assert paragraph in version
        assert seed.footnote in version
        assert version.index(seed.closing) < version.index(seed.signatories[0])

    positions = [text.index(f"{n}. {name}") for n, name in enumerate(seed.signatories, 1)]
    assert positions == sorted(positions)
    assert len(seed.signatories) == 33
    items = lxml.html.fromstring(rendered.html).cssselect("ol li")
    assert [squash(li.text_content()) for li in items] == seed.signatories


def test_seed_fixture_reads_the_whole_letter(seed: Seed) -> None:
    assert len(seed.paragraphs) == 7
    assert seed.paragraphs[-1].endswith("within the UN Security Council.")
    assert seed.signatories[-1] == "Zarga Organization for International Development (Sudan)"


@pytest.mark.parametrize(
    ("fields", "lines"),
    [
        pytest.param(
            {},
            [
                "The Permanent Representative of Chile to the United Nations",
                "Permanent Mission of Chile to the United Nations",
                "New York",
            ],
            id="representative-unknown",
        ),
        pytest.param(
            {"title": "Ms.", "representative": "Jane Doe"},
            [
                "H.E. Ms. Jane Doe",
                "Permanent Representative of Chile to the United Nations",
                "Permanent Mission of Chile to the United Nations",
            ],
            id="representative-known",
        ),
        pytest.param(
            {
                "status": "observer",
                "mission": "Permanent Observer Mission of the Holy See to the United Nations",
                "name_in_text": "the Holy See",
            },
            ["The Permanent Observer of the Holy See to the United Nations"],
            id="observer",
        ),
    ],
)
def test_address_block(campaign: Campaign, fields: dict[str, str], lines: list[str]) -> None:
    rendered = campaign.renderer.render(contact(**fields))
    text_lines = rendered.text.splitlines()
    start = text_lines.index(lines[0])
    assert text_lines[start : start + len(lines)] == lines
    assert all(line in visible_text(rendered.html) for line in lines)


def test_salutation_column_overrides_excellency(campaign: Campaign) -> None:
    rendered = campaign.renderer.render(contact(salutation="Dear Ambassador,"))
    assert "\nDear Ambassador,\n" in rendered.text
    assert "Excellency," not in rendered.text


def test_letter_date_setting(project: Path) -> None:
    settings = load_settings(environ={"LETTER_DATE": "1 September 2015"}, env_file=None)
    campaign = Campaign.open(settings)
    rendered = campaign.renderer.render(contact())
    assert rendered.text.startswith("1 September 2015\n")


@pytest.mark.parametrize(
    "column", ["name_in_text", "mission", "title", "representative", "salutation"]
)
def test_markup_in_contact_data_is_escaped_in_html_and_plain_in_text(
    campaign: Campaign, column: str
) -> None:
    evil = '<script>alert("x")</script> & <b>'
    fields = {column: evil, "representative": "Jane Doe"} if column == "title" else {column: evil}
    rendered = campaign.renderer.render(contact(**fields))
    assert evil in rendered.text
    assert "<script" not in rendered.html
    assert "<b>" not in rendered.html
    assert html_lib.escape(evil, quote=False).replace("&quot;", '"') in rendered.html
    assert evil in visible_text(rendered.html)


def test_style_block_is_inlined(campaign: Campaign) -> None:
    rendered = campaign.renderer.render(contact())
    root = lxml.html.fromstring(rendered.html)
    assert root.cssselect("div.letter")[0].get("style")
    assert "max-width:640px" in root.cssselect("div.letter")[0].get("style")


def test_text_lines_are_wrapped(campaign: Campaign) -> None:
    rendered = campaign.renderer.render(contact())
    assert max(len(line) for line in rendered.text.splitlines()) <= 72
    assert not any(line != line.rstrip() for line in rendered.text.splitlines())


def test_contact_language_without_templates_falls_back_to_english(campaign: Campaign) -> None:
    rendered = campaign.renderer.render(contact(language="fr"))
    assert rendered.language == "en"
    assert 'lang="en"' in rendered.html


def test_contact_language_with_templates_uses_them(project: Path) -> None:
    french = project / "templates" / "fr"
    french.mkdir()
    (french / "subject.txt.j2").write_text("Demande\n", encoding="utf-8")
    (french / "letter.txt.j2").write_text("Excellence,\n", encoding="utf-8")
    (french / "letter.html.j2").write_text(
        '{% extends "layout.html.j2" %}{% block content %}<p>Excellence,</p>{% endblock %}',
        encoding="utf-8",
    )
    renderer = Renderer(project / "templates", "31 August 2015")
    rendered = renderer.render(contact(language="fr"))
    assert (rendered.subject, rendered.text, rendered.language) == (
        "Demande",
        "Excellence,\n",
        "fr",
    )
    assert 'lang="fr"' in rendered.html


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        pytest.param(
            "{{ nickname }}",
            "letter.txt.j2, line 1: 'nickname' is undefined",
            id="unknown-variable",
        ),
        pytest.param("Hello\n{% if %}", "letter.txt.j2, line 2: ", id="syntax-error"),
        pytest.param("{{ ''.__class__.__mro__ }}", "letter.txt.j2, line 1", id="python-internals"),
        pytest.param("{{ country.__class__ }}", "letter.txt.j2, line 1", id="attribute-internals"),
    ],
)
def test_template_errors_name_file_and_line(project: Path, template: str, expected: str) -> None:
    (project / "templates" / "en" / "letter.txt.j2").write_text(template, encoding="utf-8")
    renderer = Renderer(project / "templates", "31 August 2015")
    with pytest.raises(TemplateError) as caught:
        renderer.render(contact())
    assert expected in str(caught.value)
    assert "templates/en/letter.txt.j2" in str(caught.value)


def test_missing_template_is_named(project: Path) -> None:
    (project / "templates" / "en" / "letter.html.j2").unlink()
    with pytest.raises(TemplateError, match=r"templates/en/letter.html.j2: missing"):
        Renderer(project / "templates", "31 August 2015").render(contact())


def test_subject_must_be_one_line(project: Path) -> None:
    (project / "templates" / "en" / "subject.txt.j2").write_text("One\nTwo\n", encoding="utf-8")
    with pytest.raises(TemplateError, match="subject must be one line"):
        Renderer(project / "templates", "31 August 2015").render(contact())
