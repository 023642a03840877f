"""What may go into a mail header.

A contact's country or a template's subject ends up in a header; a line break
in it would let whoever wrote the spreadsheet add headers or recipients. The
stdlib folds and encodes, but Python 3.11.7 predates the CVE-2024-6923 fix, so
refuse anything that could break a header line here, before the stdlib sees it.
"""

from __future__ import annotations

import re
import unicodedata

# An RFC 2047 encoded-word could decode to a line break downstream.
_ENCODED_WORD = re.compile(r"=\?.*\?=", re.DOTALL)


def unsafe_header_reason(value: str) -> str | None:
    """Why ``value`` must not go into a header, or None when it may."""
    for position, char in enumerate(value, start=1):
        category = unicodedata.category(char)
        if category in ("Cc", "Zl", "Zp"):
            return f"holds the control character U+{ord(char):04X} at position {position}"
    if _ENCODED_WORD.search(value):
        return "holds an RFC 2047 encoded-word (=?…?=)"
    return None
