"""What the gateway decides on its own: validation, auth, request ids, body limit, errors,
metrics and probes. Services are unreachable here, which is part of what is tested."""

from __future__ import annotations

import asyncio
import json

import grpc
import httpx
import pytest

from services.common.logging import REQUEST_ID_HEADER
from services.gateway.app import create_app
from services.gateway.errors import http_status_for

from .support import asgi_client, gateway_settings, served

ERROR_KEYS = {"message", "type", "code", "param"}


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == ERROR_KEYS
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    return error


@pytest.fixture
async def client():
    async with asgi_client(create_app(gateway_settings({}))) as client:
        yield client


@pytest.fixture
async def locked_client():
    settings = gateway_settings({}, api_keys="alpha-key, beta-key")
    async with asgi_client(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize(
    ("code", "upload", "status"),
    [
        (grpc.StatusCode.NOT_FOUND, False, 404),
        (grpc.StatusCode.INVALID_ARGUMENT, False, 422),
        (grpc.StatusCode.ALREADY_EXISTS, False, 409),
        (grpc.StatusCode.FAILED_PRECONDITION, False, 409),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, False, 429),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, True, 413),
        (grpc.StatusCode.UNAVAILABLE, False, 503),
        (grpc.StatusCode.DEADLINE_EXCEEDED, False, 504),
        (grpc.StatusCode.INTERNAL, False, 500),
        (grpc.StatusCode.NOT_FOUND, True, 404),
    ],
)
def test_grpc_codes_map_to_http_statuses(code: grpc.StatusCode, upload: bool, status: int) -> None:
    assert http_status_for(code, upload=upload) == status


async def test_healthz_answers_while_services_are_down(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_names_every_unreachable_service(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready"
    assert body["down"] == ["embed", "generate", "ingest", "retrieve"]


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": ".."},
        {"name": "a/b"},
        {"name": "x" * 65},
        {"name": "a..b"},
        {"description": "no name"},
        {"name": 7},
    ],
)
async def test_invalid_knowledge_base_names_are_422_in_openai_shape(
    client: httpx.AsyncClient, body: dict
) -> None:
    error = assert_error(await client.post("/v1/knowledge_bases", json=body), 422, "invalid_argument")
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "name"


async def test_invalid_name_in_the_path_is_422(client: httpx.AsyncClient) -> None:
    error = assert_error(await client.get("/v1/knowledge_bases/bad..name"), 422)
    assert error["param"] == "kb"
    assert_error(await client.delete("/v1/knowledge_bases/has space"), 422)


async def test_malformed_json_is_422_and_says_so(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/knowledge_bases", content=b'{"name": "kb",,}', headers={"content-type": "application/json"}
    )
    error = assert_error(response, 422, "invalid_json")
    assert error["param"] == "body"
    assert error["message"].startswith("the request body is not valid JSON")
    assert "at character 14" in error["message"]


async def test_chatchat_routes_answer_errors_in_their_envelope(locked_client: httpx.AsyncClient) -> None:
    """Chatchat's clients read {code, msg, data}: gateway refusals keep the HTTP status and
    take that shape on its routes."""
    for reply in (
        await locked_client.post("/chat/chat", json={"query": "q"}),
        await locked_client.get("/knowledge_base/list_knowledge_bases"),
    ):
        assert reply.status_code == 401
        assert reply.json() == {"code": 401, "msg": reply.json()["msg"], "data": None} and reply.json()["msg"]
    broken = await locked_client.post(
        "/chat/chat",
        content=b"{",
        headers={"content-type": "application/json", "Authorization": "Bearer alpha-key"},
    )
    assert broken.status_code == 422 and broken.json()["code"] == 422
    assert "not valid JSON" in broken.json()["msg"]


async def test_a_question_too_long_to_search_is_refused_in_the_gateways_terms(
    client: httpx.AsyncClient,
) -> None:
    """Refused before any service is called (they are unreachable here), in words about the
    question, not the embed service's internals."""
    body = {"messages": [{"role": "user", "content": "长" * 340_000}], "knowledge_base": "handbook"}
    error = assert_error(await client.post("/v1/chat/completions", json=body), 422)
    assert error["param"] == "messages"
    assert "too long to search" in error["message"] and "340,000" in error["message"]
    assert "texts[0]" not in error["message"]


