"""outreach: one letter, personalised, to every contact, sent exactly once.

The pipeline is one module per stage: ``settings`` → ``contacts`` →
``render`` → ``message`` → (``preview`` | sending). The command line in
``cli`` is a thin layer over these.
"""

from outreach.compose import Campaign
from outreach.contacts import Contact, ContactList, load_contacts
from outreach.errors import OutreachError
from outreach.message import Letter, build_letter
from outreach.render import Rendered, Renderer
from outreach.settings import Settings, load_settings

__all__ = [
    "Campaign",
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
]
