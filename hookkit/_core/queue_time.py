"""Queue time: how long a request waited before a worker took it.

A proxy in front of gunicorn stamps the time it received the request:

- nginx: ``proxy_set_header X-Request-Start "t=${msec}";`` (seconds with a
  millisecond fraction);
- Heroku's router: integer milliseconds;
- HAProxy: ``t=%Ts%ms`` (milliseconds);
- Apache's mod_headers: ``t=%t`` gives ``t=`` microseconds;
- or a bare number in any of these units.

The unit is told apart by magnitude, as New Relic's agents do: divided by
1e6, 1e3 and 1 in turn, the first result after 2000-01-01 is the time in
seconds. ``X-Request-Start`` wins over ``X-Queue-Start``; of a repeated
header the first value counts.

A value in the future (clock skew between the proxy and this machine) is
not observed, nor one older than an hour (a stuck clock, a replayed
request) or one that does not parse; each is counted by its reason, and
none ever fails a request. The header is honoured only from a peer gunicorn
trusts with forwarding headers (``hookkit._core.trust``): any client can
send it, and the proxy must overwrite it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

REQUEST_START = "X-REQUEST-START"
QUEUE_START = "X-QUEUE-START"
_REQUEST_START_BYTES = b"x-request-start"
_QUEUE_START_BYTES = b"x-queue-start"
MAX_AGE_SECONDS = 3600.0
_JAN_1_2000 = 946_684_800.0
_DIVISORS = (1e6, 1e3, 1.0)

# Why a header was not observed (``hookkit_queue_header_errors_total{reason}``).
NEGATIVE = "negative"
TOO_OLD = "too_old"
UNPARSABLE = "unparsable"
UNTRUSTED = "untrusted"
REASONS = (NEGATIVE, TOO_OLD, UNPARSABLE, UNTRUSTED)


def queue_header(req: Any) -> str | None:
    """The value to read from the request's headers: ``X-Request-Start``
    if present, else the first ``X-Queue-Start``.

    gunicorn's ASGI request keeps raw lower-case bytes (``headers_bytes``)
    and builds its str copy only when ``headers`` is read: scanning the
    bytes spares every request that copy."""
    raw = getattr(req, "headers_bytes", None)
    if raw is not None:
        return _from_bytes(raw)
    queue_start: str | None = None
    for name, value in req.headers:
        if name == REQUEST_START:
            return value  # type: ignore[no-any-return]
        if name == QUEUE_START and queue_start is None:
            queue_start = value
    return queue_start


def _from_bytes(raw: Iterable[tuple[bytes, bytes]]) -> str | None:
    queue_start: bytes | None = None
    for name, value in raw:
        if name == _REQUEST_START_BYTES:
            return value.decode("latin-1")
        if name == _QUEUE_START_BYTES and queue_start is None:
            queue_start = value
    return None if queue_start is None else queue_start.decode("latin-1")


def start_time(value: str) -> float | None:
    """The epoch seconds a header value names, or None if it does not parse."""
    text = value.strip()
    if text[:2] in ("t=", "T="):
        text = text[2:].strip()
    try:
        number = float(text)
    except ValueError:
        return None
    if not math.isfinite(number) or number <= 0:
        return None
    for divisor in _DIVISORS:
        seconds = number / divisor
        if seconds > _JAN_1_2000:
            return seconds
    return None


def queue_seconds(value: str, now: float) -> tuple[float | None, str | None]:
    """(seconds waited, None), or (None, the reason it is not observed),
    for a header value read at ``now`` (epoch seconds)."""
    started = start_time(value)
    if started is None:
        return None, UNPARSABLE
    waited = now - started
    if waited < 0:
        return None, NEGATIVE
    if waited > MAX_AGE_SECONDS:
        return None, TOO_OLD
    return waited, None
