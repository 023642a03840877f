"""Staff look at the pages in a browser: so do these tests, in headless Chromium.

Chromium is Debian's (``apt-get install chromium``), driven by Playwright;
no browser is ever downloaded. The tests skip only on a developer machine
without Chromium; in CI (``CI=1``) a missing Chromium fails them.
"""

from __future__ import annotations

import email
import email.policy
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from outreach import Campaign, load_settings
from tests.conftest import CONTACTS, ROOT, RunCli, Seed, system_program

SCREENSHOTS = ROOT / "out" / "screenshots"
CHROMIUM = system_program("chromium", module=True)

from playwright.sync_api import Browser, Page  # noqa: E402

pytestmark = pytest.mark.browser


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    opened = context.new_page()
    outside: list[str] = []
    opened.on(
        "request",
        lambda r: None if r.url.startswith(("file:", "about:", "data:")) else outside.append(r.url),
    )
    yield opened
    context.close()
    assert outside == [], f"the page fetched from outside: {outside}"


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The previews of the 195 missions, written once."""
    folder = tmp_path_factory.mktemp("gallery")
    settings = {"CONTACTS_FILE": str(CONTACTS), "TEMPLATES_DIR": str(ROOT / "templates")}
    campaign = Campaign.open(load_settings(environ=settings, env_file=None))
    campaign.preview(folder / "preview")
    return folder / "preview" / "index.html"


def test_gallery_summary_counts_letters_placeholders_and_warnings(
    page: Page, gallery: Path
) -> None:
    page.goto(gallery.as_uri())
    summary = page.locator("#summary").inner_text()
    assert "195 letters" in summary
    assert "195 placeholder addresses" in summary
    assert "44 warnings" in summary
    assert page.locator("#letters > li").count() == 195


@pytest.mark.parametrize(
    ("mission_id", "country"),
    [
        pytest.param("CHL", "Chile", id="member"),
        pytest.param("VAT", "Holy See", id="observer"),
    ],
)
def test_choosing_a_letter_shows_both_versions_with_salutation_and_all_signatories(
    page: Page, gallery: Path, seed: Seed, mission_id: str, country: str
) -> None:
    page.goto(gallery.as_uri())
    page.locator(f'#letters > li[data-id="{mission_id}"] button').click()
    assert page.locator("#letter-title").inner_text() == f"{country} ({mission_id})"

    html_version = page.frame_locator("#html-version")
    assert html_version.locator("p.salutation").inner_text() == seed.salutation
    names = html_version.locator("ol.signatories li").all_inner_texts()
    assert [" ".join(n.split()) for n in names] == seed.signatories

    text = page.locator("#text-version").inner_text()
    assert f"\n{seed.salutation}\n" in text
    for number, name in enumerate(seed.signatories, start=1):
        assert f"{number}. {name}" in " ".join(text.split())
    assert page.evaluate("location.hash") == f"#{mission_id}"
    screenshot(page, f"gallery-{mission_id}")


def test_the_letter_frame_is_sandboxed(page: Page, gallery: Path) -> None:
    page.goto(gallery.as_uri())
    assert page.locator("#html-version").get_attribute("sandbox") == ""


@pytest.mark.parametrize(
    ("typed", "only_warnings", "expected"),
    [
        pytest.param("chile", False, ["CHL"], id="by-country"),
        pytest.param("bol@", False, ["BOL"], id="by-address"),
        pytest.param("holy see", False, ["VAT"], id="two-words"),
        pytest.param("", True, 44, id="only-with-warnings"),
        pytest.param("language 'fr'", True, 24, id="warning-text"),
        pytest.param("atlantis", False, [], id="nothing"),
    ],
)
def test_filtering_the_list(
    page: Page, gallery: Path, typed: str, only_warnings: bool, expected: list[str] | int
) -> None:
    page.goto(gallery.as_uri())
    page.locator("#filter").fill(typed)
    if only_warnings:
        page.locator("#only-warnings").check()
    visible = page.locator("#letters > li:not([hidden])")
    ids = [visible.nth(i).get_attribute("data-id") for i in range(visible.count())]
    if isinstance(expected, int):
        assert len(ids) == expected
    else:
        assert ids == expected
    assert page.locator("#shown").inner_text() == f"{len(ids)} of 195 shown"
    assert page.locator("#no-match").is_visible() == (not ids)
    if typed == "chile":
        screenshot(page, "gallery-filtered")


def test_letter_in_the_address_bar_opens_first(page: Page, gallery: Path) -> None:
    page.goto(gallery.as_uri() + "#BOL")
    assert page.locator("#letter-title").inner_text().endswith("(BOL)")
    following = page.locator('#letters > li[data-id="BOL"] + li').get_attribute("data-id")
    page.locator('#letters > li[data-id="BOL"] button').focus()
    page.keyboard.press("ArrowDown")
    assert page.evaluate("location.hash") == f"#{following}"
    assert page.locator("#letter-title").inner_text().endswith(f"({following})")


Box = dict[str, float]


def box(page: Page, selector: str) -> Box:
    found = page.locator(selector).bounding_box()
    assert found is not None, f"{selector} is not displayed"
    return dict(found)


def within(inner: Box, outer: Box) -> bool:
    """Whether ``inner`` lies wholly inside ``outer`` (to a pixel)."""
    return (
        inner["x"] >= outer["x"] - 1
        and inner["y"] >= outer["y"] - 1
        and inner["x"] + inner["width"] <= outer["x"] + outer["width"] + 1
        and inner["y"] + inner["height"] <= outer["y"] + outer["height"] + 1
    )


def text_box(page: Page, line: str) -> Box:
    """Where the line ``line`` of the plain-text version is drawn."""
    found: Box = page.evaluate(
        """(line) => {
          const text = document.getElementById("text-version").firstChild;
          const at = text.data.indexOf("\\n" + line + "\\n") + 1;
          if (at === 0) return null;
          const range = document.createRange();
          range.setStart(text, at);
          range.setEnd(text, at + line.length);
          const r = range.getBoundingClientRect();
          return {x: r.x, y: r.y, width: r.width, height: r.height};
        }""",
        line,
    )
    assert found is not None, f"{line!r} is not a line of the plain-text version"
    return found


@pytest.mark.parametrize(
    ("width", "height"),
    [(1024, 768), (1280, 800), (1366, 768), (1440, 900), (1920, 1080)],
    ids=lambda n: str(n),
)
def test_both_versions_are_readable_on_a_laptop_screen(
    page: Page, gallery: Path, seed: Seed, width: int, height: int
) -> None:
    page.set_viewport_size({"width": width, "height": height})
    page.goto(gallery.as_uri() + "#CHL")
    screenshot(page, f"gallery-{width}")
    window: Box = {"x": 0, "y": 0, "width": width, "height": height}
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    sideways = "list => list.scrollWidth > list.clientWidth"
    assert not page.locator("#letters").evaluate(sideways), "the list scrolls sideways"
    assert not page.locator("#text-version").evaluate(sideways), (
        "a line of the plain-text version is cut off: it must be scrolled sideways to be read"
    )
    frame, text = box(page, "#html-version"), box(page, "#text-version")
    stacked = text["y"] >= frame["y"] + frame["height"]
    assert frame["width"] >= 420, f"the HTML version is {frame['width']} px wide"
    assert text["width"] >= (frame["width"] - 1 if stacked else 300), (
        f"the plain-text version is {text['width']} px wide"
    )
    for found in (frame, text):
        assert found["x"] >= 0
        assert found["x"] + found["width"] <= width

    page.locator("#html-version").scroll_into_view_if_needed()
    salutation = page.frame_locator("#html-version").locator("p.salutation")
    assert salutation.inner_text() == seed.salutation
    shown = salutation.bounding_box()
    assert shown is not None
    assert shown["width"] >= 250, "a line of the HTML version holds a few words at most"
    assert within(shown, box(page, "#html-version"))
    assert within(shown, window)

    page.locator("#text-version").scroll_into_view_if_needed()
    line = text_box(page, seed.salutation)
    assert within(line, box(page, "#text-version"))
    assert within(line, window)


def test_a_text_line_too_long_to_show_whole_leaves_the_html_version_its_width(
    page: Page, tmp_path: Path
) -> None:
    """A link of 180 characters cannot be wrapped; it scrolls, and only it is cut."""
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    letter = templates / "en" / "letter.txt.j2"
    link = "https://www.example.org/" + "a-long-path/" * 13
    letter.write_text(letter.read_text(encoding="utf-8") + link + "\n", encoding="utf-8")
    settings = {"CONTACTS_FILE": str(CONTACTS), "TEMPLATES_DIR": str(templates)}
    Campaign.open(load_settings(environ=settings, env_file=None)).preview(tmp_path / "preview")
    for width in (1440, 1920):
        page.set_viewport_size({"width": width, "height": 900})
        page.goto((tmp_path / "preview" / "index.html").as_uri() + "#CHL")
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        frame, text = box(page, "#html-version"), box(page, "#text-version")
        assert text["y"] == frame["y"], "side by side"
        assert frame["width"] >= 420, f"the HTML version is {frame['width']} px wide"
        assert text["x"] + text["width"] <= width
        overflows = "e => e.scrollWidth > e.clientWidth"
        assert not page.locator(".versions").evaluate(overflows), "the two overflow their place"


def in_sight_in_the_list(page: Page, mission_id: str) -> bool:
    """Whether the list shows the letter ``mission_id`` without scrolling, as the chosen one."""
    item = page.locator(f'#letters > li[data-id="{mission_id}"]')
    return bool(
        item.evaluate("li => li.classList.contains('chosen')")
        and within(box(page, f'#letters > li[data-id="{mission_id}"]'), box(page, "#letters"))
    )


def test_the_letter_in_the_address_bar_is_scrolled_to_in_the_list(
    page: Page, gallery: Path
) -> None:
    page.set_viewport_size({"width": 1024, "height": 768})
    page.goto(gallery.as_uri() + "#CHL")
    assert page.locator("#letter-title").inner_text() == "Chile (CHL)"
    assert in_sight_in_the_list(page, "CHL")
    assert not in_sight_in_the_list(page, "AFG"), "the list did not have to scroll"
    assert page.evaluate("document.scrollingElement.scrollTop") == 0
    screenshot(page, "gallery-hash-CHL")


def test_a_changed_address_shows_its_letter_and_back_returns(page: Page, gallery: Path) -> None:
    page.goto(gallery.as_uri() + "#CHL")
    page.evaluate("location.hash = '#FRA'")  # typed into the address bar
    page.wait_for_function(
        "document.getElementById('letter-title').textContent.endsWith('(FRA)')", timeout=5000
    )
    assert in_sight_in_the_list(page, "FRA")
    assert page.frame_locator("#html-version").locator("p.salutation").is_visible()
    assert "France" in page.frame_locator("#html-version").locator("body").inner_text()
    assert "France" in page.locator("#text-version").inner_text()
    page.locator('#letters > li[data-id="GAB"] button').click()
    assert page.evaluate("location.hash") == "#GAB"

    page.evaluate("history.back()")  # the Back button
    page.wait_for_function(
        "document.getElementById('letter-title').textContent.endsWith('(CHL)')", timeout=5000
    )
    assert page.evaluate("location.hash") == "#CHL"
    assert in_sight_in_the_list(page, "CHL")
    assert "Chile" in page.locator("#text-version").inner_text()
    assert "Chile" in page.frame_locator("#html-version").locator("body").inner_text()


def shown_ids(page: Page) -> list[str]:
    """The ids of the letters the list shows, in its order."""
    found: list[str] = page.locator("#letters > li:not([hidden])").evaluate_all(
        "items => items.map((li) => li.dataset.id)"
    )
    return found


def test_a_letter_hidden_by_only_warnings_gives_way_to_the_first_shown(
    page: Page, gallery: Path
) -> None:
    page.goto(gallery.as_uri() + "#AFG")
    assert page.locator('#letters > li[data-id="AFG"]').get_attribute("data-warnings") == "0"
    with_warnings = page.locator('#letters > li:not([data-warnings="0"])').count()
    page.locator("#only-warnings").check()
    shown = shown_ids(page)
    assert len(shown) == with_warnings
    assert "AFG" not in shown
    first = shown[0]
    assert page.locator("#letter-title").inner_text().endswith(f"({first})")
    assert page.locator("#letters > li.chosen").get_attribute("data-id") == first
    assert page.evaluate("location.hash") == f"#{first}"
    country = page.locator(f'#letters > li[data-id="{first}"] .country').inner_text()
    assert country in page.locator("#text-version").inner_text()
    assert country in page.frame_locator("#html-version").locator("body").inner_text()
    assert page.locator("#letter-warnings li").count() >= 1

    page.locator("#only-warnings").uncheck()
    assert len(shown_ids(page)) == page.locator("#letters > li").count()
    assert page.locator("#letter-title").inner_text().endswith(f"({first})")
    page.locator('#letters > li[data-id="AFG"] button').click()
    assert page.locator("#letter-title").inner_text() == "Afghanistan (AFG)"


def test_a_letter_hidden_by_the_filter_text_gives_way_and_none_left_shows_none(
    page: Page, gallery: Path
) -> None:
    page.goto(gallery.as_uri() + "#CHL")
    page.locator("#filter").fill("france")
    assert shown_ids(page) == ["FRA"]
    assert page.locator("#letter-title").inner_text() == "France (FRA)"
    assert "France" in page.locator("#text-version").inner_text()

    page.locator("#filter").fill("atlantis")
    assert shown_ids(page) == []
    assert page.locator("#letter-title").inner_text() == "No letter matches the filter"
    assert page.locator("#letters > li.chosen").count() == 0
    assert not page.locator("#html-version").is_visible()
    assert not page.locator("#text-version").is_visible()
    assert page.locator("#text-version").inner_text() == ""
    assert page.locator("#letter-to").inner_text() == ""
    assert page.evaluate("location.hash") == ""
    screenshot(page, "gallery-no-match")

    page.locator("#filter").fill("")
    assert len(shown_ids(page)) == page.locator("#letters > li").count()
    assert page.locator("#letter-title").inner_text() == "Afghanistan (AFG)"
    assert page.locator("#html-version").is_visible()
    page.locator('#letters > li[data-id="CHL"] button').click()
    page.keyboard.press("ArrowDown")
    following = page.locator('#letters > li[data-id="CHL"] + li').get_attribute("data-id")
    assert page.locator("#letter-title").inner_text().endswith(f"({following})")


def test_a_changed_address_naming_a_hidden_letter_clears_the_filter(
    page: Page, gallery: Path
) -> None:
    page.goto(gallery.as_uri() + "#CHL")
    page.locator("#filter").fill("france")
    page.evaluate("location.hash = '#CHL'")
    page.wait_for_function(
        "document.getElementById('letter-title').textContent.endsWith('(CHL)')", timeout=5000
    )
    assert page.locator("#filter").input_value() == ""
    assert "CHL" in shown_ids(page)
    assert in_sight_in_the_list(page, "CHL")


def eml_header(index: Path, mission_id: str, name: str) -> str:
    """A header of the letter's own ``.eml``, decoded ("" when it has none)."""
    raw = (index.parent / "letters" / f"{mission_id}.eml").read_bytes()
    return str(email.message_from_bytes(raw, policy=email.policy.default).get(name, ""))


