"""A small typed client for the gateway's public HTTP API, the only layer that speaks HTTP.

Commands never touch httpx: they call these methods and get plain JSON documents back, or one
of the :class:`ClientError` subclasses, which carry a message fit to print as it is. Keeping
the wire details here (paths, the error envelope, SSE framing, the polling fallback) means the
same client can serve scripts and tests, and a route change is a change in one place.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict
from urllib.parse import quote

import httpx
from httpx_sse import SSEError, connect_sse

from services.cli.credentials import SESSION_COOKIE

TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
DEFAULT_URL = "http://127.0.0.1:8000"
# A job's event stream may stay quiet while it waits in the queue; past this, poll instead.
EVENTS_IDLE_S = 60.0


class ClientError(Exception):
    """Anything that stops a command; ``str()`` is the message shown to the user."""


class GatewayUnreachable(ClientError):
    """No HTTP answer at all: the gateway is down, the URL is wrong, or it timed out."""


class ApiError(ClientError):
    """The gateway answered with an error status; ``message`` is its own explanation."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


class StreamError(ClientError):
    """An error reported inside an event stream after the response had started (status 200)."""


class KnowledgeBase(TypedDict, total=False):
    name: str
    description: str
    file_count: int
    chunk_count: int
    embed_model: str
    created_at: float


class Job(TypedDict, total=False):
    id: str
    knowledge_base: str
    file_name: str
    state: str
    stage: str
    progress: float
    chunks: int
    error: str | None
    unchanged: bool
    kind: str  # "file" or "migrate"
    embed_model: str | None  # migrate: the model it moves to


class SearchHit(TypedDict, total=False):
    id: str
    text: str
    score: float
    file_name: str
    metadata: dict[str, str]


class User(TypedDict, total=False):
    id: str
    email: str
    display_name: str
    admin: bool
    groups: list[str]
    disabled: bool
    sso: bool
    created_at: float | str


class Group(TypedDict, total=False):
    name: str
    display_name: str
    members: list[Any]


class Member(TypedDict, total=False):
    kind: str
    id: str
    name: str
    role: str


class Login(TypedDict):
    """What a password login returns: who, the session cookie's value and its CSRF token."""

    user: User
    session: str
    csrf_token: str


def _listed(body: Any, name: str) -> list[Any]:
    """List routes answer ``{"data": [...]}`` (the gateway's convention) or ``{name: [...]}``."""
    if isinstance(body, dict):
        items = body.get("data", body.get(name))
        if isinstance(items, list):
            return items
    return body if isinstance(body, list) else []


class ApiKey(TypedDict, total=False):
    id: str
    name: str
    key: str
    prefix: str
    knowledge_bases: list[str] | None
    rate_limit_per_minute: int | None
    admin: bool
    created_at: float | str


