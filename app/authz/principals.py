"""Who an authorization question is about, in the three forms Arborist's ``/auth/request`` takes.

* a user's access token (Arborist decodes it: user from ``context.user.name``, client from
  ``azp``, and it must carry the ``openid`` scope);
* a user name (``user: {"user_id": ...}``; Arborist matches names case-insensitively);
* nobody (no ``user`` at all; Arborist answers from its ``anonymous`` group's policies).

A principal's ``cache_key`` is what decisions are remembered under: a token's hash (never the
token itself), the lower-cased user name, or ``anonymous``.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from enum import StrEnum


class PrincipalKind(StrEnum):
    TOKEN = "token"  # noqa: S105 - a kind, not a secret
    USER = "user"
    ANONYMOUS = "anonymous"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    kind: PrincipalKind
    value: str | None
    cache_key: str
    # A token principal's decisions must not outlive the token.
    expires_at: float | None = None
    # What the registry already knows about a token's user, for decisions made in-process
    # (local development mode); Arborist reads the token itself.
    username: str | None = None

    @classmethod
    def of_token(
        cls,
        token: str,
        *,
        expires_at: float | None = None,
        username: str | None = None,
        digest: str | None = None,
    ) -> Principal:
        if not token:
            raise ValueError("a token principal needs a token")
        return cls(
            PrincipalKind.TOKEN,
            token,
            f"token:{digest or token_hash(token)}",
            expires_at=expires_at,
            username=username,
        )

    @classmethod
    def of_user(cls, name: str) -> Principal:
        if not name:
            raise ValueError("a user principal needs a user name")
        return cls(PrincipalKind.USER, name, f"user:{name.lower()}", username=name)

    @classmethod
    def anonymous(cls) -> Principal:
        return cls(PrincipalKind.ANONYMOUS, None, "anonymous")

    def seconds_left(self, now: float | None = None) -> float | None:
        if self.expires_at is None:
            return None
        return self.expires_at - (time.time() if now is None else now)

    def arborist_user(self) -> dict[str, str] | None:
        """The ``user`` member of an Arborist auth request; None means anonymous (omit it)."""
        if self.kind is PrincipalKind.TOKEN:
            return {"token": self.value or ""}
        if self.kind is PrincipalKind.USER:
            return {"user_id": self.value or ""}
        return None

    def __repr__(self) -> str:
        # Never print a token.
        shown = self.cache_key if self.kind is PrincipalKind.TOKEN else self.value
        return f"Principal({self.kind.value}, {shown!r})"
