"""The client's address: who sent the request, behind proxies too.

Without a proxy the client is the connection's peer. A proxy in front of
gunicorn is the peer instead, and tells who its own client was:

- in ``X-Forwarded-For``: a comma-separated list, each proxy appending the
  address it received the request from (``client, proxy1, proxy2``);
  repeated header lines are one list, in order;
- in RFC 7239's ``Forwarded``: one element per proxy, the address in its
  ``for=`` parameter (``for=192.0.2.60``, ``for="[2001:db8::1]:4711"``,
  ``for=unknown``, ``for=_hidden``);
- or, below HTTP, with the PROXY protocol (gunicorn's ``--proxy-protocol``,
  from the peers of ``proxy_allow_ips``): gunicorn puts the proxied
  connection's client in ``req.proxy_protocol_info``.

Anybody can send those headers, so they are read only from a peer gunicorn
trusts with them (``forwarded_allow_ips``, see ``hookkit._core.trust``), and
then as uvicorn's ``ProxyHeadersMiddleware`` reads them, so every worker
class gives the same answer: from the right, the first address that is not
itself trusted (each trusted proxy vouches for the hop to its left; the
first untrusted one is the client as far as anyone trustworthy knows). If
every hop is trusted, the leftmost. A hop's port is dropped, brackets and
quotes too. ``unknown``, an obfuscated identifier (``_hidden``), an empty
hop and one that cannot be an address (a stray quote, more than 253
characters) name no address and are passed over; other text (a host name)
is taken as it is, as uvicorn takes it.

Choices, and why:

- **X-Forwarded-For wins over Forwarded** when a request has both: it is
  what uvicorn reads (on UvicornWorker it has already replaced the peer by
  the time hookkit sees the request), and what nearly every proxy writes
  (nginx, HAProxy, Envoy, the cloud load balancers), while many of them
  pass a ``Forwarded`` header they do not write through untouched, so a
  client could choose it. Forwarded is read only without X-Forwarded-For.
- **At most 32 hops are read, from the right** (``MAX_HOPS``; unknown and
  empty hops count). Real chains are a few proxies long; a header of
  thousands of hops (gunicorn accepts 8 KiB per line, 100 lines) would
  otherwise cost a trust check per hop on every request. Past the cap the
  32nd hop from the right stands for the leftmost. uvicorn reads every hop;
  the two agree on any header of up to 32.
- **With the PROXY protocol**, the proxied client is the peer the headers
  are judged by: an L4 proxy does not touch HTTP headers, so a client's own
  ``X-Forwarded-For`` is honoured only if that client is itself a trusted
  proxy.
- **gunicorn's ASGI worker** puts no peer on its request object (the peer
  is in the ASGI scope and in the environ ``post_request`` gets): there
  ``client_address`` answers None, and ``client_address_from_environ``
  gives the answer once the request ends.

Nothing here raises on a malformed header: a hop that does not parse is
passed over. Without any forwarding header (the common case without a
proxy) the cost is one pass over the headers, or none when the caller
already made one (``headers``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hookkit._core.trust import TrustedPeers

MAX_HOPS = 32
MAX_PARAMETERS = 16  # of one Forwarded element (RFC 7239 defines four)
# The longest DNS name: a longer hop is no address (and is kept out of the
# trust cache).
MAX_NODE_LENGTH = 253

X_FORWARDED_FOR = "X-FORWARDED-FOR"
FORWARDED = "FORWARDED"
_X_FORWARDED_FOR_BYTES = b"x-forwarded-for"
_FORWARDED_BYTES = b"forwarded"

_ABSENT = object()

Headers = tuple[Sequence[str] | None, Sequence[str] | None]


def client_address(req: Any, trusted: TrustedPeers, headers: Headers | None = None) -> str | None:
    """The client's address for gunicorn's request ``req`` (or hookkit's
    ASGI stand-in), by the rules above; None when it has none (a UNIX
    socket without forwarding headers) or when the request does not say
    who its peer is (gunicorn's ASGI worker: see ``client_address_from_environ``).

    ``headers``: the ``X-Forwarded-For`` and ``Forwarded`` values, in order
    (None for a header the request lacks), when the caller already read the
    headers; otherwise they are read here, in one pass."""
    peer = getattr(req, "peer_addr", _ABSENT)
    if peer is _ABSENT:
        return None
    xff, forwarded = forwarding_headers(req) if headers is None else headers
    proxied = getattr(req, "proxy_protocol_info", None)
    if not (xff or forwarded or proxied):
        return str(peer[0]) if isinstance(peer, tuple) and peer else None
    return resolve(peer, proxied, xff, forwarded, trusted)


def client_address_from_environ(environ: object, trusted: TrustedPeers) -> str | None:
    """The client's address from the environ gunicorn hands ``post_request``:
    ``REMOTE_ADDR`` is the peer (the PROXY protocol's client when there is
    one; empty, or ``-`` on the ASGI worker, for a UNIX socket), and the
    headers are its ``HTTP_*`` keys. On gunicorn's ASGI worker a repeated
    header there keeps its last line only. None without ``REMOTE_ADDR``."""
    if not isinstance(environ, Mapping):
        return None
    remote = environ.get("REMOTE_ADDR")
    if not isinstance(remote, str):
        return None
    peer: object = (remote,) if remote and remote != "-" else ""
    xff = environ.get("HTTP_X_FORWARDED_FOR")
    forwarded = environ.get("HTTP_FORWARDED")
    if not (xff or forwarded):
        return remote if peer else None
    return resolve(
        peer,
        None,
        [xff] if isinstance(xff, str) else None,
        [forwarded] if isinstance(forwarded, str) else None,
        trusted,
    )


def forwarding_headers(req: Any) -> Headers:
    """``req``'s ``X-Forwarded-For`` and ``Forwarded`` values, in order,
    None for a header it lacks: one pass over the headers (gunicorn's ASGI
    request's raw lower-case bytes when it has them: reading its
    ``headers`` would build a str copy of them all)."""
    xff: list[str] | None = None
    forwarded: list[str] | None = None
    raw = getattr(req, "headers_bytes", None)
    if raw is not None:
        for name, value in raw:
            if name == _X_FORWARDED_FOR_BYTES:
                xff = xff or []
                xff.append(_text(value))
            elif name == _FORWARDED_BYTES:
                forwarded = forwarded or []
                forwarded.append(_text(value))
        return xff, forwarded
    for name, value in getattr(req, "headers", None) or ():
        if name == X_FORWARDED_FOR:
            xff = xff or []
            xff.append(value)
        elif name == FORWARDED:
            forwarded = forwarded or []
            forwarded.append(value)
    return xff, forwarded


def resolve(
    peer: object,
    proxied: object,
    xff: Sequence[str] | None,
    forwarded: Sequence[str] | None,
    trusted: TrustedPeers,
) -> str | None:
    """The client, from the peer (``peer_addr``: a tuple, or something else
    for a UNIX socket), gunicorn's PROXY protocol info, and the forwarding
    headers' values."""
    client = proxied.get("client_addr") if isinstance(proxied, Mapping) else None
    if isinstance(client, str) and client:
        address: str | None = client
        peer_trusted = trusted.trusts_address(client)
    else:
        address = str(peer[0]) if isinstance(peer, tuple) and peer else None
        peer_trusted = trusted.trusts(peer)
    if not peer_trusted:
        return address
    try:
        if xff:
            found = rightmost_untrusted(_hops(xff), trusted)
        elif forwarded:
            found = rightmost_untrusted(_forwarded_hops(forwarded), trusted)
        else:
            found = None
    except Exception:  # a header hookkit cannot read never fails a request
        found = None
    return found if found is not None else address


def rightmost_untrusted(hops: Iterable[str], trusted: TrustedPeers) -> str | None:
    """Of ``hops`` (raw, from the right), the first address that is not
    trusted; else the last address seen (the leftmost); None when no hop
    names an address. At most ``MAX_HOPS`` hops are read."""
    leftmost: str | None = None
    for count, hop in enumerate(hops, 1):
        host = node_address(hop)
        if host is not None:
            if not trusted.trusts_address(host):
                return host
            leftmost = host
        if count >= MAX_HOPS:
            break
    return leftmost


def node_address(hop: str) -> str | None:
    """The address a hop names, without port, brackets or quotes; None for
    ``unknown``, an obfuscated identifier (``_hidden``), an empty hop, one
    with a stray quote or one longer than a DNS name."""
    text = hop.strip()
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        text = text[1:-1].replace("\\", "").strip()
    if not text or len(text) > MAX_NODE_LENGTH or text[0] == "_" or '"' in text:
        return None  # a stray quote: a quoted string cut by a comma
    if text[0] == "[":  # [v6] or [v6]:port
        end = text.find("]")
        text = text[1:end].strip() if end != -1 else ""
    elif text.count(":") == 1:  # v4:port or name:port; a bare v6 has more
        text = text.partition(":")[0].strip()
    if not text or text.lower() == "unknown" or text[0] == "_":
        return None
    return text


def _hops(values: Sequence[str]) -> Iterable[str]:
    """The hops of X-Forwarded-For header lines, from the right; each line
    split from its right end, no further than ``MAX_HOPS`` hops."""
    for value in reversed(values):
        yield from reversed(value.rsplit(",", MAX_HOPS))


def _forwarded_hops(values: Sequence[str]) -> Iterable[str]:
    """The ``for=`` values of Forwarded header lines' elements, from the
    right ("" for an element without one)."""
    for value in reversed(values):
        for element in _elements(value):
            yield _for_value(element)


def _elements(value: str) -> Iterable[str]:
    """A Forwarded line's elements, from the right: split at commas outside
    quoted strings, no further than ``MAX_HOPS`` elements."""
    pieces = value.rsplit(",", MAX_HOPS)
    while pieces:
        element = pieces.pop()
        # A quoted string with a comma in it: its quotes do not pair up
        # until the pieces to its left join it.
        odd = _odd_quotes(element)
        while pieces and odd:
            piece = pieces.pop()
            odd ^= _odd_quotes(piece)
            element = f"{piece},{element}"
        yield element


def _for_value(element: str) -> str:
    """The value of an element's ``for`` parameter ("" without one): the
    element split at semicolons outside quoted strings, no further than
    ``MAX_PARAMETERS`` parameters. str methods only: linear in the
    element's length, however hostile (a regular expression over the
    parameters backtracks quadratically on a long run without "=")."""
    pair, odd = "", False
    for piece in element.split(";", MAX_PARAMETERS):
        pair = f"{pair};{piece}" if odd else piece
        odd ^= _odd_quotes(piece)
        if not odd:
            name, equals, value = pair.partition("=")
            if equals and name.strip().lower() == "for":
                return value
    return ""


def _odd_quotes(text: str) -> bool:
    """Whether ``text`` opens (or closes) a quoted string it does not close."""
    return (text.count('"') - text.count('\\"')) % 2 == 1


def _text(value: object) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)
