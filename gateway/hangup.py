"""SIGHUP while a process starts: remembered from the first moment, a reload once it serves.

``gateway serve`` installs :class:`EarlyHangup` from its entry point (:mod:`gateway.entry`),
before the imports that take about half a second; the server acts on what it saw once its own
handler is installed (:func:`gateway.server.run`'s ``early``). Without it, a SIGHUP in that
time ended a single process or a supervisor (the signal's default action), and a worker
(started with SIGHUP ignored, so that a reload forwarded while it starts does not end it) that
had already read its file kept serving it after a reload every other process made: a worker
restarted as a new policy was deployed kept admitting what the new one refuses.
"""

from __future__ import annotations

import signal


class EarlyHangup:
    """Notes a SIGHUP (``seen``) until the server's own handler replaces this one."""

    def __init__(self) -> None:
        self.seen = False
        signal.signal(signal.SIGHUP, self._note)

    def _note(self, signum: int, frame: object) -> None:
        self.seen = True


_INSTALLED: list[EarlyHangup] = []  # the process's one, once the entry point installed it


def install() -> EarlyHangup:
    """This process's :class:`EarlyHangup`, installed at the first call."""
    if not _INSTALLED:
        _INSTALLED.append(EarlyHangup())
    return _INSTALLED[0]
