"""Writing secrets to disk: signing keys, environment files with a master key."""

from __future__ import annotations

import os
from pathlib import Path


def write_private_file(path: Path, data: bytes) -> None:
    """Create ``path`` readable by its owner only (0600), with any missing parent directories
    (0700); :class:`FileExistsError` if it exists: a key or secret is never overwritten."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # SECURITY: O_EXCL and mode 0600 at creation: no window in which another user can read it,
    # and no existing file (or symlink planted in its place) is ever written through.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
