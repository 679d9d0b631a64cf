"""One master key per store: its fingerprint is recorded the first time a master key is used.

API keys are sealed under the master key (:mod:`gateway.keys.sealing`). A CLI run or a replica
holding another master key would seal keys no other process can open, and the member tokens
signed with them could never be verified. So the first process to use a store records the
fingerprint of its master key there (atomically: set if absent), and every process after it,
server or CLI, compares its own before sealing anything and refuses a different one with
:class:`MasterKeyMismatch`, which names both fingerprints (never the key).

A store that already holds keys but no fingerprint (written before fingerprints existed) is only
claimed by a master key that opens at least one of those keys.
"""

from __future__ import annotations

import hmac

from gateway.config import ConfigError
from gateway.keys.record import KeyRecord
from gateway.keys.sealing import Sealer, SealingError
from gateway.stores.base import KeyStore

ADVICE = (
    "every gateway replica and every CLI run sharing this store must use the same master key "
    "(GATEWAY_MASTER_KEY); nothing was written"
)
CLAIMED = (
    "the store held no master-key fingerprint: recorded this master key's (fingerprint {}). "
    "A new store says this once; a store that lost its data (restarted without persistence, "
    'flushed) says it too, and then holds none of its API keys (operations.md, "Redis that '
    'comes back empty")'
)


class MasterKeyMismatch(ConfigError):
    """This process's master key is not the one the store's API keys are sealed under;
    ``detail`` says how, without the advice to a person running a command."""

    def __init__(self, problem: str) -> None:
        super().__init__("master_key", f"{problem}; {ADVICE}")
        self.detail = problem


def not_this_key(sealer: Sealer, recorded: str) -> str:
    """The problem when the store's fingerprint is ``recorded`` and not ``sealer``'s."""
    return (
        f"this master key (fingerprint {sealer.fingerprint}) is not the one the store's API "
        f"keys are sealed under (fingerprint {recorded})"
    )


async def ensure_master_key(store: KeyStore, sealer: Sealer) -> bool:
    """Return when ``sealer``'s master key is the store's, True when this call recorded it (the
    store had no fingerprint: its first use, or it lost its data); raise
    :class:`MasterKeyMismatch` otherwise, or :class:`~gateway.errors.StoreUnavailable` when the
    store cannot answer."""
    await store.upgrade_schema()  # keys an earlier version wrote, before they are looked at
    recorded = await store.master_fingerprint()
    claimed = False
    if recorded is None:
        await _check_existing_keys(store, sealer)
        recorded = await store.claim_master_fingerprint(sealer.fingerprint)
        claimed = True
    # SECURITY: constant-time comparison, though a fingerprint is not a secret.
    if not hmac.compare_digest(recorded.encode(), sealer.fingerprint.encode()):
        raise MasterKeyMismatch(not_this_key(sealer, recorded))
    return claimed


async def _check_existing_keys(store: KeyStore, sealer: Sealer) -> None:
    blobs = await store.list_keys()
    if not blobs:
        return
    for blob in blobs:
        record = KeyRecord.from_blob(blob)
        try:
            sealer.open(record.sealed, record.key_id)
        except SealingError:
            continue
        return
    raise MasterKeyMismatch(
        f"this master key (fingerprint {sealer.fingerprint}) opens none of the {len(blobs)} "
        "API keys already in the store"
    )
