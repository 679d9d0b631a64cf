"""What a config needs beyond being a valid file, checked before serving or reloading."""

from __future__ import annotations

import gateway.stores.redis_py  # noqa: F401  # first: redis-py without OpenTelemetry

# isort: split
from redis.asyncio.connection import parse_url

from gateway.config import ConfigError, Settings
from gateway.forward.upstream import check_upstream_tls
from gateway.tls import check_tls


def check_runtime_requirements(settings: Settings) -> None:
    """A shared store needs what lets every replica open the keys and verify the tokens the
    others sign; several workers need a shared store (each worker is its own process); a
    Redis URL must be one redis-py can open (checked as it will be opened, so that what
    ``check-config`` passes, ``serve`` and a reload can open). The TLS files are checked by
    :func:`check_served_files`, where listeners are served or checked (not by the ``keys``
    commands, which must work without reading a TLS private key)."""
    if settings.store.topology == "standalone":
        try:
            parse_url(settings.store.url)
        except ValueError:
            # Not redis-py's message: it may quote part of the URL, which can hold a password.
            raise ConfigError(
                "store.url",
                "is not a Redis URL that can be opened (check its host, port, database and "
                "options)",
            ) from None
    if settings.store.is_redis and not settings.master_key:
        raise ConfigError(
            "master_key",
            "is required with a redis store (API keys are kept encrypted under it); generate "
            "one with `gateway master-key`",
        )
    if settings.store.is_redis and not settings.tokens.signing_keys:
        raise ConfigError(
            "tokens.signing_keys",
            "is required with a redis store (every replica must verify the tokens the others "
            "sign); generate a key with `gateway signing-key --out FILE`",
        )
    if settings.workers > 1 and not settings.store.is_redis:
        raise ConfigError(
            "workers",
            "more than one worker needs a redis store (the memory store lives in one process)",
        )


def check_served_files(settings: Settings) -> None:
    """The TLS files a serving process reads load, or a :class:`ConfigError` names the field:
    the listeners' certificates and keys (:func:`gateway.tls.check_tls`) and the ``https``
    upstreams' CA bundles and client certificates
    (:func:`gateway.forward.upstream.check_upstream_tls`); for ``check-config``, ``serve`` and
    a reload."""
    check_tls(settings)
    check_upstream_tls(settings.upstreams)
