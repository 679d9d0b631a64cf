"""Noticing a store that lost its data, and a store claimed by another master key.

A Redis without persistence that restarts, a master promoted without the writes it had, a
``FLUSHALL``: the store then holds none of the API keys, caregiver relationships and mobile
tokens it held. The gateway fails closed (every API key and every token derived from one is
refused, 401), which reads to clients as unknown keys and to an operator as nothing at all
unless it is said. The master-key fingerprint (:mod:`gateway.keys.fingerprint`) is recorded the
first time a master key meets a store and is never replaced, so a store where this process saw
its own and finds none, or another, has lost its data. (An eviction of some keys keeps the
fingerprint, which is read every few seconds: not seen here; operations.md asks for
``noeviction``.)

:class:`StoreWatch` looks every few seconds (``runtime.watch_store``). When the fingerprint this
process saw is gone or another's it writes one ERROR line and counts
``gateway_store_alarms_total{alarm="data_lost"}``; gone, it records its own again at once.
SECURITY: recording it again is what stops a CLI run holding another master key from claiming
the emptied store (it would seal keys that no replica could open); between the loss and the
next look such a claim can win, and is then reported as the other alarm too,
``master_key_mismatch``, once per problem.
"""

from __future__ import annotations

import hmac
import logging

from prometheus_client import Counter, Gauge

from gateway.errors import StoreUnavailable
from gateway.keys.fingerprint import MasterKeyMismatch, ensure_master_key, not_this_key
from gateway.keys.sealing import Sealer
from gateway.observe import logs
from gateway.stores.base import KeyStore

INTERVAL = 5.0  # seconds between two looks at the store

LOST = (
    "the store lost its data: the master-key fingerprint this gateway saw there is gone, and "
    "with it every API key, caregiver relationship and mobile token the store held; requests "
    "with them are refused (401) until keys are restored from a backup or created again"
)


class StoreWatch:
    """What one process saw of its store's fingerprint, from one look to the next. A look at
    another store (a reload replaced it) starts over: the reload compared the master key."""

    def __init__(self, alarms: Counter, mismatch: Gauge) -> None:
        self._alarms = alarms
        self._mismatch_now = mismatch
        self._store: KeyStore | None = None
        self._fingerprint = ""  # this process's, at the last look
        self._seen = False  # this process saw its own fingerprint in ``_store``
        self._reported: str | None = None  # the mismatch last reported

    async def look(self, store: KeyStore, sealer: Sealer) -> None:
        """One look at ``store`` with this process's master key; never raises for a store that
        does not answer (its own warnings say so, and the next look tries again)."""
        if store is not self._store or sealer.fingerprint != self._fingerprint:
            self._store, self._fingerprint = store, sealer.fingerprint
            self._seen, self._reported = False, None
        try:
            recorded = await store.master_fingerprint()
            # SECURITY: constant-time comparison, though a fingerprint is not a secret.
            if recorded is not None and hmac.compare_digest(
                recorded.encode(), sealer.fingerprint.encode()
            ):
                self._own()
                return
            if self._seen:  # gone, or another key's: a fingerprint is never replaced otherwise
                self._lost()
            if recorded is None:
                # SECURITY: recorded again at once, before a CLI run with another master key
                # can claim the emptied store and seal keys no replica could open.
                await ensure_master_key(store, sealer)
                self._own()
                return
        except StoreUnavailable:
            return
        except MasterKeyMismatch as exc:
            self._mismatch(exc.detail)
            return
        self._mismatch(not_this_key(sealer, recorded))

    def _own(self) -> None:
        """The store holds this process's fingerprint (found, or recorded again)."""
        self._seen, self._reported = True, None
        self._mismatch_now.set(0)

    def _lost(self) -> None:
        self._seen = False
        self._alarms.labels("data_lost").inc()
        logs.event(LOST, logging.ERROR, alarm="data_lost")

    def _mismatch(self, problem: str) -> None:
        """Said once for each problem seen, since it lasts until an operator acts: keys
        created under the other master key work as API keys here, but their secrets cannot be
        opened (member tokens signed with them are refused), and this gateway creates no key
        until the store is put right (operations.md)."""
        self._seen = False
        self._mismatch_now.set(1)
        if problem == self._reported:
            return
        self._reported = problem
        self._alarms.labels("master_key_mismatch").inc()
        logs.event(
            "the store is claimed by another master key: member tokens signed with keys "
            "created under it are refused here, and this gateway creates no key until the "
            "store's fingerprint is this master key's again",
            logging.ERROR,
            alarm="master_key_mismatch",
            error=problem,
        )
