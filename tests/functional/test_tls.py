"""TLS on the public listener and toward upstreams, with certificates made by the tests."""

from __future__ import annotations

import asyncio
import signal
import ssl
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp.test_utils import TestServer

from tests.conftest import GatewayFactory, make_settings
from tests.support import (
    ADMIN_TOKEN,
    GatewayProcess,
    Recorder,
    base_url,
    free_port,
    gateway_command,
    raw_http,
    write_config,
)

SCORES = "/v1/users/usr_a/scores"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_files(ca: trustme.CA, directory: Path, name: str) -> tuple[Path, Path]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(cert_path), append=True)
    cert.private_key_pem.write_to_path(str(key_path))
    return cert_path, key_path


async def https_upstream(
    aiohttp_server: Any, ca: trustme.CA, *, require_client: trustme.CA | None = None
) -> tuple[Recorder, TestServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    if require_client is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        require_client.configure_trust(context)
    recorder = Recorder()
    return recorder, await aiohttp_server(recorder.app(), ssl=context)


async def test_https_client_to_gateway(
    tmp_path: Path,
    ca: trustme.CA,
    upstream: tuple[Recorder, TestServer],
    processes: list[GatewayProcess],
) -> None:
    cert, key = server_files(ca, tmp_path, "gateway")
    url = base_url(upstream[1])
    proc = write_config(
        tmp_path,
        url,
        extra={
            "listen": {"host": "127.0.0.1", "port": 0, "tls_cert": str(cert), "tls_key": str(key)}
        },
    )
    # write_config chose the ports; keep its public port with TLS on.
    import yaml

    document = yaml.safe_load(proc.config.read_text())
    document["listen"]["port"] = proc.port
    proc.config.write_text(yaml.safe_dump(document))
    await asyncio.to_thread(proc.start)
    processes.append(proc)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    async with aiohttp.ClientSession() as s:
        async with s.post(
            f"http://127.0.0.1:{proc.admin_port}/admin/keys",
            json={"account": "acc_1"},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        ) as r:
            api_key = (await r.json())["key"]

        async def scores(trusting: ssl.SSLContext) -> int:
            """The status of a request with the key, over TLS, from a client trusting one CA."""
            async with s.get(
                f"https://127.0.0.1:{proc.port}{SCORES}",
                ssl=trusting,
                headers={"Authorization": f"Bearer {api_key}"},
            ) as r:
                return r.status

        assert await scores(client_context) == 200
        # A client that does not trust the CA refuses the gateway's certificate.
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            async with s.get(
                f"https://127.0.0.1:{proc.port}{SCORES}", ssl=ssl.create_default_context()
            ) as r:
                await r.read()
        # Plain HTTP on the TLS port gets no HTTP answer at all, with or without a key: the
        # listener only speaks TLS (a plain listener would answer 200 or 401 here).
        for auth in ("", f"Authorization: Bearer {api_key}\r\n"):
            answer = await raw_http(
                proc.port,
                f"GET {SCORES} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n".encode(),
                read_timeout=5,
            )
            assert b"HTTP/" not in answer, answer[:80]
        # Renewed certificate files are picked up on SIGHUP, without a restart.
        renewed = trustme.CA()
        server_files(renewed, tmp_path, "gateway")
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGHUP)
        renewed_context = ssl.create_default_context()
        renewed.configure_trust(renewed_context)
        for _ in range(50):
            try:
                assert await scores(renewed_context) == 200
                break
            except aiohttp.ClientConnectorCertificateError:
                await asyncio.sleep(0.1)
        else:
            pytest.fail("the renewed certificate was not served after SIGHUP")
        # A renewal gone wrong (the certificate of one pair, the key of another) is a failed
        # reload: the running certificate is still served, and the failure is counted and
        # names the field. Loaded into the running context, it broke every handshake.
        other, _ = server_files(trustme.CA(), tmp_path, "other")
        cert.write_bytes(other.read_bytes())
        proc.proc.send_signal(signal.SIGHUP)
        for _ in range(100):
            if "config reload failed" in proc.output():
                break
            await asyncio.sleep(0.05)
        failed = [line for line in proc.output().splitlines() if "config reload failed" in line]
        assert failed and "listen.tls_cert: the certificate and tls_key do not match" in failed[0]
        assert await scores(renewed_context) == 200
        async with s.get(f"http://127.0.0.1:{proc.admin_port}/metrics") as r:
            assert 'gateway_config_reloads_total{result="error"} 1.0' in await r.text()
        assert "Task exception" not in proc.output()