def test_the_to_line_is_the_header_of_the_eml(page: Page, gallery: Path) -> None:
    page.goto(gallery.as_uri() + "#CHL")
    to = eml_header(gallery, "CHL", "To")
    assert to == "Permanent Mission of Chile to the United Nations <chl@missions.example>"
    assert page.locator("#letter-to").inner_text() == to
    assert eml_header(gallery, "CHL", "Cc") == ""
    assert not page.locator("#letter-cc").is_visible()
    assert not page.locator("#letter-cc-label").is_visible()


#: Missions whose names a page must show as text, and a Cc line.
OWN_CONTACTS = """id,country,mission,email,cc
XSS,Xanadu,"<script>document.title = 'run'</script><b>Mission</b> of Xanadu",x@xanadu.example,
CIV,Côte d’Ivoire,"Mission of Côte d’Ivoire, New York",civ@civ.example,"a@civ.example;b@civ.example"
"""


@pytest.fixture(scope="module")
def own_gallery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("own")
    (folder / "contacts.csv").write_text(OWN_CONTACTS, encoding="utf-8")
    settings = {
        "CONTACTS_FILE": str(folder / "contacts.csv"),
        "TEMPLATES_DIR": str(ROOT / "templates"),
    }
    Campaign.open(load_settings(environ=settings, env_file=None)).preview(folder / "preview")
    return folder / "preview" / "index.html"


