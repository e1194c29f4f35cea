"""``/status``'s page: self-contained, and its Content-Security-Policy
allows exactly its one inline style and one inline script."""

from __future__ import annotations

import base64
import hashlib
import re

from hookkit._sinks.status import page


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def _directives() -> dict[str, list[str]]:
    parts = (part.strip().split() for part in page.CSP.split(";"))
    return {words[0]: words[1:] for words in parts if words}


def test_the_csp_hashes_are_those_of_the_inline_texts_sent() -> None:
    """The hashes in the header are the SHA-256 of the exact texts between
    the page's <style> and <script> tags, as a browser computes them."""
    html = page.PAGE.decode()
    (style,) = re.findall(r"<style>(.*?)</style>", html, re.S)
    (script,) = re.findall(r"<script>(.*?)</script>", html, re.S)
    directives = _directives()
    assert [_csp_hash(style)] == directives["style-src"]
    assert [_csp_hash(script)] == directives["script-src"]


def test_the_csp_denies_everything_else() -> None:
    """default-src 'none'; the page may only fetch its own origin; no
    frame may embed it, no form posts anywhere."""
    directives = _directives()
    assert ["'none'"] == directives["default-src"]
    assert ["'self'"] == directives["connect-src"]
    assert ["'none'"] == directives["frame-ancestors"]
    assert ["'none'"] == directives["form-action"]
    assert ["'none'"] == directives["base-uri"]
    headers = dict(page.HEADERS)
    assert page.CSP == headers["Content-Security-Policy"]
    assert "nosniff" == headers["X-Content-Type-Options"]


def test_the_page_is_self_contained() -> None:
    """No external asset: no src= or href= at all, no URL but its own
    status.json, one style and one script element."""
    html = page.PAGE.decode()
    assert not re.search(r"\b(src|href)\s*=", html)
    assert "http://" not in html
    assert "https://" not in html
    assert "//" not in html.replace("://", "")
    assert 1 == html.count("<script") == html.count("<style")
    assert 'fetch("status.json"' in page.SCRIPT


def test_the_script_never_parses_markup() -> None:
    """Values reach the page as text only: no innerHTML, outerHTML,
    insertAdjacentHTML, document.write or eval in the script."""
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "Function(",
    ):
        assert sink not in page.SCRIPT
    assert "textContent" in page.SCRIPT
