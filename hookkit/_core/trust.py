"""Which peers may speak for the client: gunicorn's ``forwarded_allow_ips``.

A proxy in front of gunicorn tells what it knows in headers (the client's
address in ``X-Forwarded-For`` or ``Forwarded``, the time it received the
request in ``X-Request-Start``). Anybody can send those headers, so they are
honoured only from the peers gunicorn itself trusts with them: the
addresses and CIDR networks of ``forwarded_allow_ips`` (default
``127.0.0.1,::1``, or ``$FORWARDED_ALLOW_IPS``), everyone with ``*``, and a
peer on a UNIX socket, which has no address and which gunicorn trusts
unconditionally.

gunicorn's own check (``_ip_in_allow_list`` in ``gunicorn/http/message.py``)
is private, and older releases compare strings only, so hookkit applies the
same rules here, for every worker class alike. Answers are cached per
address (parsing an address costs a microsecond or two, and a proxy is one
address sending many requests); the cache is bounded.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from typing import Any

DEFAULT_ALLOWED = "127.0.0.1,::1"  # gunicorn's default without $FORWARDED_ALLOW_IPS
_CACHE_LIMIT = 4096

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedPeers:
    """The peers allowed to set forwarding headers."""

    __slots__ = ("_cache", "everyone", "networks")

    def __init__(self, allowed: Iterable[str]) -> None:
        entries = [entry.strip() for entry in allowed if entry.strip()]
        self.everyone = "*" in entries
        # strict=False: gunicorn validates the setting; a host address with
        # a prefix (10.0.0.1/8) still means its network here.
        self.networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(entry, strict=False) for entry in entries if entry != "*"
        )
        self._cache: dict[str, bool] = {}

    @classmethod
    def from_config(cls, cfg: Any) -> TrustedPeers:
        """From gunicorn's config (a list once validated, or a string)."""
        value = getattr(cfg, "forwarded_allow_ips", None)
        if value is None:
            value = os.environ.get("FORWARDED_ALLOW_IPS", DEFAULT_ALLOWED)
        if isinstance(value, str):
            value = value.split(",")
        return cls(str(entry) for entry in value)

    def trusts(self, peer_addr: object) -> bool:
        """Whether the peer (gunicorn's ``req.peer_addr``, an ASGI
        ``client``) may set forwarding headers."""
        if self.everyone or not isinstance(peer_addr, tuple) or not peer_addr:
            return True  # a UNIX socket has no address: gunicorn trusts it
        return self.trusts_address(str(peer_addr[0]))

    def trusts_address(self, address: str) -> bool:
        """Whether ``address`` (text) is one of the trusted peers."""
        if self.everyone:
            return True
        known = self._cache.get(address)
        if known is not None:
            return known
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            trusted = False
        else:
            trusted = any(ip in network for network in self.networks)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[address] = trusted
        return trusted
