"""Encryption of the secrets sources carry (S3 keys), with a Fernet key from configuration.

The catalog holds only the ciphertext; the key (``ZHIKU_INGEST_SOURCES_KEY``, or a Kubernetes
Secret mounted into that variable) lives with the API and the worker, never in the database,
so a copy of the catalog alone reveals no credentials. Without a key no secret can be stored:
creating a source with credentials is refused with the variable to set.
"""

from __future__ import annotations

import json

from cryptography.fernet import Fernet, InvalidToken

from services.common.errors import FailedPrecondition


class SecretBox:
    def __init__(self, key: str) -> None:
        self._fernet = Fernet(key.encode()) if key else None

    @property
    def available(self) -> bool:
        return self._fernet is not None

    def seal(self, values: dict[str, str]) -> str:
        """The encrypted JSON of ``values``; empty when there is nothing to keep."""
        if not any(values.values()):
            return ""
        if self._fernet is None:
            raise FailedPrecondition(
                "storing source credentials needs an encryption key: set ZHIKU_INGEST_SOURCES_KEY "
                "(a Fernet key: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())')"
            )
        return self._fernet.encrypt(json.dumps(values).encode()).decode()

    def open(self, sealed: str) -> dict[str, str]:
        if not sealed:
            return {}
        if self._fernet is None:
            raise FailedPrecondition("source credentials are stored but ZHIKU_INGEST_SOURCES_KEY is not set")
        try:
            values: dict[str, str] = json.loads(self._fernet.decrypt(sealed.encode()))
        except InvalidToken:
            raise FailedPrecondition(
                "source credentials cannot be decrypted with ZHIKU_INGEST_SOURCES_KEY (was the key changed?)"
            ) from None
        return values


def valid_key(key: str) -> str:
    """``key`` if it is a Fernet key (or empty), else ValueError naming the problem."""
    if key:
        try:
            Fernet(key.encode())
        except (ValueError, TypeError) as error:
            raise ValueError(f"sources_key is not a Fernet key (32 url-safe base64 bytes): {error}") from None
    return key
