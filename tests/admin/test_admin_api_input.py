"""What the admin API takes and nothing else: a body revoke does not take, a query parameter no
endpoint takes and a second rotation of one key are refused with the gateway's JSON error, and
nothing is changed by a refused request (a misspelt or misplaced input would otherwise be
ignored silently: ``{"grace_seconds": 300}`` on revoke revoked the key at once)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.app import create_admin_app
from gateway.stores.base import Store
from tests.conftest import Gateway, GatewayFactory
from tests.support import ADMIN_TOKEN

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PAIR = {"account": "acc_9", "subject": "usr_a", "actor": "usr_b"}
# Shaped like an API key, and a plain identifier too: never echoed (it may be one sent by mistake).
SECRET_LIKE = "sk_live_" + "A" * 43

Admin = tuple[Gateway, TestClient[Any, Any]]


@pytest.fixture
async def admin(make_gateway: GatewayFactory, aiohttp_client: Any) -> Admin:
    gw = await make_gateway(admin={"token": ADMIN_TOKEN})
    client: TestClient[Any, Any] = await aiohttp_client(create_admin_app(gw.current))
    return gw, client


async def new_key(client: TestClient[Any, Any], account: str = "acc_9") -> str:
    response = await client.post("/admin/keys", json={"account": account}, headers=AUTH)
    assert response.status == 201, await response.text()
    key_id: str = (await response.json())["key_id"]
    return key_id


async def stored_keys(gw: Gateway) -> list[bytes]:
    """The key records as the store holds them."""
    return sorted(await gw.runtime.store.list_keys())


async def statuses(gw: Gateway) -> list[str]:
    now = gw.clock.now()
    return [record.status(now) for record in await gw.runtime.keys.list()]


# --- revoke takes no body -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "details"),
    [
        (b'{"grace_seconds":300}', "application/json", {"field": "grace_seconds"}),
        (
            b'{"reason":"leaked","grace_seconds":300}',
            "application/json",
            {"field": "grace_seconds"},
        ),
        (b"garbage", "application/json", {}),
        (b"garbage", "text/plain", {}),
        (b"[]", "application/json", {}),
        (b"null", "application/json", {}),
        (b'"now"', "application/json", {}),
        (b" ", "application/json", {}),
        (b'{"' + SECRET_LIKE.encode() + b'":1}', "application/json", {"field": "a field"}),
    ],
)
async def test_revoke_refuses_a_body_and_leaves_the_key_active(
    admin: Admin, body: bytes, content_type: str, details: dict[str, str]
) -> None:
    gw, client = admin
    key_id = await new_key(client)
    before = await stored_keys(gw)
    response = await client.post(
        f"/admin/keys/{key_id}/revoke",
        data=body,
        headers={**AUTH, "Content-Type": content_type},
    )
    document = await response.json()
    assert (response.status, document["error"]) == (400, "invalid_request"), document
    assert document["details"] == details
    assert SECRET_LIKE not in document["message"]
    assert await stored_keys(gw) == before
    assert await statuses(gw) == ["active"]  # not revoked


async def test_revoke_with_no_body_or_an_empty_object_revokes(admin: Admin) -> None:
    gw, client = admin
    bodies: list[dict[str, Any] | None] = [None, {}]
    for body in bodies:
        key_id = await new_key(client)
        response = await client.post(f"/admin/keys/{key_id}/revoke", json=body, headers=AUTH)
        assert response.status == 200, await response.text()
        assert (await response.json())["status"] == "revoked"
    # A body of no bytes (Content-Length: 0) is no body.
    key_id = await new_key(client)
    response = await client.post(f"/admin/keys/{key_id}/revoke", data=b"", headers=AUTH)
    assert response.status == 200, await response.text()
    assert await statuses(gw) == ["revoked"] * 3


async def test_list_refuses_a_body(admin: Admin) -> None:
    """The account filter is a query parameter: sent as a body it would list every account."""
    _, client = admin
    response = await client.get("/admin/keys", json={"account": "acc_9"}, headers=AUTH)
    document = await response.json()
    assert (response.status, document["error"]) == (400, "invalid_request")
    assert document["details"] == {"field": "account"}


# --- query parameters -----------------------------------------------------------------------


async def test_list_refuses_an_unknown_query_parameter(admin: Admin) -> None:
    _, client = admin
    await new_key(client)
    response = await client.get("/admin/keys?account=acc_9&bogus=1", headers=AUTH)
    document = await response.json()
    assert (response.status, document["error"]) == (400, "invalid_request"), document
    assert document["details"] == {"parameter": "bogus"}
    assert "bogus" in document["message"] and "account" in document["message"]
    # A misspelt filter would have listed every account's keys.
    response = await client.get("/admin/keys?acount=acc_9", headers=AUTH)
    assert response.status == 400
    assert (await response.json())["details"] == {"parameter": "acount"}
    # The control: the parameter list takes.
    response = await client.get("/admin/keys?account=acc_9", headers=AUTH)
    assert response.status == 200 and len((await response.json())["keys"]) == 1


async def test_a_query_parameter_given_twice_is_refused(admin: Admin) -> None:
    """Which of the two would be the filter is not for the gateway to guess."""
    _, client = admin
    response = await client.get("/admin/keys?account=acc_9&account=acc_1", headers=AUTH)
    document = await response.json()
    assert (response.status, document["error"]) == (400, "invalid_request"), document
    assert document["details"] == {"parameter": "account"}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/admin/keys", b'{"account":"acc_9","account":"acc_1"}'),
        ("/admin/keys", b'{"account":"acc_9","label":"a","label":"b"}'),
        (
            "/admin/relationships",
            b'{"account":"acc_9","subject":"usr_a","actor":"usr_b","actor":"usr_c"}',
        ),
    ],
)
async def test_a_body_naming_a_member_twice_is_refused_and_changes_nothing(
    admin: Admin, path: str, body: bytes
) -> None:
    """Which of the two values counts is not for the gateway to guess: another reader of the
    same body (an audit proxy in front) could have kept the other one."""
    gw, client = admin
    method = client.post if path == "/admin/keys" else client.put
    headers = {**AUTH, "Content-Type": "application/json"}
    response = await method(path, data=body, headers=headers)
    document = await response.json()
    assert (response.status, document["error"]) == (400, "invalid_request"), document
    assert document["details"] == {"reason": "duplicate_member"}
    assert await stored_keys(gw) == []
    assert await gw.runtime.store.list_relationships("acc_9") == []


@pytest.mark.parametrize(
    ("path", "body", "field", "message"),
    [
        ("/admin/keys", {"account": "acc_9", "lifetime_seconds": 0}, "lifetime_seconds", None),
        ("/admin/keys", {"account": "acc_9", "lifetime_seconds": 10**9}, "lifetime_seconds", None),
        (
            "/admin/keys",
            {"account": "acc_9", "lifetime_seconds": "1h"},
            "lifetime_seconds",
            "lifetime_seconds must be an integer.",
        ),
        ("rotate", {"grace_seconds": -1}, "grace_seconds", None),
        ("rotate", {"grace_seconds": 10**6}, "grace_seconds", None),
    ],
)
async def test_a_refused_value_is_named_by_the_field_the_body_has(
    admin: Admin, path: str, body: dict[str, Any], field: str, message: str | None
) -> None:
    """The key service's own names (``lifetime``, ``grace``) are not fields this API takes: an
    error naming one sent a client looking for a field it is refused for sending."""
    gw, client = admin
    if path == "rotate":
        path = f"/admin/keys/{await new_key(client)}/rotate"
    before = await stored_keys(gw)
    response = await client.post(path, json=body, headers=AUTH)
    document = await response.json()
    assert (response.status, document["error"]) == (400, "invalid_request"), document
    assert document["details"] == {"field": field}
    assert document["message"].startswith(message or f"{field} must be between"), document
    assert await stored_keys(gw) == before


async def test_a_parameter_name_that_may_be_a_secret_is_not_echoed(admin: Admin) -> None:
    _, client = admin
    response = await client.get(f"/admin/keys?{SECRET_LIKE}", headers=AUTH)
    document = await response.json()
    assert response.status == 400
    assert document["details"] == {"parameter": "a parameter"}
    assert SECRET_LIKE not in await response.text()


async def test_every_admin_endpoint_refuses_an_unknown_query_parameter(admin: Admin) -> None:
    """Each request would succeed without its query string; with it, nothing is changed."""
    gw, client = admin
    key_id = await new_key(client)
    await client.put("/admin/relationships", json=PAIR, headers=AUTH)
    cases: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", "/admin/keys?bogus=1", None),
        ("POST", "/admin/keys?bogus=1", {"account": "acc_9"}),
        ("POST", f"/admin/keys/{key_id}/rotate?bogus=1", {}),
        # In the query string rather than the body: not an immediate rotation.
        ("POST", f"/admin/keys/{key_id}/rotate?grace_seconds=300", None),
        ("POST", f"/admin/keys/{key_id}/revoke?bogus=1", None),
        ("PUT", "/admin/relationships?bogus=1", {**PAIR, "subject": "usr_c"}),
        ("DELETE", "/admin/relationships?bogus=1", PAIR),
    ]
    before = await stored_keys(gw)
    for method, path, body in cases:
        response = await client.request(method, path, json=body, headers=AUTH)
        document = await response.json()
        assert (response.status, document["error"]) == (400, "invalid_request"), (path, document)
        name = path.split("?")[1].split("=")[0]
        assert document["details"] == {"parameter": name}, path
        assert name in document["message"], path
    assert await stored_keys(gw) == before
    store = gw.runtime.store
    assert await store.relationship_active("acc_9", "usr_a", "usr_b")
    assert not await store.relationship_active("acc_9", "usr_c", "usr_b")


# --- a key is rotated once ------------------------------------------------------------------


async def test_rotating_a_key_twice_is_a_conflict_naming_its_successor(
    make_gateway: GatewayFactory, aiohttp_client: Any, store: Store
) -> None:
    """A second rotation would have replaced the original's successor with another, leaving the
    first one active and linked to nothing: refused, during the grace period and after it."""
    gw = await make_gateway(store=store, admin={"token": ADMIN_TOKEN})
    client: TestClient[Any, Any] = await aiohttp_client(create_admin_app(gw.current))
    key_id = await new_key(client)
    response = await client.post(
        f"/admin/keys/{key_id}/rotate", json={"grace_seconds": 300}, headers=AUTH
    )
    assert response.status == 201
    successor = (await response.json())["key_id"]
    before = await stored_keys(gw)
    for advance in (0, 300):  # in the grace period, then after it
        gw.clock.advance(advance)
        for body in ({}, {"grace_seconds": 300}):
            response = await client.post(f"/admin/keys/{key_id}/rotate", json=body, headers=AUTH)
            document = await response.json()
            assert (response.status, document["error"]) == (409, "conflict"), document
            assert document["details"] == {"reason": "already_rotated", "rotated_to": successor}
            assert f"rotate {successor}" in document["message"]
            assert "key" not in document  # no new key was made
            assert await stored_keys(gw) == before
    assert sorted(await statuses(gw)) == ["active", "rotated"]
    # The successor is the one to rotate.
    response = await client.post(f"/admin/keys/{successor}/rotate", json={}, headers=AUTH)
    assert response.status == 201
    assert (await response.json())["previous"]["key_id"] == successor
