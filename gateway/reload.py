"""SIGHUP: reload the config file without dropping a connection.

The new file is parsed and validated completely first; an invalid file keeps the old
configuration, logs why and counts ``gateway_config_reloads_total{result="error"}``. A valid one
is built into a new runtime (new policy, keys, limits, caches and pools), which replaces the old
one in a single synchronous step, so each request sees one configuration or the other, never a
mix. The old pools are closed after in-flight requests have had time to finish. Listener
addresses and the worker count need a restart; a change to them is logged and ignored.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from gateway.config import load_settings
from gateway.confignode import ConfigError
from gateway.errors import StoreUnavailable
from gateway.observe import logs
from gateway.requirements import check_runtime_requirements
from gateway.runtime import Runtime, build_runtime, close_resources, open_resources, open_store

CLOSE_OLD_AFTER = 30.0


async def reload(runtime: Runtime, path: Path) -> bool:
    metrics = runtime.metrics
    try:
        settings = await asyncio.to_thread(load_settings, path)
        check_runtime_requirements(settings)
    except ConfigError as exc:
        metrics.reloads.labels("error").inc()
        logs.event(
            "config reload failed; keeping the running config",
            logging.ERROR,
            error=str(exc),
            file=str(path),
        )
        return False
    old_settings = runtime.settings
    for name in ("listen", "admin", "workers"):
        if getattr(settings, name) != getattr(old_settings, name):
            logs.event(
                "config reload: this setting needs a restart; ignored",
                logging.WARNING,
                setting=name,
            )
    same_store = settings.store == old_settings.store
    store = runtime.store if same_store else open_store(settings)
    try:
        new = build_runtime(settings, clock=runtime.clock, store=store, metrics=metrics)
        if not same_store or settings.master_key != old_settings.master_key:
            await _check_master_key(new)
        await open_resources(new)
    except (ConfigError, OSError, ValueError) as exc:
        metrics.reloads.labels("error").inc()
        logs.event(
            "config reload failed; keeping the running config",
            logging.ERROR,
            error=str(exc),
            file=str(path),
        )
        return False
    old = runtime.replace_with(new)
    metrics.reloads.labels("ok").inc()
    logs.event("config reloaded", file=str(path), routes=len(settings.policy.rules))
    asyncio.get_running_loop().call_later(
        CLOSE_OLD_AFTER,
        lambda: asyncio.ensure_future(close_resources(old, close_store=not same_store)),
    )
    return True


async def _check_master_key(new: Runtime) -> None:
    """A new master key (or store) must be the store's: a mismatch fails the reload (a config
    error naming both fingerprints). A store that cannot answer now does not: the key service
    compares again before it seals a key."""
    try:
        await new.keys.ensure_master_key()
    except StoreUnavailable:
        logs.event(
            "config reload: cannot compare the master key with the store's now (store "
            "unavailable); it is compared again before a key is created",
            logging.WARNING,
        )
