"""SIGHUP: reload the config file without dropping a connection.

The new file is parsed and validated completely first; an invalid file keeps the old
configuration, logs why and counts ``gateway_config_reloads_total{result="error"}``. A valid one
is built into a new runtime (new policy, keys, limits, caches and upstream pools), which replaces
the old one in a single synchronous step, so each request sees one configuration or the other,
never a mix. ``log_level`` and the listeners' certificate files (:mod:`gateway.tls`) apply at
once. Listener addresses, decision mode's routing (``enabled``, ``prefix``, ``proxy``, its
listener's address), the worker count and ``limits.header_timeout`` need a restart: a reload
whose file differs from what
the process started with in any of them says so in a warning, every time, and keeps the running
ones.

Replaced pools are closed as soon as the requests using them are done, never earlier and not
much later: after the swap no new request reaches the old forwarder, so its in-flight count
(:attr:`~gateway.forward.proxy.Forwarder.in_flight`) only falls, and at zero its upstream pools
(and the old store, if the store changed) are closed. Any number of reloads therefore leave one
set of upstream connections open, not one per reload. The pool for identity providers and the
relationship service has no settings and is kept across reloads. A changed ``tracing`` section
brings a new tracer; the old one exports its spans and stops once its requests are done.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from gateway.authz.policy import Policy
from gateway.config import ConfigError, Settings
from gateway.errors import StoreUnavailable
from gateway.keys.fingerprint import CLAIMED
from gateway.observe import logs
from gateway.observe.tracing import build_tracer
from gateway.requirements import check_runtime_requirements, check_served_files
from gateway.runtime import Current, Runtime, build_runtime, open_store
from gateway.settings import load_settings
from gateway.tls import listeners

IDLE_POLL = 0.05  # seconds between looks at a replaced forwarder's in-flight count
STORE_GRACE = 30.0  # a replaced store is closed no earlier than this after the swap


def needs_restart(settings: Settings) -> dict[str, object]:
    """What a reload cannot change, by field: the listeners' addresses and whether they speak
    TLS (``tls_cert`` set or not: its files are re-read), the decision routing the listeners
    were built with, the worker count, and how long their connections may take to send
    headers (the other limits are checked per request, with the current config)."""
    decision = settings.decision
    fields: dict[str, object] = {
        "workers": settings.workers,
        "limits.header_timeout": settings.limits.header_timeout,
        "decision.enabled": decision.enabled,
        "decision.prefix": decision.prefix,
        "decision.proxy": decision.proxy,
        "decision.listen": decision.listen is not None,
    }
    for name, listener in listeners(settings):
        fields[f"{name}.host"] = listener.host
        fields[f"{name}.port"] = listener.port
        fields[f"{name}.tls_cert"] = listener.tls_cert is not None
    return fields


async def reload(current: Current, path: Path, *, started: Settings) -> bool:
    """Build a runtime from ``path`` and make it ``current``; False (and the old one kept) on
    any error in the file, its requirements or its resources. ``started``: the settings the
    process bound its listeners with, which the settings that need a restart are compared to
    (not the last file read: after a reload that changed one, it still differs from what runs)."""
    runtime = current.runtime
    metrics = runtime.metrics
    try:
        settings = await asyncio.to_thread(load_settings, path)
        check_runtime_requirements(settings)
        check_served_files(settings)
    except Exception as exc:  # any failure: a reload never ends the reload task
        _failed(runtime, path, exc)
        return False
    old_settings = runtime.settings
    running, wanted = needs_restart(started), needs_restart(settings)
    for name, value in wanted.items():
        if name in running and value != running[name]:
            logs.event(
                "config reload: this setting needs a restart; ignored",
                logging.WARNING,
                setting=name,
            )
    same_store = settings.store == old_settings.store
    same_tracing = settings.tracing == old_settings.tracing
    store = runtime.store if same_store else None
    tracer = runtime.tracer if same_tracing else None
    try:
        if store is None:
            store = open_store(settings)
            # Until the check below, its failures are this reload's (its failure line names
            # them), not a "store unavailable" warning that reads as the running store's.
            store.quiet = True
        if tracer is None:
            tracer = build_tracer(settings.tracing)
        new = build_runtime(
            settings,
            clock=runtime.clock,
            store=store,
            metrics=metrics,
            helper=runtime.helper,
            tracer=tracer,
        )
        if not same_store or settings.master_key != old_settings.master_key:
            await _check_master_key(new, store_changed=not same_store)
        store.quiet = False  # the store requests are served from after the swap reports again
    except Exception as exc:  # any failure, as above
        _failed(runtime, path, exc)
        if not same_store and store is not None:
            await store.close()
        if not same_tracing and tracer is not None:
            await tracer.close()
        return False
    # SECURITY: one synchronous assignment: a request reads either runtime whole, never a mix.
    old, current.runtime = runtime, new
    if settings.log_level != old_settings.log_level:
        logs.set_level(settings.log_level)
    metrics.reloads.labels("ok").inc()
    logs.event(
        "config reloaded", file=str(path), routes=len(settings.section("policy", Policy).rules)
    )
    task = asyncio.get_running_loop().create_task(
        retire(old, close_store=not same_store, close_tracer=not same_tracing)
    )
    current.retiring.add(task)
    task.add_done_callback(current.retiring.discard)
    return True


def _failed(runtime: Runtime, path: Path, exc: Exception) -> None:
    """Count and log a reload that failed; the running config stays. A :class:`ConfigError`
    names the field and the problem; any other failure is named by its type alone."""
    runtime.metrics.reloads.labels("error").inc()
    # SECURITY: only a ConfigError's words are written: another exception's message or repr
    # may quote the file (a decoding error quotes all of it, secrets included).
    if isinstance(exc, ConfigError | StoreUnavailable):
        error = str(exc)
    elif isinstance(exc, OSError):
        error = f"{type(exc).__name__}: {exc.strerror} ({exc.filename})"
    else:
        error = type(exc).__name__
    logs.event(
        "config reload failed; keeping the running config",
        logging.ERROR,
        error=error,
        file=str(path),
    )


async def retire(old: Runtime, *, close_store: bool, close_tracer: bool = False) -> None:
    """Close the upstream pools of a replaced runtime once nothing is in flight on them, and its
    store, when the new config has another, :data:`STORE_GRACE` seconds after the swap at the
    earliest (a request that began authenticating before the swap may still ask the old store,
    each time bounded by its timeouts); its tracer, when the new config has another, once the
    requests it traced are done (their spans are ended then, and exported as it closes). The
    identity-provider pool is shared with the runtime that replaced this one and stays open.
    Cancelled (at shutdown, once requests are drained), it closes everything at once."""
    try:
        while old.requests.active or old.forwarder.in_flight:
            await asyncio.sleep(IDLE_POLL)
        await old.forwarder.pools.close()
        if close_tracer:
            await old.tracer.close()
        if close_store:
            await asyncio.sleep(STORE_GRACE)
    finally:
        await old.forwarder.pools.close()  # idempotent
        if close_store:
            await old.store.close()
        if close_tracer:
            await old.tracer.close()  # idempotent


async def _check_master_key(new: Runtime, *, store_changed: bool) -> None:
    """A new master key (or store) must be the store's: a mismatch fails the reload (a config
    error naming both fingerprints). A new store that cannot answer fails it too: every request
    would get 503 until it did, and the store the gateway runs on answers now. The same store
    with a new master key, unavailable now, does not fail it: the key service compares again
    before it seals a key."""
    try:
        if await new.keys.ensure_master_key():
            logs.event(CLAIMED.format(new.keys.sealer.fingerprint))
    except StoreUnavailable as exc:
        if store_changed:
            raise ConfigError(
                "store",
                f"the new store does not answer ({_why(exc)}); keeping the running store "
                "(reload again once it does)",
            ) from None
        logs.event(
            "config reload: cannot compare the master key with the store's now (store "
            "unavailable); it is compared again before a key is created",
            logging.WARNING,
        )


def _why(exc: StoreUnavailable) -> str:
    """Why a candidate store did not answer, in the words its own warning would have used
    (that warning is not written for a candidate: see the Store protocol's ``quiet``)."""
    cause = exc.__cause__
    if cause is None:
        return str(exc.details.get("reason", "no answer"))
    # redis-py's words (an address and a reason, as the running store's warnings write
    # them), cut short: never the config file's, and redacted like every line.
    words = str(cause)[:200]
    return f"{type(cause).__name__}: {words}" if words else type(cause).__name__
