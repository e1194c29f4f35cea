"""hookkit._master_http.webconfig: the exporter-toolkit web config file (TLS and basic
auth for /metrics), checked at load, served over real TLS on 127.0.0.1."""

from __future__ import annotations

import base64
import http.client
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.error import HTTPError

import bcrypt
import pytest

from hookkit._core.settings import ConfigError
from hookkit._master_http.webconfig import (
    AUTH_CACHE_SIZE,
    SETTING,
    TLSConfig,
    WebConfig,
    WebConfigError,
    load_web_config,
)


def hashed(password: str, rounds: int = 4) -> str:
    """A bcrypt hash of ``password``, cheap (cost 4) unless asked otherwise."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=rounds)).decode()


def basic(user: str, password: str) -> str:
    """An ``Authorization`` header value for ``user`` and ``password``."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


ALICE = hashed("wonderland")


@dataclass(frozen=True)
class Pki:
    """Certificates and keys made for these tests (PEM files in ``root``)."""

    root: Path
    cert: Path  # the server's, self-signed, for IP 127.0.0.1
    key: Path
    client_cert: Path  # a client's, self-signed: its own CA
    client_key: Path
    encrypted_key: Path  # ``key`` under a passphrase
    garbage: Path  # not PEM at all


def openssl(*args: str) -> None:
    """Run the openssl command line, failing the test on an error."""
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def self_signed(directory: Path, name: str, *extra: str) -> tuple[Path, Path]:
    """A new P-256 key and a self-signed certificate for a day, named ``name``."""
    cert, key = directory / f"{name}.pem", directory / f"{name}-key.pem"
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-days", "1", "-keyout", str(key), "-out", str(cert), *extra,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Certificates from the openssl command line (the venv has no
    ``cryptography``), made once for the module."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command line is needed to make test certificates")
    root = tmp_path_factory.mktemp("pki")
    cert, key = self_signed(
        root, "server", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"
    )
    client_cert, client_key = self_signed(root, "client", "-subj", "/CN=scraper")
    encrypted_key = root / "encrypted-key.pem"
    openssl("pkey", "-in", str(key), "-aes256", "-passout", "pass:x", "-out", str(encrypted_key))
    garbage = root / "garbage.pem"
    garbage.write_text("not a certificate\n")
    return Pki(root, cert, key, client_cert, client_key, encrypted_key, garbage)


def write_config(directory: Path, text: str) -> str:
    """``text`` as ``web.yml`` in ``directory``; its path."""
    path = directory / "web.yml"
    path.write_text(text)
    return str(path)


