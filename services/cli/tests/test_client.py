"""The client's fallbacks for gateways that cannot run here: an older gateway without the job
events route, and an event stream cut off mid-job. The transport answers with the gateway's
real wire shapes (FastAPI's 404 body, ``text/event-stream`` frames, job JSON)."""

from __future__ import annotations

import json

import httpx
import pytest

from services.cli.client import ApiError, StreamError, ZhikuClient

JOB = {"id": "j1", "knowledge_base": "kb", "file_name": "a.txt", "chunks": 0, "error": None}


def job(state: str, stage: str, progress: float, chunks: int = 0) -> dict:
    return {**JOB, "state": state, "stage": stage, "progress": progress, "chunks": chunks}


def sse(*documents: dict) -> bytes:
    return b"".join(f"data: {json.dumps(d)}\n\n".encode() for d in documents)


def gateway(routes: dict[tuple[str, str], list[httpx.Response]]) -> tuple[httpx.MockTransport, list[str]]:
    """Answers each (method, path) with its responses in turn (the last one repeats)."""
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.raw_path.decode()}")  # as sent on the wire
        answers = routes.get((request.method, request.url.path))
        if not answers:
            return httpx.Response(404, json={"detail": "Not Found"})
        return answers.pop(0) if len(answers) > 1 else answers[0]

    return httpx.MockTransport(handle), seen


def test_watch_job_polls_when_the_events_route_is_missing() -> None:
    transport, seen = gateway(
        {
            ("GET", "/v1/jobs/j1"): [
                httpx.Response(200, json=job("queued", "queued", 0)),
                httpx.Response(200, json=job("running", "embedding", 0.5)),
                httpx.Response(200, json=job("succeeded", "succeeded", 1, chunks=3)),
            ]
        }
    )
    with ZhikuClient("http://gw", transport=transport) as client:
        states = [j["stage"] for j in client.watch_job("j1", poll_interval_s=0)]
    assert states == ["queued", "embedding", "succeeded"]
    assert seen[0] == "GET /v1/jobs/j1/events"


def test_watch_job_follows_events_and_polls_after_a_cut_stream() -> None:
    stream = sse(job("running", "parsing", 0.1), job("running", "embedding", 0.4))
    transport, seen = gateway(
        {
            ("GET", "/v1/jobs/j1/events"): [
                httpx.Response(200, content=stream, headers={"content-type": "text/event-stream"})
            ],
            ("GET", "/v1/jobs/j1"): [httpx.Response(200, json=job("failed", "failed", 1))],
        }
    )
    with ZhikuClient("http://gw", transport=transport) as client:
        stages = [j["stage"] for j in client.watch_job("j1", poll_interval_s=0)]
    assert stages == ["parsing", "embedding", "failed"]
    assert seen == ["GET /v1/jobs/j1/events", "GET /v1/jobs/j1"]


def test_watch_job_stops_at_the_terminal_event_without_polling() -> None:
    stream = sse(job("running", "indexing", 0.9), job("succeeded", "succeeded", 1, chunks=2))
    transport, seen = gateway(
        {
            ("GET", "/v1/jobs/j1/events"): [
                httpx.Response(200, content=stream, headers={"content-type": "text/event-stream"})
            ]
        }
    )
    with ZhikuClient("http://gw", transport=transport) as client:
        final = list(client.watch_job("j1"))[-1]
    assert final["state"] == "succeeded" and final["chunks"] == 2
    assert seen == ["GET /v1/jobs/j1/events"]


def test_unknown_job_on_the_events_route_is_not_hidden_by_polling() -> None:
    missing = {
        "error": {"message": "job 'j1' does not exist", "type": "invalid_request_error", "code": "not_found"}
    }
    transport, _ = gateway(
        {
            ("GET", "/v1/jobs/j1/events"): [httpx.Response(404, json=missing)],
            ("GET", "/v1/jobs/j1"): [httpx.Response(404, json=missing)],
        }
    )
    with ZhikuClient("http://gw", transport=transport) as client, pytest.raises(ApiError) as raised:
        list(client.watch_job("j1"))
    assert raised.value.status == 404 and raised.value.message == "job 'j1' does not exist"


def test_chat_stream_raises_an_in_band_error() -> None:
    chunks = sse({"choices": [{"delta": {"content": "Hel"}}]}) + sse(
        {"error": {"message": "generate service unavailable", "code": "unavailable"}}
    )
    transport, _ = gateway(
        {
            ("POST", "/v1/chat/completions"): [
                httpx.Response(200, content=chunks, headers={"content-type": "text/event-stream"})
            ]
        }
    )
    with ZhikuClient("http://gw", transport=transport) as client:
        stream = client.chat_stream({"model": "default", "messages": []})
        assert next(stream)["choices"][0]["delta"]["content"] == "Hel"
        with pytest.raises(StreamError, match="generate service unavailable"):
            next(stream)


def test_a_missing_route_names_itself() -> None:
    transport, _ = gateway({})
    with ZhikuClient("http://gw", transport=transport) as client, pytest.raises(ApiError) as raised:
        client.list_jobs("docs")
    assert "no route GET /v1/knowledge_bases/docs/jobs" in raised.value.message


def test_names_are_percent_encoded_in_paths() -> None:
    transport, seen = gateway({("DELETE", "/v1/knowledge_bases/员工 手册"): [httpx.Response(204)]})
    with ZhikuClient("http://gw", transport=transport) as client:
        client.delete_knowledge_base("员工 手册")
    assert seen == ["DELETE /v1/knowledge_bases/%E5%91%98%E5%B7%A5%20%E6%89%8B%E5%86%8C"]
