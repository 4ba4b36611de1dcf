"""What ``/openapi.json`` (and ``/docs``) adds to FastAPI's generated schema: the one error
shape every route answers with, the statuses the access layer can produce on any route, and
the Bearer scheme (optional: the gateway is open while no key exists)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    message: str = Field(examples=["knowledge base 'handbook' does not exist"])
    type: str = Field(examples=["invalid_request_error"], description="OpenAI's error type")
    code: str | None = Field(examples=["not_found"])
    param: str | None = Field(default=None, examples=["knowledge_base"])


class ErrorBody(BaseModel):
    """OpenAI's error shape: the ``openai`` SDK turns it into its ``APIError`` classes."""

    error: ErrorDetail


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


# Merged into every route's responses (FastAPI's own 422 schema is replaced: ours differs).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _error("missing or unknown API key (only when keys are configured)"),
    403: _error("the key may not create this knowledge base, or is not an admin key"),
    408: _error("the request body stopped arriving (ZHIKU_GATEWAY_BODY_READ_TIMEOUT_S)"),
    413: _error("request body over ZHIKU_GATEWAY_MAX_UPLOAD_MB"),
    422: _error("invalid request (the message says which field and why)"),
    429: _error("the key's rate limit is exceeded; see the Retry-After header"),
    503: _error("a backend service is unavailable, or generation is at capacity (see Retry-After)"),
}


def install_openapi(app: FastAPI) -> None:
    """Add the Bearer security scheme to the generated schema (cached after the first call)."""

    def schema() -> dict[str, Any]:
        if app.openapi_schema is None:
            generated = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
            )
            components = generated.setdefault("components", {})
            components["securitySchemes"] = {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an API key; not needed while the gateway has no keys at all",
                }
            }
            generated["security"] = [{"bearer": []}, {}]
            app.openapi_schema = generated
        return app.openapi_schema

    app.openapi = schema  # type: ignore[method-assign]
