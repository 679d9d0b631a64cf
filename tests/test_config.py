from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from gateway.cli import main
from gateway.config import ConfigError, Node
from gateway.config.loader import read_yaml
from gateway.config.placeholders import expand_env
from gateway.config.store import StoreSettings
from gateway.settings import load_settings, parse_settings
from tests.support import gateway_command, write_config

MASTER = "A" * 43 + "="  # 32 zero-ish bytes, valid base64

BASE: dict[str, Any] = {"upstreams": {"live": {"url": "http://127.0.0.1:9000"}}}


def parse(doc: dict[str, Any]) -> Any:
    return parse_settings(Node(doc), base_dir=Path.cwd())


def with_(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(yaml.safe_dump(BASE))
    doc.update(changes)
    return doc


def test_minimal_config_has_secure_defaults() -> None:
    settings = parse(BASE)
    assert settings.admin.host == "127.0.0.1"
    assert settings.environments == {"live": "live"}  # no sandbox fallback to live
    assert settings.api_keys.cache_ttl <= 1.0
    assert settings.forward_authorization is False
    assert settings.policy.rules  # the default policy
    # Off until the operator says where client addresses come from (docs/configuration.md).
    assert settings.abuse.enabled is False
    assert settings.abuse.trusted_proxies == ()


BAD = [
    (with_(upstreams={"live": {"url": "not a url"}}), "upstreams.live.url", "not a URL"),
    (
        with_(upstreams={"live": {"url": "ftp://x"}}),
        "upstreams.live.url",
        "must be http or https, not ftp",
    ),
    (with_(upstreams={"live": {"url": "http://x/path"}}), "upstreams.live.url", "without a path"),
    (with_(upstreams={}), "upstreams", "at least one upstream"),
    (
        with_(upstreams={"live": {"url": "http://x", "read_timeout": "soon"}}),
        "upstreams.live.read_timeout",
        "duration",
    ),
    (
        with_(upstreams={"live": {"url": "http://x", "timeout": 3}}),
        "upstreams.live.timeout",
        "unknown field",
    ),
    (with_(listen={"port": 70000}), "listen.port", "at most 65535"),
    (with_(listen={"port": "eighty"}), "listen.port", "integer"),
    (with_(workers=0), "workers", "at least 1"),
    (with_(store="mysql://db"), "store", "redis://"),
    (with_(master_key="short"), "master_key", "32 bytes"),
    (with_(environments={"sandbox": "nowhere"}), "environments.sandbox", "not defined"),
    (with_(api_keys={"cache_ttl": "5s"}), "api_keys.cache_ttl", "at most 1"),
    (with_(api_keys={"lifetime": "120d"}), "api_keys.lifetime", "at most"),
    (with_(headers={"user": "X Auth User"}), "headers.user", "not a valid header name"),
    (with_(admin={"token": "short"}), "admin.token", "at least 16"),
    (with_(relationships={"provider": "http"}), "relationships.url_template", "required"),
    (with_(relationships={"provider": "ldap"}), "relationships.provider", "not one of"),
    (with_(tokens={"signing_keys": [{"kid": "k1"}]}), "tokens.signing_keys[0].file", "required"),
    (
        with_(
            policy={
                "routes": [{"id": "a", "methods": ["GET"], "paths": ["/x"], "allow": ["api-key"]}]
            }
        ),
        "policy.routes[0].allow[0]",
        "not one of",
    ),
    (
        with_(
            policy={
                "routes": [{"id": "a", "methods": ["FETCH"], "paths": ["/x"], "allow": ["api_key"]}]
            }
        ),
        "policy.routes[0].methods[0]",
        "not one of",
    ),
    (
        with_(
            policy={
                "routes": [
                    {
                        "id": "a",
                        "methods": ["GET"],
                        "paths": ["/x/{id}"],
                        "allow": ["user_token"],
                        "bind": "user_id",
                    }
                ]
            }
        ),
        "policy.routes[0].bind",
        "not a parameter",
    ),
    (
        with_(
            policy={
                "routes": [
                    {"id": "a", "methods": ["GET"], "paths": ["/x"], "allow": ["api_key"]},
                    {"id": "b", "methods": ["GET"], "paths": ["/x"], "allow": ["user_token"]},
                ]
            }
        ),
        "policy.routes[1]",
        "already covered",
    ),
    (
        with_(
            policy={
                "routes": [{"id": "a", "methods": ["GET"], "paths": ["x"], "allow": ["api_key"]}]
            }
        ),
        "policy.routes[0].paths[0]",
        "must start with '/'",
    ),
    (with_(colour="blue"), "colour", "unknown field"),
    (
        with_(
            identity_providers=[
                {
                    "name": "corp",
                    "issuer": "https://login.example/",
                    "audience": "gw",
                    "jwks_url": "https://login.example/jwks.json",
                    "unknown_kid_refetch_interval": "100ms",
                }
            ]
        ),
        "identity_providers[0].unknown_kid_refetch_interval",
        "at least 1",
    ),
    (
        with_(abuse={"trusted_proxies": ["10.0.0.0/8", "10.0.0.1/8"]}),
        "abuse.trusted_proxies[1]",
        "host bits set",
    ),
    (with_(abuse={"trusted_proxies": ["proxy.internal"]}), "abuse.trusted_proxies[0]", "network"),
    (with_(abuse={"trusted_proxies": ["::/0"]}), "abuse.trusted_proxies[0]", "any client"),
    (with_(abuse={"trusted_proxies": "10.0.0.0/8"}), "abuse.trusted_proxies", "must be a list"),
    (with_(abuse={"burst": 0}), "abuse.burst", "at least 1"),
    (with_(abuse={"failures_per_minute": "lots"}), "abuse.failures_per_minute", "integer"),
    (with_(abuse={"ipv6_prefix": 16}), "abuse.ipv6_prefix", "at least 32"),
    (with_(abuse={"on_store_error": "ignore"}), "abuse.on_store_error", "not one of"),
    (with_(abuse={"per_minute": 5}), "abuse.per_minute", "unknown field"),
    (with_(listen={"port": 8080}, admin={"port": 8080}), "admin.port", "already listen.port"),
]


@pytest.mark.parametrize(
    ("doc", "field", "problem"), BAD, ids=[f"{i}-{b[1]}" for i, b in enumerate(BAD)]
)
def test_bad_config_names_the_field(doc: dict[str, Any], field: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(doc)
    assert info.value.path == field
    assert problem in str(info.value)
    assert str(info.value).startswith(f"{field}: ")


def test_env_placeholders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GW_UPSTREAM", "http://10.1.2.3:8000")
    monkeypatch.delenv("GW_MISSING", raising=False)
    settings = parse(with_(upstreams={"live": {"url": "${GW_UPSTREAM}"}}))
    assert str(settings.upstreams["live"].url) == "http://10.1.2.3:8000"
    with pytest.raises(ConfigError, match=r"admin.token: environment variable GW_MISSING"):
        parse(with_(admin={"token": "${GW_MISSING}"}))
    settings = parse(with_(admin={"token": "${GW_MISSING:-a-default-admin-token}"}))
    assert settings.admin_token == "a-default-admin-token"


def test_an_empty_variable_takes_the_default_as_in_a_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GW_EMPTY", "")
    settings = parse(with_(listen={"port": "${GW_EMPTY:-8181}"}))
    assert settings.listen.port == 8181
    # Without a default, empty is the value (as in a shell), refused by the field's own rule.
    with pytest.raises(ConfigError, match=r"^listen.port: "):
        parse(with_(listen={"port": "${GW_EMPTY}"}))


@pytest.mark.parametrize(
    "written",
    [
        "${GW_ADMIN_TOKEN",  # the closing brace missing
        "${GW_ADMIN_TOKEN}${",
        "${GW-ADMIN-TOKEN}",  # not a name
        "${1GW}",
        "${}",
        "${GW_MISSING:-${GW_ADMIN_TOKEN}}",  # a placeholder inside a default
        "prefix-${GW_ADMIN_TOKEN:-x",
    ],
)
def test_a_broken_placeholder_is_an_error_not_a_literal_secret(
    monkeypatch: pytest.MonkeyPatch, written: str
) -> None:
    """Left as written, a broken placeholder in ``admin.token`` was a literal admin token
    that anyone reading the config file knew (and long enough to be accepted)."""
    monkeypatch.setenv("GW_ADMIN_TOKEN", "t" * 32)
    monkeypatch.delenv("GW_MISSING", raising=False)
    with pytest.raises(ConfigError, match=r"^admin.token: has a `\$\{` that is not a placeholder"):
        parse(with_(admin={"token": written.ljust(20, "x")}))


@pytest.mark.parametrize(
    ("written", "env"),
    [
        ("$${GW_EMPTY}{GW_X}", {"GW_EMPTY": ""}),
        ("${GW_MISSING:-$}{GW_X}", {}),
        ("${GW_DOLLAR}{GW_X}", {"GW_DOLLAR": "$"}),
        ("$${GW_BRACE}", {"GW_BRACE": "{GW_X}"}),
    ],
)
def test_a_placeholder_put_together_by_expansion_is_refused(
    monkeypatch: pytest.MonkeyPatch, written: str, env: dict[str, str]
) -> None:
    monkeypatch.delenv("GW_MISSING", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=r"^admin.token: expands to a `\$\{` that is not a"):
        parse(with_(admin={"token": written.ljust(24, "x")}))


SECRET = "Redis-Passw0rd-Secret-XYZ"


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ({"log_level": "${GW_SECRET}"}, "log_level"),
        ({"limits": {"header_timeout": "${GW_SECRET}"}}, "limits.header_timeout"),
        ({"limits": {"header_timeout": "x${GW_SECRET}"}}, "limits.header_timeout"),
        ({"cors": [{"origins": ["${GW_SECRET}"], "methods": ["GET"]}]}, "cors[0].origins[0]"),
        ({"decision": {"enabled": True, "proxy": "${GW_SECRET}"}}, "decision.proxy"),
    ],
)
def test_a_refused_value_from_the_environment_is_named_by_its_variable_never_shown(
    monkeypatch: pytest.MonkeyPatch, section: dict[str, Any], field: str
) -> None:
    """A secret's variable put in the wrong field by mistake (``log_level: ${REDIS_PASSWORD}``)
    was quoted by the refusal, which check-config prints and a reload logs."""
    monkeypatch.setenv("GW_SECRET", SECRET)
    with pytest.raises(ConfigError) as refused:
        parse(with_(**section))
    assert str(refused.value).startswith(f"{field}: "), refused.value
    assert SECRET not in str(refused.value)
    assert "${GW_SECRET}" in str(refused.value), refused.value


