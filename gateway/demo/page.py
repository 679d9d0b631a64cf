"""The demo's web page: the token document's browser flow, on an origin of its own.

A customer's web app in miniature, served on the page port (``--page-port``, 8082 by default):

- ``GET /``: the page. Plain HTML and one inline script, no framework and nothing from a CDN.
- ``POST /session``: the page's backend. It asks the gateway for a user token with the demo's
  API key, server-side (:func:`gateway.demo.customer.user_token`), and hands the page the token
  and where to call the API, never the key.

The page then calls ``GET {api}/v1/users/{user}/scores`` with ``fetch`` and the user token, as
the document's React dashboard does, draws the recovery trend as an SVG chart (one point per
day), and calls another user's scores with the same token to show the gateway's 403
``wrong_user``, read from JavaScript: the gateway's CORS config allows exactly this page's
origin, errors included. The page's state is on ``<body data-state>``: ``loading``, then
``done`` or ``error``.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from yarl import URL

from gateway.demo.customer import user_token


@dataclass(slots=True)
class PageBackend:
    """What the page's backend knows: the gateway, as it reaches it (``gateway``) and as the
    browser does (``api``), the page's own origin, the users shown and, once the demo has
    created it, the API key."""

    gateway: URL
    api: str
    origin: str
    user: str
    other_user: str
    key: str | None = None
    session: aiohttp.ClientSession | None = field(default=None, repr=False)


BACKEND = web.AppKey("page_backend", PageBackend)


async def page(request: web.Request) -> web.Response:
    backend = request.app[BACKEND]
    nonce = secrets.token_urlsafe(16)
    response = web.Response(text=PAGE.replace("NONCE", nonce), content_type="text/html")
    # The page may run only its own inline script and style, and talk only to its own backend
    # and the gateway.
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        f"connect-src 'self' {backend.api}; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    response.headers["Cache-Control"] = "no-store"
    return response


async def session(request: web.Request) -> web.Response:
    """A user token for the page's user, from the gateway (503 until the demo has its key)."""
    backend = request.app[BACKEND]
    if backend.key is None or backend.session is None:
        return web.json_response(
            {"error": "not_ready", "message": "The demo is still starting.", "details": {}},
            status=503,
        )
    try:
        status, answer = await user_token(
            backend.session, backend.gateway, backend.key, backend.user
        )
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return web.json_response(
            {
                "error": "gateway_unreachable",
                "message": "The gateway did not answer.",
                "details": {},
            },
            status=502,
        )
    if status != 200:
        return web.json_response(answer, status=status)
    return web.json_response(
        {
            "token": answer["token"],
            "user_id": answer["user_id"],
            "expires_at": answer["expires_at"],
            "api": backend.api,
            "origin": backend.origin,
            "other_user": backend.other_user,
        },
        headers={"Cache-Control": "no-store"},
    )


def create_page(backend: PageBackend) -> web.Application:
    """The page's app (see the module's docstring)."""
    app = web.Application()
    app[BACKEND] = backend

    async def client(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
            backend.session = s
            yield
            backend.session = None

    app.cleanup_ctx.append(client)
    app.router.add_get("/", page)
    app.router.add_post("/session", session)
    return app


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Recovery trend · health gateway demo</title>
<style nonce="NONCE">
  body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 46rem;
         padding: 0 1rem; color: #1d2433; background: #fbfbfd; }
  h1 { font-size: 1.5rem; margin-bottom: .2rem; }
  h2 { font-size: 1.05rem; margin: 1.6rem 0 .4rem; }
  .muted { color: #5b6478; }
  code { font: 13px ui-monospace, monospace; background: #eef0f5; padding: 0 .25rem;
         border-radius: 3px; }
  #chart { width: 100%; height: auto; background: #fff; border: 1px solid #dde1ea;
           border-radius: 8px; }
  #refused { border-left: 4px solid #c2410c; background: #fff4ed; padding: .6rem .8rem; }
  #problem { border-left: 4px solid #b91c1c; background: #fef2f2; padding: .6rem .8rem; }
  #problem:empty, #refused:empty { display: none; }
  ol li { margin: .25rem 0; }
</style>
</head>
<body data-state="loading">
<h1>Recovery trend</h1>
<p class="muted" id="who">Asking this page's backend for a user token…</p>
<svg id="chart" viewBox="0 0 640 280" role="img" aria-label="Recovery, last seven days"></svg>
<p id="problem"></p>
<h2>Another user's data, with the same token</h2>
<p id="refused"></p>
<h2>What happened</h2>
<ol id="steps"></ol>
<script nonce="NONCE">
"use strict";
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

function step(text) {
  const li = document.createElement("li");
  li.textContent = text;
  $("steps").appendChild(li);
}

function svg(name, attributes, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attributes)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  $("chart").appendChild(node);
  return node;
}

