"""The demo's bundled backend behind the real gateway, configured as ``gateway demo`` configures
it: every route of the default policy answers JSON, webhooks and events work for API keys (and
for no one else), and caregiver relationships made through its API are the ones the gateway
checks."""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.demo import data
from gateway.demo.backend import create_backend
from gateway.demo.run import demo_settings
from gateway.issue.member_cli import member_token
from gateway.runtime import Current, build_runtime
from gateway.stores.memory import MemoryStore
from tests.support import FakeClock

ACCOUNT, USER, OTHER = "acc_demo", "usr_demo", "usr_abc123"


@dataclass
class Demo:
    client: TestClient[Any, Any]
    current: Current
    clock: FakeClock
    key: str
    key_id: str

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.key}"}

    async def call(
        self, method: str, path: str, token: str | None = None, **kw: Any
    ) -> tuple[int, str, Any]:
        """(status, content type, JSON body) of one request through the gateway."""
        async with self.client.request(method, path, headers=self.auth(token), **kw) as r:
            body = await r.json(content_type=None) if await r.read() else None
            return r.status, r.content_type, body


@pytest.fixture
async def demo(aiohttp_server: Any, aiohttp_client: Any) -> AsyncIterator[Demo]:
    """The gateway with the demo's settings in front of the demo's backend, which manages
    relationships in the gateway's own store, as ``gateway demo`` wires them."""
    store = MemoryStore()
    backend: TestServer = await aiohttp_server(
        create_backend({USER: ACCOUNT, OTHER: ACCOUNT}, relationships=store)
    )
    assert backend.port is not None
    clock = FakeClock()
    settings = demo_settings(0, 0, backend.port, "127.0.0.1")
    current = Current(build_runtime(settings, clock=clock, store=store))
    client = await aiohttp_client(create_app(current))
    key, record = await current.runtime.keys.create(ACCOUNT, "sandbox", label="demo")
    yield Demo(client, current, clock, key, record.key_id)


async def sdk_session(demo: Demo) -> str:
    status, _, issued = await demo.call("POST", "/v1/auth/mobile-token", json={"user_id": USER})
    assert status == 200
    status, _, session = await demo.call("POST", "/v1/sdk/initialize", token=issued["token"])
    assert status == 200, session
    token: str = session["session_token"]
    return token


BODIES: dict[tuple[str, str], dict[str, Any]] = {  # (method, template): a valid body
    ("POST", "/v1/users"): {"id": "usr_new"},
    ("PATCH", "/v1/users/{user_id}"): {"name": "Dana", "timezone": "Europe/Berlin"},
    ("POST", "/v1/webhooks"): {"url": "https://example.com/h", "events": ["sleep.updated"]},
    ("PATCH", "/v1/webhooks/{webhook_id}"): {"status": "disabled"},
    ("POST", "/v1/events"): {"user_id": USER, "data": {"source": "test"}},
    ("POST", "/v1/relationships"): {"subject": USER, "actor": "usr_helper"},
    ("POST", "/v1/auth/user-token"): {"user_id": USER},
    ("POST", "/v1/auth/user-token/refresh"): {"user_id": USER},
    ("POST", "/v1/auth/mobile-token"): {"user_id": USER},
}


async def test_every_route_of_the_default_policy_answers_json(demo: Demo) -> None:
    rules = demo.current.runtime.policy.rules
    exercised = []
    for rule in rules:
        for method, template in itertools.product(sorted(rule.methods), rule.templates):
            # A DELETE removes something made for it, so the other routes keep their data.
            params = {"user_id": USER}
            if method == "DELETE":
                params = await disposable(demo)
            else:
                params.update(await existing(demo))
            path = fill(template, params)
            if "mobile_token" in rule.allow:
                _, _, issued = await demo.call(
                    "POST", "/v1/auth/mobile-token", json={"user_id": USER}
                )
                token = issued["token"]
            elif "sdk_session" in rule.allow:
                token = await sdk_session(demo)
            else:
                assert "api_key" in rule.allow, rule.id
                token = demo.key
            body = BODIES.get((method, template))
            status, content_type, answer = await demo.call(method, path, token, json=body)
            assert 200 <= status < 300, (rule.id, method, path, status, answer)
            assert content_type == "application/json", (rule.id, method, path)
            assert isinstance(answer, dict) and answer, (rule.id, method, path)
            exercised.append((rule.id, method))
    assert len(exercised) == sum(len(r.methods) * len(r.templates) for r in rules)
    assert {"webhooks", "webhook", "relationships", "relationship", "user-write"} <= {
        rule_id for rule_id, _ in exercised
    }


def fill(template: str, params: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: params[m.group(1)], template)


async def existing(demo: Demo) -> dict[str, str]:
    _, _, hooks = await demo.call("GET", "/v1/webhooks")
    _, _, rels = await demo.call("GET", "/v1/relationships")
    if not rels["relationships"]:
        await demo.call("POST", "/v1/relationships", json={"subject": USER, "actor": "usr_kin"})
        _, _, rels = await demo.call("GET", "/v1/relationships")
    return {
        "webhook_id": hooks["webhooks"][0]["id"],
        "relationship_id": rels["relationships"][0]["id"],
    }