def test_a_placeholder_in_a_key_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^upstreams.\$\{LIVE\}: a key is not expanded"):
        parse(with_(upstreams={"${LIVE}": {"url": "http://127.0.0.1:1"}}))


@pytest.mark.parametrize(
    "value", ["a-token-with-${GW_OTHER}-in-it", "${GW_OTHER}-first-in-a-token", "a-token-ending-${"]
)
def test_a_value_from_the_environment_is_not_expanded_again(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("GW_ADMIN_TOKEN", value)
    monkeypatch.setenv("GW_OTHER", "other")
    settings = parse(with_(admin={"token": "${GW_ADMIN_TOKEN}"}))
    assert settings.admin_token == value


@given(st.text(alphabet="${}:-_AZaz09 ", max_size=30))
def test_expansion_leaves_no_placeholder_text_or_refuses(text: str) -> None:
    """Any text: expanded with variables that hold no ``${``, nothing of a placeholder is left
    in the result, or the text is refused by name."""
    with mock.patch.dict(os.environ, {"A": "1", "Z": "", "A_0": "x"}, clear=True):
        try:
            expanded = expand_env(text, "field")
        except ConfigError as exc:
            assert exc.path == "field"
            return
    assert isinstance(expanded, str) and "${" not in expanded


def test_durations_accept_units() -> None:
    settings = parse(
        with_(
            tokens={"user_token_ttl": "30m", "mobile_token_ttl": 120}, api_keys={"lifetime": "30d"}
        )
    )
    assert settings.tokens.user_token_ttl == 1800
    assert settings.tokens.mobile_token_ttl == 120
    assert settings.api_keys.lifetime == 30 * 86400


def test_shipped_configs_are_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Valid, and servable (the runtime requirements of a Redis store met) once `gateway init`
    has made the files they name."""
    from gateway.cli import main
    from gateway.requirements import check_runtime_requirements

    root = tmp_path / "config"
    shutil.copytree(Path(__file__).resolve().parent.parent / "config", root)
    monkeypatch.setenv("GATEWAY_MASTER_KEY", MASTER)
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", "x" * 32)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    for path in sorted(root.glob("*.yaml")):
        if path.name == "policy.yaml":
            continue
        assert main(["init", "--config", str(path)]) == 0
        check_runtime_requirements(load_settings(path))


def test_check_config_command(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(BASE))
    ok = subprocess.run(
        gateway_command("check-config", str(good)), capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("upstreams:\n  live:\n    url: nope\n")
    res = subprocess.run(
        gateway_command("check-config", str(bad)), capture_output=True, text=True, check=False
    )
    assert res.returncode == 2
    assert (
        res.stderr.strip()
        == "gateway: upstreams.live.url: not a URL (expected http or https://host…)"
    )
    twice = tmp_path / "twice.yaml"
    twice.write_text(yaml.safe_dump(BASE) + "workers: 1\nworkers: 3\n")
    res = subprocess.run(
        gateway_command("check-config", str(twice)), capture_output=True, text=True, check=False
    )
    assert res.returncode == 2 and "has the key 'workers' twice in one mapping (line" in res.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("upstreams: [\n")
    res = subprocess.run(
        gateway_command("check-config", str(broken)), capture_output=True, text=True, check=False
    )
    assert res.returncode == 2 and "not valid YAML (line" in res.stderr


def test_redis_store_requires_a_master_key(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(with_(store="redis://127.0.0.1:1/0")))
    res = subprocess.run(
        gateway_command("check-config", str(path)), capture_output=True, text=True, check=False
    )
    assert res.returncode == 2 and "master_key: is required with a redis store" in res.stderr


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("a: 1\na: 2\n", "a"),
        ("store:\n  url: memory\n  url: redis://x\n", "url"),
        ("routes:\n  - {id: x, id: y}\n", "id"),
        ("admin:\n  <<: {token: aaaa, token: bbbb}\n", "token"),  # inside what a merge brings
        ("a: &a {x: 1}\nb: &b {y: 1}\nc:\n  <<: *a\n  <<: *b\n", "<<"),
        ("base: &b {a: 1}\nother:\n  <<: *b\n  a: 2\n", None),  # a merge key is not a twice
    ],
)
def test_a_key_written_twice_in_one_mapping_is_refused(
    tmp_path: Path, text: str, key: str | None
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    if key is None:
        assert read_yaml(path, "") == {"base": {"a": 1}, "other": {"a": 2}}
        return
    with pytest.raises(ConfigError, match=rf"has the key '{key}' twice in one mapping \(line"):
        read_yaml(path, "")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a: [\n", "expected the node content, but found '<stream end>'"),
        ("a: b: c\n", "mapping values are not allowed here"),
        ("a:\n\tb: 1\n", "found character '\\t' that cannot start any token"),
        ('a: !!python/object:os.system "s3cretvalue"\n', "could not determine a constructor"),
        ("token: *s3cretalias\n", "found undefined alias '…'"),
        ("token: !S3cret'Tag\n", "could not determine a constructor for the tag"),
        ('token: !S3cret"Tag x\n', "is not valid YAML"),
    ],
)
def test_a_yaml_error_says_what_is_wrong_and_quotes_nothing_long(
    tmp_path: Path, text: str, words: str
) -> None:
    """The parser's words, where they are, and none of the file's own text beyond a
    character or two (an alias or a tag the parser quotes may be a secret)."""
    path = tmp_path / "g.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        read_yaml(path, "")
    assert "is not valid YAML (line" in str(caught.value) and words in str(caught.value)
    assert "s3cret" not in str(caught.value).lower()


def test_an_error_in_the_policy_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(
        "routes:\n  - {id: a, methods: [GET], paths: [/x], allow: [api-key]}\n"
    )
    document = {
        "upstreams": {"live": {"url": "http://127.0.0.1:1"}},
        "policy": {"file": "rules.yaml"},
    }
    with pytest.raises(ConfigError) as caught:
        parse_settings(Node(document), base_dir=tmp_path)
    assert str(caught.value).startswith("rules.yaml: routes[0].allow[0]: 'api-key' is not one of")


def test_a_file_that_is_not_utf8_is_named_by_position_only(tmp_path: Path) -> None:
    """An editor's Latin-1 byte: the decoding error's repr quotes the whole file (secrets
    written in it included), so the error names the byte's position and nothing of the text."""
    path = tmp_path / "g.yaml"
    path.write_bytes(b"admin: {token: s3cret-admin-token}\n# caf\xe9\n")
    with pytest.raises(ConfigError) as caught:
        read_yaml(path, "")
    assert str(caught.value) == f"{path} is not UTF-8 text (byte 40 cannot be decoded)"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6390/0?password=s3cretPW", "redis://127.0.0.1:6390/0"),
        ("rediss://:s3cretPW@redis.example:6380/0", "rediss://redis.example:6380/0"),
        ("redis://gateway:s3cretPW@10.0.0.5:6379/2", "redis://10.0.0.5:6379/2"),
        ("unix:///run/redis.sock?password=s3cretPW&db=1", "unix:///run/redis.sock"),
        # An '@' past the host (here in the query): the address is not guessed around it.
        ("redis://10.0.0.5:6379/0?password=s3cretPW@x", "redis:// (address not shown"),
        # Passwords with an unencoded '/', '?' or '#' end the host before the '@': redis-py
        # cannot open such a URL, and check-config says so without quoting it.
        ("redis://:s3cretPW/x@redis:6379/0", None),
        ("redis://:s3cretPW#x@redis:6379/0", None),
        ("redis://:s3cretPW?x@redis:6379/0", None),
    ],
)
def test_check_config_names_the_store_without_its_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str, shown: str | None
) -> None:
    """The summary names the scheme (is TLS on?), the address and the database; a password in
    the userinfo or the query (`?password=`) is never printed, nor by the refusal of a URL
    that cannot be opened, nor by the description itself."""
    proc = write_config(tmp_path, "http://127.0.0.1:1", store=url)
    code = main(["check-config", str(proc.config)])
    out, err = capsys.readouterr()
    assert "s3cretPW" not in out + err
    assert "s3cretPW" not in StoreSettings.model_validate({"url": url}).describe()
    if shown is None:
        assert code == 2 and "store.url: is not a Redis URL that can be opened" in err
        return
    assert code == 0
    assert f"store {shown}" in out, out


@pytest.mark.parametrize("field", ["store.password", "store.sentinel.password"])
def test_an_empty_store_password_names_its_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], field: str
) -> None:
    """``init`` asks for the passwords; left empty, check-config passed and every request
    was 503 once serving (Redis refuses an empty password as a wrong one)."""
    store: dict[str, Any] = (
        {"url": "redis://127.0.0.1:6379/0", "password": ""}
        if field == "store.password"
        else {"sentinel": {"master": "mymaster", "nodes": ["127.0.0.1:26379"], "password": ""}}
    )
    proc = write_config(tmp_path, "http://127.0.0.1:1", store=store)
    assert main(["check-config", str(proc.config)]) == 2
    assert capsys.readouterr().err.startswith(f"gateway: {field}: is empty (an ${{ENV}}")
