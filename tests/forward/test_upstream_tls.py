"""An ``https`` upstream's CA bundle and client certificate are checked before they are used:
``check-config``, ``serve`` and a reload refuse a file that does not load, naming the field,
where every request to that upstream used to be a 500 (``SSLError`` raised in the request)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import trustme
import yaml

from gateway.cli import main
from gateway.config import ConfigError
from gateway.errors import UpstreamUnavailable
from gateway.forward.upstream import check_upstream_tls
from gateway.pools import UpstreamPools
from tests.conftest import make_settings
from tests.support import GatewayProcess, write_config


def files(tmp_path: Path) -> dict[str, Path]:
    """A CA, a client pair (RSA), another RSA key and an EC key, and a file that is not PEM."""
    ca = trustme.CA()
    rsa = ca.issue_cert("client.example", key_type=trustme.KeyType.RSA)
    other_rsa = ca.issue_cert("other.example", key_type=trustme.KeyType.RSA)
    ec = ca.issue_cert("ec.example", key_type=trustme.KeyType.ECDSA)
    out = {
        "ca": tmp_path / "ca.pem",
        "cert": tmp_path / "client.crt",
        "key": tmp_path / "client.key",
        "other_key": tmp_path / "other.key",
        "ec_key": tmp_path / "ec.key",
        "garbage": tmp_path / "garbage.pem",
    }
    ca.cert_pem.write_to_path(str(out["ca"]))
    rsa.cert_chain_pems[0].write_to_path(str(out["cert"]))
    rsa.private_key_pem.write_to_path(str(out["key"]))
    other_rsa.private_key_pem.write_to_path(str(out["other_key"]))
    ec.private_key_pem.write_to_path(str(out["ec_key"]))
    out["garbage"].write_text("garbage\n")
    return out


def upstream(**tls: Path) -> dict[str, object]:
    return {"url": "https://127.0.0.1:9", **{k: str(v) for k, v in tls.items()}}


def test_a_bundle_and_a_pair_that_load_pass(tmp_path: Path) -> None:
    f = files(tmp_path)
    settings = make_settings(
        "http://127.0.0.1:9",
        upstreams={"live": upstream(ca_file=f["ca"], client_cert=f["cert"], client_key=f["key"])},
    )
    check_upstream_tls(settings.upstreams)


@pytest.mark.parametrize(
    ("tls", "error"),
    [
        ({"ca_file": "garbage"}, "upstreams.live.ca_file: holds no certificate that loads"),
        ({"ca_file": "key"}, "upstreams.live.ca_file: holds no certificate that loads"),
        (
            {"client_cert": "cert", "client_key": "other_key"},
            "upstreams.live.client_cert: the certificate and client_key do not match",
        ),
        (
            {"client_cert": "cert", "client_key": "ec_key"},
            "upstreams.live.client_cert: the certificate and client_key do not match",
        ),
        (
            {"client_cert": "garbage", "client_key": "key"},
            "upstreams.live.client_cert: the certificate or client_key cannot be loaded",
        ),
    ],
    ids=["ca-not-pem", "ca-a-key", "key-of-another-pair", "key-of-another-type", "cert-not-pem"],
)
def test_a_file_that_does_not_load_is_a_config_error_naming_the_field(
    tmp_path: Path, tls: dict[str, str], error: str
) -> None:
    f = files(tmp_path)
    settings = make_settings(
        "http://127.0.0.1:9", upstreams={"live": upstream(**{k: f[v] for k, v in tls.items()})}
    )
    with pytest.raises(ConfigError) as refused:
        check_upstream_tls(settings.upstreams)
    assert str(refused.value).startswith(error), refused.value
    assert "garbage" not in str(refused.value).partition(": ")[2]  # no file content quoted


def with_upstream_tls(proc: GatewayProcess, **tls: Path) -> None:
    document = yaml.safe_load(proc.config.read_text())
    document["upstreams"]["live"] = upstream(**tls)
    proc.config.write_text(yaml.safe_dump(document))


def test_check_config_refuses_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = files(tmp_path)
    proc = write_config(tmp_path, "http://127.0.0.1:9")
    with_upstream_tls(proc, ca_file=f["garbage"])
    assert main(["check-config", str(proc.config)]) == 2
    assert "upstreams.live.ca_file: holds no certificate that loads" in capsys.readouterr().err


async def test_a_reload_to_it_keeps_the_running_config(tmp_path: Path) -> None:
    import asyncio

    f = files(tmp_path)
    proc = write_config(tmp_path, "http://127.0.0.1:9")
    with_upstream_tls(proc, ca_file=f["ca"])
    await asyncio.to_thread(proc.start)
    try:
        assert proc.proc is not None
        with_upstream_tls(proc, ca_file=f["garbage"])
        proc.proc.send_signal(signal.SIGHUP)
        for _ in range(100):
            if "config reload failed" in proc.output():
                break
            await asyncio.sleep(0.05)
        output = proc.output()
        assert "upstreams.live.ca_file: holds no certificate that loads" in output
        assert '"config reloaded"' not in output
    finally:
        proc.stop()


def test_a_key_command_does_not_read_the_upstreams_tls_files(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An operator's account that may not read the gateway's client key (mode 0600) still
    manages keys: only serving reads those files."""
    f = files(tmp_path)
    proc = write_config(tmp_path, "http://127.0.0.1:9", store=redis_url, name="tls-cli")
    with_upstream_tls(proc, ca_file=f["garbage"])
    assert main(["keys", "list", "--config", str(proc.config)]) == 0, capsys.readouterr().err
    assert "Traceback" not in capsys.readouterr().err


def test_files_that_stop_loading_after_the_check_make_the_upstream_unavailable(
    tmp_path: Path,
) -> None:
    """A 502 for the requests to that upstream (its cause in the warning line), not a 500."""
    f = files(tmp_path)
    settings = make_settings("http://127.0.0.1:9", upstreams={"live": upstream(ca_file=f["ca"])})
    check_upstream_tls(settings.upstreams)
    f["ca"].write_text("garbage\n")  # replaced after the check, before the first request
    pools = UpstreamPools(settings.upstreams)
    for make in (pools.forwarding, pools.client):
        with pytest.raises(UpstreamUnavailable) as unavailable:
            make("live")
        assert unavailable.value.status == 502
        assert unavailable.value.details == {"upstream": "live"}
