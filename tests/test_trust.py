"""hookkit._core.trust: the peers allowed to set forwarding headers, by
gunicorn's ``forwarded_allow_ips`` rules."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hookkit._core.trust import TrustedPeers


@pytest.mark.parametrize(
    ("allowed", "peer", "expected"),
    [
        ("127.0.0.1,::1", ("127.0.0.1", 5000), True),
        ("127.0.0.1,::1", ("::1", 5000, 0, 0), True),
        ("127.0.0.1,::1", ("10.0.0.7", 5000), False),
        ("10.0.0.0/8", ("10.200.3.4", 1), True),
        ("10.0.0.0/8", ("11.0.0.1", 1), False),
        ("fd00::/8", ("fd12::9", 1, 0, 0), True),
        ("192.168.1.5", ("192.168.1.50", 1), False),
        ("*", ("203.0.113.9", 1), True),
        ("127.0.0.1", "/run/gunicorn.sock", True),  # a UNIX socket: no address
        ("127.0.0.1", None, True),
        ("127.0.0.1", ("not-an-address", 1), False),
    ],
)
def test_the_rules_of_forwarded_allow_ips(allowed: str, peer: object, expected: bool) -> None:
    assert expected == TrustedPeers(allowed.split(",")).trusts(peer)


def test_from_gunicorns_validated_list_or_a_string() -> None:
    as_list = TrustedPeers.from_config(SimpleNamespace(forwarded_allow_ips=["10.0.0.0/8"]))
    as_text = TrustedPeers.from_config(SimpleNamespace(forwarded_allow_ips="10.0.0.1, 10.0.0.2"))
    assert (True, False) == (as_list.trusts(("10.1.1.1", 1)), as_list.trusts(("127.0.0.1", 1)))
    assert (True, False) == (as_text.trusts(("10.0.0.2", 1)), as_text.trusts(("10.0.0.3", 1)))


def test_without_a_config_gunicorns_default_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    default = TrustedPeers.from_config(None)
    assert (True, True, False) == (
        default.trusts(("127.0.0.1", 1)),
        default.trusts(("::1", 1)),
        default.trusts(("10.0.0.1", 1)),
    )
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.1")
    assert TrustedPeers.from_config(None).trusts(("10.0.0.1", 1))


def test_the_answers_are_cached_within_a_bound() -> None:
    peers = TrustedPeers(["10.0.0.0/8"])
    for n in range(10_000):
        peers.trusts((f"10.{n // 65536}.{n // 256 % 256}.{n % 256}", 1))
    assert 0 < len(peers._cache) <= 4096
