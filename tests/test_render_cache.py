"""Letters built from the shared inlined skeleton are the letters inlined in full.

Every check renders the same letter both ways and compares the bytes, and
also asks the renderer which way it went, so that a renderer which always
inlined in full could not pass.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jinja2.filters
import pytest

from outreach import Campaign, load_settings
from outreach.contacts import Contact
from outreach.render import HTML, TEXT, Renderer, _inline_css
from tests.conftest import chile, run_python

LETTER_DATE = "31 August 2015"


@pytest.fixture
def campaign(project: Path) -> Campaign:
    return Campaign.open(load_settings(environ={}, env_file=None))


def contact(**fields: str) -> Contact:
    """Chile, with an extra column that test templates put in an attribute."""
    return chile(**{"motto": "Por la razon o la fuerza", **fields})


def inlined_in_full(renderer: Renderer, someone: Contact) -> str:
    """The plain path: the whole page rendered, then given to premailer."""
    language = renderer.language_for(someone)
    template = renderer.environment(language).get_template(HTML)
    return _inline_css(template.render(renderer.context(someone, language)))


def fresh(project: Path, letter_date: str = LETTER_DATE) -> Renderer:
    return Renderer(project / "templates", letter_date)


def test_every_shipped_letter_is_the_same_both_ways(campaign: Campaign) -> None:
    renderer = campaign.renderer
    assert len(campaign.contacts) == 195
    for someone in campaign.contacts:
        assert renderer.render(someone).html == inlined_in_full(renderer, someone), someone.id
    stats = renderer.inline_stats
    assert (stats.shared, stats.full, stats.reasons) == (195, 0, {})
    assert 1 <= stats.skeletons <= 4


def test_every_shipped_text_is_wrapped_as_by_jinja(campaign: Campaign, project: Path) -> None:
    builtin = fresh(project)
    builtin.environment("en").filters["wordwrap"] = jinja2.filters.do_wordwrap
    for someone in campaign.contacts:
        context = builtin.context(someone, "en")
        expected = builtin.environment("en").get_template(TEXT).render(context)
        assert campaign.renderer.render(someone).text == expected, someone.id


@pytest.mark.parametrize(
    ("text", "arguments"),
    [
        pytest.param("word " * 40, (72, False), id="paragraph"),
        pytest.param("a\n\nb\r\nc  d\t e\n", (10, True), id="line-ends-and-tabs"),
        pytest.param("x" * 100 + " well-known hyphen-ated", (20, True), id="long-word"),
        pytest.param("x" * 100 + " well-known hyphen-ated", (20, False), id="long-word-kept"),
        pytest.param("", (72, False), id="empty"),
        pytest.param("Côte d’Ivoire\u00a0and Türkiye " * 9, (30, False), id="non-ascii"),
    ],
)
def test_wordwrap_filter_matches_jinja(
    project: Path, text: str, arguments: tuple[int, bool]
) -> None:
    environment = fresh(project).environment("en")
    for wrapstring in (None, "<br>"):
        for hyphens in (True, False):
            call = (text, *arguments)
            ours = environment.filters["wordwrap"](
                environment, *call, wrapstring=wrapstring, break_on_hyphens=hyphens
            )
            theirs = jinja2.filters.do_wordwrap(
                environment, *call, wrapstring=wrapstring, break_on_hyphens=hyphens
            )
            assert ours == theirs
            # Twice: the second answer comes from the cache.
            assert ours == environment.filters["wordwrap"](
                environment, *call, wrapstring=wrapstring, break_on_hyphens=hyphens
            )


AWKWARD = [
    pytest.param("<script>alert(1)</script>", id="script"),
    pytest.param("&amp;", id="entity"),
    pytest.param('"quoted"', id="double-quotes"),
    pytest.param("it's", id="apostrophe"),
    pytest.param("a & b < c > d", id="ampersand-lt-gt"),
    pytest.param("Côte d’Ivoire", id="cote-divoire"),
    pytest.param("Türkiye", id="turkiye"),
    pytest.param("المملكة العربية السعودية", id="arabic"),
    pytest.param("中华人民共和国", id="chinese"),
    pytest.param("Saint\u00a0Lucia", id="nbsp"),
    pytest.param("\ue000", id="marker-character"),
    pytest.param("\ue0000\ue001", id="whole-marker"),
    pytest.param("", id="empty"),
    pytest.param("Republic of Somewhere " * 400, id="very-long"),
    pytest.param("{{ x }}", id="jinja-syntax"),
    pytest.param("  spaced  ", id="outer-spaces"),
    pytest.param("tab\tand\nnewline", id="tab-newline"),
    pytest.param("bell\x07", id="control-character"),
    pytest.param("carriage\rreturn", id="carriage-return"),
]


def plain_in_attribute(value: str) -> bool:
    return all(c.isalnum() or c in " -_.,:;/()!?@+#%=*~" for c in value)


def has_marker_or_control(value: str) -> bool:
    return any(c in "\ue000\ue001" or (ord(c) < 32 and c not in "\t\n") for c in value)


@pytest.mark.parametrize("value", AWKWARD)
@pytest.mark.parametrize(
    "column", ["mission", "title", "representative", "salutation", "name_in_text"]
)
def test_awkward_value_in_a_column(project: Path, column: str, value: str) -> None:
    renderer = fresh(project)
    fields = {column: value}
    if column == "title":
        fields["representative"] = "Jane Doe"
    someone = contact(**fields)
    assert renderer.render(someone).html == inlined_in_full(renderer, someone)
    stats = renderer.inline_stats
    if has_marker_or_control(value):
        assert stats.full == 1, stats
    elif column != "salutation" or value:
        # Text between tags takes any other value; an empty salutation is
        # replaced by "Excellency," before it is written.
        assert stats.shared == 1, stats


@pytest.mark.parametrize("value", AWKWARD)
def test_awkward_letter_date(project: Path, value: str) -> None:
    renderer = fresh(project, letter_date=value)
    someone = contact()
    assert renderer.render(someone).html == inlined_in_full(renderer, someone)
    stats = renderer.inline_stats
    if has_marker_or_control(value) or not value:
        # An empty date leaves <p class="date"></p> without a text node, a
        # different tree from the skeleton's.
        assert stats.full == 1, stats
    else:
        assert stats.shared == 1, stats


def use_letter(project: Path, content: str, title: str = "Letter") -> None:
    (project / "templates" / "en" / "letter.html.j2").write_text(
        '{% extends "layout.html.j2" %}'
        f"{{% block title %}}{title}{{% endblock %}}"
        f"{{% block content %}}{content}{{% endblock %}}",
        encoding="utf-8",
    )


@pytest.mark.parametrize("value", AWKWARD)
def test_awkward_value_in_an_attribute(project: Path, value: str) -> None:
    use_letter(project, '<p title="{{ motto }}">{{ country }}</p>\n<p>Text</p>')
    renderer = fresh(project)
    someone = contact(motto=value)
    assert renderer.render(someone).html == inlined_in_full(renderer, someone)
    stats = renderer.inline_stats
    if plain_in_attribute(value):
        assert stats.shared == 1, stats
    else:
        assert stats.full == 1, stats


@pytest.mark.parametrize(
    ("content", "title", "fields", "shared"),
    [
        pytest.param('<p title="{{ motto }}">x</p>', "Letter", {}, True, id="attribute"),
        pytest.param(
            '<p lang="{{ language }}" title="a {{ motto }} b">x</p>',
            "Letter",
            {},
            True,
            id="two-attributes",
        ),
        pytest.param(
            '<p title="{{ motto }}">x</p>', "Letter", {"motto": "it's"}, False, id="quote"
        ),
        pytest.param('<p class="{{ status }}">x</p>', "Letter", {}, False, id="class"),
        pytest.param('<p id="{{ id }}">x</p>', "Letter", {}, False, id="id"),
        pytest.param('<p style="color: {{ motto }}">x</p>', "Letter", {}, False, id="style-attr"),
        pytest.param('<a href="mailto:{{ email }}">mail</a>', "Letter", {}, False, id="href"),
        pytest.param("<p>x</p>", "Letter to {{ country }}", {}, False, id="title"),
        pytest.param("<!-- {{ country }} --><p>x</p>", "Letter", {}, False, id="comment"),
        pytest.param(
            "<style>.x { color: {{ motto }}; }</style><p class=x>x</p>",
            "Letter",
            {"motto": "red"},
            False,
            id="style-block",
        ),
        pytest.param(
            "<script>var x = '{{ country }}';</script><p>x</p>", "Letter", {}, False, id="script"
        ),
        pytest.param(
            "<style>p[title] { color: red; }</style><p title='{{ motto }}'>x</p>",
            "Letter",
            {},
            False,
            id="attribute-selector",
        ),
        pytest.param(
            "<p>{% filter upper %}{{ country }}{% endfilter %}</p>",
            "Letter",
            {},
            False,
            id="filtered-block",
        ),
        pytest.param(
            "{% set both %}{{ country }}{% endset %}<p>{{ both }} {{ both }}</p>",
            "Letter",
            {},
            False,
            id="captured-block-written-twice",
        ),
        pytest.param("<p>{{ title }}</p><p>x</p>", "Letter", {}, False, id="empty-element"),
        pytest.param("<p>Dear {{ title }}</p>", "Letter", {}, True, id="empty-in-text"),
        pytest.param(
            "{% autoescape false %}<p>{{ motto }}</p>{% endautoescape %}",
            "Letter",
            {"motto": "<b>bold</b>"},
            True,
            id="autoescape-off",
        ),
        pytest.param("<p>{{ motto|safe }}</p>", "Letter", {"motto": "<i>x</i>"}, True, id="safe"),
        pytest.param("<p>{{ country }}</p>", "Letter", {"country": "\ue000"}, False, id="marker"),
        pytest.param("<p>&#57344;{{ country }}</p>", "Letter", {}, False, id="marker-in-page"),
    ],
)
def test_template_contexts(
    project: Path, content: str, title: str, fields: dict[str, str], shared: bool
) -> None:
    use_letter(project, content, title)
    renderer = fresh(project)
    someone = contact(**fields)
    assert renderer.render(someone).html == inlined_in_full(renderer, someone)
    # A second letter for the same skeleton takes the same way.
    other = contact(**{"id": "BOL", "country": "Bolivia", "name_in_text": "Bolivia", **fields})
    assert renderer.render(other).html == inlined_in_full(renderer, other)
    stats = renderer.inline_stats
    assert (stats.shared, stats.full) == ((2, 0) if shared else (0, 2)), stats
    if shared:
        assert stats.skeletons == 1


def test_skeletons_are_inlined_once(campaign: Campaign) -> None:
    renderer = campaign.renderer
    for someone in list(campaign.contacts)[:20]:
        renderer.render(someone)
    assert renderer.inline_stats.skeletons == 1
    assert renderer.inline_stats.shared == 20


# -- the inlined skeleton kept between runs ------------------------------------

KEPT_BETWEEN_RUNS = """
import sys
from pathlib import Path
from outreach import Campaign, load_settings
campaign = Campaign.open(load_settings(environ={}, env_file=None))
for someone in campaign.contacts:
    sys.stdout.write(campaign.renderer.render(someone).html)
