"""Rate limits shared through a real Redis: two limiters stand for two gateway replicas, and a
key gets its limit once across both, not once per replica. Also the full path: 429 from a
gateway whose settings name Redis, and requests let through while Redis is unreachable."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as redis_asyncio

from services.gateway.app import create_app
from services.gateway.rate_limit import MemoryRateLimiter, RedisRateLimiter, create_rate_limiter

from .support import asgi_client, gateway_settings

REDIS_URL = "redis://127.0.0.1:6379/12"  # a database of its own; keys are unique per test


@pytest.fixture(autouse=True)
async def clean_database() -> None:
    """Environment keys are counted under fixed ids (env-0, ...): start every test from zero."""
    client = redis_asyncio.Redis.from_url(REDIS_URL)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


def unique_key() -> str:
    return f"test-{uuid.uuid4().hex}"


async def test_two_replicas_share_one_budget() -> None:
    first, second = RedisRateLimiter(REDIS_URL), RedisRateLimiter(REDIS_URL)
    key = unique_key()
    try:
        answers = [await limiter.retry_after(key, 3) for limiter in (first, second, first)]
        assert answers == [None, None, None]
        for limiter in (second, first):
            wait = await limiter.retry_after(key, 3)
            assert wait is not None and 1 <= wait <= 60
        assert await second.retry_after(unique_key(), 3) is None  # another key, its own budget
    finally:
        await first.close()
        await second.close()


async def test_the_window_slides() -> None:
    limiter = RedisRateLimiter(REDIS_URL, window_s=1.0)
    key = unique_key()
    try:
        assert await limiter.retry_after(key, 1) is None
        assert await limiter.retry_after(key, 1) == 1
        await asyncio.sleep(1.1)
        assert await limiter.retry_after(key, 1) is None
    finally:
        await limiter.close()


async def test_an_unreachable_redis_lets_requests_through(caplog: pytest.LogCaptureFixture) -> None:
    limiter = RedisRateLimiter("redis://127.0.0.1:1/0")  # nothing listens on port 1
    try:
        assert [await limiter.retry_after("k", 1) for _ in range(3)] == [None, None, None]
    finally:
        await limiter.close()
    assert "rate limits not enforced" in caplog.text


def test_redis_is_used_only_when_configured() -> None:
    assert isinstance(create_rate_limiter(""), MemoryRateLimiter)
    assert isinstance(create_rate_limiter(REDIS_URL), RedisRateLimiter)


async def test_gateways_sharing_redis_answer_429_together() -> None:
    """Two gateway apps (replicas) with the same admin key and Redis: the limit holds across them."""
    settings = {"api_keys": ["root-key"], "redis_url": REDIS_URL, "default_rate_limit_per_minute": 2}
    first_app = create_app(gateway_settings({}, **settings))
    second_app = create_app(gateway_settings({}, **settings))
    headers = {"Authorization": "Bearer root-key"}
    async with asgi_client(first_app) as first, asgi_client(second_app) as second:
        statuses = [
            (await client.get("/v1/conversations", headers=headers)).status_code
            for client in (first, second, first)
        ]
    assert statuses[:2] == [200, 200]
    assert statuses[2] == 429
