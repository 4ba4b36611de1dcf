"""Chatchat v0.2 wire shapes: the ``{code, msg, data}`` envelope, its messages and SSE frames.

Chatchat answers most failures with HTTP 200 and a ``code`` in the body (404 for "not found"
and for a blank or duplicate name, 403 for a name that tries path traversal, 500 for a
failed operation); its clients read ``code``, not the HTTP status, so these routes do the same.
Failures of the gateway itself (a service down, a malformed request, a refused key) keep the
gateway's usual HTTP statuses, in this envelope too. The Chinese messages are Chatchat's own
wording, because its web UI and tests compare them verbatim.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

from services.gateway.openapi import ERROR_RESPONSES


class BaseResponse(BaseModel):
    """Chatchat's envelope; ``code`` mirrors an HTTP status but the HTTP status stays 200."""

    code: int = Field(default=200, examples=[200])
    msg: str = Field(default="success", examples=["success"])
    data: Any = None


# The gateway's error responses, in the envelope these routes answer errors with.
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {**response, "model": BaseResponse} for status, response in ERROR_RESPONSES.items()
}


class ListResponse(BaseResponse):
    data: list[str] = Field(default_factory=list, examples=[["samples", "handbook"]])


class FailedFiles(BaseModel):
    """``data`` of upload/update/delete docs: file name -> why it failed (empty: all done)."""

    failed_files: dict[str, str] = Field(default_factory=dict)


class FailedFilesResponse(BaseResponse):
    """``data`` is null when the request failed as a whole (unknown knowledge base...)."""

    data: FailedFiles | None = Field(default_factory=FailedFiles)


class DocumentWithScore(BaseModel):
    """One hit of ``search_docs``, shaped like LangChain's ``Document`` plus id and score."""

    page_content: str
    metadata: dict[str, str] = Field(description="the chunk's metadata; ``source`` is its file name")
    type: str = "Document"
    id: str = Field(description="chunk id")
    score: float = Field(
        description="Zhiku's similarity in [0, 1], higher is better (not Chatchat's distance)"
    )


def ok(msg: str = "success", data: Any = None) -> BaseResponse:
    return BaseResponse(code=200, msg=msg, data=data)


def not_found(msg: str) -> BaseResponse:
    return BaseResponse(code=404, msg=msg)


def forbidden(problem: str) -> BaseResponse:
    """Chatchat's answer to a name it refuses ("Don't attack me"), with the actual reason."""
    return BaseResponse(code=403, msg=f"Don't attack me: {problem}")


def kb_not_found(name: str) -> str:
    return f"未找到知识库 {name}"


def file_not_found(name: str) -> str:
    return f"未找到文件 {name}"


def sse_frame(payload: dict[str, Any]) -> bytes:
    """One frame as Chatchat's ``EventSourceResponse`` writes it (``data: {json}`` + CRLF CRLF);
    its clients strip the ``data: `` prefix and parse the rest as JSON."""
    return f"data: {json.dumps(payload, ensure_ascii=False)}\r\n\r\n".encode()


def chatchat_threshold(score_threshold: float) -> float:
    """Chatchat's ``score_threshold`` (a distance bound in [0, 1], lower = more similar, 1 = no
    filtering) as Zhiku's similarity threshold (keep hits with score >= 1 - t)."""
    return min(max(1.0 - score_threshold, 0.0), 1.0)
