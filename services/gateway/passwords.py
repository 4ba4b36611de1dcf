"""Password hashing with pwdlib's recommended hasher (argon2id), and nothing hand-rolled.

Verifying against a user without a password (or no user at all) still runs one argon2
verification against a fixed dummy hash, so the time a failed sign-in takes does not tell
whether the email exists.
"""

from __future__ import annotations

from functools import cache

from pwdlib import PasswordHash

MIN_LENGTH = 8
MAX_LENGTH = 1024  # argon2 accepts more; a huge body would only cost CPU


@cache
def _hasher() -> PasswordHash:
    return PasswordHash.recommended()


@cache
def _dummy_hash() -> str:
    return _hasher().hash("zhiku-dummy-password-never-valid")


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    """True when ``password`` matches; a missing hash costs the same time and fails."""
    if password_hash is None:
        _hasher().verify(password, _dummy_hash())
        return False
    return _hasher().verify(password, password_hash)


def password_problem(password: str) -> str | None:
    """Why a new password is refused, or None."""
    if len(password) < MIN_LENGTH:
        return f"the password must have at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"the password may have at most {MAX_LENGTH} characters"
    return None
