"""The Prometheus exporter-toolkit web configuration file for /metrics.

One module on purpose (some 575 lines): it is a self-contained port of
exporter-toolkit's reading of that file, kept whole so that it can be read
side by side with exporter-toolkit's own code and docs.

``HOOKKIT_METRICS_WEB_CONFIG`` names a YAML file in the format Prometheus
exporters take with ``--web.config.file`` (exporter-toolkit's
docs/web-configuration.md): TLS for the endpoint, and users who may scrape it
with HTTP basic auth and a bcrypt-hashed password. The file is read and
checked once, at start-up, certificates and keys included, so a bad file stops
gunicorn with one message that names the setting, the file and the problem.

Read as exporter-toolkit reads it:

- Keys are strict at every level: an unknown or repeated key is an error.
- Relative ``cert_file``, ``key_file`` and ``client_ca_file`` are relative to
  the web config file's directory (made absolute at load, so a later
  ``chdir`` such as gunicorn's ``--chdir`` does not break them).
- ``min_version``/``max_version`` take TLS10..TLS13 (default TLS12..TLS13);
  ``prefer_server_cipher_suites`` (default true) is applied.
- ``client_ca_file`` or inline ``client_ca`` with ``NoClientCert`` is an error.
- ``http_server_config.headers`` is validated (only the five headers
  exporter-toolkit allows, with its enumerated values) and applied: the caller
  sets ``WebConfig.headers`` on every response. ``http2`` is accepted and has
  no effect: the endpoint speaks HTTP/1.1, as exporter-toolkit does with
  ``http2: false``.

Where Python's ``ssl`` module differs from Go's ``crypto/tls``:

- It cannot require a client certificate without verifying it, so
  ``RequireAnyClientCert`` (and its old name ``RequireClientCert``) verifies
  like ``RequireAndVerifyClientCert``: stricter, never looser. Every mode that
  verifies needs ``client_ca_file`` or ``client_ca``.
- It cannot ask for a client certificate without verifying one that is sent,
  so ``RequestClientCert`` asks for none; the certificate would never be
  looked at, so this is the same access as ``NoClientCert``.

Refused as not supported, rather than silently ignored, because each one
would otherwise leave the endpoint less locked down than its file says:
inline ``cert``/``key`` (``ssl`` loads a certificate chain only from files),
``cipher_suites`` and ``curve_preferences`` (Go names), ``client_allowed_sans``
and ``rate_limit``. An empty value for any of them is accepted, as it means
the default.

A tls_server_config with anything in it needs ``cert_file`` and ``key_file``:
exporter-toolkit would serve plain HTTP for some such files, which is never
what their author meant.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import hmac
import os
import re
import secrets
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import yaml

from hookkit._core.settings import ConfigError

SETTING = "HOOKKIT_METRICS_WEB_CONFIG"

# Successful checks remembered per WebConfig; exporter-toolkit keeps 100.
AUTH_CACHE_SIZE = 100

_TOP_LEVEL = frozenset(
    {"tls_server_config", "http_server_config", "basic_auth_users", "rate_limit"}
)
_TLS_KEYS = frozenset(
    {
        "cert_file",
        "key_file",
        "client_ca_file",
        "client_ca",
        "client_auth_type",
        "min_version",
        "max_version",
        "prefer_server_cipher_suites",
    }
)
_HTTP_KEYS = frozenset({"http2", "headers"})
_UNSUPPORTED_TLS = {
    "cert": "an inline certificate is not supported (Python's ssl loads one only "
    "from a file): use cert_file",
    "key": "an inline key is not supported (Python's ssl loads one only from a file): use key_file",
    "cipher_suites": "cipher_suites is not supported by hookkit: remove it to use "
    "OpenSSL's default suites",
    "curve_preferences": "curve_preferences is not supported by hookkit: remove it to use "
    "OpenSSL's default curves",
    "client_allowed_sans": "client_allowed_sans is not supported by hookkit: restrict "
    "clients with client_ca_file instead",
}

TLS_VERSIONS: Mapping[str, ssl.TLSVersion] = MappingProxyType(
    {
        "TLS10": ssl.TLSVersion.TLSv1,
        "TLS11": ssl.TLSVersion.TLSv1_1,
        "TLS12": ssl.TLSVersion.TLSv1_2,
        "TLS13": ssl.TLSVersion.TLSv1_3,
    }
)

CLIENT_AUTH_TYPES: Mapping[str, ssl.VerifyMode] = MappingProxyType(
    {
        "NoClientCert": ssl.CERT_NONE,
        # Go asks for a certificate and never checks it; nothing reads it, so
        # not asking gives the same access (see the module docstring).
        "RequestClientCert": ssl.CERT_NONE,
        # ssl cannot require a certificate without verifying it: stricter.
        "RequireAnyClientCert": ssl.CERT_REQUIRED,
        "RequireClientCert": ssl.CERT_REQUIRED,  # exporter-toolkit's old name
        "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
        "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
    }
)

# The headers exporter-toolkit lets a web config set, each with its accepted
# values (empty: any value).
ALLOWED_HEADERS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "Strict-Transport-Security": (),
        "X-Content-Type-Options": ("nosniff",),
        "X-Frame-Options": ("deny", "sameorigin"),
        "X-XSS-Protection": (),
        "Content-Security-Policy": (),
    }
)

# The hash formats golang.org/x/crypto/bcrypt and the bcrypt package share
# (htpasswd writes $2y$), with Go's cost range.
_BCRYPT_HASH = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")
_BCRYPT_COSTS = range(4, 32)

# YAML 1.1 booleans, as Go's yaml.v2 reads them into a bool.
_TRUE = frozenset({"y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"})
_FALSE = frozenset({"n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"})
_NULL = frozenset({"", "~", "null", "Null", "NULL"})


class WebConfigError(ConfigError):
    """The web config file named by HOOKKIT_METRICS_WEB_CONFIG cannot be used."""


@dataclass(frozen=True)
class TLSConfig:
    """``tls_server_config``, with file paths made absolute."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None
    client_ca: str | None = None  # inline PEM
    client_auth_type: str = "NoClientCert"
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    prefer_server_cipher_suites: bool = True


