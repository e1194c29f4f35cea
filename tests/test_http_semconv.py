"""hookkit._core.http: OpenTelemetry's stable HTTP server attributes read
from gunicorn's request: Host splitting, method normalisation, query
redaction and opt-in header capture."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from hookkit._core.http import (
    DEFAULT_SENSITIVE_QUERY,
    HEADER_REDACTED,
    KNOWN_METHODS,
    REDACTED,
    HeaderCapture,
    QueryRedactor,
    content_length,
    method_attributes,
    parse_list,
    request_headers,
    split_host,
)
from hookkit.testing import FakeRequest

PREFIX = "http.request.header."

# -- request_headers -------------------------------------------------------------


@dataclass
class AsgiRequest:
    """The part of gunicorn's ASGI request that matters here: raw header
    pairs, names already lower case, as bytes."""

    headers_bytes: list[tuple[bytes, bytes]] = field(default_factory=list)


def test_request_headers_of_a_wsgi_request_are_lower_cased() -> None:
    """gunicorn's WSGI request has upper-case str names: they come back in
    lower case, values and order untouched."""
    req = FakeRequest(headers=[("HOST", "shop.test"), ("X-ONE", "A b"), ("X-ONE", "c")])

    expected = [("host", "shop.test"), ("x-one", "A b"), ("x-one", "c")]
    assert expected == request_headers(req)


def test_request_headers_of_an_asgi_request_are_decoded_as_latin_1() -> None:
    """The ASGI request's raw bytes are decoded as latin-1 (HTTP's header
    charset), without touching the case of the values."""
    req = AsgiRequest([(b"host", b"shop.test"), (b"x-name", b"Caf\xe9")])

    expected = [("host", "shop.test"), ("x-name", "Café")]
    assert expected == request_headers(req)


def test_request_headers_bytes_win_over_the_str_copy() -> None:
    """When both are there, the raw ``headers_bytes`` are read (the ASGI
    request builds ``headers`` lazily from them)."""

    @dataclass
    class Both:
        headers: list[tuple[str, str]]
        headers_bytes: list[tuple[bytes, bytes]]

    req = Both(headers=[("X-STR", "1")], headers_bytes=[(b"x-bytes", b"2")])

    expected = [("x-bytes", "2")]
    assert expected == request_headers(req)


@pytest.mark.parametrize("req", [object(), FakeRequest(headers=[])], ids=["no-headers", "empty"])
def test_request_headers_of_a_request_without_headers_is_empty(req: object) -> None:
    """A request with no header attribute, or no headers, gives no pairs."""
    expected: list[tuple[str, str]] = []
    assert expected == request_headers(req)


# -- split_host ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("example.com:8080", ("example.com", 8080)),
        ("example.com", ("example.com", None)),
        ("[::1]:8080", ("::1", 8080)),
        ("[::1]", ("::1", None)),
        ("::1", ("::1", None)),
        ("2001:db8::7", ("2001:db8::7", None)),
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        ("  example.com:443  ", ("example.com", 443)),
        ("example.com:00080", ("example.com", 80)),
    ],
)
def test_split_host(host: str, expected: tuple[str, int | None]) -> None:
    """``server.address`` and ``server.port`` from a Host value: a name or
    IPv4 address with or without a port, a bracketed IPv6 address with or
    without a port, and a bare IPv6 address (no port can be told apart)."""
    assert expected == split_host(host)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("example.com:", ("example.com", None)),
        ("example.com:http", ("example.com", None)),
        ("example.com:-1", ("example.com", None)),
        ("example.com:+80", ("example.com", None)),
        ("example.com: 80", ("example.com", None)),
        ("example.com:8o8o", ("example.com", None)),
        ("example.com:123456", ("example.com", None)),
        ("example.com:99999", ("example.com", None)),
        ("example.com:0", ("example.com", None)),
        ("example.com:\u00b2", ("example.com", None)),
        ("example.com:\u0663", ("example.com", None)),
        ("[::1]:", ("::1", None)),
        ("[::1]:port", ("::1", None)),
        ("[::1]junk", ("::1", None)),
        ("[::1", ("[::1", None)),
    ],
)
def test_split_host_ignores_a_junk_port(host: str, expected: tuple[str, int | None]) -> None:
    """A port that is not 1 to 65535 in ASCII digits gives no
    ``server.port`` (the address is kept; ``²`` and other Unicode digits,
    which ``str.isdigit`` accepts and ``int`` may not, included); an unclosed
    bracket is returned as sent, without a port."""
    assert expected == split_host(host)


# -- method_attributes -----------------------------------------------------------


@pytest.mark.parametrize("method", sorted(KNOWN_METHODS))
def test_a_known_method_is_kept(method: str) -> None:
    """The nine methods of RFC 9110 and PATCH are ``http.request.method`` as
    they are, with no ``http.request.method_original``."""
    expected = (method, None)
    assert expected == method_attributes(method)


@pytest.mark.parametrize("method", ["PURGE", "PROPFIND", "get", "Post", "", "FOO BAR"])
def test_an_unknown_method_is_other_with_the_original(method: str) -> None:
    """Any other method (methods are case-sensitive) is ``_OTHER``, the
    method as sent kept as ``http.request.method_original``."""
    expected = ("_OTHER", method)
    assert expected == method_attributes(method)


# -- QueryRedactor -----------------------------------------------------------------


def test_default_redaction_keeps_the_shape_of_the_query() -> None:
    """A sensitive parameter's value becomes ``REDACTED``; the others, the
    order and the separators stay as sent."""
    expected = "token=REDACTED&page=2"
    assert expected == QueryRedactor().redact("token=abc123&page=2")


@pytest.mark.parametrize(
    "name",
    [
        # the semantic conventions' list, in several cases
        "AWSAccessKeyId",
        "Signature",
        "signature",
        "SIGNATURE",
        "sig",
        "X-Goog-Signature",
        # the usual carriers of credentials
        "access_token",
        "accessToken",
        "ACCESS_TOKEN",
        "access-token",
        "refresh_token",
        "id_token",
        "apiKey",
        "api_key",
        "X-API-KEY",
        "apikey",
        "private_key",
        "client_secret",
        "password",
        "Password",
        "passwd",
        "pwd",
        "user_pwd",
        "code",
        "auth",
        "session",
        "sessionId",
        "SessionID",
        "X-Amz-Credential",
        "X-Amz-Security-Token",
        "X-Amz-Signature",
        "token[]",
    ],
)
def test_sensitive_parameters_are_redacted(name: str) -> None:
    """A parameter is sensitive when its name contains a default term, in
    any case."""
    expected = f"page=1&{name}={REDACTED}&q=x"
    assert expected == QueryRedactor().redact(f"page=1&{name}=s3cr3t&q=x")


@pytest.mark.parametrize(
    "name",
    [
        "authorization",
        "sessionid",
        "jsessionid",
        "PHPSESSID",
        "token1",
        "apiKey2",
        "tokens",
        "api_keys",
        "secrets",
        "passwords",
        "jwt",
        "otp",
        "pass",
        "passphrase",
        "bearer",
    ],
)
def test_a_term_anywhere_in_the_name_makes_it_sensitive(name: str) -> None:
    """A term inside the name counts, not only at the end of a word:
    suffixes (``token1``, ``api_keys``) and longer words (``authorization``,
    ``PHPSESSID``) do not let a value through."""
    expected = f"{name}={REDACTED}"
    assert expected == QueryRedactor().redact(f"{name}=s3cr3t")


@pytest.mark.parametrize(
    "name", ["page", "q", "sort", "id", "user", "lang", "limit", "offset", "filter", "utm_source"]
)
def test_other_parameters_are_kept(name: str) -> None:
    """A name containing no sensitive term is kept as sent."""
    query = f"{name}=visible"
    assert query == QueryRedactor().redact(query)


@pytest.mark.parametrize(
    "name", ["keyword", "monkey", "zipcode", "country_code", "passport", "tokenizer", "design"]
)
def test_harmless_names_containing_a_term_are_redacted_too(name: str) -> None:
    """The rule is "contains a term", so a few harmless names (``keyword``
    contains ``key``, ``design`` contains ``sig``) are redacted too:
    over-redaction, on the safe side."""
    expected = f"{name}={REDACTED}"
    assert expected == QueryRedactor().redact(f"{name}=visible")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("pass%77ord=hunter2", "pass%77ord=REDACTED"),
        ("%74oken=abc", "%74oken=REDACTED"),
        ("access%5Ftoken=abc", "access%5Ftoken=REDACTED"),
        ("api+key=abc", "api+key=REDACTED"),
        ("api%20key=abc", "api%20key=REDACTED"),
        ("p%61ge=2", "p%61ge=2"),
    ],
)
def test_percent_encoded_names_are_decoded_before_matching(query: str, expected: str) -> None:
    """A name is matched as the application will decode it (percent and
    ``+`` escapes), and written back as the client sent it."""
    assert expected == QueryRedactor().redact(query)


@pytest.mark.parametrize(
    "query",
    ["", "token=", "token", "token&page=2", "page=2&token=", "&&", "=abc", "token=&token"],
)
def test_nothing_to_redact_is_kept_as_sent(query: str) -> None:
    """An empty query, a blank value and a parameter without ``=`` have no
    value to hide: the query is kept as sent."""
    assert query == QueryRedactor().redact(query)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("token=a&token=b", "token=REDACTED&token=REDACTED"),
        ("token=a=b=c&page=1", "token=REDACTED&page=1"),
        ("&token=a&", "&token=REDACTED&"),
        ("page=token&q=password", "page=token&q=password"),
    ],
)
def test_redaction_edge_cases(query: str, expected: str) -> None:
    """Every occurrence of a repeated parameter is redacted, a value holding
    ``=`` is redacted whole, empty parts stay, and only names are matched
    (a value that reads ``token`` is not a sensitive name)."""
    assert expected == QueryRedactor().redact(query)


def test_the_redactor_takes_its_own_list() -> None:
    """The constructor's names replace the default list: blank entries are
    dropped, spaces and case are ignored."""
    redactor = QueryRedactor([" SSN ", "", "pin"])

    assert ("pin", "ssn") == redactor.names
    expected = "ssn=REDACTED&pin=REDACTED&token=abc"
    assert expected == redactor.redact("ssn=1&pin=2&token=abc")


def test_the_default_list_is_extended_by_adding_to_it() -> None:
    """Adding names to ``DEFAULT_SENSITIVE_QUERY`` keeps the defaults (what
    ``HOOKKIT_TRACING_REDACT_QUERY`` does)."""
    redactor = QueryRedactor((*DEFAULT_SENSITIVE_QUERY, "ssn"))

    expected = "ssn=REDACTED&token=REDACTED&page=2"
    assert expected == redactor.redact("ssn=1&token=abc&page=2")


def test_is_sensitive_gives_the_same_answer_from_its_cache() -> None:
    """Asking twice gives the same answer (the second from the cache)."""
    redactor = QueryRedactor()

    expected = [True, True, False, False]
    assert expected == [
        redactor.is_sensitive("apiKey"),
        redactor.is_sensitive("apiKey"),
        redactor.is_sensitive("page"),
        redactor.is_sensitive("page"),
    ]


# -- HeaderCapture -----------------------------------------------------------------

HEADERS = [
    ("X-Request-ID", "r-1"),
    ("Accept", "text/html"),
    ("Accept", "application/json"),
    ("Authorization", "Bearer t0ken"),
    ("Proxy-Authorization", "Basic abc"),
    ("Cookie", "session=abc"),
    ("Set-Cookie", "id=1"),
    ("X-Api-Key", "k3y"),
]


def test_nothing_is_captured_without_names() -> None:
    """With no configured names the capture is off: falsy, and no attributes."""
    capture = HeaderCapture()

    assert not capture
    expected: dict[str, tuple[str, ...]] = {}
    assert expected == capture.attributes(PREFIX, HEADERS)


def test_a_named_header_is_captured_under_its_lower_case_name() -> None:
    """A named header becomes ``prefix + lower-case name``, with a tuple of values."""
    capture = HeaderCapture(("x-request-id",))

    assert capture
    expected = {"http.request.header.x-request-id": ("r-1",)}
    assert expected == capture.attributes(PREFIX, HEADERS)


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (("X-REQUEST-ID",), ["x-request-id"]),
        (("x-.*",), ["x-request-id", "x-api-key"]),
        (("X-(request|api)-.*",), ["x-request-id", "x-api-key"]),
        (("x-request",), []),
        (("request-id",), []),
        (("accept|x-request-id",), ["x-request-id", "accept"]),
    ],
)
def test_names_are_case_insensitive_regexes_matched_in_full(
    names: tuple[str, ...], expected: list[str]
) -> None:
    """Each name is a case-insensitive regular expression that must match
    the whole header name: ``x-request`` neither matches ``X-Request-ID``
    nor does ``request-id``."""
    captured = HeaderCapture(names).attributes(PREFIX, HEADERS)

    assert sorted(PREFIX + name for name in expected) == sorted(captured)


def test_a_repeated_header_gives_its_values_in_order() -> None:
    """A header sent on several lines gives one value per line, in order."""
    capture = HeaderCapture(("accept",))

    expected = {"http.request.header.accept": ("text/html", "application/json")}
    assert expected == capture.attributes(PREFIX, HEADERS)


def test_sensitive_headers_are_redacted_when_a_pattern_matches_them() -> None:
    """A pattern such as ``.*`` captures every header, but the values of
    Authorization, Proxy-Authorization, Cookie and Set-Cookie become
    ``[REDACTED]``."""
    captured = HeaderCapture((".*",)).attributes(PREFIX, HEADERS)

    expected = {
        "http.request.header.x-request-id": ("r-1",),
        "http.request.header.accept": ("text/html", "application/json"),
        "http.request.header.authorization": (HEADER_REDACTED,),
        "http.request.header.proxy-authorization": (HEADER_REDACTED,),
        "http.request.header.cookie": (HEADER_REDACTED,),
        "http.request.header.set-cookie": (HEADER_REDACTED,),
        "http.request.header.x-api-key": ("k3y",),
    }
    assert expected == captured


@pytest.mark.parametrize(
    ("literal", "header", "value"),
    [
        ("authorization", "authorization", "Bearer t0ken"),
        ("Proxy-Authorization", "proxy-authorization", "Basic abc"),
        ("COOKIE", "cookie", "session=abc"),
        ("set-cookie", "set-cookie", "id=1"),
    ],
)
def test_a_sensitive_header_named_literally_is_kept(literal: str, header: str, value: str) -> None:
    """Naming a sensitive header literally (any case) is asking for it: its
    value is kept, while the other sensitive headers matched by ``.*`` stay
    redacted."""
    captured = HeaderCapture((".*", literal)).attributes(PREFIX, HEADERS)

    assert (value,) == captured[PREFIX + header]
    redacted = {"authorization", "proxy-authorization", "cookie", "set-cookie"} - {header}
    expected = dict.fromkeys(redacted, (HEADER_REDACTED,))
    assert expected == {name: captured[PREFIX + name] for name in redacted}


@pytest.mark.parametrize("pattern", ["(authorization)", "authori[z]ation", "auth.*"])
def test_a_pattern_that_only_matches_a_sensitive_header_still_redacts(pattern: str) -> None:
    """Only the literal name lets a sensitive header through: a pattern that
    happens to match it does not."""
    captured = HeaderCapture((pattern,)).attributes(PREFIX, HEADERS)

    expected = {"http.request.header.authorization": (HEADER_REDACTED,)}
    assert expected == captured


@pytest.mark.parametrize(
    ("names", "sanitize"),
    [
        ((".*",), ("x-api-key",)),
        ((".*",), ("X-API-.*",)),
        (("x-api-key",), ("x-api-key",)),
        (("x-api-key", "authorization"), ("x-api-key", "authorization")),
    ],
)
def test_the_sanitize_list_redacts(names: tuple[str, ...], sanitize: tuple[str, ...]) -> None:
    """Headers matching the sanitize list (case-insensitive regexes, in
    full) are captured as ``[REDACTED]``, even when named literally."""
    captured = HeaderCapture(names, sanitize).attributes(PREFIX, HEADERS)

    assert (HEADER_REDACTED,) == captured["http.request.header.x-api-key"]
    if "authorization" in names:
        assert (HEADER_REDACTED,) == captured["http.request.header.authorization"]
    if ".*" in names:
        assert ("r-1",) == captured["http.request.header.x-request-id"]


def test_the_sanitize_list_is_matched_in_full() -> None:
    """A sanitize entry matching only part of a name does not redact it."""
    captured = HeaderCapture(("x-api-key",), ("api",)).attributes(PREFIX, HEADERS)

    expected = {"http.request.header.x-api-key": ("k3y",)}
    assert expected == captured


def test_response_headers_take_their_own_prefix() -> None:
    """The prefix is the caller's: the same capture serves response headers."""
    capture = HeaderCapture(("content-type",))

    expected = {"http.response.header.content-type": ("text/plain",)}
    assert expected == capture.attributes("http.response.header.", [("Content-Type", "text/plain")])


