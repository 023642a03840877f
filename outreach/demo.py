"""The whole job on this machine: check, preview, send to a local sink, report.

``make demo`` runs it on a fresh machine to show what outreach does before
anything is set up: its settings are its own (no ``.env``, no environment
variable is read), the server is ``outreach sink`` on loopback, and every
file it writes is under ``out/demo/``. Nothing leaves the machine.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from outreach.campaign import Campaign, Progress, report
from outreach.checks import CheckResult
from outreach.errors import OutreachError
from outreach.files import writing
from outreach.preview import PreviewResult
from outreach.report import Report
from outreach.sending import Outcome
from outreach.settings import load_settings
from outreach.sink import start_sink

FOLDER = Path("out/demo")
#: Marks a folder as the demo's own, so that the next demo may clear it.
MARKER = ".outreach-demo"


@dataclass(frozen=True)
class DemoResult:
    folder: Path
    checked: CheckResult
    previewed: PreviewResult
    outcome: Outcome
    report: Report


def _fresh(folder: Path) -> None:
    """An empty demo folder: an earlier demo's is cleared, anything else is left alone."""
    if folder.exists():
        if not (folder / MARKER).is_file() or folder.is_symlink():
            raise OutreachError(
                f"{folder}: exists and was not written by outreach demo; move it away"
            )
        shutil.rmtree(folder)
    with writing(folder):
        folder.mkdir(parents=True)
        (folder / MARKER).write_text("written by outreach demo\n", encoding="utf-8")


def run_demo(port: int, *, progress: Progress = lambda stage, done, total: None) -> DemoResult:
    """Check, preview and send every letter to a sink on ``port``, then report."""
    folder = FOLDER
    # The shipped contacts and templates, a sink on loopback.
    settings = load_settings(
        environ={
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(port),
            "SMTP_SECURITY": "none",
            "MAIL_FROM": "campaign@coalition.example",
            "MAIL_FROM_NAME": "Coalition letter (demo)",
            "CAMPAIGN": "demo",
            "LOG_DIR": str(folder / "logs"),
            "PREVIEW_DIR": str(folder / "preview"),
            "SEND_RATE_PER_MINUTE": "0",
        },
        env_file=None,
    )
    campaign = Campaign.open(settings)
    _fresh(folder)
    try:
        sink = start_sink("127.0.0.1", port, folder / "sink")
    except OutreachError as err:
        # The port is taken (an earlier demo, a sink still running): say how to pick another.
        other = port + 1 if port < 65535 else 2526
        raise OutreachError(
            *(
                f"{problem}; choose another port: make demo DEMO_PORT={other} "
                f"(or outreach demo --port {other})"
                for problem in err.problems
            )
        ) from err
    try:
        checked = campaign.check(progress=progress)
        previewed = campaign.preview(progress=progress)
        with campaign.open_log() as log:
            outcome = campaign.send(campaign.plan(log), log)
    finally:
        sink.stop()
    return DemoResult(folder, checked, previewed, outcome, report(settings))
