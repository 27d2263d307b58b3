"""The page at `/`: llm-entry's chat page for trying the model in a browser.

Static files shipped in the package (entrypoint/inside/ui/), read once per
proxy worker and answered by the front (entrypoint.inside.proxy_front)
without a key: the page holds no secret. It calls the public API with the key
its user types, through the same key check, limits and metering as any
client. Every answer carries a Content-Security-Policy that allows scripts,
styles and requests from this origin alone (no inline script or style), and
an ETag: a browser asks again with If-None-Match and gets 304 while the files
are the same (Cache-Control: no-cache, so a new release is seen at once).

With --no-ui (names.UI_VARIABLE = "0") the page's paths answer 404.

Standard library only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from entrypoint.inside.asgi import Response, error_response
from entrypoint.inside.names import UI_VARIABLE

UI_FOLDER = Path(__file__).with_name("ui")
PAGE_ROUTE = "/"
ASSETS_ROUTE = "/llm-entry/ui/"     # under llm-entry's own prefix: no LiteLLM route starts so
# The page's paths and the files that answer them.
FILES = {
    PAGE_ROUTE: ("index.html", "text/html; charset=utf-8"),
    ASSETS_ROUTE + "app.js": ("app.js", "text/javascript; charset=utf-8"),
    ASSETS_ROUTE + "style.css": ("style.css", "text/css; charset=utf-8"),
    ASSETS_ROUTE + "icon.svg": ("icon.svg", "image/svg+xml"),
}
PAGE_ROUTES = frozenset(FILES)
# Scripts, styles, images and requests from this origin only; nothing inline,
# no frames, no forms posted anywhere, no <base> that could move the page's requests.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                           "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)
# Keep a copy, but ask before each use: a 304 costs a few hundred bytes, and a new release shows at once.
CACHE_CONTROL = (b"cache-control", b"no-cache")
TURNED_OFF = "There is no page here: this server runs with --no-ui. The API is at /v1 (see /v1/models)."


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: bytes
    etag: bytes       # a strong validator: the quoted start of the file's SHA-256

    @classmethod
    def read(cls, path: Path, content_type: str) -> Asset:
        body = path.read_bytes()
        return cls(body, content_type.encode(), b'"' + hashlib.sha256(body).hexdigest()[:32].encode() + b'"')


def ui_enabled(environ: Mapping[str, str]) -> bool:
    """On unless llm-entry said "0" (--no-ui)."""
    return environ.get(UI_VARIABLE, "1") != "0"


def etag_matches(if_none_match: bytes, etag: bytes) -> bool:
    """Whether an If-None-Match header names this ETag (weak comparison, as RFC 9110 asks for it)."""
    for tag in if_none_match.split(b","):
        tag = tag.strip()
        if tag == b"*" or tag.removeprefix(b"W/") == etag:
            return True
    return False


class Page:
    """The page's files, or None of them when the page is turned off."""

    def __init__(self, enabled: bool = True, folder: Path = UI_FOLDER) -> None:
        self.assets = ({path: Asset.read(folder / name, kind) for path, (name, kind) in FILES.items()}
                       if enabled else {})

    def answer(self, method: str, path: str, headers: Iterable[tuple[bytes, bytes]]) -> Response:
        """The answer to GET or HEAD of one of PAGE_ROUTES."""
        asset = self.assets.get(path)
        if asset is None:
            return error_response(404, TURNED_OFF, "not_found_error")
        asked = next((value for name, value in headers if name == b"if-none-match"), None)
        common = [(b"etag", asset.etag), CACHE_CONTROL, *SECURITY_HEADERS]
        if asked is not None and etag_matches(asked, asset.etag):
            return 304, common, b""
        head = [(b"content-type", asset.content_type), (b"content-length", str(len(asset.body)).encode()), *common]
        return 200, head, b"" if method == "HEAD" else asset.body
