"""The web UI: the built bundle in ``static/`` (sources in ``webui/``, rebuilt by ``make webui``).

``/`` answers with ``index.html`` and the hashed assets live under ``/ui/``. Mounted after the
API routers, so every API route wins. The page and its assets carry no data, so they stay
open when API keys are configured: the UI asks for a key when the API answers 401.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, PlainTextResponse, Response
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"
UI_PREFIX = "/ui"


def is_ui_path(path: str) -> bool:
    """Paths of the page and its assets (open even when API keys guard the API)."""
    return path in ("/", "/index.html", UI_PREFIX) or path.startswith(f"{UI_PREFIX}/")


def mount_webui(app: FastAPI, static_dir: Path = STATIC_DIR) -> None:
    """Serve the UI at ``/`` and its assets at ``/ui/``; a clear 503 when the bundle is missing."""
    index = static_dir / "index.html"

    @app.get("/", include_in_schema=False, response_model=None)
    @app.get("/index.html", include_in_schema=False, response_model=None)
    async def web_ui() -> Response:
        if not index.is_file():
            return PlainTextResponse(
                "the web UI bundle is missing: run 'make webui' to build it", status_code=503
            )
        # The page names hashed assets: it must be revalidated, the assets may be cached.
        return FileResponse(index, headers={"Cache-Control": "no-cache"})

    if static_dir.is_dir():
        app.mount(UI_PREFIX, StaticFiles(directory=static_dir, html=True), name="webui")
