"""The ``outreach`` command: parses arguments, calls the library, prints.

Errors the user can fix (``OutreachError``) are printed as ``Error: …``, one
line per problem, and exit with status 2 (or the error's own status); any
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from outreach.compose import Campaign, compose_each, problems_of
from outreach.errors import OutreachError
from outreach.preview import write_previews
from outreach.settings import Settings, load_settings


class OutreachGroup(click.Group):
    """A click group that shows library errors as plain messages."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OutreachError as err:
            for problem in err.problems:
                click.echo(f"Error: {problem}", err=True)
            ctx.exit(err.exit_code)


def _ids(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _settings(ctx: click.Context) -> Settings:
    settings = load_settings(env_file=ctx.obj["env_file"])
    for warning in settings.warnings:
        click.echo(f"Warning: {warning}", err=True)
    return settings


def _open(ctx: click.Context) -> Campaign:
    campaign = Campaign.open(_settings(ctx))
    for warning in campaign.contacts.warnings:
        click.echo(f"Warning: {warning}", err=True)
    return campaign


def _progress(console: Console) -> Progress:
    """A progress bar on stderr, shown only on a terminal (never in a log file)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )


only_option = click.option(
    "--only", metavar="ID,…", help="Only these contacts (ids from the id column, comma-separated)."
)
limit_option = click.option(
    "--limit", type=click.IntRange(min=1), metavar="N", help="At most N contacts."
)


@click.group(cls=OutreachGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="outreach")
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=".env",
    show_default=True,
    help="Settings file; variables set in the environment win over it.",
)
@click.pass_context
def cli(ctx: click.Context, env_file: Path) -> None:
    """Send one letter, personalised, to every contact: preview, check, send, review."""
    ctx.obj = {"env_file": env_file}


@cli.command()
@click.pass_context
def check(ctx: click.Context) -> None:
    """Check settings, contacts and templates, and render every letter in memory."""
    campaign = _open(ctx)
    settings = campaign.settings
    contacts = campaign.contacts
    errors = []
    languages: dict[str, int] = {}
    stderr = Console(stderr=True)
    with _progress(stderr) as bar:
        task = bar.add_task("Rendering", total=len(contacts))
        for composed in compose_each(campaign, contacts):
            bar.advance(task)
            if composed.error is not None:
                errors.append(composed.error)
            elif composed.rendered is not None:
                languages[composed.rendered.language] = (
                    languages.get(composed.rendered.language, 0) + 1
                )
    if errors:
        raise OutreachError(*problems_of(errors))
    placeholders = contacts.placeholders()
    click.echo(f"Contacts:  {len(contacts)} in {contacts.path}")
    if placeholders:
        click.echo(
            f"           {len(placeholders)} of the addresses are placeholders on reserved "
            "domains (.example …): replace them with the missions' real addresses before sending"
        )
    by_language = ", ".join(f"{n} in {lang}" for lang, n in sorted(languages.items()))
    click.echo(f"Letters:   {len(contacts)} rendered from {settings.templates_dir} ({by_language})")
    sender = settings.mail_from or "not set (previews use a placeholder; sending needs MAIL_FROM)"
    click.echo(f"From:      {sender}")
    click.echo(f"SMTP:      {_server(settings)}")
    click.echo(f"Campaign:  {settings.campaign} (send log {settings.send_log})")
    click.echo("Everything is in order." if not placeholders else "Letters are in order.")


def _server(settings: Settings) -> str:
    if not settings.smtp_host:
        return "SMTP_HOST not set (needed to send)"
    return f"{settings.smtp_host}:{settings.smtp_port} ({settings.smtp_security})"


@cli.command()
@only_option
@limit_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the previews [default: PREVIEW_DIR, out/preview].",
)
@click.pass_context
def preview(ctx: click.Context, only: str | None, limit: int | None, out: Path | None) -> None:
    """Write every letter to files to look at: .eml, .html, .txt and an index page.

    Nothing is sent and no network connection is opened.
    """
    campaign = _open(ctx)
    chosen = campaign.contacts.select(_ids(only), limit)
    folder = out or campaign.settings.preview_dir
    stderr = Console(stderr=True)
    with _progress(stderr) as bar:
        task = bar.add_task("Previewing", total=len(chosen))
        result = write_previews(
            campaign, chosen, folder, progress=lambda done: bar.update(task, completed=done)
        )
    click.echo(f"Wrote {len(result.entries)} letters to {folder}/ (open {folder / 'index.html'})")
    if result.placeholders:
        click.echo(f"{result.placeholders} of them go to placeholder addresses (.example …).")


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(args=argv, prog_name="outreach")
