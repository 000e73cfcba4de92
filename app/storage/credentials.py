"""Credentials a signer signs with, and where static ones come from.

Signing depends only on the small ``SecretSource`` protocol below, not on the secrets store
itself, so the store can change (or be replaced in tests) without touching signing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from app.errors import SecretNotFound


class SecretSource(Protocol):
    """Resolves a bucket's ``secret_ref`` to its payload (see docs/secrets.md for the shapes)."""

    async def get(self, raw_ref: str, version: str | None) -> Mapping[str, str]: ...


@dataclass(frozen=True, slots=True)
class SigningCredentials:
    """One set of keys; ``expires_at`` (UTC) is None for keys that do not expire."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    expires_at: datetime | None = None

    def seconds_left(self, now: datetime) -> float | None:
        if self.expires_at is None:
            return None
        return (self.expires_at - now).total_seconds()


@dataclass(frozen=True, slots=True)
class StaticSecret:
    """What a static-keys secret holds: the keys and, for private stores, a CA bundle."""

    credentials: SigningCredentials
    ca_bundle_pem: str | None = field(default=None, repr=False)


def static_secret(payload: Mapping[str, str], raw_ref: str) -> StaticSecret:
    """Parse an S3 static-keys payload; ``SecretNotFound`` names missing fields, never values."""
    missing = [name for name in ("access_key_id", "secret_access_key") if not payload.get(name)]
    if missing:
        raise SecretNotFound(f"secret {raw_ref} lacks {', '.join(missing)}")
    return StaticSecret(
        SigningCredentials(
            access_key_id=payload["access_key_id"],
            secret_access_key=payload["secret_access_key"],
            session_token=payload.get("session_token") or None,
        ),
        ca_bundle_pem=payload.get("ca_bundle_pem") or None,
    )
