"""Credentials out of log text, wherever they appear in it.

Log lines are built from explicit fields, but some text is not the gateway's own: aiohttp's
parser errors quote the raw request line, exception messages and tracebacks quote values, a
client chooses its method and request id. :func:`redact` is the one function every line that
passes through ``logging`` goes through (see :mod:`gateway.observe.logs`); it replaces

- API keys (``sk_…``) and mobile tokens (``mt_…``), in any spelling the parser may quote;
- JWT-shaped strings: ``eyJ…`` (a JSON header) and any three dot-separated base64url runs
  long enough to be a signed token;
- the value after ``Authorization``, ``Proxy-Authorization``, ``Cookie`` and ``Set-Cookie``
  (``:`` or ``=``, as in a header line or a repr), and the token after ``Bearer``/``Basic``;
- the userinfo of a URL (``redis://user:password@host``).

:func:`looks_secret` tells whether a client-chosen value would be changed by :func:`redact`;
fields that take client text on the hot path (the request id) refuse such values where they
enter, so access and audit lines stay safe without a regex per line.

Each rule runs only when its literal marker occurs in the text (a ``str`` search in C), so a
line without any marker costs one ``lower()`` and a few substring tests.
"""

from __future__ import annotations

import re
from typing import Final

REDACTED: Final = "[redacted]"

_B64: Final = "A-Za-z0-9_-"
# (marker in the lower-cased text, pattern, replacement)
_RULES: Final[tuple[tuple[str, re.Pattern[str], str], ...]] = (
    (
        "authorization",
        re.compile(r"((?:proxy-)?authorization['\"]?\s*[:=,]\s*['\"]?)[^\r\n'\"\\]+", re.I),
        r"\1" + REDACTED,
    ),
    (
        "cookie",
        re.compile(r"((?:set-)?cookie['\"]?\s*[:=,]\s*['\"]?)[^\r\n'\"\\]+", re.I),
        r"\1" + REDACTED,
    ),
    ("bearer", re.compile(r"(bearer[ \t]+)[^\s'\"\\,]+", re.I), r"\1" + REDACTED),
    ("basic", re.compile(r"(basic[ \t]+)[A-Za-z0-9+/=._~-]{8,}", re.I), r"\1" + REDACTED),
    # SECURITY: no boundary before the prefix: a parser's repr puts an escape (``\x01``,
    # ``\t``) or any letter right before a key, and the key must go all the same.
    ("sk_", re.compile(r"sk_(?:live|sandbox|test)_[A-Za-z0-9]*", re.I), "sk_" + REDACTED),
    ("mt_", re.compile(r"mt_[A-Za-z0-9]{16,}", re.I), "mt_" + REDACTED),
    ("://", re.compile(r"(://)[^/@\s'\"\\]*@"), r"\1" + REDACTED + "@"),
)
# SECURITY: JWT-shaped strings with no marker ("eyJ" is only the usual header; a header with
# leading whitespace encodes differently): a signature is at least 32 characters (HS256: 43).
# Possessive runs keep this linear in the text length.
_EYJ: Final = re.compile(rf"eyJ[{_B64}]*+(?:\.[{_B64}]*+){{1,2}}")
_JWS: Final = re.compile(rf"[{_B64}]{{8,}}+\.[{_B64}]{{2,}}+\.[{_B64}]{{32,}}+")


def redact(text: str) -> str:
    """``text`` with every credential-shaped part replaced by ``[redacted]``."""
    lowered = text.lower()
    for marker, pattern, replacement in _RULES:
        if marker in lowered:
            text = pattern.sub(replacement, text)
    if "eyj" in lowered:
        text = _EYJ.sub(REDACTED, text)
    if text.count(".") >= 2:
        text = _JWS.sub(REDACTED, text)
    return text


def looks_secret(value: str) -> bool:
    """Whether :func:`redact` would change ``value`` (a client-chosen field)."""
    return redact(value) != value
