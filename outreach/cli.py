"""The ``outreach`` command: parses arguments, calls the library, prints.

Errors the user can fix (``OutreachError``) are printed as ``Error: …``, one
line per problem, and exit with status 2 (or the error's own status); any
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import io
import math
import os
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from outreach.addresses import is_loopback
from outreach.bluebook import BlueBook, Merge, merge, read_bluebook
from outreach.campaign import Campaign, KeptLetters, read_inbox, report
from outreach.checks import CheckResult
from outreach.clock import Clock, SystemClock
from outreach.credentials import PasswordPrompt, credentials_for
from outreach.errors import ConfirmationError, OutreachError, RepeatError, SettingsError
from outreach.files import writing
from outreach.notices import clean
from outreach.ratelimit import sending_seconds
from outreach.report import FORMATS, to_csv, to_html, to_json, to_renderables
from outreach.screen import fitted_to_terminal
from outreach.sending import (
    FINAL,
    STOPPING,
    Interrupted,
    Outcome,
    Plan,
    Terminated,
    repeat_problem,
    terminating,
)
from outreach.settings import (
    Settings,
    load_settings,
    require_for_reading,
)


class OutreachGroup(click.Group):
    """A click group that shows library errors as plain messages."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OutreachError as err:
            for problem in err.problems:
                click.echo(f"Error: {problem}", err=True)
            _note_missing_env(ctx)
            ctx.exit(err.exit_code)
        except (KeyboardInterrupt, Terminated) as err:
            how, code = STOPPING[signal.SIGTERM if isinstance(err, Terminated) else signal.SIGINT]
            click.echo(f"Stopped by {how}.", err=True)
            ctx.exit(code)


def _note_missing_env(ctx: click.Context) -> None:
    """Say so when run outside a campaign's folder: no settings file, and not the
    contacts or the templates either. Every setting is then its default, and "no
    such folder" alone would not tell why."""
    env_file = (ctx.obj or {}).get("env_file")
    if env_file is None or env_file.exists() or ctx.invoked_subcommand in ("demo", "sink"):
        return  # demo and sink read no .env
    contacts = Path(os.environ.get("CONTACTS_FILE") or "contacts.csv")
    templates = Path(os.environ.get("TEMPLATES_DIR") or "templates")
    if contacts.is_file() and templates.is_dir():
        return  # a campaign's folder, its settings in the environment
    click.echo(
        f"Note: no {env_file} in {Path.cwd()}, so every setting not in the environment is its "
        "default: run outreach in the campaign's folder, or give --env-file",
        err=True,
    )