class _AuthCache:
    """Successful (user, password) checks, as keyed MACs, newest last.

    Only successes are kept: remembering failures would let anyone push the
    real users' entries out by sending wrong passwords. The key is an HMAC
    under a random secret of this config's own, so neither the password nor a plain,
    fast hash of it (open to offline guessing) is ever stored.
    """

    def __init__(self, size: int = AUTH_CACHE_SIZE) -> None:
        self._size = size
        self._secret = secrets.token_bytes(32)
        self._entries: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self._lock = threading.Lock()

    def key(self, user: bytes, password: bytes) -> bytes:
        """The entry for ``user`` and ``password`` (length-prefixed, so no
        two pairs share a message)."""
        message = len(user).to_bytes(8, "big") + user + password
        return hmac.new(self._secret, message, hashlib.sha256).digest()

    def __contains__(self, key: bytes) -> bool:
        with self._lock:
            if key not in self._entries:
                return False
            self._entries.move_to_end(key)
            return True

    def add(self, key: bytes) -> None:
        with self._lock:
            self._entries[key] = None
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


@dataclass(frozen=True)
class WebConfig:
    """A loaded web config: TLS, basic-auth users and extra response headers."""

    tls: TLSConfig | None
    basic_auth_users: Mapping[str, bytes]  # user -> bcrypt hash
    headers: Mapping[str, str] = field(default_factory=dict)
    path: str | None = None  # the file it was read from
    _cache: _AuthCache = field(default_factory=_AuthCache, init=False, repr=False, compare=False)

    def ssl_context(self) -> ssl.SSLContext | None:
        """A new server-side context with the certificate chain loaded and
        client certificates asked for as configured; None without TLS.

        Files are read on every call, so calling it again picks up renewed
        certificates. Raises WebConfigError if they can no longer be read.
        """
        if self.tls is None:
            return None
        try:
            return _build_context(self.tls)
        except _Problem as exc:
            raise _error(self.path, str(exc)) from None

    def authorized(self, authorization_header: str | None) -> bool:
        """Whether a request with this ``Authorization`` header may proceed:
        always with no users configured, else only with ``Basic`` credentials
        of a configured user whose password matches the bcrypt hash."""
        if not self.basic_auth_users:
            return True
        credentials = _parse_basic(authorization_header)
        if credentials is None:
            return False
        user, password = credentials
        key = self._cache.key(user, password)
        if key in self._cache:
            return True
        name = _text(user)
        hashed = self.basic_auth_users.get(name) if name is not None else None
        known = hashed is not None
        if hashed is None:
            # An unknown user still costs one bcrypt check, at a configured
            # user's cost, so response times do not tell which users exist.
            hashed = next(iter(self.basic_auth_users.values()))
        import bcrypt  # here: only a server with basic auth users pays for its import

        try:
            # checkpw compares in constant time.
            matches = bcrypt.checkpw(password, hashed)
        except ValueError:  # longer than bcrypt's 72 bytes: never a match
            matches = False
        if known and matches:
            self._cache.add(key)
            return True
        return False


