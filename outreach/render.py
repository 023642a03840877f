"""Rendering each contact's letter from the Jinja2 templates.

The templates are edited by hand and the contact data comes from outside, so
the environment is sandboxed (a template cannot reach Python's internals),
undefined variables are errors (a typo must not send "Dear ,"), and only the
HTML templates are autoescaped (the text part keeps "<" as it is). Each
letter's HTML then has its ``<style>`` block inlined by premailer, for the
mail clients that drop it.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import re
import resource
import signal
import threading
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import babel
import jinja2
from babel.dates import format_date
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from outreach.contacts import Contact
from outreach.errors import TemplateError, TemplateTooLarge

DEFAULT_LANGUAGE = "en"
#: A follow-up's templates: ``templates/<language>/follow-up/``.
FOLLOW_UP = "follow-up"
SUBJECT, TEXT, HTML = "subject.txt.j2", "letter.txt.j2", "letter.html.j2"


@dataclass(frozen=True)
class Rendered:
    """One contact's letter: subject line, plain text and inlined HTML."""

    subject: str
    text: str
    html: str
    language: str
    #: Where the subject came from, for a warning about it: a template file, or
    #: for a follow-up without one, the first letter's subject.
    subject_from: str = ""


#: The locale whose long date is a letter's date line in each language; English
#: letters to the UN are dated day, month, year ("31 August 2015").
_DATE_LOCALES = {"en": "en_GB"}


def long_date(day: date, language: str) -> str:
    """``day`` as a letter's date line in ``language``: "31 August 2015", "31 août 2015".

    Babel (CLDR) knows how each language writes a date; a language it does
    not know is written in English.
    """
    try:
        locale = babel.Locale.parse(_DATE_LOCALES.get(language, language))
    except (ValueError, babel.UnknownLocaleError):
        locale = babel.Locale.parse(_DATE_LOCALES["en"])
    return format_date(day, "long", locale=locale)


def load_data_files(templates_dir: Path) -> dict[str, list[dict[str, str]]]:
    """Each ``templates/*.csv`` as a list of rows, named by the file.

    Lists such as the signatories are data, not markup: kept in a CSV, they
    are edited like the contacts and rendered the same way in both versions.
    """
    data: dict[str, list[dict[str, str]]] = {}
    for path in sorted(templates_dir.glob("*.csv")):
        if not path.stem.isidentifier():
            continue
        try:
            with path.open(encoding="utf-8-sig", newline="") as handle:
                data[path.stem] = [
                    {k.strip(): (v or "").strip() for k, v in row.items() if k}
                    for row in csv.DictReader(handle, strict=True)
                ]
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise TemplateError(f"{path}: cannot be read ({err})") from err
    return data


def inline_css(html: str) -> str:
    """The HTML with its <style> block moved into style attributes.

    Many mail clients drop <style>; premailer inlines it. ``!important`` and
    ``@media`` rules stay (the latter in a <style> block, where clients that
    understand them look), and nothing is ever fetched from the network.
    """
    # Imported here: premailer brings cssutils and requests, a fifth of a
    # second that commands which never inline (report, --help) need not pay.
    import premailer

    inliner = premailer.Premailer(
        html,
        strip_important=False,
        allow_network=False,
        allow_loading_external_files=False,
        disable_validation=True,
        cssutils_logging_level=logging.CRITICAL,
    )
    return str(inliner.transform())


