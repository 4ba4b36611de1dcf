"""Per-key knowledge bases on the Chatchat routes, which name the knowledge base in the body
(``knowledge_base_name`` in JSON or a form, or the bare JSON string of delete_knowledge_base).

A router dependency: FastAPI has already read (and cached) the body when dependencies run, so
reading it again here costs nothing. A body that does not parse is left to validation.
"""

from __future__ import annotations

from fastapi import Request

from services.gateway.access import authorize_knowledge_bases
from services.gateway.deps import CurrentKey


async def _named_kb(request: Request) -> str | None:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        try:
            body = await request.json()
        except ValueError:
            return None
        name = (
            body
            if isinstance(body, str)
            else body.get("knowledge_base_name")
            if isinstance(body, dict)
            else None
        )
    elif content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        name = (await request.form()).get("knowledge_base_name")
    else:
        return None
    return name if isinstance(name, str) else None


async def authorize_body_kb(request: Request, principal: CurrentKey) -> None:
    """403 when the body names a knowledge base outside the caller's key's list."""
    if principal is None or principal.knowledge_bases is None or request.method != "POST":
        return
    authorize_knowledge_bases(principal, [await _named_kb(request)])
