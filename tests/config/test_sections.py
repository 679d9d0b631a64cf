"""What the sections decide beyond one field's type: defaults kept, rules between fields, settings
built in code (the demo's), the loader's handles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from gateway.authz.policy import Policy
from gateway.config import AdminListener, ConfigError, Listener, Node, Settings, Upstream
from gateway.settings import MODEL, load_settings, parse_settings

BASE: dict[str, Any] = {"upstreams": {"live": {"url": "http://127.0.0.1:9000"}}}
MASTER = "A" * 43 + "="


def parse(**sections: Any) -> Settings:
    return parse_settings({**BASE, **sections}, base_dir=Path.cwd())


def test_a_wildcard_origin_is_allowed_without_credentials_only() -> None:
    anyone = parse(cors=[{"origins": ["*"]}]).cors[0]
    assert anyone.origins == frozenset({"*"}) and anyone.allow_credentials is False
    app = parse(cors=[{"origins": ["https://app.example.com"], "allow_credentials": True}])
    assert app.cors[0].allow_credentials is True
    with pytest.raises(ConfigError, match=r"^cors\[0\]\.origins: '\*' cannot be combined"):
        parse(cors=[{"origins": ["https://a.example", "*"], "allow_credentials": True}])


def test_null_and_empty_lists_keep_the_default() -> None:
    cors = parse(cors=[{"origins": ["*"], "methods": [], "headers": None}]).cors[0]
    assert cors.methods == ("GET",) and cors.headers == ("Authorization", "Content-Type")
    settings = parse(listen=None, admin={"port": None})
    assert (settings.listen.host, settings.listen.port) == ("0.0.0.0", 8080)
    assert (settings.admin.host, settings.admin.port) == ("127.0.0.1", 9090)


def test_placeholders_become_numbers_and_booleans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GW_PORT", "8181")
    monkeypatch.setenv("GW_FORWARD", "True")
    settings = parse(
        listen={"port": "${GW_PORT}"}, headers={"forward_authorization": "${GW_FORWARD}"}
    )
    assert settings.listen.port == 8181 and settings.forward_authorization is True


def test_upstreams_know_their_names_and_environments_follow_them() -> None:
    settings = parse(upstreams={"live": {"url": "http://a:1/"}, "sandbox": {"url": "https://b"}})
    assert {n: u.name for n, u in settings.upstreams.items()} == {
        "live": "live",
        "sandbox": "sandbox",
    }
    assert settings.upstreams["live"].url == URL("http://a:1")
    assert settings.environments == {"live": "live", "sandbox": "sandbox"}
    explicit = parse(upstreams={"prod": {"url": "http://a"}}, environments={"live": "prod"})
    assert explicit.environments == {"live": "prod"}  # no sandbox: its credentials get 503


def test_the_first_signing_key_is_active_unless_named(tmp_path: Path) -> None:
    for kid in ("k1", "k2"):
        (tmp_path / f"{kid}.pem").write_text("not checked here")
    keys = [{"kid": "k1", "file": "k1.pem"}, {"kid": "k2", "file": "k2.pem", "algorithm": "ES256"}]
    tokens = parse_settings({**BASE, "tokens": {"signing_keys": keys}}, base_dir=tmp_path).tokens
    assert tokens.active_kid == "k1"
    assert tokens.signing_keys[1].path == tmp_path / "k2.pem"  # relative to the config file
    named = {"signing_keys": keys, "active_kid": "k2"}
    assert parse_settings({**BASE, "tokens": named}, base_dir=tmp_path).tokens.active_kid == "k2"


def test_master_key_file_is_read_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "master.key").write_text(MASTER + "\n")
    config = tmp_path / "gw.yaml"
    config.write_text("upstreams: {live: {url: 'http://x'}}\nmaster_key_file: master.key\n")
    settings = load_settings(config)
    assert len(settings.master_key) == 32 and settings.source == config


def test_two_rules_on_one_route_name_the_later_rule() -> None:
    rule = {"methods": ["GET"], "paths": ["/v1/x"], "allow": ["api_key"]}
    with pytest.raises(ConfigError) as info:
        parse(policy={"routes": [{"id": "a", **rule}, {"id": "b", **rule}]})
    assert info.value.path == "policy.routes[1]"
    assert info.value.problem == "GET /v1/x is already covered by rule 'a'"
    with pytest.raises(ConfigError) as info:
        parse(policy={"routes": [{"id": "a", **rule}, {"id": "a", **rule}]})
    assert info.value.path == "policy.routes[1].id"


def test_a_policy_file_and_inline_routes_exclude_each_other(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("routes: []\n")
    doc = {**BASE, "policy": {"file": "p.yaml", "routes": []}}
    with pytest.raises(ConfigError, match=r"^policy\.routes: must not be empty"):
        parse_settings(doc, base_dir=tmp_path)
    route = {"id": "a", "methods": ["GET"], "paths": ["/x"], "allow": ["api_key"]}
    doc = {**BASE, "policy": {"file": "p.yaml", "routes": [route]}}
    with pytest.raises(ConfigError, match=r"^policy\.file: give policy\.file or policy\.routes"):
        parse_settings(doc, base_dir=tmp_path)


def test_settings_built_in_code_keep_their_values() -> None:
    upstream = Upstream(name="sandbox", url=URL("http://127.0.0.1:8081"))
    settings = MODEL(
        listen=Listener(host="127.0.0.1", port=18080),
        admin=AdminListener(port=19090),
        upstreams={"sandbox": upstream},
        environments={"sandbox": "sandbox"},
    )
    assert settings.upstreams["sandbox"] == upstream and settings.environments == {
        "sandbox": "sandbox"
    }
    assert settings.admin.host == "127.0.0.1" and settings.admin_token is None
    assert settings.section("policy", Policy).rules  # the shipped policy


def test_node_reads_one_duration_with_bounds() -> None:
    assert Node("90m", "--ttl").duration(minimum=1, maximum=86400) == 5400
    with pytest.raises(ConfigError, match=r"^--ttl: must be at most 1d, got 2d$"):
        Node("2d", "--ttl").duration(maximum=86400)
    with pytest.raises(ConfigError, match=r"^--ttl: must be at least 1s, got 500ms$"):
        Node("500ms", "--ttl").duration(minimum=1)
    assert type(Node("90m", "--ttl").duration()) is float
    with pytest.raises(ConfigError, match=r"^--ttl: must be a duration"):
        Node("soon", "--ttl").duration()


@pytest.mark.parametrize(
    ("sections", "error"),
    [
        ({"limits": {"body_timeout": "2h"}}, "limits.body_timeout: must be at most 1h, got 2h"),
        ({"limits": {"body_timeout": 7200}}, "limits.body_timeout: must be at most 1h, got 2h"),
        (
            {"limits": {"header_timeout": "0.5ms"}},
            "limits.header_timeout: must be at least 100ms, got 0.5ms",
        ),
        (
            {"api_keys": {"cache_ttl": "1500ms"}},
            "api_keys.cache_ttl: must be at most 1s, got 1.5s",
        ),
        (
            {"relationships": {"provider": "store", "positive_ttl": "5s"}},
            "relationships.positive_ttl: must be at most 1s with the store provider (the "
            "revocation bound), got 5s",
        ),
        # Not a duration: a plain number, shown as one.
        ({"limits": {"max_body_bytes": -1}}, "limits.max_body_bytes: must be at least 0, got -1"),
    ],
)
def test_a_duration_out_of_bounds_is_named_with_units(sections: Any, error: str) -> None:
    """The operator wrote ``2h`` or ``1500ms``; the error shows units, not 7200 or 1.5."""
    with pytest.raises(ConfigError) as caught:
        parse(**sections)
    assert str(caught.value) == error


def test_durations_are_plain_seconds_once_parsed() -> None:
    settings = parse(limits={"body_timeout": "90s"}, api_keys={"cache_ttl": "500ms"})
    assert settings.limits.body_timeout == 90.0 and type(settings.limits.body_timeout) is float
    assert type(settings.api_keys.cache_ttl) is float


@pytest.mark.parametrize("field", ["issuer", "audience"])
def test_a_token_claim_must_be_text_that_can_be_signed(field: str) -> None:
    # Any Unicode is a claim (written as UTF-8 in the token); a lone surrogate, which a YAML
    # escape or undecodable bytes in ${ENV} can make, is refused by name, not a 500 on every
    # token issued.
    assert getattr(parse(tokens={field: "Santé-Ω"}).tokens, field) == "Santé-Ω"
    with pytest.raises(ConfigError, match=rf"^tokens\.{field}: must be valid Unicode text"):
        parse(tokens={field: "gw\udce9"})


@pytest.mark.parametrize(
    ("sections", "error"),
    [
        (
            {"rate_limits": {"rules": [{"group": "defualt", "limit": 5, "period": "1s"}]}},
            "rate_limits.rules[0].group: no policy rule is in group 'defualt'",
        ),
        (
            {"cors": [{"origins": ["https://app.example.com"], "groups": ["user_dat"]}]},
            "cors[0].groups: no policy rule is in group 'user_dat'",
        ),
    ],
)
def test_a_group_no_route_is_in_is_a_config_error(sections: Any, error: str) -> None:
    """A misspelt group would leave its routes without the limit (or CORS), silently."""
    with pytest.raises(ConfigError) as caught:
        parse(**sections)
    assert str(caught.value).startswith(error), str(caught.value)
    assert "default" in str(caught.value)  # the groups there are, to pick from


def test_the_shipped_policys_groups_take_limits() -> None:
    parse(rate_limits={"rules": [{"group": "default", "limit": 5, "period": "1s"}]})


def test_decision_mode_needs_its_front_proxy_named() -> None:
    """No default: whichever proxy's headers a default read, behind another proxy a client
    could send them itself and name the request decided."""
    with pytest.raises(ConfigError) as caught:
        parse(decision={"enabled": True})
    assert str(caught.value).startswith("decision.proxy: is required with decision.enabled")
    assert parse(decision={"enabled": True, "proxy": "traefik"}).decision.proxy == "traefik"
    assert parse(decision={"enabled": False}).decision.proxy is None
