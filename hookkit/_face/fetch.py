"""Reading a JSON document from hookkit's master endpoint, for the CLI
(``hookkit stacks``, ``hookkit top``).

One small helper, so that every command says the same thing on the same
failure: a refused connection names the URL and the setting that opens the
endpoint, a 401 says whether credentials were missing or wrong, a 403 quotes
the server's reason (``/stacks.json`` refuses on a public bind without basic
auth, and says so in its body).

Proxies from the environment (``http_proxy``, ``https_proxy``) are ignored on
purpose: the endpoint is the master's own, usually on loopback, and a basic
auth header must not go to a proxy the user did not name.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import urllib.error
import urllib.request
from typing import Any

# The most a command reads: /stacks.json is bounded to 1 MiB per worker.
MAX_BODY = 256 * 1024 * 1024


class FetchError(Exception):
    """A fetch failed; ``str(error)`` is a sentence for the user.
    ``status`` is the HTTP status when the server answered, else None."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def fetch_json(
    url: str,
    user: str | None = None,
    password: str | None = None,
    cacert: str | None = None,
    timeout: float = 5,
) -> Any:
    """GET ``url`` and decode its JSON body.

    ``user`` and ``password``: HTTP basic auth (sent on the first request,
    not after a 401 challenge). ``cacert``: a PEM file of the CA that signed
    the server's certificate (``https://`` only; the system's CAs otherwise).
    Raises ``FetchError`` with a message for the user on any failure.
    """
    if not url.startswith(("http://", "https://")):
        raise FetchError(f"{url}: not an http:// or https:// URL")
    if cacert is not None and not url.startswith("https://"):
        raise FetchError(f"--cacert given, but {url} is not an https:// URL")
    headers = {"Accept": "application/json"}
    if user is not None:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode("ascii")
        headers["Authorization"] = f"Basic {token}"
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if url.startswith("https://"):
        try:
            context = ssl.create_default_context(cafile=cacert)
        except (OSError, ssl.SSLError) as exc:
            raise FetchError(f"cannot read the CA file {cacert}: {exc}") from None
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(url, headers=headers, method="GET")
    try:
        with opener.open(request, timeout=timeout) as response:
            body = response.read(MAX_BODY + 1)
    except urllib.error.HTTPError as exc:
        raise _http_error(url, exc, user is not None) from None
    except urllib.error.URLError as exc:
        raise _connection_error(url, exc.reason) from None
    except TimeoutError:
        raise FetchError(f"{url}: no answer within {timeout:g} s") from None
    except (OSError, ValueError) as exc:  # a reset connection, a malformed URL
        raise FetchError(f"{url}: {exc}") from None
    if len(body) > MAX_BODY:
        raise FetchError(f"{url}: the answer is larger than {MAX_BODY // 2**20} MiB")
    try:
        return json.loads(body)
    except ValueError:
        raise FetchError(f"{url}: the answer is not JSON (is this hookkit's endpoint?)") from None


def _reason(exc: urllib.error.HTTPError) -> str:
    """The first line of the server's error body, if it has one."""
    try:
        text = exc.read(2048).decode("utf-8", "replace").strip()
    except Exception:
        return ""
    if text.startswith("{"):
        try:
            decoded = json.loads(text)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            text = str(decoded.get("error") or decoded.get("message") or text)
    return text.splitlines()[0] if text else ""


def _http_error(url: str, exc: urllib.error.HTTPError, sent_credentials: bool) -> FetchError:
    reason = _reason(exc)
    said = f" (the server says: {reason})" if reason else ""
    if exc.code == 401:
        if sent_credentials:
            return FetchError(f"{url}: 401, the user or password was refused{said}", 401)
        return FetchError(
            f"{url}: 401, the endpoint asks for basic auth: give --user"
            " (and --password-env NAME, or type the password at the prompt)",
            401,
        )
    if exc.code == 403:
        return FetchError(f"{url}: 403, refused{said}", 403)
    if exc.code == 404:
        return FetchError(f"{url}: 404, not served here (an older hookkit?){said}", 404)
    return FetchError(f"{url}: HTTP {exc.code}{said}", exc.code)


def _connection_error(url: str, reason: object) -> FetchError:
    if isinstance(reason, ConnectionRefusedError):
        return FetchError(
            f"{url}: connection refused; is gunicorn running with hookkit, and is the"
            " endpoint at this address (HOOKKIT_METRICS_BIND)?"
        )
    if isinstance(reason, ssl.SSLCertVerificationError):
        return FetchError(
            f"{url}: the server's certificate was not trusted ({reason.verify_message});"
            " give its CA with --cacert"
        )
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return FetchError(f"{url}: no answer in time")
    if isinstance(reason, ssl.SSLError):
        return FetchError(f"{url}: TLS failed: {reason}")
    return FetchError(f"{url}: cannot connect: {reason}")
