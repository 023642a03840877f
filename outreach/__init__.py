"""outreach: one letter, personalised, to every contact, sent exactly once.

The library is ``outreach.campaign``: open a ``Campaign`` from the
settings, then ``check``, ``preview``, ``plan`` and ``send`` it, and
``outreach.campaign.report`` on it afterwards (``outreach.report`` is the
module that lays the report out); ``read_inbox`` puts the bounces and answers
that come back to the mailbox into the send log first. The pipeline underneath is one module per
stage: ``settings`` → ``contacts`` → ``render`` → ``message`` →
``checks`` / ``preview`` / ``sending`` (over ``transport``, into
``sendlog``) → ``report``. The command line in ``cli`` is a thin layer
over ``campaign``.
"""

from outreach.campaign import Campaign, Composed, read_inbox
from outreach.contacts import Contact, ContactList, load_contacts
from outreach.errors import OutreachError
from outreach.message import Letter, build_letter
from outreach.render import Rendered, Renderer
from outreach.settings import Settings, load_settings

__all__ = [
    "Campaign",
    "Composed",
    "Contact",
    "ContactList",
    "Letter",
    "OutreachError",
    "Rendered",
    "Renderer",
    "Settings",
    "build_letter",
    "load_contacts",
    "load_settings",
    "read_inbox",
]
