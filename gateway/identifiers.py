"""What an account, user, member or key identifier may look like.

Identifiers end up in upstream paths, headers, Redis keys and log lines, so they are restricted to
a conservative alphabet: letters, digits, ``_`` and ``-``, starting with a letter or digit, at most
128 characters. Anything else is rejected before it is used (400 or 401), never escaped.
"""

from __future__ import annotations

import re

MAX_IDENTIFIER = 128
# SECURITY: \Z, not $: "$" also matches before a trailing newline (header injection).
_IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}\Z")
# Printable ASCII without separators that would matter in a header or a log line.
_HEADER_SAFE = re.compile(r"^[\x21-\x7e]{1,256}\Z")


def is_identifier(value: object) -> bool:
    return isinstance(value, str) and _IDENTIFIER.fullmatch(value) is not None


def is_header_safe(value: object) -> bool:
    """An actor from an identity provider (an e-mail, a UUID) may be forwarded as a header."""
    return isinstance(value, str) and _HEADER_SAFE.fullmatch(value) is not None
