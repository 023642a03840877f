"""Composing in worker processes: the same letters, in order, errors as before.

The pool is forced on (``processes=2``) even for short lists, so that these
tests run the real worker path; a letter composed there must be byte for
byte the letter composed in the main process.
"""

from __future__ import annotations

import shutil
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from outreach import Campaign, load_settings
from outreach.checks import letter_warnings
from outreach.compose import compose_each
from outreach.errors import OutreachError, TemplateError
from outreach.message import Letter
from outreach.pipeline import MAX_CHUNK, MIN_CHUNK, Composer, Previewed, chunks, default_processes
from outreach.preview import _index_environment, write_previews
from outreach.sending import Sender, make_plan
from outreach.sendlog import SendLog, read_log
from outreach.spool import worth_spooling
from tests.conftest import FakeClock, run_python
from tests.smtp import SmtpServer

FIXED = datetime(2015, 8, 31, 9, 30, tzinfo=UTC)


def fixed() -> datetime:
    return FIXED


def open_campaign(**env: str) -> Campaign:
    values = {"MAIL_FROM": "campaign@coalition.example", "MAIL_FROM_NAME": "The Coalition"}
    return Campaign.open(load_settings(environ={**values, **env}, env_file=None))


@pytest.mark.parametrize("processes", [0, 1, 2], ids=["here", "one-worker", "two-workers"])
def test_every_letter_is_byte_for_byte_the_one_composed_here(project: Path, processes: int) -> None:
    campaign = open_campaign()
    contacts = list(campaign.contacts)
    expected = [campaign.compose(c, now=fixed)[1] for c in contacts]
    with Composer(campaign) as composer:
        got = list(composer.letters(contacts, now=fixed, processes=processes))
    assert len(got) == len(contacts) == 195
    assert [g.contact_id for g in got] == [c.id for c in contacts]
    assert got == expected


def test_previews_carry_the_same_parts_and_warnings(project: Path) -> None:
    campaign = open_campaign()
    contacts = list(campaign.contacts)[:30]
    expected = list(compose_each(campaign, contacts, now=fixed))
    with Composer(campaign, processes=2) as composer:
        got = list(composer.run(contacts, "preview", now=fixed))
    for want, have in zip(expected, got, strict=True):
        assert isinstance(have, Previewed)
        assert (have.contact, have.rendered) == (want.contact, want.rendered)
        assert have.letter is not None
        assert want.letter is not None
        assert have.letter == want.letter
        assert want.rendered is not None
        assert want.letter is not None
        assert list(have.warnings) == letter_warnings(want.rendered, want.letter, want.contact)


def break_one_letter(project: Path) -> None:
    """A template that fails for Kenya only, with a message naming the line."""
    template = project / "templates" / "en" / "subject.txt.j2"
    text = template.read_text(encoding="utf-8")
    template.write_text(
        '{% if id == "KEN" %}{{ no_such_column }}{% endif %}' + text, encoding="utf-8"
    )


def test_a_letter_that_cannot_be_composed_comes_back_with_all_its_problems(
    project: Path,
) -> None:
    break_one_letter(project)
    campaign = open_campaign()
    contacts = list(campaign.contacts)
    here = [c.error for c in compose_each(campaign, contacts, now=fixed)]
    with Composer(campaign, processes=2) as composer:
        there = list(composer.errors(contacts))
    assert [e is None for e in there] == [e is None for e in here]
    failed = [(type(a), a.problems) for a in there if a is not None]
    assert failed == [(type(b), b.problems) for b in here if b is not None]
    assert failed[0][0] is TemplateError
    assert "no_such_column" in failed[0][1][0]


def test_sending_stops_at_the_letter_that_cannot_be_composed(project: Path) -> None:
    break_one_letter(project)
    campaign = open_campaign()
    contacts = list(campaign.contacts)
    seen: list[Letter] = []
    with Composer(campaign, processes=2) as composer, pytest.raises(TemplateError) as caught:
        seen.extend(composer.letters(contacts, now=fixed))
    assert "no_such_column" in str(caught.value)
    assert [letter.contact_id for letter in seen] == [
        c.id for c in contacts[: [c.id for c in contacts].index("KEN")]
    ]


def test_a_send_through_workers_sends_each_letter_once_in_order(
    project: Path, smtp_server: SmtpServer, clock: FakeClock
) -> None:
    settings = load_settings(environ=smtp_server.env(), env_file=None)
    campaign = Campaign.open(settings)
    contacts = campaign.contacts.select()[:40]
    with SendLog(settings.send_log) as log:
        plan = make_plan(contacts, log.rows(), settings, now=clock.now())
        with Composer(campaign, processes=2) as composer:
            outcome = Sender(settings, plan, log, clock).run(
                composer.letters(plan.to_send, now=clock.now)
            )
    assert outcome.counts["sent"] == 40
    assert [r.recipients for r in smtp_server.received] == [list(c.recipients) for c in contacts]
    rows = read_log(settings.send_log)
    assert [r.status for r in rows] == ["sending", "sent"] * 40
    expected = [campaign.compose(c, now=clock.now)[1].data for c in contacts]
    assert [r.data for r in smtp_server.received] == expected