def tls_yaml(pki: Pki, **extra: str) -> str:
    """A tls_server_config with the server's certificate and key, plus ``extra``."""
    lines = ["tls_server_config:", f"  cert_file: {pki.cert}", f"  key_file: {pki.key}"]
    lines += [f"  {key}: {value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


def users_yaml(**users: str) -> str:
    """A basic_auth_users section."""
    return "basic_auth_users:\n" + "".join(f"  {u}: {h}\n" for u, h in users.items())


# -- a tiny HTTPS server, as /metrics will use the config ------------------


class MetricsHandler(BaseHTTPRequestHandler):
    """200 for authorized requests, else 401 asking for basic auth."""

    server: TLSServer

    def do_GET(self) -> None:
        config = self.server.web_config
        ok = config.authorized(self.headers.get("Authorization"))
        body = b"ok\n" if ok else b"unauthorized\n"
        self.send_response(200 if ok else 401)
        for name, value in config.headers.items():
            self.send_header(name, value)
        if not ok:
            self.send_header("WWW-Authenticate", "Basic")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the tests read statuses, not access logs."""


class TLSServer(ThreadingHTTPServer):
    """An HTTP server on 127.0.0.1 that speaks TLS when the config has it."""

    daemon_threads = False  # so server_close() joins every connection's thread

    def __init__(self, web_config: WebConfig) -> None:
        super().__init__(("127.0.0.1", 0), MetricsHandler)
        self.web_config = web_config
        self.context = web_config.ssl_context()
        self.errors: list[BaseException] = []

    def get_request(self) -> tuple[socket.socket, object]:
        # Wrap without handshaking: the handshake then runs in the
        # connection's thread (finish_request), so a slow or broken client
        # never holds up accept().
        sock, address = super().get_request()
        sock.settimeout(10)
        if self.context is not None:
            sock = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def finish_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        if isinstance(request, ssl.SSLSocket):
            request.do_handshake()
        super().finish_request(request, client_address)

    def handle_error(self, request: object, client_address: object) -> None:
        # Called in the connection's thread with the exception being handled.
        error = sys.exc_info()[1]
        if error is not None:
            self.errors.append(error)

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@contextmanager
def serving(web_config: WebConfig) -> Iterator[TLSServer]:
    """``TLSServer`` running in a thread; stopped, with every thread joined, on exit."""
    server = TLSServer(web_config)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        assert not thread.is_alive()


def trusting(pki: Pki, client_cert: bool = False) -> ssl.SSLContext:
    """A client context that trusts the test server's certificate."""
    context = ssl.create_default_context(cafile=str(pki.cert))
    if client_cert:
        context.load_cert_chain(pki.client_cert, pki.client_key)
    return context


def get(
    url: str, context: ssl.SSLContext | None, authorization: str | None = None
) -> tuple[int, Message]:
    """GET ``url`` with urllib (no proxy): the status and the headers."""
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    headers = {} if authorization is None else {"Authorization": authorization}
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return int(response.status), response.headers
    except HTTPError as exc:
        with exc:
            return exc.code, exc.headers


def https(server: TLSServer) -> str:
    return f"https://127.0.0.1:{server.port}/metrics"


# -- over real TLS ---------------------------------------------------------


def test_the_right_password_gets_200_over_tls(pki: Pki, tmp_path: Path) -> None:
    """A configured user with the right password is let in, over HTTPS."""
    config = load_web_config(write_config(tmp_path, tls_yaml(pki) + users_yaml(alice=ALICE)))

    with serving(config) as server:
        status, _ = get(https(server), trusting(pki), basic("alice", "wonderland"))

    assert 200 == status
    assert [] == server.errors


@pytest.mark.parametrize(
    "authorization",
    [basic("alice", "looking-glass"), basic("bob", "wonderland"), None],
    ids=["wrong-password", "unknown-user", "no-header"],
)
def test_anything_else_gets_401_asking_for_basic_auth(
    pki: Pki, tmp_path: Path, authorization: str | None
) -> None:
    """A wrong password, an unknown user or no credentials get 401 with
    ``WWW-Authenticate: Basic``."""
    config = load_web_config(write_config(tmp_path, tls_yaml(pki) + users_yaml(alice=ALICE)))

    with serving(config) as server:
        status, headers = get(https(server), trusting(pki), authorization)

    assert (401, "Basic") == (status, headers["WWW-Authenticate"])


def test_without_users_anyone_gets_200(pki: Pki, tmp_path: Path) -> None:
    """With TLS and no basic_auth_users, a request without credentials is served."""
    config = load_web_config(write_config(tmp_path, tls_yaml(pki)))

    with serving(config) as server:
        status, _ = get(https(server), trusting(pki))

    assert 200 == status


def test_configured_headers_are_on_the_response(pki: Pki, tmp_path: Path) -> None:
    """http_server_config.headers reach the caller, who sets them on responses."""
    text = "http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
    config = load_web_config(write_config(tmp_path, tls_yaml(pki) + text))

    with serving(config) as server:
        _, headers = get(https(server), trusting(pki))

    assert "deny" == headers["X-Frame-Options"]


def test_plain_http_on_the_tls_port_fails(pki: Pki, tmp_path: Path) -> None:
    """A plain-HTTP request to the TLS port gets no HTTP response, and the
    server sees a failed handshake."""
    config = load_web_config(write_config(tmp_path, tls_yaml(pki)))

    with serving(config) as server, pytest.raises((OSError, http.client.HTTPException)):
        get(f"http://127.0.0.1:{server.port}/metrics", None)

    assert [ssl.SSLError] == [type(error) for error in server.errors]
    assert "HTTP_REQUEST" in str(server.errors[0])  # OpenSSL saw plain HTTP


def test_a_client_without_a_certificate_is_refused_when_one_is_required(pki: Pki) -> None:
    """With RequireAndVerifyClientCert, a client without a certificate gets
    no response; the server refuses the handshake for the missing certificate."""
    extra = {"client_auth_type": "RequireAndVerifyClientCert", "client_ca_file": "client.pem"}
    path = write_config(pki.root, tls_yaml(pki, **extra))
    config = load_web_config(path)

    with serving(config) as server, pytest.raises((OSError, http.client.HTTPException)):
        get(https(server), trusting(pki))

    assert [ssl.SSLError] == [type(error) for error in server.errors]
    assert "CERTIFICATE" in str(server.errors[0]).upper()


def test_a_client_with_a_trusted_certificate_is_served(pki: Pki) -> None:
    """With RequireAndVerifyClientCert, a client presenting a certificate
    from client_ca_file is served."""
    extra = {"client_auth_type": "RequireAndVerifyClientCert", "client_ca_file": "client.pem"}
    config = load_web_config(write_config(pki.root, tls_yaml(pki, **extra)))

    with serving(config) as server:
        status, _ = get(https(server), trusting(pki, client_cert=True))

    assert 200 == status


def test_max_version_caps_the_negotiated_version(pki: Pki, tmp_path: Path) -> None:
    """max_version TLS12 makes a TLS 1.3-capable client settle for TLS 1.2."""
    config = load_web_config(write_config(tmp_path, tls_yaml(pki, max_version="TLS12")))

    with serving(config) as server:
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        with trusting(pki).wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            version = tls.version()

    assert "TLSv1.2" == version


def test_no_tls_serves_plain_http_with_basic_auth(tmp_path: Path) -> None:
    """A file with users and no tls_server_config gives no context; basic
    auth still applies over plain HTTP."""
    config = load_web_config(write_config(tmp_path, users_yaml(alice=ALICE)))

    with serving(config) as server:
        url = f"http://127.0.0.1:{server.port}/metrics"
        without, _ = get(url, None)
        with_password, _ = get(url, None, basic("alice", "wonderland"))

    assert None is config.ssl_context()
    assert (401, 200) == (without, with_password)


# -- loading ---------------------------------------------------------------


def test_no_file_means_no_tls_and_no_users() -> None:
    """``None`` (the setting unset) gives a config that lets everyone in over HTTP."""
    config = load_web_config(None)

    assert WebConfig(tls=None, basic_auth_users={}) == config
    assert None is config.ssl_context()
    assert config.authorized(None)


def test_an_empty_file_means_no_tls_and_no_users(tmp_path: Path) -> None:
    """An empty file (or one of comments) configures nothing, as in exporter-toolkit."""
    path = write_config(tmp_path, "# nothing yet\n")

    assert WebConfig(tls=None, basic_auth_users={}, path=path) == load_web_config(path)


def test_relative_paths_resolve_against_the_config_files_directory(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cert_file, key_file and client_ca_file relative to the file's
    directory, whatever the working directory, and stored absolute."""
    monkeypatch.chdir(tmp_path)
    text = (
        "tls_server_config:\n  cert_file: server.pem\n  key_file: ./server-key.pem\n"
        "  client_ca_file: client.pem\n  client_auth_type: VerifyClientCertIfGiven\n"
    )
    path = write_config(pki.root, text)
    config = load_web_config(os.path.relpath(path))

    expected = TLSConfig(
        cert_file=str(pki.root / "server.pem"),
        key_file=str(pki.root / "server-key.pem"),
        client_ca_file=str(pki.root / "client.pem"),
        client_auth_type="VerifyClientCertIfGiven",
    )
    assert expected == config.tls


def test_a_full_file_loads(pki: Pki, tmp_path: Path) -> None:
    """Every supported key, with users, headers and the empty forms of the
    unsupported keys, loads into one WebConfig."""
    htpasswd_style = "$2y$" + ALICE[4:]
    text = tls_yaml(
        pki,
        client_ca_file=str(pki.client_cert),
        client_auth_type="RequireAnyClientCert",
        min_version="TLS13",
        max_version="TLS13",
        prefer_server_cipher_suites="false",
        cipher_suites="[]",
    )
    text += "http_server_config:\n  http2: no\n  headers:\n    X-Content-Type-Options: nosniff\n"
    text += "    Content-Security-Policy: ''\n"
    text += "rate_limit:\n  interval: 0s\n  burst: 10\n"
    text += users_yaml(alice=ALICE, no=htpasswd_style)
    path = write_config(tmp_path, text)

    config = load_web_config(path)

    expected_tls = TLSConfig(
        cert_file=str(pki.cert),
        key_file=str(pki.key),
        client_ca_file=str(pki.client_cert),
        client_auth_type="RequireAnyClientCert",
        min_version="TLS13",
        max_version="TLS13",
        prefer_server_cipher_suites=False,
    )
    expected_users = {"alice": ALICE.encode(), "no": htpasswd_style.encode()}
    assert expected_tls == config.tls
    assert expected_users == dict(config.basic_auth_users)
    assert {"X-Content-Type-Options": "nosniff"} == dict(config.headers)
    assert path == config.path


@pytest.mark.parametrize(
    ("auth_type", "expected"),
    [
        ("NoClientCert", ssl.CERT_NONE),
        ("RequestClientCert", ssl.CERT_NONE),
        ("RequireAnyClientCert", ssl.CERT_REQUIRED),
        ("RequireClientCert", ssl.CERT_REQUIRED),
        ("VerifyClientCertIfGiven", ssl.CERT_OPTIONAL),
        ("RequireAndVerifyClientCert", ssl.CERT_REQUIRED),
    ],
)
def test_client_auth_type_sets_the_verify_mode(
    pki: Pki, tmp_path: Path, auth_type: str, expected: ssl.VerifyMode
) -> None:
    """Each client_auth_type maps to the ssl verify mode closest to Go's,
    never looser; the modes that verify load client_ca_file."""
    extra = {"client_auth_type": auth_type}
    if expected != ssl.CERT_NONE:
        extra["client_ca_file"] = str(pki.client_cert)
    context = load_web_config(write_config(tmp_path, tls_yaml(pki, **extra))).ssl_context()

    assert context is not None
    assert expected == context.verify_mode
    assert (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3) == (
        context.minimum_version,
        context.maximum_version,
    )


def test_ssl_context_rereads_the_files_and_says_when_they_are_gone(
    pki: Pki, tmp_path: Path
) -> None:
    """ssl_context() reads the certificate again on every call; once it is
    gone, it raises WebConfigError naming the setting, the file and the cert."""
    cert = tmp_path / "cert.pem"
    shutil.copy(pki.cert, cert)
    path = write_config(
        tmp_path, f"tls_server_config:\n  cert_file: cert.pem\n  key_file: {pki.key}\n"
    )
    config = load_web_config(path)
    cert.unlink()

    with pytest.raises(WebConfigError) as caught:
        config.ssl_context()

    message = str(caught.value)
    assert SETTING in message
    assert path in message
    assert f"cert_file {str(cert)!r} cannot be read" in message


BAD_FILES = {
    "invalid-yaml": (
        "basic_auth_users:\n  alice: [unclosed\n",
        "the file is not valid YAML: line 3, column 1: expected ',' or ']'",
    ),
    "not-a-mapping": ("- tls_server_config\n", "the file must be a mapping"),
    "unknown-top-level-key": ("tls_config: x\n", "tls_config is not a known key"),
    "unknown-tls-key": (
        "tls_server_config:\n  certfile: x.pem\n",
        "tls_server_config.certfile is not a known key",
    ),
    "unknown-http-key": (
        "http_server_config:\n  http3: true\n",
        "http_server_config.http3 is not a known key",
    ),
    "unknown-rate-limit-key": ("rate_limit:\n  every: 1s\n", "rate_limit.every is not a known key"),
    "repeated-key": (
        "basic_auth_users:\n  alice: {alice}\n  alice: {alice}\n",
        "the file is not valid YAML: line 3, column 3: 'alice' is repeated",
    ),
    "section-not-a-mapping": ("tls_server_config: on\n", "tls_server_config must be a mapping"),
    "cert-without-key": (
        "tls_server_config:\n  cert_file: {cert}\n",
        "tls_server_config.key_file is missing",
    ),
    "key-without-cert": (
        "tls_server_config:\n  key_file: {key}\n",
        "tls_server_config.cert_file is missing",
    ),
    "client-auth-without-cert": (
        "tls_server_config:\n  client_auth_type: RequireAndVerifyClientCert\n",
        "tls_server_config.cert_file is missing",
    ),
    "cert-file-missing": (
        "tls_server_config:\n  cert_file: missing.pem\n  key_file: {key}\n",
        "cert_file '{root}/missing.pem' cannot be read: [Errno 2]",
    ),
    "cert-file-not-pem": (
        "tls_server_config:\n  cert_file: {garbage}\n  key_file: {key}\n",
        "cert_file '{garbage}' holds no PEM certificate",
    ),
    "key-file-not-pem": (
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {garbage}\n",
        "key_file '{garbage}' holds no PEM private key",
    ),
    "key-not-the-certs": (
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {client_key}\n",
        "are not a usable certificate and key: [X509: KEY_VALUES_MISMATCH]",
    ),
    "key-encrypted": (
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {encrypted_key}\n",
        "the key is encrypted; hookkit needs an unencrypted key_file",
    ),
    "hash-not-bcrypt": ("basic_auth_users:\n  alice: wonderland\n", "alice is not a bcrypt hash"),
    "hash-cost-too-low": (
        "basic_auth_users:\n  alice: {low_cost}\n",
        "alice is not a bcrypt hash",
    ),
    "hash-not-a-string": (
        "basic_auth_users:\n  alice: [a, b]\n",
        "alice must be a bcrypt hash string",
    ),
    "unknown-client-auth-type": (
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
        "  client_auth_type: RequireCert\n",
        "client_auth_type='RequireCert' is not known; expected one of NoClientCert, ",
    ),
    "unknown-min-version": (
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  min_version: TLS14\n",
        "min_version='TLS14' is not known; expected one of TLS10, TLS11, TLS12, TLS13",
    ),
    "unknown-max-version": (
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  max_version: '1.3'\n",
        "max_version='1.3' is not known",
    ),
    "min-above-max": (
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
        "  min_version: TLS13\n  max_version: TLS12\n",
        "min_version TLS13 is above max_version TLS12",
    ),
    "client-ca-without-client-auth": (
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
        "  client_ca_file: {client_cert}\n",
        "client_ca_file or client_ca is set with client_auth_type NoClientCert",
    ),
    "verify-without-client-ca": (
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
        "  client_auth_type: VerifyClientCertIfGiven\n",
        "client_auth_type VerifyClientCertIfGiven verifies client certificates and needs "
        "client_ca_file",
    ),
    "client-ca-file-not-pem": (
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
        "  client_ca_file: {garbage}\n  client_auth_type: RequireAndVerifyClientCert\n",
        "client_ca_file '{garbage}' cannot be used",
    ),
    "client-ca-inline-not-pem": (
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
        "  client_ca: junk\n  client_auth_type: RequireAndVerifyClientCert\n",
        "client_ca holds no usable PEM certificate",
    ),
    "client-ca-twice": (
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
        "  client_ca_file: {client_cert}\n  client_ca: junk\n"
        "  client_auth_type: RequireAndVerifyClientCert\n",
        "client_ca_file and client_ca are both set",
    ),
    "inline-cert": (
        "tls_server_config:\n  cert: '-----BEGIN CERTIFICATE-----'\n",
        "tls_server_config.cert: an inline certificate is not supported",
    ),
    "cipher-suites": (
        "tls_server_config:\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
        "cipher_suites is not supported by hookkit",
    ),
    "rate-limit": ("rate_limit:\n  interval: 1s\n  burst: 5\n", "rate_limit is not supported"),
    "header-not-allowed": (
        "http_server_config:\n  headers:\n    X-Powered-By: hookkit\n",
        "'X-Powered-By' cannot be set; allowed headers: Strict-Transport-Security",
    ),
    "header-value-not-accepted": (
        "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
        "X-Frame-Options='allow' is not accepted; expected one of deny, sameorigin",
    ),
    "http2-not-a-boolean": (
        "http_server_config:\n  http2: sometimes\n",
        "http_server_config.http2='sometimes' is not a boolean",
    ),
}


@pytest.mark.parametrize(("text", "problem"), BAD_FILES.values(), ids=BAD_FILES.keys())
def test_a_bad_file_is_refused_naming_the_setting_the_file_and_the_problem(
    pki: Pki, tmp_path: Path, text: str, problem: str
) -> None:
    """Each problem stops loading with a WebConfigError (a ConfigError) that
    names HOOKKIT_METRICS_WEB_CONFIG, the file and what is wrong."""
    names = {
        "root": str(pki.root),
        "cert": str(pki.cert),
        "key": str(pki.key),
        "client_cert": str(pki.client_cert),
        "client_key": str(pki.client_key),
        "encrypted_key": str(pki.encrypted_key),
        "garbage": str(pki.garbage),
        "alice": ALICE,
        "low_cost": "$2b$03$" + ALICE[7:],
    }
    path = write_config(pki.root if "{root}" in problem else tmp_path, text.format(**names))

    with pytest.raises(WebConfigError) as caught:
        load_web_config(path)

    assert isinstance(caught.value, ConfigError)
    assert str(caught.value).startswith(f"{SETTING}={path!r} is not valid: ")
    assert problem.format(**names) in str(caught.value)


@pytest.mark.parametrize("kind", ["missing", "directory", "not-utf-8"])
def test_an_unreadable_file_is_refused(tmp_path: Path, kind: str) -> None:
    """A file that is missing, a directory or not UTF-8 stops loading with
    the setting, the path and why it cannot be read."""
    path = tmp_path / "web.yml"
    if kind == "directory":
        path.mkdir()
    elif kind == "not-utf-8":
        path.write_bytes(b"basic_auth_users:\n  \xff: x\n")

    with pytest.raises(WebConfigError) as caught:
        load_web_config(str(path))

    assert str(caught.value).startswith(f"{SETTING}={str(path)!r} is not valid: ")
    assert "the file cannot be read: " in str(caught.value)


def test_a_bad_hash_is_not_echoed(tmp_path: Path) -> None:
    """A value that is not a bcrypt hash may be a password typed in clear:
    the message names the user, never the value."""
    path = write_config(tmp_path, "basic_auth_users:\n  alice: Tr0ub4dor&3\n")

    with pytest.raises(WebConfigError) as caught:
        load_web_config(path)

    assert "alice" in str(caught.value)
    assert "Tr0ub4dor" not in str(caught.value)


# -- authorized() ----------------------------------------------------------


def users_config(**users: str) -> WebConfig:
    """A WebConfig with these users (user -> hash), no TLS."""
    return WebConfig(tls=None, basic_auth_users={u: h.encode() for u, h in users.items()})


@pytest.mark.parametrize(
    "header",
    [
        "Basic",
        "Bearer " + base64.b64encode(b"alice:wonderland").decode(),
        "Basic not-base64!",
        "Basic " + base64.b64encode(b"alice-wonderland").decode(),  # no colon
        "Basic " + base64.b64encode(b"alice:wonderland").decode()[:-2],  # padding cut
        "Basic " + base64.b64encode(b"\xffalice:wonderland").decode(),  # user not UTF-8
        "Basic ÿ",
        basic("alice", "wonderland" + "!" * 80),  # beyond bcrypt's 72 bytes
        basic("Alice", "wonderland"),  # user names are case-sensitive
    ],
)
def test_malformed_or_wrong_credentials_are_refused(header: str) -> None:
    """Anything but ``Basic`` and base64 of a configured user, a colon and
    the password is refused, without an exception."""
    assert not users_config(alice=ALICE).authorized(header)


def test_the_scheme_is_case_insensitive_and_the_password_may_hold_colons() -> None:
    """``basic`` in any case is accepted, and the user ends at the first colon."""
    config = users_config(alice=hashed("a:b:c"))

    assert config.authorized(basic("alice", "a:b:c").replace("Basic", "bAsIc"))


def test_without_users_every_request_is_authorized() -> None:
    """No basic_auth_users: no header is needed, and any header is ignored."""
    config = users_config()

    assert [True, True] == [config.authorized(None), config.authorized("Basic junk")]


def test_only_successful_checks_are_cached_and_never_in_clear() -> None:
    """A success adds one cache entry, a failure none; no entry holds the
    user or the password."""
    config = users_config(alice=ALICE)

    config.authorized(basic("alice", "nope"))
    config.authorized(basic("bob", "wonderland"))
    after_failures = len(config._cache)
    config.authorized(basic("alice", "wonderland"))
    config.authorized(basic("alice", "wonderland"))

    entries = list(config._cache._entries)
    assert (0, 1) == (after_failures, len(entries))
    assert not any(b"wonderland" in entry or b"alice" in entry for entry in entries)


def test_a_cached_check_skips_bcrypt() -> None:
    """The second check of the same credentials is answered from the cache,
    far faster than bcrypt at cost 10."""
    config = users_config(alice=hashed("wonderland", rounds=10))

    started = time.perf_counter()
    first = config.authorized(basic("alice", "wonderland"))
    first_seconds = time.perf_counter() - started
    started = time.perf_counter()
    second = config.authorized(basic("alice", "wonderland"))
    second_seconds = time.perf_counter() - started

    assert (True, True) == (first, second)
    assert second_seconds < first_seconds / 10


def test_the_cache_is_bounded() -> None:
    """More successful users than the cache holds keep it at its size, the
    oldest evicted; evicted users are still let in (through bcrypt again)."""
    count = AUTH_CACHE_SIZE + 5
    config = users_config(**{f"user{i}": hashed(f"pw{i}") for i in range(count)})

    results = [config.authorized(basic(f"user{i}", f"pw{i}")) for i in range(count)]
    evicted_key = config._cache.key(b"user0", b"pw0")

    assert [True] * count == results
    assert AUTH_CACHE_SIZE == len(config._cache)
    assert evicted_key not in config._cache
    assert config.authorized(basic("user0", "pw0"))


def test_the_cache_is_per_config() -> None:
    """Two configs share no cache, and the cache plays no part in equality."""
    first, second = users_config(alice=ALICE), users_config(alice=ALICE)

    first.authorized(basic("alice", "wonderland"))

    assert (1, 0) == (len(first._cache), len(second._cache))
    assert first == second