@pytest.mark.parametrize("name", ["evil\u202etxt.exe", "bell\x85.txt", "para\u2029.txt"])
async def test_upload_names_with_control_or_bidi_characters_are_refused(
    client: httpx.AsyncClient, name: str
) -> None:
    """Refused before the (unreachable) ingest service is asked: 422, never stored as is.
    (CR and LF cannot travel inside a multipart header; the shared name rules refuse them
    for every other way a name arrives, see services/common/tests/test_names.py.)"""
    body = (
        f'--B\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n\r\nhello\r\n--B--\r\n'
    ).encode()
    response = await client.post(
        "/v1/knowledge_bases/kb/files",
        content=body,
        headers={"content-type": "multipart/form-data; boundary=B"},
    )
    error = assert_error(response, 422)
    assert "control" in error["message"] or "bidirectional" in error["message"]


async def test_a_stalled_request_body_gets_408_and_frees_the_connection() -> None:
    """A client that sends half a body and stops is cut off after the read timeout."""
    settings = gateway_settings({}, body_read_timeout_s=0.5)
    async with served(create_app(settings)) as base_url:
        host, port = base_url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /v1/knowledge_bases HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
            b'content-length: 100\r\n\r\n{"name": '
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=30)  # the server closes after answering
        writer.close()
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert json.loads(payload)["error"]["code"] == "request_timeout"


@pytest.mark.parametrize(
    "body",
    [
        {"query": ""},
        {"query": "q", "top_k": 0},
        {"query": "q", "top_k": 101},
        {"query": "q", "score_threshold": 1.5},
        {"query": "q", "score_threshold": -0.1},
    ],
)
async def test_search_parameters_are_validated(client: httpx.AsyncClient, body: dict) -> None:
    assert_error(await client.post("/v1/knowledge_bases/kb/search", json=body), 422)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages"),
        ({"model": "m", "messages": [{"role": "user", "content": "q"}], "temperature": 3}, "temperature"),
        (
            {"model": "m", "messages": [{"role": "user", "content": "q"}], "knowledge_base": "../x"},
            "knowledge_base",
        ),
        ({"model": "kb:a", "messages": [{"role": "user", "content": "q"}], "knowledge_base": "b"}, "model"),
        (
            {
                "model": "m",
                "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
            },
            "messages",
        ),
    ],
)
async def test_chat_requests_are_validated_before_any_call(
    client: httpx.AsyncClient, body: dict, param: str
) -> None:
    error = assert_error(await client.post("/v1/chat/completions", json=body), 422)
    assert error["param"] == param