def load_web_config(path: str | None) -> WebConfig:
    """Read and check the web config file at ``path``; None means no file:
    no TLS and no authentication.

    Raises WebConfigError for a file that cannot be read or used.
    """
    if path is None:
        return WebConfig(tls=None, basic_auth_users={})
    try:
        return _load(path)
    except _Problem as exc:
        raise _error(path, str(exc)) from None


class _Problem(Exception):
    """What is wrong with the file; turned into a WebConfigError naming the
    setting and the file once, at the edge."""


def _error(path: str | None, problem: str) -> WebConfigError:
    return WebConfigError(f"{SETTING}={path!r} is not valid: {problem}")


class _StrictLoader(yaml.BaseLoader):
    """YAML with every scalar left a string (as Go decodes into string
    fields: user ``no`` stays "no", cost ``010`` stays "010") and repeated
    keys refused (Go's strict decoding refuses them)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be a plain string", key_node.start_mark
            )
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"{key!r} is repeated", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _load(path: str) -> WebConfig:
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise _Problem(f"the file cannot be read: {exc}") from None
    try:
        # A BaseLoader: it builds only strings, lists and dicts, never objects.
        document = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise _Problem(f"the file is not valid YAML: {_yaml_problem(exc)}") from None
    top = _mapping(document, "the file")
    _refuse_unknown(top, _TOP_LEVEL, "")
    _refuse_rate_limit(top.get("rate_limit"))
    directory = os.path.dirname(os.path.abspath(path))
    tls = _tls_config(_mapping(top.get("tls_server_config"), "tls_server_config"), directory)
    headers = _headers(_mapping(top.get("http_server_config"), "http_server_config"))
    users = _users(_mapping(top.get("basic_auth_users"), "basic_auth_users"))
    if tls is not None:
        _build_context(tls)  # fail at start-up, not at the first scrape
    return WebConfig(
        tls=tls,
        basic_auth_users=MappingProxyType(users),
        headers=MappingProxyType(headers),
        path=path,
    )


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's error on one line, with the line and column in the file."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return str(exc)
    mark = exc.problem_mark
    context = f" ({exc.context})" if exc.context else ""
    return f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}{context}"


def _mapping(value: object, where: str) -> dict[str, object]:
    if _is_null(value):
        return {}
    if not isinstance(value, dict):
        raise _Problem(f"{where} must be a mapping of keys to values")
    return value


def _is_null(value: object) -> bool:
    return value is None or (isinstance(value, str) and value in _NULL)


def _is_empty(value: object) -> bool:
    """Null, or an empty list or mapping: the default, in Go's decoding."""
    return _is_null(value) or value in ([], {})


def _refuse_unknown(section: Mapping[str, object], known: frozenset[str], where: str) -> None:
    for key in section:
        if key not in known:
            raise _Problem(f"{where}{key} is not a known key (known: {', '.join(sorted(known))})")


