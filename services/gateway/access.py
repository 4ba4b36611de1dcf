"""Who may call the gateway: API keys (environment and stored), per-key knowledge bases and
per-key rate limits.

The gateway is open (no key needed) only while no key exists at all, neither in
``ZHIKU_GATEWAY_API_KEYS`` nor in the store; creating the first stored key closes it. Stored
keys are looked up by their SHA-256 hash and cached for a few seconds, so a request costs no
database round trip; a revocation made on this replica applies at once, on other replicas
within ``CACHE_TTL_S``.

Rate limits are a sliding one-minute window per key (``rate_limit.py``), shared by every
replica through Redis when ``ZHIKU_REDIS_URL`` is set, else counted in this process.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from async_lru import alru_cache

from services.gateway.config import GatewaySettings
from services.gateway.rate_limit import RateLimiter, create_rate_limiter
from services.gateway.store import GatewayStore
from services.gateway.store.keys import ApiKeyRecord, hash_key

CACHE_TTL_S = 5.0
# Distinct presented keys remembered (least recently used dropped first).
KEY_CACHE_SIZE = 10_000


@dataclass(frozen=True)
class Principal:
    """The caller behind a request's key; ``knowledge_bases`` None means every one.

    ``user_id``, ``email`` and ``groups`` name the person behind it (None and empty for
    key-only callers: environment keys, stored keys without an owner); document access lists
    match them (:func:`services.gateway.authz.reader_acl`)."""

    key_id: str
    name: str
    admin: bool
    knowledge_bases: frozenset[str] | None
    rate_limit_per_minute: int
    user_id: str | None = None
    email: str | None = None
    groups: frozenset[str] = frozenset()

    def may_use(self, knowledge_base: str) -> bool:
        return self.knowledge_bases is None or knowledge_base in self.knowledge_bases


class Access:
    """Resolves Bearer keys to principals; built by ``create_app``, given the store at start."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.env_keys = [key.encode() for key in settings.api_keys]
        self.store: GatewayStore | None = None
        self.limiter: RateLimiter = create_rate_limiter(settings.redis_url)
        # Store answers are kept CACHE_TTL_S; requests arriving while one is being fetched
        # share that fetch (a burst after expiry costs one query, not one per request).
        # Keys are cached by digest, so the cache never holds a presented secret.
        self._count_active = alru_cache(maxsize=1, ttl=CACHE_TTL_S)(self._load_count_active)
        self._stored = alru_cache(maxsize=KEY_CACHE_SIZE, ttl=CACHE_TTL_S, key=hash_key)(self._load_key)

    def forget_cached(self) -> None:
        """Drop cached answers (after a key is created or revoked here)."""
        self._count_active.cache_clear()
        self._stored.cache_clear()

    async def is_open(self) -> bool:
        """True while no key exists anywhere: local use, everyone is allowed."""
        if self.env_keys:
            return False
        if self.store is None:
            return True
        return await self._count_active() == 0

    async def _load_count_active(self) -> int:
        assert self.store is not None  # callers check
        return await self.store.run(self.store.keys.count_active)

    async def _load_key(self, token: str) -> ApiKeyRecord | None:
        assert self.store is not None  # callers check
        return await self.store.run(self.store.keys.find, token)

    async def principal(self, token: str) -> Principal | None:
        """The principal of a presented key, or None when the key is unknown or revoked."""
        presented = token.encode()
        for index, key in enumerate(self.env_keys):
            if hmac.compare_digest(presented, key):
                return Principal(
                    key_id=f"env-{index}",
                    name=f"environment key {index + 1}",
                    admin=True,
                    knowledge_bases=None,
                    rate_limit_per_minute=self.settings.default_rate_limit_per_minute,
                )
        stored = None if self.store is None else await self._stored(token)
        if stored is None:
            return None
        return Principal(
            key_id=stored.id,
            name=stored.name,
            admin=stored.admin,
            knowledge_bases=None if stored.knowledge_bases is None else frozenset(stored.knowledge_bases),
            rate_limit_per_minute=stored.rate_limit_per_minute or self.settings.default_rate_limit_per_minute,
        )


def key_of(principal: Principal | None) -> str | None:
    """The id recorded as a new conversation's owner (None while the gateway is open)."""
    return None if principal is None else principal.key_id


def visible_owner(principal: Principal | None) -> str | None:
    """Whose conversations the caller sees: None (all) for admin keys and an open gateway."""
    return None if principal is None or principal.admin else principal.key_id
