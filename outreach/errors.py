"""The one family of errors that outreach raises for things the user can fix.

Every message is written for campaign staff, not for programmers: it names the
file and line, the column, the setting or the server, and says what to do. The
command line prints these as ``Error: …`` without a traceback and exits with
``exit_code``; anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class OutreachError(Exception):
    """Base of every error the user can act on.

    An error may carry several problems (all the bad rows of a contacts file,
    say) so that the user can fix them in one go instead of one per run.
    """

    exit_code = 2

    def __init__(self, *problems: str) -> None:
        self.problems: list[str] = [p for p in problems if p] or ["unknown error"]
        super().__init__("\n".join(self.problems))

    def __reduce__(self) -> tuple[type[OutreachError], tuple[str, ...]]:
        # Keep every problem when the error crosses a process boundary.
        return (type(self), tuple(self.problems))


class SettingsError(OutreachError):
    """A setting in the environment or in ``.env`` is missing or malformed."""


class ContactsError(OutreachError):
    """The contacts file cannot be read or holds rows that cannot be used."""


class TemplateError(OutreachError):
    """A template is missing, does not parse, or uses something it may not."""


class TemplateTooLarge(TemplateError):
    """A template asked for more memory or time than any letter needs.

    It would ask the same for every letter: the run stops at the first.
    """


class PreviewError(OutreachError):
    """The preview folder cannot be used or written."""


class MessageError(OutreachError):
    """A message cannot be built safely (a header value would inject a header)."""


class SendLogError(OutreachError):
    """The send log cannot be read, written or locked."""


class DeliveryError(OutreachError):
    """The SMTP server or the connection to it stops the whole run.

    Raised for problems that no retry can fix (a wrong password, a refused
    sender, a certificate that does not verify); problems with one message are
    recorded in the send log instead.
    """


class InboxError(OutreachError):
    """The mailbox cannot be reached, signed in to, or read (``outreach inbox``)."""


class ConfirmationError(OutreachError):
    """Sending needs a confirmation that was not, or could not be, given."""


class RepeatError(ConfirmationError):
    """Letters would go again to addresses that already got them, and nobody said yes."""


def problems_of(errors: Iterable[OutreachError]) -> list[str]:
    """Every distinct problem, in order: one broken template is one line, not 195."""
    return list(dict.fromkeys(problem for error in errors for problem in error.problems))