def _refuse_rate_limit(value: object) -> None:
    section = _mapping(value, "rate_limit")
    _refuse_unknown(section, frozenset({"interval", "burst"}), "rate_limit.")
    # An interval of zero is exporter-toolkit's "no rate limit".
    if not _is_null(section.get("interval")) and section.get("interval") not in ("0", "0s"):
        raise _Problem("rate_limit is not supported by hookkit: remove it")


def _string(section: Mapping[str, object], key: str, where: str) -> str | None:
    value = section.get(key)
    if _is_null(value):
        return None
    if not isinstance(value, str):
        raise _Problem(f"{where}{key} must be a string")
    return value


def _bool(section: Mapping[str, object], key: str, where: str, default: bool) -> bool:
    value = _string(section, key, where)
    if value is None:
        return default
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise _Problem(f"{where}{key}={value!r} is not a boolean (expected true or false)")


def _tls_config(section: Mapping[str, object], directory: str) -> TLSConfig | None:
    where = "tls_server_config."
    _refuse_unknown(section, _TLS_KEYS | frozenset(_UNSUPPORTED_TLS), where)
    for key, why in _UNSUPPORTED_TLS.items():
        if not _is_empty(section.get(key)):
            raise _Problem(f"{where}{key}: {why}")
    if all(_is_empty(value) for value in section.values()):
        return None

    def path(key: str) -> str | None:
        value = _string(section, key, where)
        # As exporter-toolkit: relative to the web config file's directory,
        # and cleaned as Go's filepath.Join cleans it.
        return None if value is None else os.path.normpath(os.path.join(directory, value))

    cert_file, key_file = path("cert_file"), path("key_file")
    if cert_file is None:
        raise _Problem(f"{where}cert_file is missing (TLS needs cert_file and key_file)")
    if key_file is None:
        raise _Problem(f"{where}key_file is missing (TLS needs cert_file and key_file)")
    client_ca_file, client_ca = path("client_ca_file"), _string(section, "client_ca", where)
    if client_ca_file is not None and client_ca is not None:
        raise _Problem(f"{where}client_ca_file and client_ca are both set: keep one")
    auth = _string(section, "client_auth_type", where) or "NoClientCert"
    if auth not in CLIENT_AUTH_TYPES:
        raise _Problem(
            f"{where}client_auth_type={auth!r} is not known; expected one of "
            + ", ".join(CLIENT_AUTH_TYPES)
        )
    has_ca = client_ca_file is not None or client_ca is not None
    if has_ca and auth == "NoClientCert":
        raise _Problem(
            f"{where}client_ca_file or client_ca is set with client_auth_type NoClientCert: "
            "set client_auth_type (RequireAndVerifyClientCert to require client certificates)"
        )
    if not has_ca and CLIENT_AUTH_TYPES[auth] != ssl.CERT_NONE:
        raise _Problem(
            f"{where}client_auth_type {auth} verifies client certificates and needs "
            "client_ca_file (or client_ca)"
        )
    versions = {}
    for key, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        version = _string(section, key, where) or default
        if version not in TLS_VERSIONS:
            raise _Problem(
                f"{where}{key}={version!r} is not known; expected one of " + ", ".join(TLS_VERSIONS)
            )
        versions[key] = version
    if TLS_VERSIONS[versions["min_version"]] > TLS_VERSIONS[versions["max_version"]]:
        raise _Problem(
            f"{where}min_version {versions['min_version']} is above "
            f"max_version {versions['max_version']}"
        )
    return TLSConfig(
        cert_file=cert_file,
        key_file=key_file,
        client_ca_file=client_ca_file,
        client_ca=client_ca,
        client_auth_type=auth,
        min_version=versions["min_version"],
        max_version=versions["max_version"],
        prefer_server_cipher_suites=_bool(section, "prefer_server_cipher_suites", where, True),
    )