function zone(value) {
  return value >= 67 ? "#16a34a" : value >= 34 ? "#ca8a04" : "#dc2626";
}

// One point per day: recovery (0-100 %) over the dates the API returned.
function drawChart(days) {
  const left = 44, right = 620, top = 24, bottom = 236;
  const y = (v) => bottom - (v / 100) * (bottom - top);
  const x = (i) => days.length === 1 ? (left + right) / 2
    : left + 16 + i * ((right - left - 32) / (days.length - 1));
  for (const v of [0, 25, 50, 75, 100]) {
    svg("line", {x1: left, x2: right, y1: y(v), y2: y(v), stroke: "#e5e7eb"});
    svg("text", {x: left - 8, y: y(v) + 4, "text-anchor": "end", "font-size": 11,
                 fill: "#6b7280"}, `${v}`);
  }
  svg("polyline", {points: days.map((d, i) => `${x(i)},${y(d.recovery)}`).join(" "),
                   fill: "none", stroke: "#4f46e5", "stroke-width": 2.5,
                   "stroke-linejoin": "round"});
  days.forEach((d, i) => {
    const point = svg("circle", {cx: x(i), cy: y(d.recovery), r: 6, fill: zone(d.recovery),
                                 stroke: "#fff", "stroke-width": 2, class: "point",
                                 "data-date": d.date, "data-value": d.recovery});
    const title = document.createElementNS(SVG, "title");
    title.textContent = `${d.date}: recovery ${d.recovery}%`;
    point.appendChild(title);
    svg("text", {x: x(i), y: y(d.recovery) - 12, "text-anchor": "middle", "font-size": 12,
                 "font-weight": 600, fill: "#1d2433"}, `${d.recovery}`);
    const day = new Date(`${d.date}T00:00:00Z`);
    const label = day.toLocaleDateString("en", {weekday: "short", timeZone: "UTC"});
    svg("text", {x: x(i), y: bottom + 20, "text-anchor": "middle", "font-size": 11,
                 fill: "#374151"}, label);
    svg("text", {x: x(i), y: bottom + 34, "text-anchor": "middle", "font-size": 10,
                 fill: "#9ca3af"}, d.date.slice(5));
  });
}

async function readJson(response) {
  try { return await response.json(); } catch { return {}; }
}

async function main() {
  const got = await fetch("/session", {method: "POST"});
  const session = await readJson(got);
  if (!got.ok) {
    throw new Error(`This page's backend got no user token: ${got.status} ` +
                    `${session.error}: ${session.message}`);
  }
  step("This page's backend (standing in for yours) asked the gateway for a user token with " +
       "the API key: POST /v1/auth/user-token. The key never leaves the server.");
  $("who").textContent = `User ${session.user_id}, with a user token that expires at ` +
                         `${session.expires_at}.`;
  if (location.origin !== session.origin) {
    step(`Careful: this page is open at ${location.origin}, but the gateway allows only ` +
         `${session.origin}; the browser will block the calls below.`);
  }
  const headers = {Authorization: `Bearer ${session.token}`};
  const own = `${session.api}/v1/users/${session.user_id}/scores`;
  let response;
  try {
    response = await fetch(own, {headers});
  } catch (e) {
    throw new Error(`The browser blocked GET ${own} (${e}). Open this page at exactly ` +
                    `${session.origin}: the gateway's CORS config allows that origin only.`);
  }
  const scores = await readJson(response);
  if (!response.ok) {
    throw new Error(`GET ${own}: ${response.status} ${scores.error}: ${scores.message}`);
  }
  drawChart(scores.data);
  step(`The browser called GET ${own} itself, cross-origin, with the user token: ` +
       `${response.status}, ${scores.data.length} days of scores, drawn above.`);

  const other = `${session.api}/v1/users/${session.other_user}/scores`;
  const refused = await fetch(other, {headers});
  const error = await readJson(refused);
  $("refused").textContent = `${refused.status} ${error.error}: ${error.message}`;
  $("refused").dataset.status = String(refused.status);
  $("refused").dataset.error = String(error.error);
  step(`The same token on GET ${other}: ${refused.status} ${error.error}. A user token reads ` +
       "only its own user's data; the error's body is readable here because the gateway " +
       "adds the CORS headers to its errors too.");
  document.body.dataset.state = "done";
}

main().catch((e) => {
  $("problem").textContent = String(e.message || e);
  document.body.dataset.state = "error";
});
</script>
</body>
</html>
"""
