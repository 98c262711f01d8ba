"""GET /docs: Swagger UI over /api-doc/openapi.json, its files served from the
swagger-ui-bundle package, so the page works offline and air-gapped (no CDN)."""

from __future__ import annotations

from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from swagger_ui_bundle import swagger_ui_path

SWAGGER_UI_DIR = Path(str(swagger_ui_path))
# The folder is named after the Swagger UI release (swagger-ui-4.15.5): a new
# release is a new URL, so a browser may keep these files for good.
ASSET_PREFIX = f"/docs/static/{SWAGGER_UI_DIR.name}/"
ASSET_CACHE_CONTROL = "public, max-age=31536000, immutable"
# The files the page loads (and the source maps the scripts name), nothing else of the package.
ASSETS = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
    "swagger-ui.css.map": "application/json",
    "swagger-ui-bundle.js.map": "application/json",
}

# Paths relative to /docs, so the page also works behind a proxy that adds a prefix.
# validatorUrl null: Swagger UI would otherwise send the document to validator.swagger.io.
_RELATIVE_PREFIX = ASSET_PREFIX.lstrip("/")
DOCS_HTML = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>embedserve API</title>
<link rel="stylesheet" href="{_RELATIVE_PREFIX}swagger-ui.css">
<link rel="icon" type="image/png" href="{_RELATIVE_PREFIX}favicon-32x32.png" sizes="32x32">
<link rel="icon" type="image/png" href="{_RELATIVE_PREFIX}favicon-16x16.png" sizes="16x16"></head>
<body><div id="ui"><p>The OpenAPI document is at <a href="api-doc/openapi.json">/api-doc/openapi.json</a>.</p></div>
<script src="{_RELATIVE_PREFIX}swagger-ui-bundle.js"></script>
<script>if (window.SwaggerUIBundle) {{
  SwaggerUIBundle({{url: "api-doc/openapi.json", dom_id: "#ui", validatorUrl: null}});
}}</script>
</body></html>
"""


async def docs(request: Request) -> Response:
    return HTMLResponse(DOCS_HTML)


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(404)
    # FileResponse reads the file in a worker thread: the event loop never waits on disk.
    return FileResponse(SWAGGER_UI_DIR / name, media_type=media_type, headers={"Cache-Control": ASSET_CACHE_CONTROL})
