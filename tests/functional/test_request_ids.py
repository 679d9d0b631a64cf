"""A client's ``X-Request-Id`` is propagated when well formed, unless it is (part of) the
request's own credential: then it is replaced, since the id is logged, forwarded and echoed."""

from __future__ import annotations

import pytest

from tests.conftest import Gateway

SCORES = "/v1/users/usr_a/scores"
OPAQUE = "ory_at_Zq3xT9kLmN0pQrStUvWxYz0123456789abcdef"


async def sent_with(gw: Gateway, authorization: str, request_id: str) -> tuple[int, str, str]:
    """(status, the id the upstream received or '', the id echoed to the client)."""
    forwarded = len(gw.recorder.seen)
    response = await gw.client.get(
        SCORES, headers={"Authorization": authorization, "X-Request-Id": request_id}
    )
    upstream = (
        gw.recorder.last.headers["x-request-id"][0] if len(gw.recorder.seen) > forwarded else ""
    )
    return response.status, upstream, response.headers["X-Request-Id"]


async def test_a_part_of_the_credential_is_never_a_request_id(gateway: Gateway) -> None:
    key = await gateway.key()
    secret = key[len("sk_live_") :]
    for part in (secret[:12], secret[-16:], secret[10:30]):
        status, upstream, echoed = await sent_with(gateway, f"Bearer {key}", part)
        assert status == 200
        assert part not in upstream and part not in echoed, part
        assert upstream == echoed  # replaced by the gateway's own id, the same both ways


@pytest.mark.parametrize("request_id", ["sk", "live", "Bearer"])
async def test_a_short_id_is_kept_even_if_it_occurs_in_the_credential(
    gateway: Gateway, request_id: str
) -> None:
    """Up to seven characters say nothing about a secret: such ids are propagated even when
    they happen to occur in the Authorization header."""
    key = await gateway.key()
    assert request_id in f"Bearer {key}" and len(request_id) < 8
    assert await sent_with(gateway, f"Bearer {key}", request_id) == (200, request_id, request_id)


async def test_an_unrelated_id_is_kept(gateway: Gateway) -> None:
    key = await gateway.key()
    assert await sent_with(gateway, f"Bearer {key}", "req-2026-12-02.abc:9") == (
        200,
        "req-2026-12-02.abc:9",
        "req-2026-12-02.abc:9",
    )


async def test_an_id_taken_from_an_unrecognised_token_is_replaced_too(gateway: Gateway) -> None:
    """A token of no known shape is refused (401), and an id equal to it is still replaced."""
    response = await gateway.client.get(
        SCORES, headers={"Authorization": f"Bearer {OPAQUE}", "X-Request-Id": OPAQUE[-20:]}
    )
    assert response.status == 401
    assert OPAQUE[-20:] not in response.headers["X-Request-Id"]


@pytest.mark.parametrize(("length", "kept"), [(7, True), (8, False)])
async def test_the_length_from_which_a_part_of_the_credential_is_replaced(
    gateway: Gateway, length: int, kept: bool
) -> None:
    key = await gateway.key()
    part = key[len("sk_live_") :][:length]
    status, upstream, echoed = await sent_with(gateway, f"Bearer {key}", part)
    assert status == 200
    assert (upstream == part) is kept and (echoed == part) is kept


async def test_new_ids_are_128_random_bits_in_hex_and_never_repeat(gateway: Gateway) -> None:
    """The gateway's own ids: 32 lowercase hex digits, distinct across several draws of the
    batch they are cut from (front._BATCH at a time)."""
    from gateway import front

    key = await gateway.key()
    seen = set()
    for _ in range(3):
        response = await gateway.client.get(SCORES, headers={"Authorization": f"Bearer {key}"})
        seen.add(response.headers["X-Request-Id"])
    seen.update(next(front._ids) for _ in range(front._BATCH * 3))
    assert len(seen) == 3 + front._BATCH * 3
    assert all(len(i) == 32 and int(i, 16) >= 0 and i == i.lower() for i in seen)


def test_a_forked_worker_does_not_repeat_the_ids_its_parent_drew() -> None:
    import os

    from gateway import front

    parent = next(front._ids)  # a batch is drawn; the rest of it stays the parent's
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, then gone
        os.write(write, "".join(next(front._ids) for _ in range(front._BATCH)).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 32 * front._BATCH).decode()
    os.close(read)
    os.waitpid(pid, 0)
    mine = [next(front._ids) for _ in range(front._BATCH - 1)]
    theirs = {child[i : i + 32] for i in range(0, len(child), 32)}
    assert len(theirs) == front._BATCH and parent not in theirs and not theirs & set(mine)
