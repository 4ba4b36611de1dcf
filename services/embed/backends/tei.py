"""The ``tei`` backend: HuggingFace text-embeddings-inference over HTTP.

Contract used (TEI's router): ``GET /info`` gives ``model_id`` and ``max_client_batch_size``;
``POST /embed`` takes ``{"inputs": [...], "normalize": true, "truncate": true}`` and returns
one list of floats per input; errors come as ``{"error": ..., "error_type": ...}`` with 413
for validation (a batch over the limit), 422 tokenizer, 424 backend, 429 overloaded and 503
unhealthy. Calls are split at ``max_client_batch_size`` and sent a few at a time; a 413 that
still happens (a smaller limit behind a proxy, a payload limit) halves the batch. Only
connection failures, 5xx and 429 are retried, with exponential backoff: anything else is the
caller's or the operator's to fix and is reported at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

import httpx
import numpy as np
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_exponential, wait_random

from services.common.errors import (
    DependencyUnavailable,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    ZhikuError,
)
from services.embed.backends.base import EmbedBackend
from services.embed.config import EmbedSettings
from services.embed.domain import EmbedKind, l2_normalise
from services.embed.metrics import EMBED_BATCH_SIZE, TEI_RETRIES

log = logging.getLogger("zhiku.embed.tei")

T = TypeVar("T")

_PROBE_TEXT = "dimension probe"
_DEFAULT_CLIENT_BATCH = 32  # TEI's own default for --max-client-batch-size


class _TeiStatusError(Exception):
    """TEI answered with an error status; ``message`` is its ``error`` field or body."""

    def __init__(self, status: int, message: str, request: str) -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message
        self.request = request


class _BatchTooLarge(_TeiStatusError):
    """413: TEI's validation status; with truncation on, the batch or payload is too large."""


def _is_transient(error: BaseException) -> bool:
    if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
        return True
    return isinstance(error, _TeiStatusError) and (error.status >= 500 or error.status == 429)


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict) and "error" in body:
        error = body["error"]
        # TEI's own shape is {"error": str, ...}; OpenAI-style proxies nest {"message": ...}.
        return str(error.get("message", error) if isinstance(error, dict) else error)
    return str(body)[:300]