@dataclass(frozen=True)
class UploadOptions:
    """Optional form fields of an upload; ``None`` leaves the gateway's default."""

    override: bool | None = None
    chunk_size: int | None = None
    chunk_overlap: int | None = None
    splitter: str | None = None
    title_enhance: bool | None = None
    parent_child: bool | None = None
    parent_chunk_size: int | None = None
    # Who may retrieve the files: {"users": [ids], "groups": [names]}; None: everyone.
    access: dict[str, list[str]] | None = None

    def form(self) -> dict[str, str]:
        fields: dict[str, str] = {}
        for name, value in vars(self).items():
            if value is None:
                continue
            if isinstance(value, dict):
                fields[name] = json.dumps(value)
            else:
                fields[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
        return fields


def _error_message(response: httpx.Response) -> tuple[str, str | None]:
    """The gateway's own words: OpenAI's ``{"error": {...}}``, FastAPI's ``detail``, or the text."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return (text[:500] or response.reason_phrase or f"HTTP {response.status_code}"), None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        return str(error.get("message") or response.reason_phrase), error.get("code")
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        return (detail if isinstance(detail, str) else json.dumps(detail, ensure_ascii=False)), None
    return json.dumps(body, ensure_ascii=False)[:500], None


def _path(*parts: str) -> str:
    """Join path segments, each percent-encoded (names may hold spaces or Chinese)."""
    return "/" + "/".join(quote(part, safe="") if i else part for i, part in enumerate(parts))


class ZhikuClient:
    """Typed calls to one gateway; use as a context manager to close its connections."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        transport: httpx.BaseTransport | None = None,
        session: str | None = None,
        csrf_token: str | None = None,
    ) -> None:
        """``api_key`` (a Bearer key) or ``session`` (the ``zhiku_session`` cookie of a password
        login, with its ``csrf_token``, which the gateway wants on every unsafe request)."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        cookies: dict[str, str] = {}
        if session and not api_key:
            cookies[SESSION_COOKIE] = session
            if csrf_token:  # safe methods ignore it; sending it always keeps one code path
                headers["X-CSRF-Token"] = csrf_token
        self.url = url.rstrip("/")
        self.has_api_key = bool(api_key)
        self.has_session = bool(cookies)
        self._http = httpx.Client(
            base_url=self.url, headers=headers, cookies=cookies, timeout=timeout_s, transport=transport
        )

    def __enter__(self) -> ZhikuClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def absolute(self, url: str) -> str:
        """Citation URLs are relative to the gateway; make them clickable from a terminal."""
        return url if "://" in url else f"{self.url}{url}"

    # -- plumbing ---------------------------------------------------------------------------

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as error:
            raise GatewayUnreachable(f"the gateway at {self.url} did not answer in time ({error})") from None
        except httpx.TransportError as error:
            raise GatewayUnreachable(f"cannot reach the gateway at {self.url}: {error}") from None
        self._raise_for_status(response)
        return response

    def _raise_for_status(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        message, code = _error_message(response)
        if response.status_code == 404 and message == "Not Found":  # the framework's: no such route
            request = response.request
            message = f"the gateway has no route {request.method} {request.url.path} (an older version?)"
        raise ApiError(response.status_code, message, code)

    def _stream_events(self, method: str, path: str, **kwargs: Any) -> Iterator[str]:
        """The ``data`` of each server-sent event; errors before the stream as :class:`ApiError`."""
        try:
            with connect_sse(self._http, method, path, **kwargs) as source:
                if source.response.status_code >= 400:
                    source.response.read()
                    self._raise_for_status(source.response)
                for event in source.iter_sse():
                    yield event.data
        except SSEError as error:
            raise StreamError(f"{path} did not answer with an event stream: {error}") from None
        except httpx.ConnectError as error:
            raise GatewayUnreachable(f"cannot reach the gateway at {self.url}: {error}") from None
        except httpx.TimeoutException as error:
            raise GatewayUnreachable(f"the gateway at {self.url} stopped answering ({error})") from None
        except httpx.TransportError as error:
            raise GatewayUnreachable(f"lost the connection to the gateway at {self.url}: {error}") from None

    # -- knowledge bases and files ------------------------------------------------------------

    def list_knowledge_bases(self) -> list[KnowledgeBase]:
        return self._send("GET", "/v1/knowledge_bases").json()["data"]

    def create_knowledge_base(
        self, name: str, description: str = "", parent_child: bool = False, parent_chunk_size: int = 0
    ) -> KnowledgeBase:
        body: dict[str, Any] = {"name": name, "description": description}
        if parent_child:
            body["parent_child"] = True
            if parent_chunk_size:
                body["parent_chunk_size"] = parent_chunk_size
        return self._send("POST", "/v1/knowledge_bases", json=body).json()

    def delete_knowledge_base(self, name: str) -> None:
        self._send("DELETE", _path("v1/knowledge_bases", name))

    def migrate_knowledge_base(self, name: str, embed_model: str) -> Job:
        """Start re-embedding the knowledge base with another model; the answer is its job."""
        path = _path("v1/knowledge_bases", name, "migrate")
        return self._send("POST", path, json={"embed_model": embed_model}).json()

    def get_knowledge_base(self, name: str) -> KnowledgeBase:
        return self._send("GET", _path("v1/knowledge_bases", name)).json()

    def list_files(self, kb: str) -> list[dict[str, Any]]:
        return self._send("GET", _path("v1/knowledge_bases", kb, "files")).json()["data"]

    def upload_file(self, kb: str, path: Path, name: str, options: UploadOptions) -> Job:
        """Upload one file; the gateway answers 202 with its ingestion job."""
        with path.open("rb") as handle:
            files = [("files", (name, handle, "application/octet-stream"))]
            response = self._send(
                "POST", _path("v1/knowledge_bases", kb, "files"), files=files, data=options.form()
            )
        return response.json()["jobs"][0]

    # -- jobs -------------------------------------------------------------------------------------

    def get_job(self, job_id: str) -> Job:
        return self._send("GET", _path("v1/jobs", job_id)).json()

    def cancel_job(self, job_id: str) -> Job:
        return self._send("POST", _path("v1/jobs", job_id, "cancel")).json()

    def list_jobs(self, kb: str) -> list[Job]:
        return self._send("GET", _path("v1/knowledge_bases", kb, "jobs")).json()["data"]

    def job_events(self, job_id: str) -> Iterator[Job]:
        """Each job document the gateway pushes; the stream ends after a terminal state."""
        path = _path("v1/jobs", job_id, "events")
        for data in self._stream_events("GET", path, timeout=httpx.Timeout(30.0, read=EVENTS_IDLE_S)):
            yield json.loads(data)

    def watch_job(self, job_id: str, poll_interval_s: float = 0.5) -> Iterator[Job]:
        """Follow a job to a terminal state: its event stream, else polling ``GET /v1/jobs/{id}``.

        Polling takes over when the events route answers 404 (an older gateway) or the stream
        breaks off before a terminal state, so a dropped connection never loses the outcome.
        """
        try:
            for job in self.job_events(job_id):
                yield job
                if job.get("state") in TERMINAL_STATES:
                    return
        except ApiError as error:
            if error.status != 404:
                raise
        except (StreamError, GatewayUnreachable):
            pass
        while True:
            job = self.get_job(job_id)
            yield job
            if job.get("state") in TERMINAL_STATES:
                return
            time.sleep(poll_interval_s)

    # -- retrieval and chat -------------------------------------------------------------------------

    def search(self, kb: str, query: str, **params: Any) -> list[SearchHit]:
        body = {"query": query, **{k: v for k, v in params.items() if v is not None}}
        return self._send("POST", _path("v1/knowledge_bases", kb, "search"), json=body).json()["data"]

    def chat_stream(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The chunks of a streamed chat completion, up to ``[DONE]``; in-band errors raise."""
        return self._chunks("/v1/chat/completions", body)

    def agent_stream(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The chunks of a streamed agent run (``agent_step`` chunks among them)."""
        return self._chunks("/v1/agent/completions", body)

    def _chunks(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        for data in self._stream_events("POST", path, json={**body, "stream": True}):
            if data.strip() == "[DONE]":
                return
            chunk = json.loads(data)
            if isinstance(chunk, dict) and isinstance(chunk.get("error"), dict):
                raise StreamError(str(chunk["error"].get("message") or chunk["error"]))
            yield chunk

    # -- API keys -------------------------------------------------------------------------------

    def create_key(
        self,
        name: str,
        knowledge_bases: list[str] | None = None,
        rate_limit_per_minute: int | None = None,
        admin: bool = False,
    ) -> ApiKey:
        body = {
            "name": name,
            "knowledge_bases": knowledge_bases,
            "rate_limit_per_minute": rate_limit_per_minute,
            "admin": admin,
        }
        return self._send("POST", "/v1/keys", json=body).json()

    def list_keys(self) -> list[ApiKey]:
        return self._send("GET", "/v1/keys").json()["data"]

    def revoke_key(self, key_id: str) -> None:
        self._send("DELETE", _path("v1/keys", key_id))

    # -- sources --------------------------------------------------------------------------

    def create_source(self, kb: str, body: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = self._send(
            "POST", _path("v1/knowledge_bases", kb, "sources"), json=body
        ).json()
        return created

    def list_sources(self, kb: str) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = self._send("GET", _path("v1/knowledge_bases", kb, "sources")).json()[
            "data"
        ]
        return listed

    def delete_source(self, kb: str, name: str) -> None:
        self._send("DELETE", _path("v1/knowledge_bases", kb, "sources", name))

    def sync_source(self, kb: str, name: str) -> dict[str, Any]:
        report: dict[str, Any] = self._send(
            "POST", _path("v1/knowledge_bases", kb, "sources", name, "sync")
        ).json()
        return report

    def sync_report(self, kb: str, name: str, sync_id: str = "latest") -> dict[str, Any]:
        report: dict[str, Any] = self._send(
            "GET", _path("v1/knowledge_bases", kb, "sources", name, "syncs", sync_id)
        ).json()
        return report

    # -- people, sessions and sharing ------------------------------------------------------

    def auth_config(self) -> dict[str, Any]:
        config: dict[str, Any] = self._send("GET", "/v1/auth/config").json()
        return config

    def login(self, email: str, password: str) -> Login:
        """Password sign-in; the gateway sets the session cookie, which is returned here."""
        response = self._send("POST", "/v1/auth/login", json={"email": email, "password": password})
        body = response.json()
        session = response.cookies.get(SESSION_COOKIE) or self._http.cookies.get(SESSION_COOKIE)
        if not session:
            raise ClientError(f"the gateway signed {email} in but set no {SESSION_COOKIE} cookie")
        return {"user": body["user"], "session": session, "csrf_token": body.get("csrf_token", "")}

    def logout(self) -> None:
        self._send("POST", "/v1/auth/logout")

    def me(self) -> dict[str, Any]:
        """``{"user": User | None, "csrf_token": ..., "auth": "session" | "key" | "open"}``."""
        who: dict[str, Any] = self._send("GET", "/v1/auth/me").json()
        return who

    def list_users(self) -> list[User]:
        return _listed(self._send("GET", "/v1/users").json(), "users")

    def create_user(
        self, email: str, display_name: str, password: str | None = None, admin: bool = False
    ) -> User:
        body: dict[str, Any] = {"email": email, "display_name": display_name or email}
        if password:
            body["password"] = password
        if admin:
            body["admin"] = True
        created: User = self._send("POST", "/v1/users", json=body).json()
        return created

    def update_user(self, user_id: str, **change: Any) -> User:
        updated: User = self._send("PATCH", _path("v1/users", user_id), json=change).json()
        return updated

    def resolve_user(self, who: str) -> str:
        """A user id for an email (or an id): looked up when this caller may list users; else the
        text as given, for the gateway to resolve or refuse with its own message."""
        if who.startswith("u_") and "@" not in who:
            return who
        try:
            users = self.list_users()
        except ApiError as error:
            if error.status in (401, 403, 404):
                return who
            raise
        wanted = who.strip().lower()
        for user in users:
            if str(user.get("email", "")).lower() == wanted:
                return str(user["id"])
        raise ApiError(404, f"no user with the email {who!r}")

    def list_groups(self) -> list[Group]:
        return _listed(self._send("GET", "/v1/groups").json(), "groups")

    def create_group(self, name: str, display_name: str = "") -> Group:
        body = {"name": name, "display_name": display_name or name}
        created: Group = self._send("POST", "/v1/groups", json=body).json()
        return created

    def delete_group(self, name: str) -> None:
        self._send("DELETE", _path("v1/groups", name))

    def add_group_member(self, group: str, user_id: str) -> None:
        self._send("PUT", _path("v1/groups", group, "members", user_id))

    def remove_group_member(self, group: str, user_id: str) -> None:
        self._send("DELETE", _path("v1/groups", group, "members", user_id))

    def list_members(self, kb: str) -> list[Member]:
        return _listed(self._send("GET", _path("v1/knowledge_bases", kb, "members")).json(), "members")

    def share(self, kb: str, kind: str, member_id: str, role: str) -> None:
        body = {"kind": kind, "id": member_id, "role": role}
        self._send("PUT", _path("v1/knowledge_bases", kb, "members"), json=body)

    def unshare(self, kb: str, kind: str, member_id: str) -> None:
        self._send("DELETE", _path("v1/knowledge_bases", kb, "members", kind, member_id))

    def file_access(self, kb: str, file: str) -> dict[str, list[str]]:
        access: dict[str, list[str]] = self._send(
            "GET", _path("v1/knowledge_bases", kb, "files", file, "access")
        ).json()
        return access

    def set_file_access(
        self, kb: str, file: str, users: list[str], groups: list[str]
    ) -> dict[str, list[str]]:
        body = {"users": users, "groups": groups}
        response = self._send("PUT", _path("v1/knowledge_bases", kb, "files", file, "access"), json=body)
        access: dict[str, list[str]] = response.json() if response.content else body
        return access
