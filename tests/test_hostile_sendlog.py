"""The send log after a crash, and after someone edited it by hand.

A last line cut short by a killed process is tolerated: the run goes on and
no letter is sent twice. A log edited into nonsense is an error that names
the line; it is never a reason to send again, and it is left as it was.
"""

from __future__ import annotations

import pytest

from tests.test_hostile_contacts import Story, story

__all__ = ["story"]  # the fixture, shared

LOG = "logs/send-log.csv"


def rows(story: Story) -> list[str]:
    """The earlier run's lines: header, AFG sending, AFG sent."""
    lines = story.log_before.decode().splitlines(keepends=True)
    assert [line.split(",")[4] for line in lines[1:]] == ["sending", "sent"]
    return lines


def for_chile(line: str) -> str:
    return line.replace(",AFG,", ",CHL,").replace("afg@", "chl@")


def write_log(story: Story, text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    story.log.write_bytes(data)
    story.log_before = data
    return data


def test_a_row_cut_short_before_the_data_went_out_is_dropped_and_chile_sent(
    story: Story,
) -> None:
    header, afg_sending, afg_sent = rows(story)
    whole = header + afg_sending + afg_sent
    write_log(story, whole + for_chile(afg_sending)[:40])
    result = story.send("--only", "AFG,CHL")
    assert result.code == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert (
        f"Warning: {LOG}: the last line was cut short by an interrupted run and was dropped"
        in result.stderr
    )
    assert [r.recipients for r in story.server.received] == [["chl@missions.example"]]
    after = story.log.read_text()
    assert after.startswith(whole)
    assert [line.split(",")[2:5:2] for line in after.splitlines()[3:]] == [
        ["CHL", "sending"],
        ["CHL", "sent"],
    ]


def test_a_sent_row_cut_short_leaves_the_letter_ambiguous_never_resent(story: Story) -> None:
    header, afg_sending, afg_sent = rows(story)
    write_log(story, header + for_chile(afg_sending) + for_chile(afg_sent)[:60])
    result = story.send("--only", "CHL")
    assert result.code == 0, result.stderr
    assert "Ambiguous:     1 (the server may have them" in result.stdout
    assert "Nothing to send." in result.stdout
    assert story.server.received == []


def test_a_whole_row_that_only_lost_its_line_end_is_kept(story: Story) -> None:
    # An editor that drops the final line end must not make CHL's letter go out again.
    header, afg_sending, afg_sent = rows(story)
    text = header + afg_sending + afg_sent + for_chile(afg_sending).rstrip("\n")
    write_log(story, text)
    result = story.send("--only", "CHL")
    assert result.code == 0, result.stderr
    assert "Warning" not in result.stderr
    assert "Ambiguous:     1" in result.stdout
    assert story.server.received == []
    assert story.log.read_text() == text + "\n"


NONSENSE = [
    pytest.param(
        lambda h, s, t: h + s + "checked by phone with the mission, all fine\n" + t,
        f"{LOG}, line 3: 2 fields where the log has 11; the send log must not be edited by "
        "hand (restore it from a backup)",
        id="a-note-between-rows",
    ),
    pytest.param(
        lambda h, s, t: h + s + t.replace(",sent,", ",done,"),
        f"{LOG}, line 3, column 5 (status): 'done' is not one of sending, sent, retry",
        id="a-status-it-does-not-know",
    ),
    pytest.param(
        lambda h, s, t: h + s.replace(s.split(",")[0], "yesterday") + t,
        f"{LOG}, line 2, column 1 (time): 'yesterday' is not an ISO 8601 time",
        id="a-time-that-is-not-a-time",
    ),
    pytest.param(
        lambda h, s, t: h + s.replace(s.split(",")[0], "2026-11-27 09:00") + t,
        f"{LOG}, line 2, column 1 (time): '2026-11-27 09:00' is not a time with its UTC offset",
        id="a-time-without-offset",
    ),
    pytest.param(
        lambda h, s, t: h + s.replace(",sending,1,", ",sending,two,") + t,
        f"{LOG}, line 2, column 6 (attempt): 'two' is not a whole number",
        id="attempt-in-words",
    ),
    pytest.param(
        lambda h, s, t: h + s + t.replace(",AFG,", ",,"),
        f"{LOG}, line 3, column 3 (contact_id): '' is not a contact id",
        id="contact-id-erased",
    ),
    pytest.param(
        lambda h, s, t: h.replace("contact_id", "Contact") + s + t,
        f"{LOG}, line 1: the header is not that of a send log (expected time,campaign,",
        id="header-renamed",
    ),
    pytest.param(
        lambda h, s, t: "\ufeff" + h + s + t,
        f"{LOG}, line 1: the header is not that of a send log",
        id="saved-by-a-spreadsheet-with-a-bom",
    ),
    pytest.param(
        lambda h, s, t: h + s.replace(",sending,", ',"sending,') + t,
        f"{LOG}, line ",
        id="an-unclosed-quote",
    ),
    pytest.param(
        lambda h, s, t: h + s + t + "hello",
        f"{LOG}, line 4: 'hello' is neither a row of the send log nor one cut short by an "
        "interrupted run",
        id="a-last-line-written-by-hand",
    ),
]


@pytest.mark.parametrize(("edit", "error"), NONSENSE)
def test_a_log_edited_into_nonsense_stops_the_run_and_is_left_alone(
    story: Story, edit: object, error: str
) -> None:
    assert callable(edit)
    header, afg_sending, afg_sent = rows(story)
    write_log(story, edit(header, afg_sending, afg_sent))
    story.refused(story.send(), error)


def test_a_log_that_is_not_text_names_the_line(story: Story) -> None:
    header, afg_sending, afg_sent = rows(story)
    write_log(story, (header + afg_sending).encode() + b"\xff\xfe\x00garbage\n" + afg_sent.encode())
    story.refused(story.send(), f"{LOG}, line 3: not UTF-8 text; the log was damaged")