def _ids(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _warn(warnings: Iterable[str]) -> None:
    for warning in warnings:
        click.echo(f"Warning: {warning}", err=True)


def _settings(ctx: click.Context, follow_up_of: str | None = None) -> Settings:
    """The settings, with --follow-up-of winning over FOLLOW_UP_OF."""
    environ = {**os.environ, "FOLLOW_UP_OF": follow_up_of} if follow_up_of else None
    settings = load_settings(environ=environ, env_file=ctx.obj["env_file"])
    _warn(settings.warnings)
    return settings


def _campaign(ctx: click.Context, follow_up_of: str | None = None) -> Campaign:
    campaign = Campaign.open(_settings(ctx, follow_up_of))
    _warn(campaign.contacts.warnings)
    return campaign


@contextmanager
def _progress() -> Iterator[Callable[[str, int, int], None]]:
    """A progress bar per stage on stderr, shown only on a terminal (never in a log file)."""
    console = Console(stderr=True)
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    tasks: dict[str, TaskID] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bars.add_task(stage, total=total)
        bars.update(tasks[stage], completed=done)

    with bars:
        yield update


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
    ctx.ensure_object(dict)
    ctx.obj["env_file"] = env_file
    ctx.obj.setdefault("clock", SystemClock())


@cli.command()
@click.option(
    "--spam-all",
    is_flag=True,
    help="Score every letter with SpamAssassin, not one of each kind (about 0.3 s a letter).",
)
@click.pass_context
def check(ctx: click.Context, spam_all: bool) -> None:
    """Check settings, contacts and templates; check and spam-score the letters.

    Every letter is rendered in memory and checked for links other than
    https:/mailto:, images without alt text, an HTML part Gmail would clip
    and a subject too long for an inbox. When SpamAssassin is installed, it
    scores one letter of each kind (local tests only, no network).
    """
    campaign = _campaign(ctx)
    with _progress() as progress:
        result = campaign.check(spam_all=spam_all, progress=progress)
    settings, contacts = campaign.settings, campaign.contacts
    click.echo(f"Contacts:  {len(contacts)} in {contacts.path}")
    if contacts.defaulted:
        click.echo(
            f"Columns:   not in {contacts.path}, so their defaults: {', '.join(contacts.defaulted)}"
        )
    by_language = ", ".join(f"{n} in {lang}" for lang, n in sorted(result.languages.items()))
    click.echo(
        f"Letters:   {result.letters} rendered from {settings.templates_dir} ({by_language})"
    )
    for line in result.summary_lines():
        click.echo(line)
    if settings.preset:
        click.echo(f"Provider:  {settings.smtp_provider} preset: {', '.join(settings.preset)}")
    for number, line in enumerate(settings.placeholders()):
        click.echo(f"{'Settings:' if number == 0 else '':<11}{line}")
    sender = settings.mail_from or "not set (previews use a placeholder; sending needs MAIL_FROM)"
    click.echo(f"From:      {sender}")
    from outreach.senderdomain import check_sender_domain  # dnspython, for check and send only

    domain = check_sender_domain(settings)
    if not domain.not_checked:
        click.echo(f"Domain:    {domain.domain} (MAIL_FROM), as receivers see it:")
    for number, line in enumerate(domain.lines()):
        click.echo(f"{'Domain:' if domain.not_checked and number == 0 else '':<11}{line}")
    click.echo(f"SMTP:      {_server(settings)}")
    click.echo(f"Campaign:  {settings.campaign} (send log {settings.send_log})")
    _print_held_back(campaign)
    stale = settings.stale_letter_date(ctx.obj["clock"].now().date())
    if stale:
        click.echo(f"Date:      {stale}")
    clean = not (result.placeholders or result.warnings or settings.placeholders() or stale)
    clean = clean and domain.in_order
    if settings.placeholders() and not is_loopback(settings.smtp_host):
        # A send would refuse these: the letters are not in order to go.
        raise SettingsError(
            f"{ctx.obj['env_file']} still holds example values (listed above under Settings); "
            "a send refuses them: put in your own"
        )
    click.echo("Everything is in order." if clean else "Letters are in order.")


def _print_held_back(campaign: Campaign, only: Sequence[str] = ()) -> None:
    """The missions the do-not-contact list holds back: they have no letter to look at."""
    held = [contact.id for contact in campaign.held_back(only)]
    if held:
        click.echo(
            f"Held back: {len(held)} on the do-not-contact list "
            f"({campaign.settings.do_not_contact_file}), no letter: {_first_ten(held)}"
        )


def _first_ten(ids: Sequence[str]) -> str:
    return ", ".join(ids[:10]) + (" …" if len(ids) > 10 else "")


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
    campaign = _campaign(ctx)
    chosen = campaign.select(_ids(only), limit)
    folder = out or campaign.settings.preview_dir
    with _progress() as progress:
        result = campaign.preview(folder, chosen, progress=progress)
    click.echo(f"Wrote {len(result.entries)} letters to {folder}/ (open {folder / 'index.html'})")
    _print_held_back(campaign, _ids(only))
    if result.placeholders:
        click.echo(f"{result.placeholders} of them go to placeholder addresses (.example …).")


def _ready_to_send(campaign: Campaign) -> Campaign:
    """The campaign with a password prompt, if one is needed (``open_log`` checked the rest)."""
    ask = _password_prompt(campaign.settings, "SMTP")
    return campaign if ask is None else campaign.asking_password(ask)


def _password_prompt(settings: Settings, prefix: str) -> PasswordPrompt | None:
    """A prompt for the password, when a user name is set but no password is.

    Typing it at a prompt keeps it out of ``.env`` files and shell history.
    The library calls the prompt at sign-in: after the plan is confirmed and
    the server's certificate checked, and not at all when nothing is to be
    sent. Whether there is a terminal to ask on is known now, though: without
    one, the command stops here, before anything is sent.
    """
    credentials = credentials_for(settings, prefix)
    if not credentials.needs_prompt():
        return None
    smtp = prefix == "SMTP"
    host = settings.smtp_host if smtp else settings.imap_host
    missing = "SMTP_PASSWORD is not" if smtp else "IMAP_PASSWORD is not (nor SMTP_PASSWORD)"
    if not sys.stdin.isatty():
        raise SettingsError(
            f"{prefix}_USERNAME is set but {missing}, and there is no terminal to ask on "
            f"(set {prefix}_PASSWORD_COMMAND to read it from a password manager)"
        )

    def ask() -> str:
        try:
            password: str = click.prompt(
                f"Password for {credentials.username} at {host}", hide_input=True, err=True
            )
        except click.Abort:  # Ctrl-C or Ctrl-D at the prompt
            raise ConfirmationError(
                f"no password typed for {credentials.username} at {host}: nothing was sent"
            ) from None
        return password

    return ask


def _print_checked(result: CheckResult) -> None:
    """The check's findings above the plan, for the person about to confirm."""
    for line in result.summary_lines():
        if not line.startswith("Addresses:"):
            click.echo(line)


def _print_plan(plan: Plan, settings: Settings) -> None:
    click.echo(f"Campaign:      {plan.campaign}")
    if plan.follow_up_of:
        left_out = ", ".join(
            f"{len(ids)} {state}" for state, ids in sorted(plan.not_followed_up.items())
        )
        click.echo(
            f"Follows up:    {plan.follow_up_of}, threaded on its letters; not reminded: "
            + (left_out or "nobody")
        )
        read = plan.inbox_read_at
        if read is None or datetime.now(UTC) - read > timedelta(days=1):
            when = f"last read {_local(read)}" if read else "never read by outreach inbox"
            click.echo(
                f"Inbox:         {when}: run `make inbox` first, so that no reminder goes "
                "to a mission that answered or whose letter bounced"
            )
        else:
            click.echo(f"Inbox:         read {_local(read)}")
    click.echo(f"To send:       {len(plan.to_send)}")
    duration = _duration(plan, settings)
    if duration:
        click.echo(f"Duration:      {duration}")
    click.echo(f"Already sent:  {len(plan.sent)}")
    if plan.failed:
        again = _again(plan.retry_failed, "--retry-failed", " to the addresses that refused it")
        click.echo(f"Failed:        {len(plan.failed)} ({again})")
    if plan.ambiguous:
        again = _again(plan.resend_ambiguous, "--resend-ambiguous")
        click.echo(f"Ambiguous:     {len(plan.ambiguous)} (the server may have them; {again})")
    if plan.refused_before:
        first = plan.refused_before[0]
        click.echo(
            f"Refused before: {len(plan.refused_before)} of these addresses refused a letter with "
            f"this subject (e.g. {first.address}, campaign {first.campaign!r}); they get it now"
        )
    if plan.bounced and plan.retry_bounced:
        click.echo(
            f"Still bounced: {len(plan.bounced)} (same address in the contacts file: "
            f"{', '.join(plan.bounced)})"
        )
    elif plan.bounced:
        click.echo(
            f"Bounced:       {len(plan.bounced)} (not sent again unless --retry-bounced, and "
            "then only to a changed address)"
        )
    if plan.held_back:
        click.echo(f"Held back:     {plan.held_back} by --limit")
    if plan.do_not_contact:
        click.echo(
            f"Held back:     {len(plan.do_not_contact)} on the do-not-contact list "
            f"({settings.do_not_contact_file}): "
            + _first_ten([contact_id for contact_id, _ in plan.do_not_contact])
        )
    if plan.daily_room is not None and plan.resume_at is not None:
        click.echo(
            f"Daily limit:   only {plan.daily_room} may go today (SEND_DAILY_LIMIT="
            f"{settings.send_daily_limit}); the rest from {_local(plan.resume_at)}"
        )
    per_minute = settings.send_rate_per_minute
    rate = f"{per_minute:g} a minute" if per_minute else "no limit"
    click.echo(f"SMTP server:   {_server(settings)}, {rate}")
    name, address = settings.mail_from_name, settings.mail_from
    click.echo(f"From:          {f'{name} <{address}>' if name else address}")
    if plan.send_log_is_new:
        click.echo(
            f"Send log:      no send log at {settings.send_log}: if letters of this campaign "
            "went from another computer, copy its send log here first"
        )
    else:
        click.echo(f"Send log:      {settings.send_log}")


def _again(now: bool, option: str, to_whom: str = "") -> str:
    return f"sent again now{to_whom}: {option}" if now else f"not sent again unless {option}"


def _duration(plan: Plan, settings: Settings) -> str:
    """How long the run will take at SEND_RATE_PER_MINUTE ("" with no limit: as fast as it goes)."""
    going = len(plan.to_send)
    if plan.daily_room is not None:
        going = min(going, plan.daily_room)
    seconds = sending_seconds(going, settings.send_rate_per_minute)
    if seconds is None or not going:
        return ""
    rate = f"at {settings.send_rate_per_minute:g} a minute"
    if going < len(plan.to_send):
        rate += f", for the {going} that may go today"
    if seconds < 60:
        return f"under a minute {rate}"
    hours, minutes = divmod(math.ceil(seconds / 60), 60)
    spans = [_count(hours, "hour", "hours"), _count(minutes, "minute", "minutes")]
    return f"about {' '.join(s for s in spans if not s.startswith('0 '))} {rate}"


def _print_repeats(plan: Plan) -> None:
    click.echo(f"Repeats:       {len(plan.repeats)} of these addresses already got this letter:")
    for repeat in plan.repeats[:10]:
        subject = "" if repeat.subject else " (its subject was not recorded)"
        click.echo(
            f"               {repeat.contact_id} {repeat.address}: campaign {repeat.campaign!r}, "
            f"{_local(repeat.time)}{subject}"
        )
    if len(plan.repeats) > 10:
        click.echo(f"               and {len(plan.repeats) - 10} more")


def _local(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M %Z")


def _confirmed(
    yes: bool,
    question: str,
    unattended: str = "run `outreach send --yes` to send without asking",
) -> bool:
    """Yes to ``question``: from --yes, or typed at the terminal. No terminal, no yes."""
    if yes:
        return True
    if not sys.stdin.isatty():
        raise ConfirmationError(f"no terminal to confirm on: {unattended}")
    return click.confirm(question, default=False)


def _print_outcome(outcome: Outcome, log: Path) -> None:
    parts = [f"{outcome.counts[s]} {s}" for s in FINAL if outcome.counts[s]]
    if outcome.unbuilt:
        parts.append(f"{len(outcome.unbuilt)} not sent")
    click.echo(f"Done: {', '.join(parts) or 'nothing sent'}.")
    if outcome.rate_per_minute is not None:
        click.echo(f"Rate: {outcome.rate_per_minute:.1f} a minute")
    for row in outcome.problems:
        code = f" {row.smtp_code}" if row.smtp_code else ""
        click.echo(f"  {row.contact_id} {row.email}: {row.status}{code} {row.smtp_reply}".rstrip())
    for contact_id, why in outcome.unbuilt:
        click.echo(f"  {contact_id}: not sent: its letter could not be built: {why}; still owed")
    if outcome.stopped:
        click.echo(f"Stopped: {outcome.stopped}")
    click.echo(f"Send log: {log}")


@contextmanager
def _sending_progress(clock: Clock) -> Iterator[Callable[[str, int, int], None]]:
    """A progress bar on a terminal; otherwise (a log file, cron) a line a minute."""
    if Console(stderr=True).is_terminal:
        with _progress() as update:
            yield lambda status, done, total: update("Sending", done, total)
        return
    counts: Counter[str] = Counter()
    last = clock.monotonic()

    def note(status: str, done: int, total: int) -> None:
        nonlocal last
        counts[status] += 1
        if clock.monotonic() - last >= 60:
            last = clock.monotonic()
            others = "".join(f", {n} {s}" for s, n in counts.items() if s != "sent")
            click.echo(
                f"{clock.now():%H:%M} UTC: {done} of {total} done, {counts['sent']} sent{others}",
                err=True,
            )

    yield note


@cli.command()
@only_option
@limit_option
@click.option("--yes", "-y", is_flag=True, help="Send without asking for confirmation.")
@click.option("--retry-failed", is_flag=True, help="Send again to contacts whose letter failed.")
@click.option(
    "--resend-ambiguous",
    is_flag=True,
    help="Send again to contacts whose letter the server may already have.",
)
@click.option(
    "--retry-bounced",
    is_flag=True,
    help="Send to contacts whose letter bounced, at an address changed since in the contacts file.",
)
@click.option(
    "--allow-repeat",
    is_flag=True,
    help="Send even to addresses that already got a letter with this subject (another campaign).",
)
@click.option(
    "--follow-up-of",
    metavar="NAME",
    help="This campaign follows up campaign NAME [default: FOLLOW_UP_OF].",
)
@click.pass_context
def send(
    ctx: click.Context,
    only: str | None,
    limit: int | None,
    yes: bool,
    retry_failed: bool,
    resend_ambiguous: bool,
    retry_bounced: bool,
    allow_repeat: bool,
    follow_up_of: str | None,
) -> None:
    """Send the letters over SMTP, each exactly once, and record each in the send log.

    A rerun sends only what is still owed. Exit status: 0 when every letter
    attempted was sent, 1 when any failed, was deferred or is ambiguous (or
    could not be built mid-run: it stays owed), 2 for a problem with the
    settings or the input (nothing sent), 130 or 143 when stopped by Ctrl-C
    or SIGTERM.
    """
    clock: Clock = ctx.obj["clock"]
    campaign = _campaign(ctx, follow_up_of)
    settings = campaign.settings
    with terminating(), campaign.open_log() as log, KeptLetters(settings.log_dir) as kept:
        campaign = _ready_to_send(campaign)
        if log.repaired:
            click.echo(
                f"Warning: {settings.send_log}: the last line was cut short by an "
                "interrupted run and was dropped",
                err=True,
            )
        plan = campaign.plan(
            log,
            campaign.contacts.select(_ids(only)),
            limit=limit,
            retry_failed=retry_failed,
            resend_ambiguous=resend_ambiguous,
            allow_repeat=allow_repeat,
            retry_bounced=retry_bounced,
            now=clock.now(),
        )
        if plan.to_send:
            with _progress() as progress:
                checked = campaign.check(plan.to_send, progress=progress, clock=clock, keep=kept)
            _print_checked(checked)  # once the bars are gone: a line printed under them stays
        _print_plan(plan, settings)
        if not plan.to_send:
            click.echo("Nothing to send.")
            return
        from outreach.senderdomain import check_sender_domain  # dnspython, for check and send only

        click.echo(f"Sender domain: {check_sender_domain(settings).summary()}")
        if plan.repeats and not plan.allow_repeat:
            _print_repeats(plan)
            if yes or not sys.stdin.isatty():
                raise RepeatError(repeat_problem(plan))
            if not click.confirm("Send these letters again all the same?", default=False):
                click.echo("Nothing sent.")
                return
            plan = plan.allowing_repeats()
        if not _confirmed(yes, f"Send {_count(len(plan.to_send), 'letter', 'letters')} now?"):
            click.echo("Nothing sent.")
            return
        try:
            with _sending_progress(clock) as progress_note:
                outcome = campaign.send(plan, log, clock=clock, progress=progress_note, kept=kept)
        except Interrupted as stop:
            _print_outcome(stop.outcome, settings.send_log)
            sent = _count(stop.outcome.counts["sent"], "letter", "letters")
            click.echo(
                f"Stopped by {stop.how}: {sent} sent this run, "
                f"{stop.outcome.owed} still owed. Run `make send` again to send only the rest."
            )
            ctx.exit(stop.exit_code)
    _print_outcome(outcome, settings.send_log)
    if not outcome.all_sent:
        ctx.exit(1)


@cli.command()
@click.argument("path", type=click.Path(path_type=Path), metavar="PATH")
@click.option("--yes", "-y", is_flag=True, help="Write the contacts file without asking.")
@click.pass_context
def bluebook(ctx: click.Context, path: Path, yes: bool) -> None:
    """Merge the UN Blue Book's data.json (saved from its page) into the contacts file.

    Each Member State's and observer State's mission gets the Blue Book's
    address and head of mission; the other columns and rows of the file are
    kept. Prints every change, then asks before writing (--yes: without
    asking). Running it again on the same file changes nothing.
    """
    contacts = _settings(ctx).contacts_file
    path = path.expanduser()  # `make contacts BLUEBOOK=~/…` from a shell that leaves ~ as it is
    book = read_bluebook(path)
    _print_bluebook(book)
    merged = merge(book, contacts)
    _print_merge(merged)
    if not merged.changed:
        click.echo(f"Nothing to change: {contacts} already agrees with the Blue Book.")
        return
    if not _confirmed(
        yes,
        f"Write these changes to {contacts}?",
        f"nothing written to {contacts}; run `outreach bluebook {path} --yes` to write it "
        "without asking",
    ):
        click.echo("Nothing written.")
        return
    merged.write()
    click.echo(
        f"Wrote {contacts}: {len(merged.rows)} contacts. Next: `make check`, then `make preview` "
        "to read the letters."
    )


def _print_bluebook(book: BlueBook) -> None:
    """What the Blue Book holds, and what of it is left out and why."""
    members = sum(1 for m in book.missions.values() if m.status == "member")
    observers = len(book.missions) - members
    click.echo(
        f"Blue Book:     {book.path}: {len(book.missions)} missions of States ({members} Member "
        f"States, {observers} observer States); {book.other_entities} organisations and "
        "other entities left out"
    )
    if book.unmatched:
        click.echo(
            f"Not matched:   {_count(len(book.unmatched), 'entity matches', 'entities match')} "
            "no State (left out; check the name): " + _listed(book.unmatched)
        )
    if book.unknown_category:
        click.echo(
            "Left out:      of no known category (1 Member State, 2 observer State): "
            + _listed(book.unknown_category)
        )
    if book.missing:
        click.echo(
            f"Not listed:    {_count(len(book.missing), 'State is', 'States are')} not in "
            "this file: " + ", ".join(s.id for s in book.missing)
        )
    if book.stray_staff:
        click.echo(
            "Left out:      staff of missions not in its countries: " + _listed(book.stray_staff)
        )
    for note in book.notes[:50]:
        click.echo(f"Note:          {note}")
    if len(book.notes) > 50:
        click.echo(f"Note:          and {len(book.notes) - 50} more")


def _listed(names: Sequence[str], shown: int = 20) -> str:
    """The first names, quoted, and how many more: a hostile file could name thousands."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(repr(name) for name in names[:shown]) + more


def _count(number: int, one: str, several: str) -> str:
    return f"{number} {one if number == 1 else several}"


_CHANGE_LABELS = {
    "added": "Missions added",
    "address": "Addresses changed",
    "cc": "Copies (cc) added",
    "representative": "Heads of mission",
    "no-address": "Without an address in the Blue Book (no letter goes to them)",
    "gone": "Missions gone from the Blue Book",
}


def _print_merge(merged: Merge) -> None:
    """Every change the merge makes to the contacts file, grouped by kind."""
    new_columns = [c for c in merged.header if c not in merged.before[0]]
    if merged.before[0] and new_columns:
        click.echo(f"New columns:   {', '.join(new_columns)}")
    for kind, label in _CHANGE_LABELS.items():
        changes = merged.of_kind(kind)
        if changes:
            click.echo(f"{label}: {len(changes)}")
            for change in changes:
                click.echo(f"  {change.id:<4} {change.text}")
    filled = merged.of_kind("filled")
    if filled:
        click.echo(
            f"Filled in:     {len(filled)} rows had empty cells the Blue Book's State list fills "
            "(country, mission, status, name_in_text)"
        )


@cli.command("test-send")
@click.option("--to", "to", required=True, metavar="ADDRESS", help="The one address to send to.")
@click.option("--only", metavar="ID", help="Whose letter to send [default: the first contact].")
@click.pass_context
def test_send(ctx: click.Context, to: str, only: str | None) -> None:
    """Send one contact's real letter to ADDRESS only, marked [TEST].

    It is logged with status `test` and does not count as that contact's letter.
    """
    campaign = _campaign(ctx)
    chosen = campaign.select(_ids(only), 1, keep_held=True)
    if not chosen:
        first = campaign.settings.follow_up_of
        raise OutreachError(
            f"no contact to take the test letter from: a follow-up of {first} has a letter only "
            "for contacts whose first letter was sent and not answered"
            + (f", and --only {only} names none of them" if only else "")
        )
    with campaign.open_log() as log:
        row = _ready_to_send(campaign).test_send(to, chosen[0], log)
    click.echo(
        f"Sent the letter for {row.contact_id} to {row.email} ({row.smtp_code} {row.smtp_reply})"
    )
    click.echo(
        "Once it has arrived, `make inbox` (or `outreach inbox --from` the message saved as "
        ".eml) shows what the receiving server thought of it."
    )


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=2525, show_default=True)
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("out/sink"),
    show_default=True,
    help="Where to store the messages received.",
)
def sink(host: str, port: int, folder: Path) -> None:
    """Run a local SMTP server that stores each message it receives as an .eml file.

    For trying a send on this machine: set SMTP_HOST=127.0.0.1, SMTP_PORT=2525,
    SMTP_SECURITY=none. Stop it with Ctrl-C.
    """
    from outreach.sink import start_sink

    controller = start_sink(host, port, folder)
    click.echo(f"Listening on {host}:{port}; storing messages in {folder}/ (Ctrl-C to stop)")
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        with suppress(KeyboardInterrupt):
            stopped.wait()
    finally:
        controller.stop()
        click.echo(f"Stopped; {controller.handler.received} message(s) received.")


@cli.command()
@click.option(
    "--inbox",
    is_flag=True,
    help="Also let `outreach inbox` read the mailbox (the app needs IMAP.AccessAsUser.All).",
)
@click.pass_context
def login(ctx: click.Context, inbox: bool) -> None:
    """Sign in to Microsoft 365 once, for SMTP_AUTH=xoauth2 without a token command.

    Prints an address and a code: open the address on any device, type the
    code, and sign in as SMTP_USERNAME. Later sends get fresh tokens silently.
    """
    from outreach import oauth

    settings = _settings(ctx)
    scopes = (oauth.SMTP_SCOPE, oauth.IMAP_SCOPE) if inbox else (oauth.SMTP_SCOPE,)
    name = oauth.login(settings, show=click.echo, scopes=scopes)
    click.echo(
        f"Signed in as {name}; the sign-in is kept in {oauth.token_cache_path()}, "
        "readable by you only. `outreach logout` deletes it."
    )
    if settings.smtp_username and settings.smtp_username.lower() != name.lower():
        click.echo(
            f"Warning: SMTP_USERNAME={settings.smtp_username} is not the account that signed "
            f"in ({name}); set SMTP_USERNAME={name}, or run `outreach login` again as "
            f"{settings.smtp_username}",
            err=True,
        )


@cli.command()
@click.pass_context
def logout(ctx: click.Context) -> None:
    """Delete the sign-in `outreach login` kept on this computer."""
    from outreach import oauth

    if oauth.logout(_settings(ctx)):
        click.echo(f"Signed out: deleted {oauth.token_cache_path()}.")
    else:
        click.echo("Nobody was signed in on this computer.")


@cli.command()
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=2525,
    show_default=True,
    help="Port of the local SMTP server the demo starts.",
)
def demo(port: int) -> None:
    """The whole job on this machine: check, preview, send to a local server, report.

    It uses the contacts and templates of this folder and settings of its own
    (no .env, no environment variable); everything it writes is in out/demo/.
    """
    from outreach.demo import run_demo

    with _progress() as progress:
        done = run_demo(port, progress=progress)
    _print_checked(done.checked)
    folder = done.previewed.folder
    click.echo(
        f"Previews:  {len(done.previewed.entries)} letters in {folder}/ "
        f"(open {folder / 'index.html'})"
    )
    _print_outcome(done.outcome, done.report.log)
    Console(width=100).print(to_renderables(done.report))
    click.echo(
        f"The letters as a mission would receive them are in {done.folder / 'sink'}/; "
        "nothing left this machine."
    )


@cli.command()
@click.option(
    "--from",
    "source",
    type=click.Path(path_type=Path),
    metavar="PATH",
    help="Read exported mail instead of the mailbox: a folder of .eml files, a Maildir or an mbox.",
)
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    metavar="DATE",
    help="Read only mail from DATE (YYYY-MM-DD) on, even mail an earlier run read.",
)
@click.option("--verbose", "-v", is_flag=True, help="Also say where each unmatched message is.")
@click.pass_context
def inbox(ctx: click.Context, source: Path | None, since: datetime | None, verbose: bool) -> None:
    """Read bounces and replies from the mailbox into the send log; change nothing there.

    Reads IMAP_FOLDERS of the mailbox the letters were sent from (read-only:
    nothing is flagged, moved or deleted) and records, for each letter,
    `bounced` and `delayed` (delivery status notifications), `replied` and
    `auto-replied`. Running it again records nothing twice.
    """
    settings = _settings(ctx)
    ask = None
    if source is None:
        require_for_reading(settings)
        ask = _password_prompt(settings, "IMAP")
    result = read_inbox(
        settings,
        source=source,
        since=since.date() if since else None,
        clock=ctx.obj["clock"],
        ask_password=ask,
    )
    _warn(result.warnings)
    click.echo(f"Read {_count(result.read, 'message', 'messages')} from {result.source}.")
    if result.rows:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(result.counts.items()))
        click.echo(f"Recorded:      {counts}")
        for row in result.per_mission:
            code = f" {row.smtp_code}" if row.smtp_code else ""
            shown = clean(f"{row.contact_id} {row.email}: {row.status}{code} {row.reply_text}")
            click.echo(f"  {shown}")
    else:
        click.echo("Recorded:      nothing new")
    if result.already:
        click.echo(f"Already in the send log: {result.already}")
    if result.unreadable:
        click.echo(f"Not read:      {len(result.unreadable)} message(s), the rest were read")
        for where, why in result.unreadable:
            click.echo(f"  {clean(where)}: {clean(why)}")
    if result.unmatched:
        click.echo(f"Unmatched:     {len(result.unmatched)} message(s) about no letter accepted")
        for item in result.unmatched:
            notice = item.notice
            when = notice.date.strftime("%Y-%m-%d %H:%M") if notice.date else "undated"
            click.echo(
                f"  {when}, from {clean(notice.sender) or '?'}, "
                f"subject: {clean(notice.subject) or '?'}: {clean(item.why)}"
            )
            if verbose:
                click.echo(f"    in {clean(item.where)}")
    click.echo(f"Other mail:    {result.other} (about no letter)")
    for verdict in result.test_letters:
        for line in verdict.lines():
            click.echo(line)
    click.echo(f"Send log:      {result.log}")


@cli.command("report")
@click.option("--campaign", metavar="NAME", help="The campaign [default: CAMPAIGN, default].")
@click.option(
    "--format",
    "format_",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="table for the terminal, csv for spreadsheets, json for tools, html for a page.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write to this file instead of the terminal.",
)
@click.pass_context
def report_command(
    ctx: click.Context, campaign: str | None, format_: str, out: Path | None
) -> None:
    """What became of every contact, from the send log: counts, problems, times, rate."""
    settings = _settings(ctx)
    made = report(settings, campaign)
    if not settings.send_log.exists():
        _note_missing_env(ctx.find_root())
    if format_ == "table":
        buffer = io.StringIO()
        (Console(file=buffer, width=120) if out else Console()).print(to_renderables(made))
        text = buffer.getvalue()
    else:
        text = {"csv": to_csv, "json": to_json, "html": to_html}[format_](made)
    if out is None:
        click.echo(text, nl=False)  # nothing when the table went to the terminal
        return
    with writing(f"--out {out}"):
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8", newline="")
    click.echo(f"Wrote the report of campaign {made.campaign!r} to {out}")


def main(argv: Sequence[str] | None = None) -> None:
    with fitted_to_terminal():  # on a terminal, long lines break between words
        cli.main(args=argv, prog_name="outreach")
