"""What redis-py said, as the CLI and the store's log line show it: one line, each client named
by its address, and what each sentinel answered kept however long the clients' reprs are."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.sentinel import MasterNotFoundError
from redis.exceptions import AuthenticationError

from gateway.stores.redis import said


def sentinel_error(*answers: tuple[int, Exception]) -> MasterNotFoundError:
    """The error redis-py's Sentinel raises when no sentinel names a master: its own wording,
    around the reprs of real clients (asyncio/sentinel.py, discover_master)."""
    parts = []
    for port, error in answers:
        client = Redis(host="127.0.0.1", port=port, username="gw", password="sentinel-secret")
        parts.append(f"{client} - {error!r}: {error}")
    return MasterNotFoundError(f"No master found for 'mymaster' : {', '.join(parts)}")


def test_each_sentinels_answer_is_kept_and_its_client_named_by_address() -> None:
    refused = AuthenticationError("invalid username-password pair or user is disabled.")
    text = said(sentinel_error((26380, refused), (26381, ConnectionError("refused"))))
    assert text.startswith("No master found for 'mymaster' : sentinel 127.0.0.1:26380: "), text
    assert "invalid username-password pair" in text
    assert ", sentinel 127.0.0.1:26381: ConnectionError('refused')" in text
    assert "<redis." not in text and "0x" not in text
    assert len(text) < 300  # within what the CLI and the log line show
    assert "sentinel-secret" not in text


def test_anything_else_is_its_first_line() -> None:
    assert said(ConnectionError("Error 111 connecting to 127.0.0.1:1.\nmore")) == (
        "Error 111 connecting to 127.0.0.1:1."
    )
    assert said(TimeoutError()) == ""
