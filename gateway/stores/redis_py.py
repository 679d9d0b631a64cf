"""redis-py, imported without the OpenTelemetry it would load for metrics the gateway never uses.

redis-py 8 imports OpenTelemetry's metrics API at import time whenever it is installed (it is:
the gateway's own tracing needs it when ``tracing.enabled``), for redis-py's optional command
metrics, which the gateway does not turn on. That cost every worker with a Redis store 9 MiB
(the OpenTelemetry SDK's metrics modules) and broke the promise that a gateway with tracing off
loads nothing of OpenTelemetry (docs/operations.md, "Tracing"). So redis-py is first imported
here, with any ``opentelemetry`` import refused while it loads: redis-py takes that, as designed,
for "OpenTelemetry is not installed". Nothing else changes: once redis-py is loaded the
refusal is lifted, and the gateway's tracing imports OpenTelemetry as before when it is on.

Every gateway module that uses redis-py imports this module first.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType


class _NoOpenTelemetry(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname == "opentelemetry" or fullname.startswith("opentelemetry."):
            raise ImportError(f"{fullname} is not loaded for redis-py (gateway.stores.redis_py)")
        return None


def _load() -> None:
    if "redis" in sys.modules:
        return
    refuse = _NoOpenTelemetry()
    sys.meta_path.insert(0, refuse)
    try:
        import redis.asyncio
        import redis.asyncio.cluster
        import redis.asyncio.sentinel  # noqa: F401  # loaded here, used by gateway.stores.redis
    finally:
        sys.meta_path.remove(refuse)


_load()
