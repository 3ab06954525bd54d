"""The page at `/`: a static HTML page (serve/static/) that edits through the service's own API (/v1/info,
/v1/jobs and its events stream). No UI library: one file of HTML, CSS and plain JavaScript, packaged with
cyclediff, so the page needs nothing at run time but this replica."""
from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response

from cyclediff.serve.errors import RequestError

EXAMPLES = {"sample.png": ("cyclediff.runtime", "assets/sample.png")}  # the page's example images


def add_page(app: FastAPI) -> None:
    page = (files("cyclediff.serve") / "static" / "index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/examples/{name}", response_class=Response, include_in_schema=False)
    async def example(name: str) -> Response:
        if name not in EXAMPLES:
            raise RequestError(404, None, f"no example {name!r}; there are: {', '.join(EXAMPLES)}")
        package, path = EXAMPLES[name]
        return Response((files(package) / path).read_bytes(), media_type="image/png")

    @app.get("/v1/examples", include_in_schema=False)
    async def examples() -> dict:
        return {"examples": [f"/examples/{name}" for name in EXAMPLES]}
