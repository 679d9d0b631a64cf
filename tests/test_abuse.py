"""Which address a request's failed authentications are counted for (``gateway.abuse``)."""

from __future__ import annotations

from ipaddress import ip_network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.abuse import client_address, parse_address

PROXIES = (ip_network("10.0.0.0/8"), ip_network("fd00::/8"))


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "expected"),
    [
        # Not behind a trusted proxy: the socket's address, whatever the headers say.
        ("203.0.113.7", ["198.51.100.1"], "203.0.113.7"),
        ("203.0.113.7", [], "203.0.113.7"),
        # Behind one: the right-most entry that is not a trusted proxy.
        ("10.0.0.2", ["198.51.100.1"], "198.51.100.1"),
        ("10.0.0.2", ["6.6.6.6, 198.51.100.1"], "198.51.100.1"),
        ("10.0.0.2", ["6.6.6.6, 198.51.100.1, 10.1.2.3"], "198.51.100.1"),
        ("10.0.0.2", ["6.6.6.6", "198.51.100.1, 10.1.2.3"], "198.51.100.1"),  # two header lines
        # Ports and brackets as proxies write them; IPv4-mapped IPv6 is IPv4.
        ("10.0.0.2", ["198.51.100.1:5678"], "198.51.100.1"),
        ("10.0.0.2", ["[2001:db8::1]:443"], "2001:db8::/64"),
        ("::ffff:10.0.0.2", ["::ffff:198.51.100.1"], "198.51.100.1"),
        # IPv6 clients are counted per /64.
        ("2001:db8:1:2:aaaa::1", [], "2001:db8:1:2::/64"),
        ("fd00::5", ["2001:db8:1:2:ffff::9, fd00::7"], "2001:db8:1:2::/64"),
        # Every hop trusted: the left-most one.
        ("10.0.0.2", ["10.9.9.9, 10.1.1.1"], "10.9.9.9"),
        # No header behind a proxy: the proxy itself.
        ("10.0.0.2", [], "10.0.0.2"),
        # Garbage where a trusted proxy should have written an address: the last trusted hop.
        ("10.0.0.2", ["198.51.100.1, not-an-ip"], "10.0.0.2"),
        ("10.0.0.2", ["198.51.100.1, not-an-ip, 10.3.3.3"], "10.3.3.3"),
        ("10.0.0.2", [""], "10.0.0.2"),
        # No usable peer at all (a Unix socket): one shared bucket.
        (None, ["198.51.100.1"], "unknown"),
        ("", [], "unknown"),
    ],
)
def test_client_address(peer: str | None, forwarded_for: list[str], expected: str) -> None:
    assert client_address(peer, forwarded_for, PROXIES) == expected


def test_without_trusted_proxies_the_header_is_never_read() -> None:
    assert client_address("10.0.0.2", ["198.51.100.1"], ()) == "10.0.0.2"


def test_ipv6_prefix_is_configurable() -> None:
    assert client_address("2001:db8::1", [], (), ipv6_prefix=128) == "2001:db8::1/128"
    assert client_address("2001:db8:1:2::1", [], (), ipv6_prefix=48) == "2001:db8:1::/48"


@pytest.mark.parametrize("text", ["", "x", "1.2.3", "1.2.3.4.5", "[::1", "::1::2", "1.2.3.4:x:y"])
def test_what_is_not_an_address(text: str) -> None:
    assert parse_address(text) is None


addresses = st.ip_addresses(v=4).map(str)


@given(spoofed=st.lists(st.one_of(addresses, st.text(max_size=20)), max_size=8), seen=addresses)
def test_what_a_client_writes_never_chooses_its_address(spoofed: list[str], seen: str) -> None:
    # A client may send any X-Forwarded-For; the trusted proxy appends the address it saw.
    # Whatever the client wrote to the left, the answer is what the proxy saw (unless the
    # client is itself inside the trusted network, which is the operator's to decide).
    if ip_network("10.0.0.0/8").overlaps(ip_network(seen)):
        return
    header = ", ".join([*(s.replace(",", "") for s in spoofed), seen])
    assert client_address("10.0.0.2", [header], PROXIES) == seen