async def test_unknown_route_is_404_in_openai_shape(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/nothing/here"), 404, "not_found")


async def test_unreachable_service_is_503(client: httpx.AsyncClient) -> None:
    error = assert_error(await client.get("/v1/knowledge_bases"), 503, "unavailable")
    assert error["type"] == "server_error"


async def test_request_id_is_echoed_or_made(client: httpx.AsyncClient) -> None:
    echoed = await client.get("/healthz", headers={REQUEST_ID_HEADER: "trace-abc.123"})
    assert echoed.headers[REQUEST_ID_HEADER] == "trace-abc.123"
    made = await client.get("/healthz")
    other = await client.get("/healthz")
    assert (
        made.headers[REQUEST_ID_HEADER]
        and made.headers[REQUEST_ID_HEADER] != other.headers[REQUEST_ID_HEADER]
    )
    # Ids are echoed into logs and headers: anything odd is replaced, not propagated.
    replaced = await client.get("/healthz", headers={REQUEST_ID_HEADER: "x" * 300})
    assert replaced.headers[REQUEST_ID_HEADER] != "x" * 300
    errored = await client.get("/v1/knowledge_bases/bad..name", headers={REQUEST_ID_HEADER: "err-1"})
    assert errored.status_code == 422
    assert errored.headers[REQUEST_ID_HEADER] == "err-1"


async def test_api_keys_guard_the_api_but_not_the_probes(locked_client: httpx.AsyncClient) -> None:
    missing = assert_error(await locked_client.get("/v1/models"), 401, "invalid_api_key")
    assert missing["type"] == "authentication_error"
    wrong = await locked_client.get("/v1/models", headers={"Authorization": "Bearer gamma-key"})
    assert_error(wrong, 401)
    assert wrong.headers["www-authenticate"] == "Bearer"
    basic = await locked_client.get("/v1/models", headers={"Authorization": "Basic YWxwaGEta2V5"})
    assert_error(basic, 401)
    for key in ("alpha-key", "beta-key"):
        # Past auth, the request reaches validation: 422 proves the key was accepted.
        accepted = await locked_client.get(
            "/v1/knowledge_bases/bad..name", headers={"Authorization": f"Bearer {key}"}
        )
        assert accepted.status_code == 422
    for path in ("/healthz", "/metrics"):
        assert (await locked_client.get(path)).status_code == 200
    assert (await locked_client.get("/readyz")).status_code == 503


async def test_open_when_no_keys_are_configured(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/knowledge_bases/bad..name")).status_code == 422


async def test_upload_over_the_limit_is_413_before_reading_it() -> None:
    settings = gateway_settings({}, max_upload_mb=1)
    async with asgi_client(create_app(settings)) as client:
        big = b"x" * (1024 * 1024 + 10)
        response = await client.post("/v1/knowledge_bases/kb/files", files={"files": ("big.txt", big)})
        error = assert_error(response, 413, "request_too_large")
        assert "1 MB" in error["message"]


async def test_chunked_upload_is_cut_off_at_the_limit() -> None:
    """No Content-Length: the limit is enforced while the body streams in."""
    settings = gateway_settings({}, max_upload_mb=1)
    sent = 0

    async def body():
        nonlocal sent
        yield b'--B\r\nContent-Disposition: form-data; name="files"; filename="a.txt"\r\n\r\n'
        for _ in range(64):  # up to 4 MB, far past the limit
            sent += 64 * 1024
            yield b"y" * (64 * 1024)
        yield b"\r\n--B--\r\n"

    async with served(create_app(settings)) as base_url, httpx.AsyncClient(base_url=base_url) as client:
        response = await client.post(
            "/v1/knowledge_bases/kb/files",
            content=body(),
            headers={"content-type": "multipart/form-data; boundary=B"},
        )
    assert_error(response, 413, "request_too_large")


async def test_upload_within_the_limit_passes_the_size_check(client: httpx.AsyncClient) -> None:
    """A small upload gets past the limit to the (unreachable) ingest service: 503, not 413."""
    response = await client.post("/v1/knowledge_bases/kb/files", files={"files": ("a.txt", b"hello")})
    assert_error(response, 503)


@pytest.mark.parametrize(
    ("data", "files"),
    [
        ({"chunk_size": "100", "chunk_overlap": "100"}, [("files", ("a.txt", b"x"))]),
        ({"chunk_size": "-1"}, [("files", ("a.txt", b"x"))]),
        ({}, [("files", ("a.txt", b"x")), ("files", ("dir/a.txt", b"y"))]),
        ({}, [("files", ("..", b"x"))]),
        ({}, []),
    ],
)
async def test_upload_form_is_validated(client: httpx.AsyncClient, data: dict, files: list) -> None:
    response = await client.post(
        "/v1/knowledge_bases/kb/files", data=data, files=files or {"other": ("a", b"")}
    )
    assert_error(response, 422)


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient) -> None:
    await client.get("/v1/knowledge_bases/first..bad")
    await client.get("/v1/knowledge_bases/second..bad")
    text = (await client.get("/metrics")).text
    line = next(
        line
        for line in text.splitlines()
        if line.startswith("zhiku_http_requests_total{")
        and 'route="/v1/knowledge_bases/{kb}"' in line
        and 'status="422"' in line
        and 'method="GET"' in line
    )
    assert float(line.rsplit(" ", 1)[1]) >= 2
    assert "first..bad" not in text


async def test_openapi_documents_every_route(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path in (
        "/v1/knowledge_bases",
        "/v1/knowledge_bases/{kb}",
        "/v1/knowledge_bases/{kb}/files",
        "/v1/knowledge_bases/{kb}/files/{file_name}",
        "/v1/knowledge_bases/{kb}/files/{file_name}/content",
        "/v1/knowledge_bases/{kb}/search",
        "/v1/jobs/{job_id}",
        "/v1/chat/completions",
        "/v1/embeddings",
        "/v1/models",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in paths, path
    upload = paths["/v1/knowledge_bases/{kb}/files"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]
