"""A letter that can no longer be built mid-run: not sent, still owed, named; the run goes on.

Every letter is checked before the first goes, but staff may replace or
delete a mission's annex while a long run is under way. Letters have gone
already by then: stopping with exit status 2 ("nothing was sent") would be
untrue, and would leave every later mission without its letter.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from outreach.sendlog import read_log
from tests.conftest import RunCli, write_csv
from tests.smtp import SmtpServer

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"


@pytest.fixture
def four_missions(project: Path) -> Path:
    """Four missions, each with an annex of its own."""
    folder = project / "annexes"
    folder.mkdir()
    for mission in ("chl", "fra", "gha", "ken"):
        (folder / f"{mission}.pdf").write_bytes(PDF)
    write_csv(
        project / "contacts.csv",
        "id,country,email,attachments\n"
        "CHL,Chile,chl@missions.example,annexes/chl.pdf\n"
        "FRA,France,fra@missions.example,annexes/fra.pdf\n"
        "GHA,Ghana,gha@missions.example,annexes/gha.pdf\n"
        "KEN,Kenya,ken@missions.example,annexes/ken.pdf\n",
    )
    return folder


def after_letters(server: SmtpServer, count: int, change: Callable[[], None]) -> None:
    """Run ``change`` once the server has taken ``count`` letters, before it answers the last.

    The sender waits for that answer before it composes the next letter:
    the change lands mid-run, at the same letter however busy the machine.
    """
    handler = server.handler
    taken = handler.handle_DATA

    async def handle_data(*args: Any) -> str:
        answer: str = await taken(*args)
        if len(handler.received) == count:
            change()
        return answer

    handler.handle_DATA = handle_data  # type: ignore[method-assign]


def too_large(annex: Path) -> None:
    annex.write_bytes(os.urandom(2 * 1024 * 1024))


def deleted(annex: Path) -> None:
    annex.unlink()


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (too_large, "is 2.0 MB, more than the 1 MB a letter may carry (MAX_MESSAGE_MB)"),
        (deleted, "no such file"),
    ],
    ids=["replaced-by-a-file-too-large", "deleted"],
)
def test_an_annex_changed_mid_run_leaves_that_letter_owed_and_the_others_sent(
    run_cli: RunCli,
    project: Path,
    smtp_server: SmtpServer,
    four_missions: Path,
    change: Callable[[Path], None],
    why: str,
) -> None:
    annex = four_missions / "gha.pdf"
    after_letters(smtp_server, 2, lambda: change(annex))
    env = smtp_server.env(MAX_MESSAGE_MB="1")

    result = run_cli("send", "--yes", env=env)

    assert result.code == 1, result.stdout + result.stderr
    assert "Error" not in result.stderr
    sent_to = [r.recipients for r in smtp_server.received]
    assert sent_to == [["chl@missions.example"], ["fra@missions.example"], ["ken@missions.example"]]
    assert "Done: 3 sent, 1 not sent." in result.stdout
    assert (
        "  GHA: not sent: its letter could not be built: contact GHA (line 4), attachments: "
        f"'annexes/gha.pdf' {why}; still owed"
    ) in result.stdout
    rows = read_log(project / "logs" / "send-log.csv")
    assert [r.contact_id for r in rows if r.status == "sent"] == ["CHL", "FRA", "KEN"]
    assert "GHA" not in {r.contact_id for r in rows}, "no row may claim anything of GHA's letter"

    # The annex put right, the next run sends GHA's letter, and only it.
    annex.write_bytes(PDF)
    again = run_cli("send", "--yes", env=env)
    assert again.code == 0, again.stdout + again.stderr
    assert [r.recipients for r in smtp_server.received[3:]] == [["gha@missions.example"]]


def test_the_last_letter_going_bad_still_ends_the_run_with_its_summary(
    run_cli: RunCli, project: Path, smtp_server: SmtpServer, four_missions: Path
) -> None:
    """The last letter of the run cannot be built: the run still ends with its summary."""
    after_letters(smtp_server, 3, lambda: deleted(four_missions / "ken.pdf"))
    result = run_cli("send", "--yes", env=smtp_server.env())
    assert result.code == 1, result.stdout + result.stderr
    assert len(smtp_server.received) == 3
    assert "KEN: not sent: its letter could not be built:" in result.stdout
    assert "Send log:" in result.stdout