async def _gather_all(coroutines: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """Run concurrently; on the first failure cancel the rest and raise that failure alone."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(coroutine) for coroutine in coroutines]
    except BaseExceptionGroup as errors:
        raise errors.exceptions[0] from None
    return [task.result() for task in tasks]


# Statuses that are not retried or are mapped to a specific domain error. The templates get
# url, status, request, attempts and error.
_STATUS_ERRORS: dict[int, tuple[type[ZhikuError], str]] = {
    401: (FailedPrecondition, "TEI at {url} refused the API key ({status}); check ZHIKU_EMBED_TEI_API_KEY"),
    403: (FailedPrecondition, "TEI at {url} refused the API key ({status}); check ZHIKU_EMBED_TEI_API_KEY"),
    422: (InvalidArgument, "TEI could not tokenize the input: {error}"),
    424: (DependencyUnavailable, "TEI at {url} failed to run the model: {error}"),
    429: (ResourceExhausted, "TEI at {url} is overloaded (429) after {attempts} attempts: {error}"),
}


class TeiBackend(EmbedBackend):
    name = "tei"

    def __init__(self, settings: EmbedSettings) -> None:
        self._settings = settings
        self._url = settings.tei_url
        headers = {}
        if settings.tei_api_key is not None:
            headers["Authorization"] = f"Bearer {settings.tei_api_key.get_secret_value()}"
        # One client per backend: connections are kept alive and reused across calls.
        self._client = httpx.AsyncClient(
            base_url=self._url,
            headers=headers,
            timeout=httpx.Timeout(settings.tei_timeout_s, connect=settings.tei_connect_timeout_s),
            limits=httpx.Limits(
                max_connections=settings.tei_max_concurrency,
                max_keepalive_connections=settings.tei_max_concurrency,
            ),
        )
        self._in_flight = asyncio.Semaphore(settings.tei_max_concurrency)
        self.max_concurrent_calls = settings.tei_max_concurrency
        self._prefixes = {
            EmbedKind.QUERY: settings.tei_query_prefix,
            EmbedKind.PASSAGE: settings.tei_passage_prefix,
        }
        self._batch_size = _DEFAULT_CLIENT_BATCH
        self._ready = False

    @property
    def batch_size(self) -> int:
        """Texts per request: TEI's max_client_batch_size, lowered if TEI answered 413."""
        return self._batch_size

    async def start(self) -> None:
        info = await self._call("GET", "/info")
        if not isinstance(info, dict):
            raise DependencyUnavailable(f"{self._url}/info did not return a JSON object: is it TEI?")
        self.model = str(info.get("model_id") or "unknown")
        self._batch_size = max(1, int(info.get("max_client_batch_size") or _DEFAULT_CLIENT_BATCH))
        # /info has no dimension: one tiny embedding tells it and proves /embed works.
        self.dimension = int(self._embedding_matrix(await self._post_embed([_PROBE_TEXT]), 1).shape[1])
        self._ready = True
        log.info(
            "TEI at %s serves %s (dimension %d, max_client_batch_size %d)",
            self._url,
            self.model,
            self.dimension,
            self._batch_size,
        )

    async def embed(self, texts: list[str], kind: EmbedKind) -> np.ndarray:
        if not self._ready:
            raise DependencyUnavailable("the TEI backend is still starting; retry shortly")
        prefix = self._prefixes[kind]
        inputs = [prefix + text for text in texts] if prefix else texts
        size = self._batch_size
        batches = [inputs[start : start + size] for start in range(0, len(inputs), size)]
        parts = await _gather_all(self._embed_split(batch) for batch in batches)
        return l2_normalise(np.concatenate(parts))

    async def rerank(self, query: str, passages: list[str], lexical_weight: float) -> list[float]:
        """TEI's cross-encoder: ``POST /rerank`` with ``raw_scores: false`` (sigmoid, [0, 1]),
        answered ``[{"index", "score"}]`` sorted by score; put back in request order."""
        del lexical_weight  # a cross-encoder needs no lexical help
        size = self._batch_size
        batches = [passages[start : start + size] for start in range(0, len(passages), size)]
        parts = await _gather_all(self._rerank_batch(query, batch) for batch in batches)
        return [score for part in parts for score in part]

    async def _rerank_batch(self, query: str, texts: list[str]) -> list[float]:
        async with self._in_flight:
            body = await self._call(
                "POST", "/rerank", {"query": query, "texts": texts, "raw_scores": False, "truncate": True}
            )
        scores: list[float | None] = [None] * len(texts)
        try:
            for item in body:
                scores[int(item["index"])] = min(1.0, max(0.0, float(item["score"])))
        except (TypeError, KeyError, ValueError, IndexError):
            scores = [None]
        if any(score is None for score in scores):
            raise DependencyUnavailable(
                f"TEI at {self._url} did not return one rerank score per text: is it a reranker model?"
            )
        return [float(score) for score in scores if score is not None]

    async def close(self) -> None:
        await self._client.aclose()

    async def _embed_split(self, batch: list[str]) -> np.ndarray:
        try:
            async with self._in_flight:
                body = await self._post_embed(batch)
            return self._embedding_matrix(body, len(batch))
        except _BatchTooLarge as error:
            if len(batch) == 1:
                raise InvalidArgument(f"TEI rejected a text: {error.message}") from None
            half = len(batch) // 2
            self._batch_size = max(1, min(self._batch_size, half))
            log.warning("TEI refused a batch of %d (%s); retrying in halves", len(batch), error.message)
            halves = [self._embed_split(batch[:half]), self._embed_split(batch[half:])]
            return np.concatenate(await _gather_all(halves))

    async def _post_embed(self, batch: list[str]) -> Any:
        EMBED_BATCH_SIZE.labels(self.name).observe(len(batch))
        return await self._call("POST", "/embed", {"inputs": batch, "normalize": True, "truncate": True})

    def _embedding_matrix(self, body: Any, expected: int) -> np.ndarray:
        try:
            matrix = np.asarray(body, dtype=np.float32)
        except (TypeError, ValueError):
            matrix = np.empty(0, dtype=np.float32)  # not a matrix: refused below
        if matrix.ndim != 2 or matrix.shape[0] != expected or matrix.shape[1] == 0:
            raise DependencyUnavailable(
                f"TEI at {self._url} returned {np.shape(body)} for {expected} inputs, "
                "not one vector per input: is it an embedding model?"
            )
        if self.dimension and matrix.shape[1] != self.dimension:
            raise DependencyUnavailable(
                f"TEI at {self._url} changed dimension from {self.dimension} to {matrix.shape[1]}: "
                "restart the embed service after changing the TEI model"
            )
        return matrix

    async def _call(self, method: str, path: str, payload: Any = None) -> Any:
        """One TEI request with retries; every failure leaves as a domain error with context."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._settings.tei_max_retries + 1),
            # Exponential with jitter, so replicas that saw TEI fail together do not return together.
            wait=wait_exponential(
                multiplier=self._settings.tei_backoff_s, max=self._settings.tei_backoff_max_s
            )
            + wait_random(0, self._settings.tei_backoff_s),
            retry=retry_if_exception(_is_transient),
            before_sleep=self._before_retry,
            reraise=True,
        )
        request = f"{method} {path}"
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._send(method, path, payload)
        except _BatchTooLarge:
            raise
        except _TeiStatusError as error:
            raise self._status_error(error, retrying.statistics.get("attempt_number", 1)) from None
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            attempts = retrying.statistics.get("attempt_number", 1)
            raise DependencyUnavailable(
                f"TEI at {self._url} is unreachable ({request}, {attempts} attempts): "
                f"{type(error).__name__}: {error}"
            ) from None
        except httpx.TimeoutException:
            raise DependencyUnavailable(
                f"TEI at {self._url} did not answer {request} within {self._settings.tei_timeout_s}s"
            ) from None
        except httpx.HTTPError as error:
            raise DependencyUnavailable(
                f"TEI at {self._url} failed on {request}: {type(error).__name__}: {error}"
            ) from None
        raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover

    async def _send(self, method: str, path: str, payload: Any) -> Any:
        response = await self._client.request(method, path, json=payload)
        if response.status_code == 413:
            raise _BatchTooLarge(413, _error_message(response), f"{method} {path}")
        if response.status_code >= 400:
            raise _TeiStatusError(response.status_code, _error_message(response), f"{method} {path}")
        try:
            return response.json()
        except ValueError:
            raise DependencyUnavailable(
                f"TEI at {self._url} answered {method} {path} with a body that is not JSON"
            ) from None

    def _status_error(self, error: _TeiStatusError, attempts: int) -> ZhikuError:
        fields = {
            "url": self._url,
            "status": error.status,
            "request": error.request,
            "attempts": attempts,
            "error": error.message,
        }
        if error.status in _STATUS_ERRORS:
            error_type, template = _STATUS_ERRORS[error.status]
        elif error.status >= 500:
            error_type = DependencyUnavailable
            template = "TEI at {url} answered {status} to {request} after {attempts} attempts: {error}"
        else:
            error_type = FailedPrecondition
            template = "TEI at {url} answered {status} to {request}: {error}; is the URL a TEI server?"
        return error_type(template.format(**fields))

    def _before_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        reason = str(error.status) if isinstance(error, _TeiStatusError) else "connect"
        TEI_RETRIES.labels(reason).inc()
        log.warning("TEI at %s: attempt %d failed (%s), retrying", self._url, state.attempt_number, error)
