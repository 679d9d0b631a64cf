"""Helpers for the dashboard's tests: sign in over HTTP, read the CSRF token off a page."""

from __future__ import annotations

import re
from typing import Any

from aiohttp.test_utils import TestClient

from tests.support import ADMIN_TOKEN

CSRF_FIELD = re.compile(r'<input type="hidden" name="csrf" value="([^"]+)">')


def csrf_of(page: str) -> str:
    """The CSRF token in a page's forms (every form on a page carries the same one)."""
    found: set[str] = set(CSRF_FIELD.findall(page))
    assert len(found) == 1, found
    return found.pop()


async def sign_in(client: TestClient[Any, Any], token: str = ADMIN_TOKEN) -> str:
    """Sign in the way the page does (GET the form, POST it back); the session's CSRF token."""
    form = await client.get("/dashboard/login")
    assert form.status == 200
    response = await client.post(
        "/dashboard/login",
        data={"csrf": csrf_of(await form.text()), "token": token},
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()
    assert response.headers["Location"] == "/dashboard"
    home = await client.get("/dashboard")
    assert home.status == 200
    return csrf_of(await home.text())