class Renderer:
    """Renders letters for contacts from one templates folder."""

    def __init__(self, templates_dir: Path, letter_date: str, *, follow_up: bool = False) -> None:
        if not templates_dir.is_dir():
            raise TemplateError(f"{templates_dir}: no such folder (set TEMPLATES_DIR)")
        self.templates_dir = templates_dir
        self.letter_date = letter_date
        self.follow_up = follow_up
        self.data = load_data_files(templates_dir)
        self._environments: dict[str, SandboxedEnvironment] = {}

    def folder(self, language: str) -> Path:
        """Where a language's templates are: ``templates/en/``, or for a follow-up
        ``templates/en/follow-up/`` (never the first letter's, by mistake)."""
        own = self.templates_dir / language
        return own / FOLLOW_UP if self.follow_up else own

    def language_for(self, contact: Contact) -> str:
        """The contact's language when its templates exist, else English."""
        return contact.language if self.folder(contact.language).is_dir() else DEFAULT_LANGUAGE

    def environment(self, language: str) -> SandboxedEnvironment:
        if language not in self._environments:
            self._environments[language] = _LimitedSandbox(
                loader=jinja2.FileSystemLoader([self.folder(language), self.templates_dir]),
                undefined=jinja2.StrictUndefined,
                autoescape=jinja2.select_autoescape(
                    enabled_extensions=("html", "htm", "xml", "html.j2"),
                    default_for_string=False,
                ),
                keep_trailing_newline=True,
                auto_reload=False,
            )
        return self._environments[language]

    def context(
        self, contact: Contact, language: str, extra: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """What the templates see: data files, the date, every column, then ``extra``.

        ``letter_language`` is the language the letter is written in, which
        differs from the contact's ``language`` until its templates exist.
        A follow-up's ``extra`` is ``original_date`` and ``original_subject``
        (empty for a contact whose first letter is not known).
        """
        return {
            **self.data,
            "letter_date": self.letter_date,
            **contact.fields,
            "salutation": contact.fields.get("salutation", ""),
            "letter_language": language,
            **({"original_date": "", "original_subject": ""} if self.follow_up else {}),
            **(extra or {}),
        }

    def subject(self, contact: Contact, extra: Mapping[str, str] | None = None) -> str:
        """The contact's subject line alone."""
        language = self.language_for(contact)
        return self._subject(contact, language, self.context(contact, language, extra))

    def _subject(self, contact: Contact, language: str, context: Mapping[str, Any]) -> str:
        if self.follow_up and not (self.folder(language) / SUBJECT).exists():
            # A reply in the same conversation, unless the template says otherwise.
            return f"Re: {context.get('original_subject', '')}".strip()
        subject = self._render(language, SUBJECT, context).strip()
        if "\n" in subject or "\r" in subject:
            raise TemplateError(
                f"{self._path(language, SUBJECT)}: the subject must be one line "
                f"(contact {contact.id})"
            )
        return subject

    def render(
        self, contact: Contact, extra: Mapping[str, str] | None = None, *, subject: str = ""
    ) -> Rendered:
        """The contact's letter; with the ``subject`` given when it was rendered already."""
        language = self.language_for(contact)
        context = self.context(contact, language, extra)
        return Rendered(
            subject=subject or self._subject(contact, language, context),
            text=self._render(language, TEXT, context),
            html=inline_css(self._render(language, HTML, context)),
            language=language,
            subject_from=self.subject_from(language),
        )

    def subject_from(self, language: str) -> str:
        """The file a letter's subject comes from, as a warning names it."""
        if self.follow_up and not (self.folder(language) / SUBJECT).exists():
            return (
                f"'Re: ' and the first letter's subject: {self.folder(language)} has no {SUBJECT}"
            )
        return str(self._path(language, SUBJECT))

    def render_cell(self, contact: Contact, text: str, where: str) -> str:
        """A contacts cell that may itself be a template (``annex-{{ language }}.pdf``)."""
        if "{" not in text:
            return text
        language = self.language_for(contact)
        try:
            template = self.environment(language).from_string(text)
            return _bounded_render(template, self.context(contact, language))
        except (TooLarge, RecursionError, MemoryError) as err:
            # As for a template file: what would exhaust memory or time stops the run.
            raise TemplateTooLarge(f"{where}: {text!r} is too large to render") from err
        except (jinja2.TemplateError, ArithmeticError, TypeError, ValueError, LookupError) as err:
            raise TemplateError(f"{where}: {text!r} cannot be rendered ({err})") from err

    def _path(self, language: str, name: str) -> Path:
        own = self.folder(language) / name
        return own if own.exists() else self.templates_dir / name

    def _render(self, language: str, name: str, context: Mapping[str, Any]) -> str:
        try:
            template = self.environment(language).get_template(name)
            return _bounded_render(template, context)
        except (TooLarge, RecursionError, MemoryError) as err:
            why = (
                "calls itself too deeply (a macro or include that calls itself?)"
                if isinstance(err, RecursionError)
                else "too large to render (out of memory)"
                if isinstance(err, MemoryError)
                else f"too large to render ({err}); a letter is a few thousand words"
            )
            where = _template_position(err, str(self._path(language, name)))
            raise TemplateTooLarge(f"{where}: {why}") from err
        except jinja2.TemplateNotFound as err:
            # err.name is the template that is missing, which may be one that
            # this one includes or extends.
            missing = err.name or name
            raise TemplateError(
                f"{self.folder(language) / missing}: missing "
                f"(looked in {self.folder(language)} and {self.templates_dir})"
            ) from err
        except jinja2.TemplateSyntaxError as err:
            raise TemplateError(
                f"{err.filename or name}, line {err.lineno}: {err.message}"
            ) from err
        except SecurityError as err:
            raise TemplateError(
                f"{_template_position(err, name)}: not allowed in a template ({err})"
            ) from err
        except jinja2.UndefinedError as err:
            undefined = re.fullmatch(r"'(\w+)' is undefined", err.message or "")
            column = f": the contacts file has no column {undefined[1]!r}" if undefined else ""
            raise TemplateError(
                f"{_template_position(err, name)}: {err.message}{column} ("
                "the variables are the contacts columns, letter_date, letter_language, "
                "salutation and "
                f"{', '.join(self.data) or 'no data files'})"
            ) from err
        except jinja2.TemplateError as err:
            raise TemplateError(f"{_template_position(err, name)}: {err}") from err
        except (ArithmeticError, TypeError, ValueError, LookupError) as err:
            # A mistake in the template's own expressions ({{ 1 / 0 }},
            # {{ 'a' + 1 }}): the person editing it needs the place, not a traceback.
            raise TemplateError(
                f"{_template_position(err, name)}: {type(err).__name__}: {err}"
            ) from err


#: The most characters a template may write: far above any letter (the
#: shipped one is 40,000 characters), far below what would exhaust memory.
MAX_SIZE = 2_000_000
#: Seconds one template may take to render; a letter takes milliseconds.
MAX_SECONDS = 10.0
#: The memory a render may take beyond what the process already has; a
#: letter takes a few megabytes.
MAX_MEMORY = 512 * 1024 * 1024
#: The largest power a template may compute: ``9 ** 9 ** 9`` would run in
#: one step of C code for hours, where neither limit above can reach it.
MAX_POWER = 1000


class TooLarge(Exception):
    """What a template asked for would exhaust memory or time."""


class _LimitedSandbox(SandboxedEnvironment):
    """Jinja's sandbox, which also refuses a power too large to compute.

    The sandbox keeps templates away from Python's internals; memory and
    time are bounded around the whole render (``_bounded_render``). Only a
    huge power needs a rule of its own, through the sandbox's documented
    operator hook (``intercepted_binops``, ``call_binop``).
    """

    intercepted_binops = frozenset(["**"])

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if isinstance(right, int) and abs(right) > MAX_POWER:
            raise SecurityError(f"the power {right} is too large")
        return left**right


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Stop a render that runs longer than ``seconds`` (a loop of loops).

    A signal is the only way to interrupt Python code from outside; it
    can be used in the main thread only, where every letter is rendered
    (in this process, or in a worker's own main thread).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def too_slow(signum: int, frame: object) -> None:
        raise TooLarge(f"it takes longer than {seconds:g} s to render")

    before = signal.signal(signal.SIGALRM, too_slow)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)


@contextlib.contextmanager
def _memory_limit(extra: int) -> Iterator[None]:
    """At most ``extra`` bytes more address space while rendering: beyond, MemoryError.

    ``'a' * 10**9``, ``'a'|center(10**12)`` or a string doubled forty times
    then fail at once, naming the template, instead of taking the machine's
    memory. The limit is the process's own (``setrlimit``), lowered for the
    render and put back after it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            used = int(statm.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError):
        yield  # not Linux: the time and size limits still hold
        return
    limit = min([used + extra, *(v for v in (soft, hard) if v != resource.RLIM_INFINITY)])
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _bounded_render(template: jinja2.Template, context: Mapping[str, Any]) -> str:
    """The template's output, within MAX_SIZE characters, MAX_SECONDS and MAX_MEMORY."""
    pieces: list[str] = []
    size = 0
    with _time_limit(MAX_SECONDS), _memory_limit(MAX_MEMORY):
        for piece in template.generate(context):
            size += len(piece)
            if size > MAX_SIZE:
                raise TooLarge(f"it writes more than {MAX_SIZE:,} characters")
            pieces.append(piece)
    return "".join(pieces)


def _template_position(err: BaseException, fallback: str) -> str:
    """'file, line N' of the template frame an error was raised in.

    Jinja2 rewrites tracebacks so that template frames carry the template's
    own file name and line, which is what the person editing it needs.
    """
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename.endswith(".j2")]
    return f"{frames[-1].filename}, line {frames[-1].lineno}" if frames else fallback
