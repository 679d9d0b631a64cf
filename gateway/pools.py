"""The gateway's outbound HTTP connection pools, opened on first use and closed together.

:class:`UpstreamPools` holds one pooled client per upstream (what the proxy forwards with);
:class:`HelperPool` one client for the gateway's own calls (identity providers' JWKS, token
introspection, the relationship service). Both are built with the runtime, outside any request,
and open a client the first time it is asked for (aiohttp clients belong to a running event
loop), so a runtime is complete and immutable from construction: nothing is filled in later,
and a runtime that never served a request opens and leaves behind no connection.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping

import aiohttp

from gateway.config import Upstream
from gateway.errors import ServiceUnavailable, UpstreamUnavailable
from gateway.forward.upstream import UpstreamClient, ssl_context


def _upstream_client(upstream: Upstream, tls: ssl.SSLContext | None) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=upstream.max_connections,
        ssl=tls or False,
        ttl_dns_cache=60,
        enable_cleanup_closed=True,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=upstream.connect_timeout, sock_read=upstream.read_timeout
        ),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
    )


class UpstreamPools:
    """Per configured upstream: the forwarding client (proxy mode's own, :mod:`gateway.forward.
    upstream`) and an aiohttp client for the gateway's own calls to it (membership checks)."""

    def __init__(self, upstreams: Mapping[str, Upstream]) -> None:
        self._upstreams = dict(upstreams)
        self._clients: dict[str, aiohttp.ClientSession] = {}
        self._forwarding: dict[str, UpstreamClient] = {}
        self._closed = False

    def _open_check(self) -> None:
        if self._closed:
            raise ServiceUnavailable(
                "The upstream pool was retired by a reload. Retry.",
                details={"reason": "reloading"},
            )

    def client(self, name: str) -> aiohttp.ClientSession:
        """The aiohttp client of ``name``; :class:`ServiceUnavailable` once the pools are closed
        (never a new client nothing would close)."""
        self._open_check()
        found = self._clients.get(name)
        if found is None:
            found = self._clients[name] = _upstream_client(self._upstreams[name], self._tls(name))
        return found

    def forwarding(self, name: str) -> UpstreamClient:
        """The forwarding client of ``name``; :class:`ServiceUnavailable` once closed."""
        self._open_check()
        found = self._forwarding.get(name)
        if found is None:
            upstream = self._upstreams[name]
            found = self._forwarding[name] = UpstreamClient(upstream, self._tls(name))
        return found

    def _tls(self, name: str) -> ssl.SSLContext | None:
        """The upstream's TLS context, made when its first client is (checked with the config
        by ``check-config``, ``serve`` and a reload; a key command never makes one). A file
        changed since that no longer loads is the upstream being unavailable: 502, not 500."""
        try:
            return ssl_context(self._upstreams[name])
        except (ssl.SSLError, OSError) as exc:
            raise UpstreamUnavailable(
                details={"upstream": name},
                cause=f"its TLS files no longer load ({type(exc).__name__}); reload to check them",
            ) from None

    @property
    def open(self) -> int:
        """How many clients are open (each with its own connections)."""
        return sum(1 for client in self._clients.values() if not client.closed) + sum(
            1 for client in self._forwarding.values() if not client.closed
        )

    async def close(self) -> None:
        self._closed = True
        for client in self._clients.values():
            await client.close()
        for forwarding in self._forwarding.values():
            await forwarding.close()


class HelperPool:
    """The client for the gateway's own calls; it has no settings, so reloads keep it."""

    def __init__(self) -> None:
        self._client: aiohttp.ClientSession | None = None

    def client(self) -> aiohttp.ClientSession:
        if self._client is None:
            self._client = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
