"""An embedder that costs nothing: a TEI-protocol server answering at once, for pipeline benchmarks.

``make bench-ingest`` runs the stack against it to measure the pipeline's own ceiling: with
the model's time taken out, what is left is what Zhiku spends per file (HTTP, gRPC, catalog,
broker, sparse vectors, the vector store). It speaks the part of HuggingFace
text-embeddings-inference's HTTP API that the embed service's ``tei`` backend calls
(services/embed/backends/tei.py): ``GET /health``, ``GET /info`` (TEI's field names, with
``max_client_batch_size``) and ``POST /embed`` (``inputs`` a string or a list, ``normalize``,
``truncate``) answering one list of floats per input, and TEI's error body
``{"error", "error_type"}`` with 413 for an empty or too large batch and 422 for a malformed
one. So the embed service runs exactly as in production; only the model is gone.

Vectors are deterministic: each text picks one of ``pool`` unit vectors by its CRC-32, and
the pool's JSON is rendered once at start, so an answer is a string join, not arithmetic
(the server's own CPU stays out of the figures it serves; the bench prints it anyway). Texts
sharing a bucket share a vector: this is for throughput, not for retrieval quality.

    python -m testing.instant_tei --port 8091 [--dimension 384] [--max-client-batch-size 512]
"""

from __future__ import annotations

import argparse
import json
import zlib
from typing import Any

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

DEFAULT_DIMENSION = 384
DEFAULT_BATCH = 512
DEFAULT_POOL = 4096


def _error(status: int, error_type: str, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "error_type": error_type}, status_code=status)


class InstantTei:
    """The server's state: the pre-rendered vector pool and TEI's advertised limits."""

    def __init__(
        self,
        dimension: int = DEFAULT_DIMENSION,
        max_client_batch_size: int = DEFAULT_BATCH,
        pool: int = DEFAULT_POOL,
        model_id: str = "",
    ) -> None:
        if dimension < 1 or max_client_batch_size < 1 or pool < 1:
            raise ValueError("dimension, max_client_batch_size and pool must be positive")
        self.dimension = dimension
        self.max_client_batch_size = max_client_batch_size
        self.model_id = model_id or f"zhiku/instant-{dimension}"
        vectors = np.random.default_rng(20).standard_normal((pool, dimension)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        # float32 -> Python float -> shortest repr: what TEI's own JSON looks like.
        self._rendered = [json.dumps([float(x) for x in row]) for row in vectors]
        self.app = Starlette(
            routes=[
                Route("/health", self.health, methods=["GET"]),
                Route("/info", self.info, methods=["GET"]),
                Route("/embed", self.embed, methods=["POST"]),
            ]
        )

    def vector_json(self, text: str) -> str:
        """The JSON array this server answers for ``text`` (the same on every call)."""
        return self._rendered[zlib.crc32(text.encode("utf-8")) % len(self._rendered)]

    async def health(self, _: Request) -> Response:
        return Response(status_code=200)

    async def info(self, _: Request) -> JSONResponse:
        return JSONResponse(
            {
                "model_id": self.model_id,
                "model_sha": None,
                "model_dtype": "float32",
                "model_type": {"embedding": {"pooling": "mean"}},
                "max_concurrent_requests": 512,
                "max_input_length": 512,
                "max_batch_tokens": 16384,
                "max_batch_requests": None,
                "max_client_batch_size": self.max_client_batch_size,
                "auto_truncate": True,
                "tokenization_workers": 1,
                "version": "1.8.0",
                "sha": None,
                "docker_label": None,
            }
        )

    async def embed(self, request: Request) -> Response:
        try:
            body: Any = json.loads(await request.body())
        except ValueError as error:
            return _error(422, "Validation", f"Failed to parse the request body as JSON: {error}")
        inputs = body.get("inputs") if isinstance(body, dict) else None
        batch = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(batch, list) or not all(isinstance(text, str) for text in batch):
            return _error(422, "Validation", "`inputs` must be a string or a list of strings")
        if not batch:
            return _error(413, "Validation", "`inputs` cannot be empty")
        if len(batch) > self.max_client_batch_size:
            return _error(
                413,
                "Validation",
                f"batch size {len(batch)} > maximum allowed batch size {self.max_client_batch_size}",
            )
        content = "[" + ",".join(self.vector_json(text) for text in batch) + "]"
        return Response(content, media_type="application/json")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="TEI-protocol server answering at once (benchmarks).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dimension", type=int, default=DEFAULT_DIMENSION)
    parser.add_argument("--max-client-batch-size", type=int, default=DEFAULT_BATCH)
    parser.add_argument("--pool", type=int, default=DEFAULT_POOL, help="distinct vectors served")
    args = parser.parse_args(argv)
    server = InstantTei(args.dimension, args.max_client_batch_size, args.pool)
    uvicorn.run(server.app, host=args.host, port=args.port, log_level="warning", lifespan="off")


if __name__ == "__main__":
    main()