def test_to_and_cc_show_names_as_text_as_the_eml_has_them(page: Page, own_gallery: Path) -> None:
    page.goto(own_gallery.as_uri() + "#CIV")
    to, cc = eml_header(own_gallery, "CIV", "To"), eml_header(own_gallery, "CIV", "Cc")
    assert "Mission of Côte d’Ivoire, New York" in to
    assert "civ@civ.example" in to
    assert cc == "a@civ.example, b@civ.example"
    assert page.locator("#letter-to").inner_text() == to
    assert page.locator("#letter-cc-label").is_visible()
    assert page.locator("#letter-cc").inner_text() == cc

    page.locator('#letters > li[data-id="XSS"] button').click()
    to = eml_header(own_gallery, "XSS", "To")
    assert "<script>document.title = 'run'</script><b>Mission</b> of Xanadu" in to
    assert page.locator("#letter-to").inner_text() == to
    # Only the spans that keep each address whole, holding text alone.
    assert page.locator("#letter-to *:not(span.address)").count() == 0, "read as HTML"
    assert page.locator("#letter-to span.address *").count() == 0, "read as HTML"
    assert page.locator("#letter-to span.address").all_inner_texts() == ["<x@xanadu.example>"]
    assert not page.locator("#letter-cc").is_visible()
    assert page.title() == "Preview: default"


