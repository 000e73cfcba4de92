"""Trusted service callers (Fence itself) next to end users, and the one entry point for both.

A service caller proves who it is with a token from a second issuer, typically a Kubernetes
projected ServiceAccount token: ``iss`` is the cluster's issuer, ``sub`` is
``system:serviceaccount:<namespace>:<name>``, ``aud`` a list naming this service, no ``pur`` and
no scopes. Kubernetes signs them RS256 with an RSA key and ES256/ES384/ES512 with a P-256/384/521
key, so all four are accepted; the JWKS decides which applies to each key.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from app.authz.principals import token_hash
from app.authz.tokens import Identity, JwksSource, TokenVerifier, decode_verified
from app.cache import AsyncCache
from app.errors import AccessDenied, Unauthenticated

SERVICE_ALGORITHMS = ("RS256", "ES256", "ES384", "ES512")
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"


@dataclass(frozen=True, slots=True)
class ServiceCaller:
    """A trusted service, as proven by its own (verified) token. Never a user.

    It holds no token: nothing a service caller sends may become an Arborist principal.
    """

    subject: str
    issuer: str
    token_hash: str
    expires_at: float
    claims: Mapping[str, Any]

    @property
    def actor(self) -> str:
        return self.subject

    @property
    def service_account(self) -> tuple[str, str] | None:
        """``(namespace, name)`` for a Kubernetes ServiceAccount subject."""
        if not self.subject.startswith(SERVICE_ACCOUNT_PREFIX):
            return None
        namespace, sep, name = self.subject[len(SERVICE_ACCOUNT_PREFIX) :].partition(":")
        return (namespace, name) if sep and namespace and name else None

    def seconds_left(self, now: float | None = None) -> float:
        return self.expires_at - (time.time() if now is None else now)


class ServiceTokenVerifier:
    """Verifies service tokens and admits only the listed subjects (403 for the others)."""

    def __init__(
        self,
        jwks: JwksSource,
        *,
        issuer: str,
        audience: str,
        trusted: Iterable[str],
        max_entries: int = 1_000,
        leeway: float = 0,
    ) -> None:
        if not audience:
            raise ValueError("service tokens need an audience to be checked against")
        self._jwks = jwks
        self.issuer = issuer
        self.audience = audience
        self.trusted = frozenset(trusted)
        self._leeway = leeway
        self._verified: AsyncCache[str, ServiceCaller] = AsyncCache(
            "service_tokens", ttl=0, max_entries=max_entries
        )

    @property
    def cache(self) -> AsyncCache[str, ServiceCaller]:
        return self._verified

    async def verify(self, token: str, *, digest: str | None = None) -> ServiceCaller:
        digest = digest or token_hash(token)
        caller = self._verified.peek(digest)
        if caller is None:
            caller = await self._verify(token, digest)
            self._verified.set(digest, caller, ttl=caller.seconds_left())
        if caller.subject not in self.trusted:
            raise AccessDenied(f"{caller.subject!r} is not a trusted caller")
        return caller

    async def _verify(self, token: str, digest: str) -> ServiceCaller:
        claims = await decode_verified(
            token,
            self._jwks,
            algorithms=SERVICE_ALGORITHMS,
            issuer=self.issuer,
            audience=self.audience,
            leeway=self._leeway,
            what="the service token",
        )
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("the service token names no subject (sub)")
        return ServiceCaller(
            subject=subject,
            issuer=self.issuer,
            token_hash=digest,
            expires_at=float(claims["exp"]),
            claims=claims,
        )


class Authenticator:
    """Routes a bearer token to the verifier of the issuer it claims, then verifies it there.

    The unverified ``iss`` only picks the verifier; the verifier checks everything, the issuer
    included. A token from neither issuer is refused (401).
    """

    def __init__(self, users: TokenVerifier, services: ServiceTokenVerifier | None = None) -> None:
        if services is not None and services.issuer.rstrip("/") == users.issuer:
            raise ValueError("service tokens need an issuer of their own, not Fence's")
        self.users = users
        self.services = services

    async def authenticate(
        self, token: str, *, scopes: Collection[str] = (), allow_service: bool = True
    ) -> Identity | ServiceCaller:
        """The verified user (holding ``scopes``) or, if allowed, the trusted service caller."""
        digest = token_hash(token)
        # Warm path: a token verified before is found by its hash, without parsing it again.
        if self.users.cache.peek(digest) is not None:
            return await self.users.verify(token, scopes=scopes, digest=digest)
        if allow_service and self.services is not None and self.services.cache.peek(digest):
            return await self.services.verify(token, digest=digest)
        issuer = _unverified_issuer(token)
        if issuer is not None and issuer.rstrip("/") == self.users.issuer:
            return await self.users.verify(token, scopes=scopes, digest=digest)
        if self.services is not None and issuer == self.services.issuer:
            if not allow_service:
                raise Unauthenticated("a user's access token is required here, not a service token")
            return await self.services.verify(token, digest=digest)
        raise Unauthenticated("the access token was not issued by this commons")

    async def authenticate_user(self, token: str, *, scopes: Collection[str] = ()) -> Identity:
        identity = await self.authenticate(token, scopes=scopes, allow_service=False)
        assert isinstance(identity, Identity)
        return identity


def _unverified_issuer(token: str) -> str | None:
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        raise Unauthenticated("the access token is not a valid JWT") from None
    issuer = claims.get("iss")
    return issuer if isinstance(issuer, str) else None
