"""Follow-ups: a reminder to the missions that have the first letter and have not answered.

A follow-up is a campaign of its own (its own CAMPAIGN, its own templates in
``templates/<language>/follow-up/``) that names the campaign it follows
(FOLLOW_UP_OF). Who gets it is read from the send log: a mission whose
first letter was delivered (``sent``, ``delayed``, or answered only by an
automatic reply) and has not replied, bounced or failed. Its letter carries
``In-Reply-To`` and ``References`` with the first letter's Message-ID, so it
lands in the same conversation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from outreach.render import long_date
from outreach.sendlog import OWED, LogRow, contact_records

#: The first letter's states that call for a reminder: the mission has it and
#: has not answered (an out-of-office is no answer).
FOLLOWED_UP = ("sent", "delayed", "auto-replied")
NEVER_GOT_IT = "never got the first letter"
STILL_OWED = "still owed the first letter"


@dataclass(frozen=True)
class Original:
    """What the send log says of a contact's first letter."""

    status: str
    message_id: str
    subject: str
    sent: datetime | None

    @property
    def followed_up(self) -> bool:
        return self.status in FOLLOWED_UP

    @property
    def left_out_as(self) -> str:
        """Why no reminder goes, as the plan says it: the first letter's state."""
        return STILL_OWED if self.status in OWED else self.status

    def template_values(self, language: str = "en") -> dict[str, str]:
        """``original_date`` and ``original_subject``, for the templates.

        The date is written as the templates' ``language`` writes a letter's
        date line: "31 August 2015", "31 août 2015", "31 de agosto de 2015".
        """
        when = self.sent
        date = long_date(when.date(), language) if when is not None else ""
        return {"original_date": date, "original_subject": self.subject}


def originals(rows: Iterable[LogRow], campaign: str) -> dict[str, Original]:
    """Each contact's first letter in ``campaign``, keyed as the log keys contacts."""
    found = {}
    for key, record in contact_records(rows, campaign).items():
        sent = [row.time for row in record.rows if row.status == "sent"]
        found[key] = Original(
            record.status, record.message_id, record.subject, min(sent, default=None)
        )
    return found
