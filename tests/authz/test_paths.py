from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.authz.paths import split_path
from gateway.errors import InvalidRequest

ACCEPTED = [
    ("/", ()),
    ("/v1/users/usr_abc123/scores", ("v1", "users", "usr_abc123", "scores")),
    ("/v1/users/usr%5Fabc/scores", ("v1", "users", "usr_abc", "scores")),
    ("/v1/users/%E2%9C%93", ("v1", "users", "\u2713")),
    ("/v1/a:b@c", ("v1", "a:b@c")),
]

REFUSED = [
    "/v1/users/usr_abc123/../usr_other/scores",
    "/v1/users/./usr_abc123/scores",
    "/v1/users/usr_abc123/..",
    "/v1/users//usr_abc123/scores",
    "/v1/users/usr_abc123/scores/",
    "/v1/users/usr_abc123%2Fscores",
    "/v1/users/usr_abc123%2fscores",
    "/v1/users/%2e%2e/admin",
    "/v1/users/%2E%2E/admin",
    "/v1/users/.%2e/admin",
    "/v1/users/usr_abc123;jsessionid=1/scores",
    "/v1/users/usr_abc123%3Bx/scores",
    "/v1/users\\usr_abc123\\scores",
    "/v1/users/%5c..%5cadmin",
    "/v1/users/%252e%252e/admin",
    "/v1/users/%00/scores",
    "/v1/users/%0d%0a/scores",
    "/v1/users/usr abc/scores",
    "/v1/users/%zz/scores",
    "http://evil.example/v1/users",
    "*",
    "v1/users",
    "/v1/users/usr\u00e9",
    "/" + "a/" * 2000,
]


@pytest.mark.parametrize(("raw", "segments"), ACCEPTED)
def test_canonical_paths_are_split_and_decoded(raw: str, segments: tuple[str, ...]) -> None:
    assert split_path(raw) == segments


@pytest.mark.parametrize("raw", REFUSED)
def test_ambiguous_paths_are_refused(raw: str) -> None:
    with pytest.raises(InvalidRequest):
        split_path(raw)


@given(st.text(max_size=80))
def test_no_accepted_path_has_a_structural_segment(raw: str) -> None:
    try:
        segments = split_path("/" + raw)
    except InvalidRequest:
        return
    for segment in segments:
        assert segment not in ("", ".", "..")
        assert "/" not in segment and "\\" not in segment and ";" not in segment
        assert "%" not in segment
        assert all(ord(c) >= 0x20 and ord(c) != 0x7F for c in segment)
