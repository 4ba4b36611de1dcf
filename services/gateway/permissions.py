"""The one table of what every route of the gateway requires, and its lookup by request.

Every (method, path template) of the app, native, OpenAI-compatible, Chatchat-compatible,
``/mcp``, the agent, file chats, conversations, keys, sign-in, users, groups and members, has
one :class:`Rule` here. :class:`services.gateway.middleware.AccessMiddleware` decides every
request from it before the route runs. ``create_app`` refuses to build an app with a route
missing from the table (:func:`unlisted_routes`), so a new route cannot ship without a rule;
paths that match no route at all only need a caller (the router then answers 404 or 405).

Knowledge bases named in a request body (``knowledge_base``, ``kb:`` models, Chatchat's
``knowledge_base_name``...) cannot be read here without consuming the body: those routes say
:attr:`Need.AUTHENTICATED` and the knowledge base is checked, with the same rules, by
:mod:`services.gateway.kb_guard` on the RPC that reaches the ingest or retrieve service
(defence in depth: path knowledge bases are checked twice).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from starlette.routing import compile_path

from services.gateway.authz import Permission


class Need(enum.Enum):
    PUBLIC = "public"  # anyone, even without credentials (probes, docs, sign-in, the web UI)
    AUTHENTICATED = "authenticated"  # any caller (knowledge bases in bodies: the gRPC guard)
    OWN = "own"  # any caller, on their own things only (the store filters by owner: 404 else)
    USER = "user"  # a person (session or a key of theirs) or an admin: own keys, group names
    ADMIN = "admin"  # the global admin (an admin user, admin key or environment key)
    KNOWLEDGE_BASE = "knowledge_base"  # a role on the path's knowledge base


@dataclass(frozen=True)
class Rule:
    need: Need
    permission: Permission | None = None  # for KNOWLEDGE_BASE: which role it takes
    param: str = "kb"  # the path parameter naming the knowledge base
    upload: bool = False  # counts against the daily upload limit
    csrf: bool = True  # cookie-authenticated unsafe requests must carry X-CSRF-Token

    def describe(self) -> str:
        if self.need is Need.KNOWLEDGE_BASE and self.permission is not None:
            return f"{self.permission.value} on {{{self.param}}}"
        return self.need.value


PUBLIC: Final = Rule(Need.PUBLIC)
SIGN_IN: Final = Rule(Need.PUBLIC, csrf=False)  # nothing to forge before there is a session
ANY: Final = Rule(Need.AUTHENTICATED)
UPLOAD: Final = Rule(Need.AUTHENTICATED, upload=True)
OWN: Final = Rule(Need.OWN)
USER: Final = Rule(Need.USER)
ADMIN: Final = Rule(Need.ADMIN)


def kb(permission: Permission, upload: bool = False) -> Rule:
    return Rule(Need.KNOWLEDGE_BASE, permission, upload=upload)


VIEW, EDIT, MANAGE = kb(Permission.VIEW), kb(Permission.EDIT), kb(Permission.MANAGE)

KB = "/v1/knowledge_bases/{kb}"

# (method, path template) -> rule. "*" covers every method of a mounted app.
ROUTES: Final[dict[tuple[str, str], Rule]] = {
    # Probes, the API docs and the web UI carry no data.
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
    ("GET", "/"): PUBLIC,
    ("GET", "/index.html"): PUBLIC,
    ("*", "/ui"): PUBLIC,
    # Signing in.
    ("GET", "/v1/auth/config"): PUBLIC,
    ("POST", "/v1/auth/login"): SIGN_IN,
    ("POST", "/v1/auth/logout"): PUBLIC,
    ("GET", "/v1/auth/me"): ANY,
    ("GET", "/v1/auth/oidc/login"): SIGN_IN,
    ("GET", "/v1/auth/oidc/callback"): SIGN_IN,
    # Users, groups, the audit trail.
    ("GET", "/v1/users"): ADMIN,
    ("POST", "/v1/users"): ADMIN,
    ("GET", "/v1/users/{user_id}"): ADMIN,
    ("PATCH", "/v1/users/{user_id}"): ADMIN,
    ("DELETE", "/v1/users/{user_id}"): ADMIN,
    ("GET", "/v1/groups"): USER,  # names to share with; members are shown to admins only
    ("POST", "/v1/groups"): ADMIN,
    ("DELETE", "/v1/groups/{group}"): ADMIN,
    ("PUT", "/v1/groups/{group}/members/{user_id}"): ADMIN,
    ("DELETE", "/v1/groups/{group}/members/{user_id}"): ADMIN,
    ("GET", "/v1/audit"): ADMIN,
    # API keys: a person makes and revokes their own; admins see every key.
    ("POST", "/v1/keys"): USER,
    ("GET", "/v1/keys"): USER,
    ("DELETE", "/v1/keys/{key_id}"): USER,
    # Knowledge bases: creating one makes the caller its owner.
    ("POST", "/v1/knowledge_bases"): ANY,
    ("GET", "/v1/knowledge_bases"): ANY,  # filtered to those the caller may view
    ("GET", KB): VIEW,
    ("DELETE", KB): MANAGE,
    ("POST", f"{KB}/migrate"): MANAGE,  # re-embeds everything: the owner's call
    ("GET", f"{KB}/members"): MANAGE,
    ("PUT", f"{KB}/members"): MANAGE,
    ("DELETE", f"{KB}/members/{{kind}}/{{holder}}"): MANAGE,
    ("POST", f"{KB}/files"): kb(Permission.EDIT, upload=True),
    ("GET", f"{KB}/files"): VIEW,
    ("DELETE", f"{KB}/files/{{file_name}}"): EDIT,
    ("POST", f"{KB}/files/{{file_name}}/reindex"): EDIT,
    ("GET", f"{KB}/files/{{file_name}}/content"): VIEW,
    ("GET", f"{KB}/files/{{file_name}}/access"): EDIT,
    ("PUT", f"{KB}/files/{{file_name}}/access"): EDIT,
    ("GET", f"{KB}/jobs"): VIEW,
    ("POST", f"{KB}/search"): VIEW,
    ("POST", f"{KB}/sources"): EDIT,
    ("GET", f"{KB}/sources"): VIEW,
    ("DELETE", f"{KB}/sources/{{name}}"): EDIT,
    ("POST", f"{KB}/sources/{{name}}/sync"): EDIT,
    ("GET", f"{KB}/sources/{{name}}/syncs/{{sync_id}}"): VIEW,
    # Jobs by id: the guard checks the job's knowledge base (unknown and hidden alike 404).
    ("GET", "/v1/jobs/{job_id}"): ANY,
    ("GET", "/v1/jobs/{job_id}/events"): ANY,
    ("POST", "/v1/jobs/{job_id}/cancel"): ANY,
    # OpenAI-compatible: knowledge bases in the body (``knowledge_bases``, ``kb:`` models).
    ("POST", "/v1/chat/completions"): ANY,
    ("POST", "/v1/embeddings"): ANY,
    ("GET", "/v1/models"): ANY,
    ("GET", "/v1/agent/tools"): ANY,
    ("POST", "/v1/agent/completions"): ANY,
    ("GET", "/v1/agent/databases"): ADMIN,
    ("PUT", "/v1/agent/databases/{name}"): ADMIN,
    ("DELETE", "/v1/agent/databases/{name}"): ADMIN,
    # Conversations and file chats belong to whoever made them.
    ("POST", "/v1/conversations"): OWN,
    ("GET", "/v1/conversations"): OWN,
    ("GET", "/v1/conversations/{conversation_id}"): OWN,
    ("PATCH", "/v1/conversations/{conversation_id}"): OWN,
    ("DELETE", "/v1/conversations/{conversation_id}"): OWN,
    ("POST", "/v1/messages/{message_id}/feedback"): OWN,
    ("POST", "/v1/file_chats"): UPLOAD,
    # Chatchat v0.2: knowledge_base_name in the body or query, checked by the guard.
    ("GET", "/knowledge_base/list_knowledge_bases"): ANY,
    ("POST", "/knowledge_base/create_knowledge_base"): ANY,
    ("POST", "/knowledge_base/delete_knowledge_base"): ANY,
    ("GET", "/knowledge_base/list_files"): ANY,
    ("POST", "/knowledge_base/upload_docs"): UPLOAD,
    ("POST", "/knowledge_base/delete_docs"): ANY,
    ("POST", "/knowledge_base/update_docs"): ANY,
    ("POST", "/knowledge_base/search_docs"): ANY,
    ("GET", "/knowledge_base/download_doc"): ANY,
    ("POST", "/knowledge_base/recreate_vector_store"): ANY,
    ("POST", "/knowledge_base/upload_temp_docs"): UPLOAD,
    ("POST", "/chat/chat"): OWN,
    ("POST", "/chat/knowledge_base_chat"): OWN,
    ("POST", "/chat/file_chat"): OWN,
    ("POST", "/chat/agent_chat"): OWN,
    ("POST", "/chat/search_engine_chat"): OWN,
    # MCP (streamable HTTP): its tools search and ask knowledge bases through the guard.
    ("*", "/mcp"): ANY,
}

# A path no rule matches: no route serves it (create_app checks), the router answers 404/405.
UNLISTED: Final = ANY


@dataclass(frozen=True)
class Match:
    template: str
    rule: Rule
    params: dict[str, str]


@dataclass(frozen=True)
class _Compiled:
    method: str
    template: str
    pattern: re.Pattern[str]
    rule: Rule
    literal: int  # characters outside parameters: more is more specific


def _compile(method: str, template: str, rule: Rule) -> _Compiled:
    pattern = re.compile(f"^{re.escape(template)}(/.*)?$") if method == "*" else compile_path(template)[0]
    literal = len(re.sub(r"\{[^}]*\}", "", template))
    return _Compiled(method, template, pattern, rule, literal)


class PermissionTable:
    """Finds the rule of a request: the most specific template matching its path and method."""

    def __init__(self, routes: dict[tuple[str, str], Rule] = ROUTES) -> None:
        compiled = [_compile(method, template, rule) for (method, template), rule in routes.items()]
        # Exact routes before mounts, then the most literal first: "/v1/keys" before "/v1/{x}".
        self._compiled = sorted(compiled, key=lambda c: (c.method == "*", -c.literal))

    def match(self, method: str, path: str) -> Match | None:
        wanted = "GET" if method == "HEAD" else method
        for entry in self._compiled:
            if entry.method not in ("*", wanted):
                continue
            found = entry.pattern.match(path)
            if found is not None:
                params = {k: v for k, v in found.groupdict().items() if v is not None}
                return Match(entry.template, entry.rule, params)
        return None


def app_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path template) the app serves; "*" for a mounted app or a raw route."""
    found = []
    for route in iter_route_contexts(app.routes):
        methods = sorted((route.methods or {"*"}) - {"HEAD"}) or ["GET"]
        found += [(method, route.path or "") for method in methods]
    return found


def unlisted_routes(app: FastAPI, routes: dict[tuple[str, str], Rule] = ROUTES) -> list[str]:
    """Routes of ``app`` without a rule (``create_app`` fails on any)."""
    return [f"{method} {path}" for method, path in app_routes(app) if (method, path) not in routes]