def write_log(path: Path, rows: list[tuple[int, str, str, str, int | None, str]]) -> None:
    from outreach.sendlog import LogRow, SendLog

    start = datetime(2015, 8, 31, 14, 0, tzinfo=UTC)
    with SendLog(path) as log:
        for seconds, contact_id, email, status, code, reply in rows:
            log.append(
                LogRow(
                    time=start + timedelta(seconds=seconds),
                    campaign="default",
                    contact_id=contact_id,
                    email=email,
                    status=status,
                    attempt=1,
                    smtp_code=code,
                    smtp_reply=reply,
                    message_id=f"<{contact_id}@outreach.example>",
                )
            )


def test_report_page_shows_counts_bar_and_problems(
    page: Page, run_cli: RunCli, project: Path
) -> None:
    rows: list[tuple[int, str, str, str, int | None, str]] = []
    for n, cid in enumerate(["AFG", "ALB", "DZA", "AND", "AGO", "ATG"]):
        rows.append((n * 2, cid, f"{cid.lower()}@missions.example", "sending", None, ""))
        rows.append((n * 2 + 1, cid, f"{cid.lower()}@missions.example", "sent", 250, "2.0.0 Ok"))
    rows.append((20, "ARG", "arg@missions.example", "sending", None, ""))
    rows.append((21, "ARG", "arg@missions.example", "failed", 550, "5.1.1 <arg@…> unknown"))
    rows.append((22, "ARM", "arm@missions.example", "deferred", 451, "4.7.1 try later"))
    rows.append((23, "AUS", "aus@missions.example", "sending", None, ""))
    write_log(project / "logs" / "send-log.csv", rows)
    out = project / "out" / "report.html"
    result = run_cli("report", "--format", "html", "--out", str(out))
    assert result.code == 0, result.stderr
    page.goto(out.as_uri())
    bar = page.locator(".bar > span")
    labels = bar.evaluate_all("spans => spans.map(s => s.dataset.status + ':' + s.dataset.count)")
    assert labels == ["sent:6", "deferred:1", "failed:1", "ambiguous:1", "not attempted:186"]
    problems = page.locator("#problems tbody tr").all_inner_texts()
    assert any("ARG" in r and "550" in r and "unknown" in r for r in problems)
    assert any("AUS" in r and "ambiguous" in r for r in problems)
    screenshot(page, "report")