async def disposable(demo: Demo) -> dict[str, str]:
    _, _, user = await demo.call("POST", "/v1/users", json={})
    _, _, hook = await demo.call("POST", "/v1/webhooks", json={"url": "https://example.com/x"})
    _, _, rel = await demo.call(
        "POST", "/v1/relationships", json={"subject": user["id"], "actor": "usr_passing"}
    )
    return {"user_id": user["id"], "webhook_id": hook["id"], "relationship_id": rel["id"]}


async def test_webhooks_lifecycle_errors_and_account_isolation(demo: Demo) -> None:
    status, _, listed = await demo.call("GET", "/v1/webhooks")
    assert status == 200 and listed["webhooks"] == data.webhooks(ACCOUNT)
    status, _, hook = await demo.call(
        "POST",
        "/v1/webhooks",
        json={"url": "https://example.com/hooks", "events": ["scores.updated"]},
    )
    assert status == 201 and hook["events"] == ["scores.updated"] and hook["status"] == "active"
    path = f"/v1/webhooks/{hook['id']}"
    status, _, changed = await demo.call("PATCH", path, json={"status": "disabled"})
    assert status == 200 and changed["status"] == "disabled"
    assert (await demo.call("GET", path))[2] == changed
    # Bad bodies are the backend's JSON 400, naming the field.
    for bad in ({"url": "ftp://x"}, {"url": "https://x", "events": ["nope"]}, {}):
        status, content_type, error = await demo.call("POST", "/v1/webhooks", json=bad)
        assert (status, content_type) == (400, "application/json")
        assert error["error"] == "invalid_request", error
    status, _, error = await demo.call("PATCH", path, data=b"not json")
    assert status == 400 and "JSON" in error["message"]
    # Another account's key sees its own webhooks only.
    other_key, _ = await demo.current.runtime.keys.create("acc_other", "sandbox")
    status, _, theirs = await demo.call("GET", "/v1/webhooks", token=other_key)
    assert status == 200 and hook["id"] not in {h["id"] for h in theirs["webhooks"]}
    assert (await demo.call("GET", path, token=other_key))[:2] == (404, "application/json")
    status, _, gone = await demo.call("DELETE", path)
    assert status == 200 and gone == {"id": hook["id"], "deleted": True}
    status, _, error = await demo.call("GET", path)
    assert status == 404 and error["error"] == "not_found"


async def test_events_are_deterministic_newest_first_and_filterable(demo: Demo) -> None:
    status, _, page = await demo.call("GET", "/v1/events?limit=100")
    assert status == 200
    events = page["events"]
    assert events == data.events(ACCOUNT, [USER, OTHER])[:100]
    assert {e["user_id"] for e in events} == {USER, OTHER}
    stamps = [e["created_at"] for e in events]
    assert stamps == sorted(stamps, reverse=True)
    status, _, sleep = await demo.call("GET", "/v1/events?type=sleep.updated&limit=5")
    assert status == 200 and len(sleep["events"]) == 5 and sleep["has_more"] is True
    assert {e["type"] for e in sleep["events"]} == {"sleep.updated"}
    assert (await demo.call("GET", "/v1/events?limit=0"))[0] == 400
    status, _, posted = await demo.call(
        "POST", "/v1/events", json={"user_id": USER, "data": {"note": "synced"}}
    )
    assert status == 201 and posted["type"] == "custom"
    newest = (await demo.call("GET", "/v1/events?limit=1"))[2]["events"]
    assert newest == [posted]


async def test_tokens_for_one_user_cannot_reach_webhooks_or_events(demo: Demo) -> None:
    status, _, issued = await demo.call("POST", "/v1/auth/user-token", json={"user_id": USER})
    assert status == 200
    member = member_token(demo.key, demo.key_id, USER)
    for token in (issued["token"], member):
        for path in ("/v1/webhooks", "/v1/events", "/v1/relationships"):
            status, _, error = await demo.call("GET", path, token=token)
            assert (status, error["error"]) == (403, "insufficient_scope"), (path, error)


async def test_a_relationship_made_through_the_api_is_the_one_the_gateway_checks(
    demo: Demo,
) -> None:
    caregiver = member_token(demo.key, demo.key_id, USER, act="usr_nurse")
    scores = f"/v1/users/{USER}/scores"
    status, _, error = await demo.call("GET", scores, token=caregiver)
    assert (status, error["details"]["reason"]) == (403, "relationship_inactive")
    status, _, made = await demo.call(
        "POST", "/v1/relationships", json={"subject": USER, "actor": "usr_nurse"}
    )
    assert status == 201 and made["actor"] == "usr_nurse"
    demo.clock.advance(2)  # past the gateway's one-second cache of the refusal
    status, _, answer = await demo.call("GET", scores, token=caregiver)
    assert status == 200 and answer["user_id"] == USER
    # A caregiver acts for the subject only, never for another member.
    other = member_token(demo.key, demo.key_id, OTHER, act="usr_nurse")
    assert (await demo.call("GET", f"/v1/users/{OTHER}/scores", token=other))[0] == 403
    status, _, _ = await demo.call("DELETE", f"/v1/relationships/{made['id']}")
    assert status == 200
    demo.clock.advance(2)
    status, _, error = await demo.call("GET", scores, token=caregiver)
    assert (status, error["details"]["reason"]) == (403, "relationship_inactive")
    # A relationship names a user of the account as its subject.
    status, _, error = await demo.call(
        "POST", "/v1/relationships", json={"subject": "usr_nobody", "actor": "usr_nurse"}
    )
    assert status == 404 and error["error"] == "not_found"
