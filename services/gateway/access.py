"""Who is calling the gateway: API keys (environment and stored), sign-in sessions, and the
rate limits per key and per user.

The gateway is open (no credentials needed) only while nothing could sign in: no key in
``ZHIKU_GATEWAY_API_KEYS``, no stored key and no user. Creating the first key or user (the
configured first admin included) closes it.

A request is authenticated by ``Authorization: Bearer <key>`` or, failing that, by the
``zhiku_session`` cookie of a signed-in user. Stored keys are looked up by their SHA-256 hash
and cached for a few seconds with the user who owns them, so a key request costs no database
round trip; a change made on this replica (revocation, disabling the owner) applies at once,
on other replicas within ``CACHE_TTL_S``. Sessions are read from the store on every request,
so signing out, expiry and disabling a user take effect on the next request everywhere.

A key never exceeds its owner: it is admin only while the owner is, it stops working when the
owner is disabled or deleted, and its knowledge-base list narrows the owner's roles (checked
in :mod:`services.gateway.authz`).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from async_lru import alru_cache

from services.gateway.config import GatewaySettings
from services.gateway.rate_limit import RateLimiter, create_rate_limiter
from services.gateway.store import GatewayStore
from services.gateway.store.keys import ApiKeyRecord, hash_key
from services.gateway.store.sessions import SessionRecord
from services.gateway.store.users import UserRecord

CACHE_TTL_S = 5.0
# Distinct presented keys remembered (least recently used dropped first).
KEY_CACHE_SIZE = 10_000
USER_CACHE_SIZE = 10_000
SESSION_COOKIE = "zhiku_session"
CSRF_HEADER = "X-CSRF-Token"
DAY_S = 86_400.0


@dataclass(frozen=True)
class Principal:
    """The caller behind a request; ``knowledge_bases`` None means no key limits them.

    ``user_id`` is the person (a session, or a key they own); None for environment keys and
    stored keys older than users, which keep their own scope alone. ``session`` is set for
    cookie callers, whose unsafe requests need the session's CSRF token. Document access
    lists match ``user_id`` and ``groups`` (:func:`services.gateway.authz.reader_acl`)."""

    key_id: str
    name: str
    admin: bool
    knowledge_bases: frozenset[str] | None
    rate_limit_per_minute: int
    user_id: str | None = None
    email: str | None = None
    groups: frozenset[str] = frozenset()
    session: SessionRecord | None = None

    def may_use(self, knowledge_base: str) -> bool:
        """Within the key's own list (a user's roles are checked by the guard on top)."""
        return self.knowledge_bases is None or knowledge_base in self.knowledge_bases

    @property
    def owner(self) -> str:
        """Whose conversations and file chats the caller makes: the person, else the key."""
        return self.user_id or self.key_id


def user_principal(user: UserRecord, session: SessionRecord, rate_limit_per_minute: int) -> Principal:
    return Principal(
        key_id=f"session-{session.token_hash[:16]}",
        name=user.email,
        admin=user.admin,
        knowledge_bases=None,
        rate_limit_per_minute=rate_limit_per_minute,
        user_id=user.id,
        email=user.email,
        groups=frozenset(user.groups),
        session=session,
    )


class Access:
    """Resolves keys and sessions to principals; built by ``create_app``, given the store at start."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.env_keys = [key.encode() for key in settings.api_keys]
        self.store: GatewayStore | None = None
        self.limiter: RateLimiter = create_rate_limiter(settings.redis_url)
        self.daily: RateLimiter = create_rate_limiter(settings.redis_url, DAY_S, "zhiku:uploads:")
        # Store answers are kept CACHE_TTL_S; requests arriving while one is being fetched
        # share that fetch (a burst after expiry costs one query, not one per request).
        # Keys are cached by digest, so the cache never holds a presented secret.
        self._count_credentials = alru_cache(maxsize=1, ttl=CACHE_TTL_S)(self._load_count_credentials)
        self._stored = alru_cache(maxsize=KEY_CACHE_SIZE, ttl=CACHE_TTL_S, key=hash_key)(self._load_key)
        self._users = alru_cache(maxsize=USER_CACHE_SIZE, ttl=CACHE_TTL_S)(self._load_user)

    def forget_cached(self) -> None:
        """Drop cached answers (after a key or user is created, changed or removed here)."""
        self._count_credentials.cache_clear()
        self._stored.cache_clear()
        self._users.cache_clear()

    async def is_open(self) -> bool:
        """True while no key and no user exist anywhere: local use, everyone is allowed."""
        if self.env_keys:
            return False
        if self.store is None:
            return True
        return await self._count_credentials() == 0

    async def _load_count_credentials(self) -> int:
        assert self.store is not None  # callers check
        keys = await self.store.run(self.store.keys.count_active)
        return keys or await self.store.run(self.store.users.count)

    async def _load_key(self, token: str) -> ApiKeyRecord | None:
        assert self.store is not None  # callers check
        return await self.store.run(self.store.keys.find, token)

    async def _load_user(self, user_id: str) -> UserRecord | None:
        assert self.store is not None  # callers check
        return await self.store.run(self.store.users.get, user_id)

    async def principal(self, token: str) -> Principal | None:
        """The principal of a presented key, or None when the key is unknown, revoked, or its
        owner disabled or deleted."""
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
        owner = None if stored.owner is None else await self._users(stored.owner)
        if stored.owner is not None and (owner is None or owner.disabled):
            return None
        return Principal(
            key_id=stored.id,
            name=stored.name,
            admin=stored.admin and (owner is None or owner.admin),
            knowledge_bases=None if stored.knowledge_bases is None else frozenset(stored.knowledge_bases),
            rate_limit_per_minute=stored.rate_limit_per_minute or self.settings.default_rate_limit_per_minute,
            user_id=None if owner is None else owner.id,
            email=None if owner is None else owner.email,
            groups=frozenset() if owner is None else frozenset(owner.groups),
        )

    async def session_principal(self, token: str) -> Principal | None:
        """The signed-in user of a session cookie, or None (unknown, expired, user disabled)."""
        if self.store is None:
            return None
        found = await self.store.run(self.store.sessions.find, token)
        if found is None:
            return None
        session, user = found
        return user_principal(user, session, self.settings.user_rate_limit_per_minute)


def key_of(principal: Principal | None) -> str | None:
    """The id recorded as a new conversation's owner (None while the gateway is open): the
    user for a person's session or key, the key for keys that belong to nobody."""
    return None if principal is None else principal.owner


def visible_owner(principal: Principal | None) -> str | None:
    """Whose conversations the caller sees: None (all) for admin keys that belong to nobody and
    an open gateway; a person sees only their own, admin or not."""
    if principal is None or (principal.admin and principal.user_id is None):
        return None
    return principal.owner