@pytest.mark.parametrize("spoil", ["mismatch", "not_pem"])
def test_check_config_refuses_a_certificate_that_cannot_be_served(
    tmp_path: Path, ca: trustme.CA, spoil: str
) -> None:
    """``check-config`` loads each listener's certificate with its key, as ``serve`` will: a
    pair that does not match or a file that is not PEM is exit 2 and one line naming the
    field, not an OK followed by a traceback at ``serve``."""
    cert, key = server_files(ca, tmp_path, "gateway")
    if spoil == "mismatch":
        other, _ = server_files(ca, tmp_path, "other")
        cert.write_bytes(other.read_bytes())
    elif spoil == "not_pem":
        cert.write_text("not a certificate\n")
    proc = write_config(
        tmp_path,
        "http://127.0.0.1:9",
        extra={
            "admin": {"host": "127.0.0.1", "port": 0, "tls_cert": str(cert), "tls_key": str(key)}
        },
    )
    result = subprocess.run(
        gateway_command("check-config", str(proc.config)),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2, result
    assert result.stderr.startswith("gateway: admin.tls_cert: the certificate"), result.stderr
    assert "Traceback" not in result.stderr


async def test_gateway_to_https_upstream(
    make_gateway: GatewayFactory, aiohttp_server: Any, tmp_path: Path, ca: trustme.CA
) -> None:
    recorder, server = await https_upstream(aiohttp_server, ca)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    url = f"https://127.0.0.1:{server.port}"
    gw = await make_gateway(
        settings=make_settings(url, upstreams={"live": {"url": url, "ca_file": str(bundle)}})
    )
    key = await gw.key()
    response = await gw.client.get(SCORES, headers={"Authorization": f"Bearer {key}"})
    assert response.status == 200
    assert recorder.last.path == SCORES


async def test_upstream_with_an_untrusted_certificate_is_refused(
    make_gateway: GatewayFactory, aiohttp_server: Any, tmp_path: Path, ca: trustme.CA
) -> None:
    recorder, server = await https_upstream(aiohttp_server, trustme.CA())  # another CA
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    url = f"https://127.0.0.1:{server.port}"
    gw = await make_gateway(
        settings=make_settings(url, upstreams={"live": {"url": url, "ca_file": str(bundle)}})
    )
    key = await gw.key()
    response = await gw.client.get(SCORES, headers={"Authorization": f"Bearer {key}"})
    assert response.status == 502
    assert (await response.json())["error"] == "upstream_unavailable"
    assert recorder.seen == []


async def test_client_certificate_toward_the_upstream(
    make_gateway: GatewayFactory, aiohttp_server: Any, tmp_path: Path, ca: trustme.CA
) -> None:
    client_ca = trustme.CA()
    recorder, server = await https_upstream(aiohttp_server, ca, require_client=client_ca)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    client = client_ca.issue_cert("gateway.internal")
    cert_path, key_path = tmp_path / "client.crt", tmp_path / "client.key"
    client.cert_chain_pems[0].write_to_path(str(cert_path))
    client.private_key_pem.write_to_path(str(key_path))
    url = f"https://127.0.0.1:{server.port}"
    without = await make_gateway(
        settings=make_settings(url, upstreams={"live": {"url": url, "ca_file": str(bundle)}})
    )
    key = await without.key()
    response = await without.client.get(SCORES, headers={"Authorization": f"Bearer {key}"})
    assert response.status == 502
    with_cert = await make_gateway(
        settings=make_settings(
            url,
            upstreams={
                "live": {
                    "url": url,
                    "ca_file": str(bundle),
                    "client_cert": str(cert_path),
                    "client_key": str(key_path),
                }
            },
        ),
        store=without.runtime.store,
    )
    response = await with_cert.client.get(SCORES, headers={"Authorization": f"Bearer {key}"})
    assert response.status == 200
    assert len(recorder.seen) == 1


async def test_a_tls_handshake_never_finished_is_closed_at_header_timeout(
    tmp_path: Path, ca: trustme.CA, processes: list[GatewayProcess]
) -> None:
    """``limits.header_timeout`` starts once a TLS handshake is over, and aiohttp left the
    handshake itself to asyncio's 60 s: a connection that sent nothing, or half a ClientHello,
    was held 60 s whatever the config said. Each TLS listener now bounds the handshake by
    ``header_timeout`` (1 s here) too."""
    cert, key = server_files(ca, tmp_path, "gateway")
    tls = {"host": "127.0.0.1", "tls_cert": str(cert), "tls_key": str(key)}
    decision_port = free_port()
    proc = write_config(
        tmp_path,
        "http://127.0.0.1:1",
        extra={
            "limits": {"header_timeout": "1s"},
            "decision": {
                "enabled": True,
                "proxy": "nginx",
                "listen": {**tls, "port": decision_port},
            },
        },
    )
    import yaml

    document = yaml.safe_load(proc.config.read_text())
    for field in ("listen", "admin"):
        document[field] = {**tls, "port": document[field]["port"]}
    proc.config.write_text(yaml.safe_dump(document))
    await asyncio.to_thread(proc.start)
    processes.append(proc)
    for port in (proc.port, proc.admin_port, decision_port):
        for opening in (b"", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"):  # half a hello
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(opening)
            await writer.drain()
            # Closed by the gateway (EOF, or a reset), well before asyncio's 60 s.
            try:
                closed = await asyncio.wait_for(reader.read(), 10)
            except ConnectionResetError:
                closed = b""
            assert closed == b"", port
            writer.close()
