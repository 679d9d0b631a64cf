"""No timing oracle on API keys, shown by what can be checked deterministically.

An attacker learns something from timing only if the work done for a guess depends on how close
the guess is to a real key. These tests show that it does not: the store is asked for the
SHA-256 digest of the whole presented key (never the key, never a prefix), a near miss and a far
miss cost the same store commands, and the record found is confirmed with
``hmac.compare_digest``. Measuring the time itself is a benchmark's job (``bench/timing.py``):
on a shared machine a statistical bound loose enough not to flake cannot see the difference.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

from gateway.config import ApiKeySettings
from gateway.errors import InvalidToken
from gateway.keys.sealing import Sealer
from gateway.keys.service import KeyService
from gateway.stores.base import Store
from gateway.stores.redis import RedisStore
from tests.support import FakeClock, RedisServer


def service(store: Store) -> KeyService:
    return KeyService(store, Sealer(os.urandom(32)), FakeClock(), ApiKeySettings(), cache_size=0)


def flip_last(value: str) -> str:
    return value[:-1] + ("A" if value[-1] != "A" else "B")


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class Monitor:
    """Every command the Redis server receives (MONITOR), until :meth:`stop`."""

    def __init__(self, server: RedisServer) -> None:
        self.commands: list[str] = []
        self._client = redis.Redis(port=server.port)
        self._marker = f"monitor-stop-{uuid.uuid4().hex}"
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    def _run(self) -> None:
        with self._client.monitor() as monitor:  # type: ignore[no-untyped-call]
            self._ready.set()
            for event in monitor.listen():
                command = str(event["command"])
                if self._marker in command:
                    return
                self.commands.append(command)

    def stop(self) -> list[str]:
        self._client.echo(self._marker)
        self._thread.join(10)
        self._client.close()
        return self.commands


@pytest.fixture
def monitored(redis_server: RedisServer, redis_url: str) -> Iterator[Callable[[], Monitor]]:
    started: list[Monitor] = []

    def start() -> Monitor:
        started.append(Monitor(redis_server))
        return started[-1]

    yield start
    for monitor in started:
        if monitor._thread.is_alive():
            monitor.stop()


async def test_the_store_sees_only_the_digest_of_the_whole_key(
    redis_url: str, monitored: Callable[[], Monitor]
) -> None:
    prefix = f"timing{uuid.uuid4().hex[:6]}:"
    store = RedisStore(redis_url, prefix=prefix)
    keys = service(store)
    try:
        real, _ = await keys.create("acc_1", "live")
        await keys.authenticate(real)  # the lookup script is loaded once, before watching
        near = flip_last(real)
        far = "sk_live_" + "Q" * (len(real) - len("sk_live_"))
        commands: dict[str, list[str]] = {}
        for label, presented in (("near", near), ("far", far)):
            monitor = monitored()
            with pytest.raises(InvalidToken):
                await keys.authenticate(presented)
            commands[label] = [c for c in monitor.stop() if prefix in c]
            text = "\n".join(commands[label])
            # The digest of exactly what was presented is what is looked up...
            assert sha256(presented) in text
            # ...and neither the key, nor any part of it, nor the real key's digest is sent.
            secret = presented[len("sk_live_") :]
            assert all(secret[i : i + 12] not in text for i in range(0, len(secret) - 12))
            assert sha256(real) not in text
        # A near miss and a far miss cost the same store commands (only the digest differs).
        assert [c.replace(sha256(near), "D") for c in commands["near"]] == [
            c.replace(sha256(far), "D") for c in commands["far"]
        ]
        assert commands["near"]
    finally:
        await store.close()


async def test_the_record_found_is_confirmed_in_constant_time(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = service(store)
    real, record = await keys.create("acc_1", "live")
    compared: list[tuple[object, object]] = []
    constant_time = hmac.compare_digest

    def recording(a: bytes | str, b: bytes | str) -> bool:
        compared.append((a, b))
        return constant_time(a, b)  # type: ignore[arg-type]

    monkeypatch.setattr(hmac, "compare_digest", recording)
    assert (await keys.authenticate(real)).key_id == record.key_id
    # (Other code may compare other things meanwhile; this comparison must be among them.)
    assert (record.digest, sha256(real)) in compared


async def test_an_index_entry_pointing_at_another_keys_record_is_refused(store: Store) -> None:
    """The digest index is not trusted on its own: the record it leads to must carry the
    presented key's digest too (a stale or tampered index entry finds nothing)."""
    keys = service(store)
    _, victim = await keys.create("acc_victim", "live")
    guess = "sk_live_" + "G" * 43
    # An index entry for the guess that leads to the victim's record (whose digest differs).
    await store.put_key(victim.key_id, sha256(guess), victim.to_blob())
    assert await store.key_by_digest(sha256(guess)) == victim.to_blob()
    with pytest.raises(InvalidToken) as refused:
        await keys.authenticate(guess)
    assert refused.value.details == {"reason": "unknown"}
