"""The admin console at ``/admin``: one server-rendered HTML shell, a stylesheet and a
hand-written ES module that drives the public JSON API with an access token held in memory.

Nothing is fetched from elsewhere at run time and nothing is built: the files below ship in
the package. They are read once, at start-up, and served from memory with strong ETags; a
fixed set of names also means there is no path to traverse.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from arcana import __version__
from arcana.errors import NotFound

CONSOLE_PATH = "/admin"
STATIC_PATH = f"{CONSOLE_PATH}/static"
_PACKAGE = files(__name__)

# No inline script or style anywhere: scripts and styles come only from this origin.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
_MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    media_type: str
    etag: str


def _load_assets() -> dict[str, _Asset]:
    assets: dict[str, _Asset] = {}
    for entry in _PACKAGE.joinpath("static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if suffix in _MEDIA_TYPES:
            body = entry.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            assets[entry.name] = _Asset(body, _MEDIA_TYPES[suffix], etag)
    return assets


def _render_shell(assets: dict[str, _Asset]) -> bytes:
    env = Environment(
        loader=FileSystemLoader(str(_PACKAGE.joinpath("templates"))),
        autoescape=select_autoescape(["html"]),
    )

    def asset_url(name: str) -> str:
        # The digest in the URL lets a browser keep the file for as long as it likes.
        return f"{STATIC_PATH}/{name}?v={assets[name].etag.strip(chr(34))}"

    html = env.get_template("console.html").render(version=__version__, asset_url=asset_url)
    return html.encode()


def install(app: FastAPI) -> None:
    """Add ``GET /admin`` and ``GET /admin/static/{name}`` (left out of the OpenAPI document:
    they are HTML and assets, not API)."""
    assets = _load_assets()
    shell = _render_shell(assets)

    @app.get(CONSOLE_PATH, include_in_schema=False)
    async def console_page() -> Response:
        headers = {**SECURITY_HEADERS, "Cache-Control": "no-store"}
        return HTMLResponse(shell, headers=headers)

    @app.get(f"{CONSOLE_PATH}/", include_in_schema=False)
    async def console_slash() -> Response:
        return RedirectResponse(CONSOLE_PATH, status_code=308)

    @app.get(f"{STATIC_PATH}/{{name}}", include_in_schema=False)
    async def console_asset(name: str, request: Request) -> Response:
        asset = assets.get(name)
        if asset is None:
            raise NotFound("No such console file")
        headers = {
            **SECURITY_HEADERS,
            "ETag": asset.etag,
            "Cache-Control": "public, max-age=31536000, immutable"
            if request.query_params.get("v") == asset.etag.strip('"')
            else "no-cache",
        }
        if request.headers.get("if-none-match") == asset.etag:
            return Response(status_code=304, headers=headers)
        return Response(asset.body, media_type=asset.media_type, headers=headers)