def _headers(section: Mapping[str, object]) -> dict[str, str]:
    where = "http_server_config."
    _refuse_unknown(section, _HTTP_KEYS, where)
    _bool(section, "http2", where, True)  # checked, then unused: HTTP/1.1 only
    headers: dict[str, str] = {}
    for name, value in _mapping(section.get("headers"), where + "headers").items():
        if name not in ALLOWED_HEADERS:
            raise _Problem(
                f"{where}headers: {name!r} cannot be set; allowed headers: "
                + ", ".join(ALLOWED_HEADERS)
            )
        if _is_null(value):
            continue  # blank means unset
        if not isinstance(value, str):
            raise _Problem(f"{where}headers.{name} must be a string")
        text = value
        accepted = ALLOWED_HEADERS[name]
        if accepted and text not in accepted:
            raise _Problem(
                f"{where}headers.{name}={text!r} is not accepted; expected one of "
                + ", ".join(accepted)
            )
        headers[name] = text
    return headers


def _users(section: Mapping[str, object]) -> dict[str, bytes]:
    users: dict[str, bytes] = {}
    for user, hashed in section.items():
        # Never echo the value: it is a password hash, or a mistyped password.
        if not isinstance(hashed, str):
            raise _Problem(f"basic_auth_users.{user} must be a bcrypt hash string")
        match = _BCRYPT_HASH.fullmatch(hashed)
        if match is None or int(match.group(1)) not in _BCRYPT_COSTS:
            raise _Problem(
                f"basic_auth_users.{user} is not a bcrypt hash "
                "(expected $2a$, $2b$ or $2y$, a cost of 04 to 31 and 53 characters; "
                "make one with: htpasswd -nBC 10 '' | tr -d ':\\n')"
            )
        users[user] = hashed.encode("ascii")
    return users


def _refuse_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for the
    # passphrase of an encrypted key, and gunicorn would hang at start-up.
    raise _Problem("the key is encrypted; hookkit needs an unencrypted key_file")


def _build_context(tls: TLSConfig) -> ssl.SSLContext:
    """The server context for ``tls``; raises _Problem naming the file."""
    where = "tls_server_config."
    for key, marker in (("cert_file", b"CERTIFICATE-----"), ("key_file", b"PRIVATE KEY-----")):
        name = getattr(tls, key)
        try:
            with open(name, "rb") as file:
                content = file.read()
        except OSError as exc:
            raise _Problem(f"{where}{key} {name!r} cannot be read: {exc}") from None
        if marker not in content:
            kind = "certificate" if key == "cert_file" else "private key"
            raise _Problem(f"{where}{key} {name!r} holds no PEM {kind}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[tls.min_version]
    context.maximum_version = TLS_VERSIONS[tls.max_version]
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file, password=_refuse_password)
    except _Problem as exc:
        raise _Problem(f"{where}key_file {tls.key_file!r}: {exc}") from None
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise _Problem(
            f"{where}cert_file {tls.cert_file!r} and key_file {tls.key_file!r} "
            f"are not a usable certificate and key: {exc}"
        ) from None
    if tls.client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=tls.client_ca_file)
        except (OSError, ValueError) as exc:
            raise _Problem(
                f"{where}client_ca_file {tls.client_ca_file!r} cannot be used: {exc}"
            ) from None
    elif tls.client_ca is not None:
        try:
            context.load_verify_locations(cadata=tls.client_ca)
        except (OSError, ValueError) as exc:
            raise _Problem(f"{where}client_ca holds no usable PEM certificate: {exc}") from None
    context.verify_mode = CLIENT_AUTH_TYPES[tls.client_auth_type]
    return context


def _parse_basic(header: str | None) -> tuple[bytes, bytes] | None:
    """(user, password) from ``Basic base64(user:password)``, as Go's
    ``Request.BasicAuth`` reads it; None for anything else."""
    if header is None or len(header) < 6 or header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        return None
    user, colon, password = decoded.partition(b":")
    if not colon:
        return None
    return user, password


def _text(user: bytes) -> str | None:
    try:
        return user.decode("utf-8")
    except UnicodeDecodeError:
        return None
