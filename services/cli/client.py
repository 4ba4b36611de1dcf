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

    def form(self) -> dict[str, str]:
        fields: dict[str, str] = {}
        for name, value in vars(self).items():
            if value is None:
                continue
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
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = url.rstrip("/")
        self.has_api_key = bool(api_key)
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s, transport=transport)

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