# -- parse_list ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ()),
        ("", ()),
        (" , ,", ()),
        ("a", ("a",)),
        (" a , b ,, c ", ("a", "b", "c")),
    ],
)
def test_parse_list(value: str | None, expected: tuple[str, ...]) -> None:
    """Comma-separated entries, stripped, blanks dropped."""
    assert expected == parse_list(value)


def test_patterns_with_global_flags_are_kept_apart() -> None:
    """Each capture pattern is compiled on its own, so a pattern opening
    with a global flag such as ``(?i)`` works beside others."""
    capture = HeaderCapture(("x-a", "(?i)X-B.*"))
    expected = {"p.x-a": ("1",), "p.x-bee": ("2",)}
    assert expected == capture.attributes("p.", [("X-A", "1"), ("X-Bee", "2"), ("X-C", "3")])


@pytest.mark.parametrize(
    ("environ", "headers", "expected"),
    [
        ({"wsgi.input": None, "CONTENT_LENGTH": "12"}, [], 12),
        ({"wsgi.input": None, "CONTENT_LENGTH": " 12 "}, [], 12),
        ({"wsgi.input": None, "CONTENT_LENGTH": ""}, [], None),
        ({"wsgi.input": None, "CONTENT_LENGTH": "\u00b2"}, [], None),  # ² is a digit to isdigit
        ({"wsgi.input": None, "CONTENT_LENGTH": "1\u00b2"}, [], None),
        (None, [("CONTENT-LENGTH", "7")], 7),
        (None, [(b"content-length", b"7")], 7),
        (None, [("CONTENT-LENGTH", "\u00b2")], None),
        (None, [("HOST", "x")], None),
    ],
)
def test_content_length_takes_ascii_digits_only(
    environ: dict[str, object] | None, headers: list[tuple[object, object]], expected: int | None
) -> None:
    """The request body's size from Content-Length, in the environ or the
    request's headers; ``Content-Length: ²`` (a digit to ``str.isdigit``,
    which ``int`` refuses) is no length, and never an exception."""
    req = FakeRequest(headers=headers)  # type: ignore[arg-type]
    assert expected == content_length(req, environ)
