"""The listeners' TLS contexts (:mod:`gateway.tls`): a reload never leaves a context that
cannot complete a handshake, and a renewal that loads is served."""

from __future__ import annotations

import contextlib
import ssl
from pathlib import Path

import pytest
import trustme
from cryptography import x509

from gateway.config import ConfigError
from gateway.tls import TlsContexts, check_tls
from tests.conftest import make_settings


def pair(
    ca: trustme.CA, directory: Path, name: str, key_type: trustme.KeyType = trustme.KeyType.ECDSA
) -> tuple[Path, Path]:
    issued = ca.issue_cert(f"{name}.example", key_type=key_type)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    return cert, key


def served_name(context: ssl.SSLContext) -> str:
    """The DNS name of the certificate ``context`` presents, by a handshake in memory."""
    client_context = ssl.create_default_context()
    client_context.check_hostname = False
    client_context.verify_mode = ssl.CERT_NONE
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_context.wrap_bio(c_in, c_out)
    server = context.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    der = client.getpeercert(binary_form=True)
    assert der is not None, "no handshake"
    names = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    return str(names.value.get_values_for_type(x509.DNSName)[0])


def listen(cert: Path, key: Path) -> dict[str, object]:
    return {"host": "127.0.0.1", "port": 0, "tls_cert": str(cert), "tls_key": str(key)}


def test_a_reload_serves_a_renewal_and_keeps_the_running_pair_on_a_bad_one(
    tmp_path: Path,
) -> None:
    ca = trustme.CA()
    cert, key = pair(ca, tmp_path, "first")
    settings = make_settings("http://127.0.0.1:9", listen=listen(cert, key))
    contexts = TlsContexts()
    context = contexts.context("listen", settings.listen)
    assert context is not None and served_name(context) == "first.example"
    # The files the config names are overwritten by a renewal: served after the reload.
    renewed_cert, renewed_key = pair(ca, tmp_path, "renewed")
    cert.write_bytes(renewed_cert.read_bytes())
    key.write_bytes(renewed_key.read_bytes())
    contexts.reload(settings)
    assert served_name(context) == "renewed.example"
    # A certificate whose key is another's (the files changed after the reload's check):
    # the running context is untouched and still completes handshakes.
    cert.write_bytes(pair(ca, tmp_path, "other")[0].read_bytes())
    contexts.reload(settings)
    assert served_name(context) == "renewed.example"


@pytest.mark.parametrize(
    ("first", "then"),
    [(trustme.KeyType.ECDSA, trustme.KeyType.RSA), (trustme.KeyType.RSA, trustme.KeyType.ECDSA)],
)
def test_a_renewal_with_another_key_type_replaces_the_running_certificate(
    tmp_path: Path, first: trustme.KeyType, then: trustme.KeyType
) -> None:
    """OpenSSL keeps one certificate per key type in a context: loading an RSA pair into the
    running context of an ECDSA one kept the ECDSA certificate and key, and clients that take
    either (most) were served the replaced one until a restart."""
    ca = trustme.CA()
    cert, key = pair(ca, tmp_path, "old", first)
    settings = make_settings("http://127.0.0.1:9", listen=listen(cert, key))
    contexts = TlsContexts()
    context = contexts.context("listen", settings.listen)
    assert context is not None and served_name(context) == "old.example"
    new_cert, new_key = pair(ca, tmp_path, "new", then)
    cert.write_bytes(new_cert.read_bytes())
    key.write_bytes(new_key.read_bytes())
    contexts.reload(settings)
    assert served_name(context) == "new.example"
    cert.write_bytes(pair(ca, tmp_path, "third", first)[0].read_bytes())  # a mismatched pair
    contexts.reload(settings)
    assert served_name(context) == "new.example"


@pytest.mark.parametrize("spoiled", ["tls_cert", "tls_key"])
def test_check_tls_names_the_file_that_cannot_be_read(tmp_path: Path, spoiled: str) -> None:
    cert, key = pair(trustme.CA(), tmp_path, "first")
    settings = make_settings("http://127.0.0.1:9", admin=listen(cert, key))
    (cert if spoiled == "tls_cert" else key).unlink()
    with pytest.raises(ConfigError) as raised:
        check_tls(settings)
    assert str(raised.value).startswith(f"admin.{spoiled}: cannot be read")


def test_a_key_of_another_type_is_said_not_to_match(tmp_path: Path) -> None:
    """An ECDSA certificate renewed as RSA with the old key kept (OpenSSL's
    NO_CERTIFICATE_ASSIGNED, which read as a file that cannot be loaded)."""
    ca = trustme.CA()
    cert, _ = pair(ca, tmp_path, "rsa", trustme.KeyType.RSA)
    _, ec_key = pair(ca, tmp_path, "ec", trustme.KeyType.ECDSA)
    settings = make_settings("http://127.0.0.1:9", admin=listen(cert, ec_key))
    with pytest.raises(ConfigError) as raised:
        check_tls(settings)
    assert str(raised.value).startswith("admin.tls_cert: the certificate and tls_key do not match")


def test_a_key_file_that_holds_no_key_is_named_as_the_key(tmp_path: Path) -> None:
    cert, _ = pair(trustme.CA(), tmp_path, "first")
    settings = make_settings("http://127.0.0.1:9", admin=listen(cert, cert))
    with pytest.raises(ConfigError) as raised:
        check_tls(settings)
    assert str(raised.value) == "admin.tls_key: holds no PEM private key"
