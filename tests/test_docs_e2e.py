"""/docs works offline: the page names only this server's own files, and each of them
is served, from the swagger-ui-bundle package, with its content type (a real server)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx

from tests.conftest import RunningServer

CONTENT_TYPES = {".css": "text/css", ".js": "text/javascript", ".png": "image/png", ".json": "application/json"}


class _References(HTMLParser):
    """Every URL the page makes a browser load: script src, link href, img src."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href", "img": "src"}.get(tag)
        for name, value in attrs:
            if name == wanted and value:
                self.urls.append(value)


def test_docs_page_loads_swagger_ui_from_this_server_only(server: RunningServer) -> None:
    page = httpx.get(f"{server.url}/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    parser = _References()
    parser.feed(page.text)
    # The OpenAPI document Swagger UI fetches is named in the inline script.
    [spec_url] = re.findall(r'url: "([^"]+)"', page.text)
    references = [*parser.urls, spec_url]
    assert any(u.endswith("swagger-ui-bundle.js") for u in references)
    assert any(u.endswith("swagger-ui.css") for u in references)
    # No CDN, no other host: nothing with a scheme or a host anywhere in the page.
    assert not re.search(r"(https?:)?//[a-z0-9]", page.text, re.IGNORECASE)
    docs_url = f"{server.url}/docs"
    for reference in references:
        assert not urlsplit(reference).scheme and not urlsplit(reference).netloc, reference
        response = httpx.get(urljoin(docs_url, reference))
        assert response.status_code == 200, reference
        suffix = "." + reference.rsplit(".", 1)[-1]
        assert response.headers["content-type"].startswith(CONTENT_TYPES[suffix]), (reference, response.headers)
        assert response.content
    bundle = httpx.get(urljoin(docs_url, next(u for u in references if u.endswith("swagger-ui-bundle.js"))))
    assert b"SwaggerUIBundle" in bundle.content
    assert "immutable" in bundle.headers["cache-control"]
    assert httpx.get(urljoin(docs_url, spec_url)).json()["openapi"].startswith("3.")


def test_only_swagger_ui_files_are_served(server: RunningServer) -> None:
    page = httpx.get(f"{server.url}/docs").text
    [css] = re.findall(r'href="([^"]+swagger-ui\.css)"', page)
    static = urljoin(f"{server.url}/docs", css).rsplit("/", 1)[0]
    for name in ("index.html", "__init__.py", "..%2F__init__.py", "missing.js"):
        assert httpx.get(f"{static}/{name}").status_code == 404, name
