"""How names are compared: namespaces, entity paths, rule names, header and parameter names.

Every such comparison in hyco ignores the case of ASCII letters and nothing else.
``str.lower()`` is not enough: it maps some non-ASCII letters onto ASCII ones (the Kelvin sign
U+212A becomes ``k``) and changes the length of others (U+0130 becomes two characters), so a
foreign name could alias a configured one, or a token for one name open another.
"""

from __future__ import annotations

import string

__all__ = ["ascii_lower"]

_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def ascii_lower(text: str) -> str:
    """Return ``text`` with ``A-Z`` lower-cased and every other character left as it is."""
    # str.lower() is the fast path, and is exact on ASCII text.
    return text.lower() if text.isascii() else text.translate(_ASCII_LOWER)
