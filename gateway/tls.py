"""Server TLS: the listeners' certificate and key, checked before anything uses them and
reloaded without ever breaking the context new handshakes use.

A certificate and key are loaded into a new context first (:func:`server_context`); only a pair
that loads is used. ``check-config``, ``serve`` and a reload check every listener's pair this
way (:func:`check_tls`; not the ``keys`` commands, which must work without reading the TLS
private key), so a certificate renewed with the wrong key, or a file that is not PEM, is a
config error naming the field, and a reload that meets one keeps the running config and
certificate (docs/operations.md, Reload)."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.config import ConfigError, Listener, Settings
from gateway.observe import logs


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A TLS 1.2+ server context holding ``cert`` and ``key``; raises ``ssl.SSLError`` (a pair
    that does not match, a file that is not PEM) or ``OSError`` (a file that cannot be read)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    return context


def listeners(settings: Settings) -> Iterator[tuple[str, Listener]]:
    """Each listener the config names, with its field: ``listen``, ``admin`` and, when there is
    one, ``decision.listen``."""
    yield "listen", settings.listen
    yield "admin", settings.admin
    if settings.decision.listen is not None:
        yield "decision.listen", settings.decision.listen


def problem(exc: Exception) -> str:
    """What is wrong with a pair, in words that name no file content: OpenSSL's reason
    (``KEY_VALUES_MISMATCH``, ``PEM lib``) or the operating system's."""
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or exc.__class__.__name__
        # Another key of the same type, or (NO_CERTIFICATE_ASSIGNED) one of another type: an
        # ECDSA certificate renewed as RSA with the old key kept.
        if reason in ("KEY_VALUES_MISMATCH", "KEY_TYPE_MISMATCH", "NO_CERTIFICATE_ASSIGNED"):
            return f"the certificate and tls_key do not match ({reason})"
        return f"the certificate or tls_key cannot be loaded ({reason})"
    if isinstance(exc, OSError):
        return f"cannot be read: {exc.strerror or type(exc).__name__}"
    return type(exc).__name__


def check_tls(settings: Settings) -> None:
    """Every listener's certificate and key load together, or a :class:`ConfigError` names the
    field: the ``tls_cert`` or ``tls_key`` that cannot be read, else ``tls_cert``."""
    for field, listener in listeners(settings):
        if listener.tls_cert is None or listener.tls_key is None:
            continue
        for name, path in (("tls_cert", listener.tls_cert), ("tls_key", listener.tls_key)):
            try:
                path.read_bytes()
            except OSError as exc:
                raise ConfigError(f"{field}.{name}", problem(exc)) from None
        if b"PRIVATE KEY-----" not in listener.tls_key.read_bytes():
            raise ConfigError(f"{field}.tls_key", "holds no PEM private key")
        try:
            server_context(listener.tls_cert, listener.tls_key)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"{field}.tls_cert", problem(exc)) from None


class TlsContexts:
    """The listeners' TLS contexts, reloadable in place: on SIGHUP new handshakes use the files
    the new config names, while established connections keep theirs.

    The context a listener was started with is a dispatcher: on every ClientHello (with or
    without SNI) its ``sni_callback`` hands the handshake the listener's current context, which
    a reload replaces whole. SECURITY: loading a renewed pair into the running context instead
    kept the replaced certificate and key of any other key type (OpenSSL keeps one of each):
    after a move from ECDSA to RSA, or back, clients kept being served the replaced one."""

    def __init__(self) -> None:
        # Per listener: its field, and [its current context].
        self._current: list[tuple[str, list[ssl.SSLContext]]] = []

    def context(self, field: str, listener: Listener) -> ssl.SSLContext | None:
        if listener.tls_cert is None or listener.tls_key is None:
            return None
        dispatcher = server_context(listener.tls_cert, listener.tls_key)
        current = [dispatcher]

        def handshake(conn: ssl.SSLObject, name: str | None, used: ssl.SSLContext) -> None:
            if current[0] is not used:
                conn.context = current[0]

        dispatcher.sni_callback = handshake
        self._current.append((field, current))
        return dispatcher

    def reload(self, settings: Settings) -> None:
        """Give each listener a new context with its pair from ``settings``. A pair that does
        not load (the files changed again since the reload checked them) is logged and leaves
        the running context as it was.

        The files are read once, and those very bytes are loaded (from a private copy: what a
        renewal writes meanwhile cannot slip in between)."""
        named = dict(listeners(settings))
        for field, current in self._current:
            new = named.get(field)
            if new is None or new.tls_cert is None or new.tls_key is None:
                continue
            try:
                current[0] = _loaded(new.tls_cert.read_bytes(), new.tls_key.read_bytes())
            except (ssl.SSLError, OSError) as exc:
                logs.event(
                    "TLS certificate reload failed; keeping the running certificate",
                    logging.ERROR,
                    field=f"{field}.tls_cert",
                    error=problem(exc),
                )


def _loaded(cert: bytes, key: bytes) -> ssl.SSLContext:
    """A server context holding ``cert`` and ``key``. ssl loads only from files: they are
    written, readable by this user alone, to a directory of this process's own that is removed
    at once."""
    with tempfile.TemporaryDirectory(prefix="gateway-tls-") as directory:
        paths = []
        for name, data in (("cert.pem", cert), ("key.pem", key)):
            path = Path(directory) / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            paths.append(path)
        return server_context(paths[0], paths[1])


class BoundedSite(web.TCPSite):
    """aiohttp's TCP site, with each TLS handshake bounded by ``handshake_timeout`` (aiohttp
    leaves asyncio's 60 s). SECURITY: ``limits.header_timeout`` starts once the handshake is
    over, so a client that opened connections and never finished their handshake held each
    for 60 s whatever the config said (a slowloris four times longer than the bound)."""

    __slots__ = ("_handshake_timeout",)

    def __init__(self, *args: Any, handshake_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._handshake_timeout = handshake_timeout

    async def start(self) -> None:
        # What TCPSite.start does, with the handshake's bound (aiohttp takes none).
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            server,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
            ssl_handshake_timeout=self._handshake_timeout if self._ssl_context else None,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