sys.stderr.write("premailer imported" if "premailer" in sys.modules else "premailer not imported")
"""


def every_page_inlined_in_full(campaign: Campaign) -> str:
    """What ``KEPT_BETWEEN_RUNS`` must print: every letter's HTML by the plain path."""
    return "".join(inlined_in_full(campaign.renderer, c) for c in campaign.contacts)


def render_all_in_a_new_process(project: Path, cache: Path) -> tuple[str, str]:
    done = run_python(KEPT_BETWEEN_RUNS, project, XDG_CACHE_HOME=str(cache))
    assert done.code == 0, done.stderr
    return done.stdout, done.stderr


def test_a_later_run_takes_the_inlined_skeleton_from_the_cache(
    campaign: Campaign, tmp_path: Path
) -> None:
    """Same bytes, and premailer is not even imported: its cost is the cache's point."""
    expected = every_page_inlined_in_full(campaign)
    cache = tmp_path / "cache"
    first, said = render_all_in_a_new_process(Path.cwd(), cache)
    assert (first == expected, said) == (True, "premailer imported")
    kept = list((cache / "outreach" / "inlined").iterdir())
    assert 1 <= len(kept) <= 4
    # A contact's values never go into the cache: only the letter's markup.
    assert not any("Chile" in path.read_text(encoding="utf-8") for path in kept)
    again, said = render_all_in_a_new_process(Path.cwd(), cache)
    assert (again == expected, said) == (True, "premailer not imported")


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda text: text[: len(text) // 2], id="cut-short"),
        pytest.param(
            lambda text: text.replace("<p", "<script>alert(1)</script><p", 1), id="edited"
        ),
        pytest.param(lambda text: "", id="empty"),
    ],
)
def test_a_damaged_cache_entry_is_never_used(
    campaign: Campaign, tmp_path: Path, damage: Callable[[str], str]
) -> None:
    expected = every_page_inlined_in_full(campaign)
    cache = tmp_path / "cache"
    render_all_in_a_new_process(Path.cwd(), cache)
    for path in (cache / "outreach" / "inlined").iterdir():
        path.write_text(damage(path.read_text(encoding="utf-8")), encoding="utf-8")
    again, said = render_all_in_a_new_process(Path.cwd(), cache)
    assert (again == expected, said) == (True, "premailer imported")
    # And the entry is whole again for the next run.
    _, said = render_all_in_a_new_process(Path.cwd(), cache)
    assert said == "premailer not imported"


def test_without_a_usable_cache_folder_letters_are_inlined_as_ever(
    campaign: Campaign, tmp_path: Path
) -> None:
    expected = every_page_inlined_in_full(campaign)
    not_a_folder = tmp_path / "cache"
    not_a_folder.write_text("a file where the cache folder would be")
    for _ in range(2):
        got, said = render_all_in_a_new_process(Path.cwd(), not_a_folder)
        assert (got == expected, said) == (True, "premailer imported")
