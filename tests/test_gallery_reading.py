"""Reading the preview gallery as staff do: a search that ignores accents and capitals,
a filter hint that is read whole, whom the letter comes from, and addresses that are
never broken at their hyphen."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest

from outreach import Campaign, load_settings
from tests.conftest import ROOT, system_program

CHROMIUM = system_program("chromium", module=True)

from playwright.sync_api import Browser, Page  # noqa: E402

pytestmark = pytest.mark.browser

CONTACTS = (
    "id,country,mission,email,cc\n"
    "CIV,Côte d'Ivoire,Permanent Mission of the Republic of Côte d'Ivoire to the United Nations,"
    "civ@missions.example,desk-political-affairs@civ-mission-newyork.example\n"
    """STP,São Tomé and Príncipe,Permanent Mission of São Tomé and Príncipe,stp@missions.example,
CHL,Chile,Permanent Mission of Chile,chl@missions.example,
"""
)


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("reading")
    (folder / "contacts.csv").write_text(CONTACTS, encoding="utf-8")
    settings = {
        "CONTACTS_FILE": str(folder / "contacts.csv"),
        "TEMPLATES_DIR": str(ROOT / "templates"),
        "MAIL_FROM": "campaigns@coalition-for-the-code.example",
        "MAIL_FROM_NAME": "Global Centre for the Responsibility to Protect",
    }
    Campaign.open(load_settings(environ=settings, env_file=None)).preview(folder / "preview")
    return folder / "preview" / "index.html"


def open_page(browser: Browser, width: int) -> Page:
    return browser.new_context(viewport={"width": width, "height": 800}).new_page()


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        pytest.param("cote", ["CIV"], id="without-accent"),
        pytest.param("CÔTE", ["CIV"], id="capitals-and-accent"),
        pytest.param("cote d’ivoire", ["CIV"], id="typographic-apostrophe"),
        pytest.param("sao tome", ["STP"], id="two-words-without-accents"),
        pytest.param("príncipe", ["STP"], id="accent-typed"),
        pytest.param("chile", ["CHL"], id="plain"),
    ],
)
def test_search_ignores_accents_and_capitals(
    browser: Browser, gallery: Path, typed: str, expected: list[str]
) -> None:
    page = open_page(browser, 1400)
    page.goto(gallery.as_uri())
    page.locator("#filter").fill(typed)
    visible = page.locator("#letters > li:not([hidden])")
    assert [visible.nth(i).get_attribute("data-id") for i in range(visible.count())] == expected
    page.context.close()


@pytest.mark.parametrize("width", [1024, 1400])
def test_the_filter_box_s_hint_is_read_whole(browser: Browser, gallery: Path, width: int) -> None:
    page = open_page(browser, width)
    page.goto(gallery.as_uri())
    room, needed = page.evaluate(
        """() => {
        const box = document.getElementById("filter");
        const style = getComputedStyle(box);
        const measure = document.createElement("canvas").getContext("2d");
        measure.font = style.font;
        const padding = parseFloat(style.paddingLeft) + parseFloat(style.paddingRight);
        const room = box.clientWidth - padding;
        return [room, measure.measureText(box.placeholder).width];
    }"""
    )
    assert needed + 24 <= room  # the search box's clear button takes about 16 px
    hint = page.locator("#filter-hint")
    assert "country, id, address, subject, language or warning" in hint.inner_text()
    assert page.evaluate(
        "() => { const h = document.getElementById('filter-hint');"
        " return h.scrollWidth <= h.clientWidth; }"
    )
    page.context.close()


def test_the_letter_s_from_is_shown_as_the_eml_has_it(browser: Browser, gallery: Path) -> None:
    page = open_page(browser, 1400)
    page.goto(gallery.as_uri() + "#CHL")
    raw = (gallery.parent / "letters" / "CHL.eml").read_bytes()
    sender = str(email.message_from_bytes(raw, policy=email.policy.default)["From"])
    assert sender == (
        "Global Centre for the Responsibility to Protect <campaigns@coalition-for-the-code.example>"
    )
    assert page.locator("#letter-from").inner_text() == sender
    page.context.close()


@pytest.mark.parametrize("width", [1024, 1400])
def test_an_address_is_never_broken_at_its_hyphen(
    browser: Browser, gallery: Path, width: int
) -> None:
    page = open_page(browser, width)
    page.goto(gallery.as_uri() + "#CIV")
    for field in ("#letter-from", "#letter-to", "#letter-cc"):
        addresses = page.locator(f"{field} .address")
        assert addresses.count() >= 1, field
        for i in range(addresses.count()):
            lines = addresses.nth(i).evaluate("(a) => a.getClientRects().length")
            top, bottom = addresses.nth(i).evaluate(
                "(a) => { const r = a.getBoundingClientRect(); return [r.top, r.bottom]; }"
            )
            height = page.locator(field).evaluate(
                "(d) => parseFloat(getComputedStyle(d).lineHeight)"
            )
            assert lines == 1, field
            assert bottom - top < 1.5 * height, (field, addresses.nth(i).inner_text())
    assert (
        "desk-political-affairs@civ-mission-newyork.example"
        in page.locator("#letter-cc").inner_text()
    )
    page.context.close()