def test_the_preview_page_is_the_one_rendered_in_memory(project: Path) -> None:
    """The index page, streamed letter by letter, is the page of the old way."""
    campaign = open_campaign()
    contacts = list(campaign.contacts)
    result = write_previews(campaign, contacts, project / "out" / "p", now=fixed, processes=2)
    folder = result.folder
    letters = [
        {
            "id": e.id,
            "country": e.country,
            "recipients": e.recipients,
            "subject": e.subject,
            "language": e.language,
            "warnings": e.warnings,
            "html": (folder / f"{e.id}.html").read_text(encoding="utf-8"),
            "text": (folder / f"{e.id}.txt").read_text(encoding="utf-8"),
        }
        for e in result.entries
    ]
    whole = (
        _index_environment()
        .get_template("index.html.j2")
        .render(result=result, campaign=campaign.settings.campaign, letters=letters)
    )
    assert (folder / "index.html").read_text(encoding="utf-8") == whole
    for contact in contacts[:5]:
        letter = campaign.compose(contact, now=fixed)[1]
        eml = (folder / f"{contact.id}.eml").read_bytes()
        assert eml == letter.data


def test_preview_fails_whole_when_a_letter_fails_in_a_worker(project: Path) -> None:
    break_one_letter(project)
    campaign = open_campaign()
    with pytest.raises(OutreachError, match="no_such_column"):
        write_previews(campaign, list(campaign.contacts), project / "out" / "p", processes=2)
    assert not (project / "out" / "p").exists()


def test_a_worker_never_gets_the_password(project: Path) -> None:
    campaign = open_campaign(SMTP_PASSWORD="Wr0ng-Secret-Value")
    with Composer(campaign, processes=1) as composer:
        list(composer.letters(list(campaign.contacts)[:2], now=fixed))
        pool = composer._pool
        assert pool is not None
        assert "Wr0ng" not in repr(pool._initargs)  # type: ignore[attr-defined]


def test_small_runs_and_slow_rates_compose_here(project: Path) -> None:
    assert default_processes(3) == 0
    assert default_processes(2000) >= 1
    # With another thread running, workers come from a fork server, which costs
    # more to start than composing the 195 letters here.
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert default_processes(195) == 0
    finally:
        stop.set()
        other.join()


@pytest.mark.parametrize(
    ("rate", "count", "spooled"),
    [("0", 20_000, True), ("600", 2000, True), ("30", 300, True), ("30", 301, False)],
)
def test_letters_checked_are_sent_as_composed_only_when_they_go_soon(
    rate: str, count: int, spooled: bool
) -> None:
    """Their Date is the time of the check: at a slow rate each is composed anew."""
    settings = load_settings(environ={"SEND_RATE_PER_MINUTE": rate}, env_file=None)
    assert worth_spooling(settings, count) is spooled


WORKERS_STARTED_FIRST = """
import os
from datetime import UTC, datetime
from outreach import Campaign, load_settings
from outreach.pipeline import Composer

fixed = lambda: datetime(2015, 8, 31, 9, 30, tzinfo=UTC)
settings = load_settings(environ={"MAIL_FROM": "campaign@coalition.example"}, env_file=None)
prepared = Campaign.prepare(settings)
assert len(prepared.contacts) == 0
with Composer(prepared) as composer:
    composer.start(195)
    pool = composer._pool
    assert pool is not None, "no workers started"
    campaign = prepared.with_contacts()
    contacts = list(campaign.contacts)
    got = list(composer.letters(contacts, now=fixed))
    assert composer._pool is pool, "new workers were started"
    assert got == [campaign.compose(c, now=fixed)[1] for c in contacts]
    workers = {p.pid for p in pool._processes.values()}
    assert os.getpid() not in workers and len(workers) >= 1
    # A few letters are composed here; the started workers are left idle.
    assert [x.contact_id for x in composer.letters(contacts[:3], now=fixed)] == [
        c.id for c in contacts[:3]
    ]
print("ok", len(got))
"""


def test_workers_started_before_the_contacts_are_read(project: Path) -> None:
    """``start`` forks workers from the campaign without contacts; they compose every letter.

    In a process of its own: workers are forked only from a process with no
    other thread, and the test runner's has some.
    """
    done = run_python(WORKERS_STARTED_FIRST, project)
    assert done.code == 0, done.stderr
    assert done.stdout == "ok 195\n"


def test_a_templates_folder_copied_elsewhere_renders_the_same(
    project: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Workers load the templates by path: a relative TEMPLATES_DIR still works."""
    other = tmp_path_factory.mktemp("elsewhere")
    shutil.copytree(project / "templates", other / "t")
    campaign = open_campaign(TEMPLATES_DIR=str(other / "t"))
    contacts = list(campaign.contacts)[:8]
    with Composer(campaign, processes=1) as composer:
        got = list(composer.letters(contacts, now=fixed))
    assert got == [campaign.compose(c, now=fixed)[1] for c in contacts]


@pytest.mark.parametrize("count", [1, 3, 4, 5, 17, 195, 2000, 20_000])
@pytest.mark.parametrize("workers", [1, 2, 4])
def test_tasks_cover_every_letter_once_small_at_both_ends(count: int, workers: int) -> None:
    tasks = list(chunks(count, workers))
    assert [start for start, _ in tasks] == [0] + [end for _, end in tasks[:-1]]
    assert tasks[-1][1] == count
    sizes = [end - start for start, end in tasks]
    assert all(0 < size <= MAX_CHUNK for size in sizes)
    # The first letters come back at once; no worker is left with a long
    # last task while the others wait.
    assert sizes[0] <= MIN_CHUNK
    assert all(size <= MIN_CHUNK for size in sizes[-workers:])
    if count >= 1000:
        assert len(tasks) < count / (MAX_CHUNK / 2)
