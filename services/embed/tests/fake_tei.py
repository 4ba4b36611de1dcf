"""A small stand-in for HuggingFace text-embeddings-inference, speaking its HTTP contract.

It listens on loopback for real (stdlib ``http.server`` in a thread), so the TEI backend is
tested through httpx, sockets and JSON exactly as against TEI: ``GET /health``, ``GET /info``
(TEI's field names) and ``POST /embed`` (``inputs`` a string or a list, ``normalize``,
``truncate``), returning one list of floats per input, ``POST /rerank`` (``query``,
``texts``, ``raw_scores``) returning ``[{"index", "score"}]`` best first, and TEI's error body
``{"error": ..., "error_type": ...}`` with its statuses: 413 ``Validation`` for an empty or
too large batch, 422 ``Tokenizer`` for a batch holding a text its tokenizer fails on (TEI
fails the whole request), 503 ``Unhealthy``, 429 ``Overloaded``. Vectors are a hashed bag of
character bigrams, so they are deterministic and texts sharing characters score higher.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

_ERROR_TYPES = {413: "Validation", 422: "Tokenizer", 424: "Backend", 429: "Overloaded", 503: "Unhealthy"}


def fake_vector(text: str, dimension: int) -> np.ndarray:
    """Hashed bag of character unigrams and bigrams, unnormalised."""
    vector = np.zeros(dimension, dtype=np.float32)
    grams = list(text) + [text[i : i + 2] for i in range(len(text) - 1)]
    for gram in grams:
        digest = hashlib.blake2b(gram.encode("utf-8"), digest_size=8).digest()
        bucket = int.from_bytes(digest[:4], "little") % dimension
        sign = 1.0 if digest[4] & 1 else -1.0
        vector[bucket] += sign
    return vector


@dataclass
class FakeTeiState:
    """What the test controls and observes; shared with the handler threads under a lock."""

    model_id: str = "fake/bge-tiny"
    dimension: int = 64
    max_client_batch_size: int = 4
    # /info may advertise a larger limit than enforced, to test the 413 fallback.
    advertised_batch_size: int | None = None
    # Statuses to answer to the next POST /embed calls, oldest first (e.g. 503, 429).
    failures: deque[int] = field(default_factory=deque)
    # Texts the "tokenizer" fails on: a POST /embed holding one is answered 422 as a whole.
    poison: set[str] = field(default_factory=set)
    # Inputs of every POST /embed answered 422 because of a poison text.
    rejected: list[list[str]] = field(default_factory=list)
    # Inputs of every POST /embed that was answered 200, in arrival order.
    batches: list[list[str]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    # Query and texts of every POST /rerank answered 200.
    reranks: list[list[str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _TeiServer(ThreadingHTTPServer):
    """Keeps its open keep-alive connections, cut on stop() so "TEI is down" really means down."""

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self.connections: set[socket.socket] = set()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: FakeTeiState  # set on a per-server subclass
    server: _TeiServer

    def setup(self) -> None:
        super().setup()
        self.server.connections.add(self.connection)

    def finish(self) -> None:
        self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message, "error_type": _ERROR_TYPES.get(status, "Backend")})

    def do_GET(self) -> None:
        with self.state.lock:
            self.state.requests.append(f"GET {self.path}")
        if self.path == "/health":
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/info":
            state = self.state
            self._json(
                200,
                {
                    "model_id": state.model_id,
                    "model_sha": None,
                    "model_dtype": "float32",
                    "model_type": {"embedding": {"pooling": "cls"}},
                    "max_concurrent_requests": 512,
                    "max_input_length": 512,
                    "max_batch_tokens": 16384,
                    "max_batch_requests": None,
                    "max_client_batch_size": state.advertised_batch_size or state.max_client_batch_size,
                    "auto_truncate": False,
                    "tokenization_workers": 2,
                    "version": "1.8.0",
                    "sha": None,
                    "docker_label": None,
                },
            )
        else:
            self._json(404, {"error": f"no route {self.path}", "error_type": "Validation"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        with self.state.lock:
            self.state.requests.append(f"POST {self.path}")
            failure = self.state.failures.popleft() if self.state.failures else None
        if self.path not in ("/embed", "/rerank"):
            self._json(404, {"error": f"no route {self.path}", "error_type": "Validation"})
            return
        if failure is not None:
            self._error(failure, {503: "unhealthy", 429: "Model is overloaded"}.get(failure, "failed"))
            return
        try:
            body = json.loads(raw)
        except ValueError as error:
            self._error(422, f"Failed to parse the request body as JSON: {error}")
            return
        if self.path == "/rerank":
            self._rerank(body)
            return
        inputs = body.get("inputs")
        batch = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(batch, list) or not all(isinstance(text, str) for text in batch):
            self._error(422, "`inputs` must be a string or a list of strings")
            return
        if not batch:
            self._error(413, "`inputs` cannot be empty")
            return
        limit = self.state.max_client_batch_size
        if len(batch) > limit:
            self._error(413, f"batch size {len(batch)} > maximum allowed batch size {limit}")
            return
        bad = next((text for text in batch if text in self.state.poison), None)
        if bad is not None:
            with self.state.lock:
                self.state.rejected.append(list(batch))
            self._error(422, f"Tokenizer error: cannot tokenize {bad!r}")
            return
        vectors = np.stack([fake_vector(text, self.state.dimension) for text in batch])
        if body.get("normalize", True):
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        with self.state.lock:
            self.state.batches.append(list(batch))
        self._json(200, vectors.tolist())

    def _rerank(self, body: dict[str, Any]) -> None:
        """TEI's ``/rerank``: ``{"query", "texts", "raw_scores"}`` -> ``[{"index", "score"}]``,
        best first; the score is a sigmoid of the fake vectors' cosine (a stand-in model)."""
        query, texts = body.get("query"), body.get("texts")
        if not isinstance(query, str) or not isinstance(texts, list) or not texts:
            self._error(413 if texts == [] else 422, "`query` and non-empty `texts` are required")
            return
        if len(texts) > self.state.max_client_batch_size:
            limit = self.state.max_client_batch_size
            self._error(413, f"batch size {len(texts)} > maximum allowed batch size {limit}")
            return
        dimension = self.state.dimension
        q = fake_vector(query, dimension)
        q /= max(float(np.linalg.norm(q)), 1e-12)
        results = []
        for index, text in enumerate(texts):
            v = fake_vector(text, dimension)
            raw = float(v @ q / max(float(np.linalg.norm(v)), 1e-12)) * 8.0
            score = raw if body.get("raw_scores") else 1.0 / (1.0 + np.exp(-raw))
            results.append({"index": index, "score": float(score)})
        with self.state.lock:
            self.state.reranks.append([query, *texts])
        self._json(200, sorted(results, key=lambda item: -item["score"]))


class FakeTei:
    """Start with ``with FakeTei() as tei:``; ``tei.url`` is its base URL."""

    def __init__(self, state: FakeTeiState | None = None) -> None:
        self.state = state or FakeTeiState()
        handler = type("BoundHandler", (_Handler,), {"state": self.state})
        self._server = _TeiServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> FakeTei:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        for connection in list(self._server.connections):
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeTei:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
