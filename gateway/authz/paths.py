"""Canonical request paths.

The policy is matched on exactly the path that is forwarded, so the gateway refuses every path
whose meaning could differ between itself and the backend: dot segments, empty segments (``//``),
backslashes, ``;`` parameters, and percent-encodings of ``/``, ``\\``, ``.``, ``;``, ``%`` or
control characters. What is left decodes the same way everywhere, so the raw path is forwarded
unchanged and the decoded segments are what the policy sees.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from gateway.errors import InvalidRequest

MAX_PATH_LENGTH = 2048

# RFC 3986 pchar, less ';' (matrix parameters mean different things to different servers).
_PCHAR = re.compile(r"^(?:[A-Za-z0-9\-._~!$&'()*+,=:@]|%[0-9A-Fa-f]{2})*\Z")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
# SECURITY: encodings that would change the path's structure after a second decoding or
# in a backend that decodes differently: '/', '\\', '.', ';', '%' and every control byte.
_FORBIDDEN_ENCODED = frozenset({0x2F, 0x5C, 0x2E, 0x3B, 0x25, 0x7F, *range(0x20)})


def split_path(raw_path: str) -> tuple[str, ...]:
    """The decoded segments of a canonical origin-form path, or :class:`InvalidRequest`.

    ``raw_path`` is the request target without the query. ``"/"`` gives ``()``.
    """
    if not raw_path.startswith("/"):
        # SECURITY: absolute-form (`GET http://evil/`) and asterisk-form targets never select
        # where the request goes; only origin-form paths are served.
        raise InvalidRequest(
            "The request target must be an absolute path.", details={"reason": "path"}
        )
    if len(raw_path) > MAX_PATH_LENGTH:
        raise InvalidRequest("The request path is too long.", details={"reason": "path"})
    if raw_path == "/":
        return ()
    segments = raw_path[1:].split("/")
    decoded: list[str] = []
    for segment in segments:
        if segment in ("", ".", ".."):
            # SECURITY: `//`, `/./` and `/../` are normalized differently by different servers.
            raise InvalidRequest("The request path is not canonical.", details={"reason": "path"})
        if not _PCHAR.match(segment):
            # SECURITY: backslashes, ';' parameters, raw control or non-ASCII bytes.
            raise InvalidRequest(
                "The request path contains characters that are not allowed.",
                details={"reason": "path"},
            )
        if "%" in segment:
            for hexpair in _PERCENT.findall(segment):
                if int(hexpair, 16) in _FORBIDDEN_ENCODED:
                    raise InvalidRequest(
                        "The request path contains an encoded separator or control character.",
                        details={"reason": "path"},
                    )
            try:
                segment = unquote(segment, errors="strict")
            except UnicodeDecodeError:
                # SECURITY: percent-encoded bytes that are not UTF-8 (`%FF`, overlong `%C0%AF`,
                # surrogates `%ED%A0%80`) decode differently everywhere: refused, never guessed.
                raise InvalidRequest(
                    "The request path is not valid percent-encoded UTF-8.",
                    details={"reason": "path"},
                ) from None
        decoded.append(segment)
    return tuple(decoded)
