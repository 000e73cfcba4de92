"""Authorization decisions: Arborist over HTTP (production) or a local policy file (dev mode)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import httpx
from gen3authz.client.arborist.async_client import ArboristClient
from gen3authz.client.arborist.errors import ArboristError, ArboristTimeoutError

from app.authz.policy import PolicyDocument
from app.authz.tokens import Identity
from app.cache import AsyncCache
from app.errors import DependencyUnavailable

log = logging.getLogger(__name__)


class Authorizer(Protocol):
    async def authorize(self, identity: Identity, service: str, method: str, resource: str) -> bool:
        """True when Arborist grants ``service``/``method`` on ``resource`` to the token's user.

        Raises ``DependencyUnavailable`` when no decision can be had: callers fail closed.
        """
        ...


class _BorrowedClient:
    """Hands gen3authz the service's pooled client instead of a new one per call.

    gen3authz opens (and closes) an ``httpx.AsyncClient`` for every request, which costs a
    TCP/TLS handshake each time; ``async with`` on this wrapper lends the shared one.
    """

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def __aenter__(self) -> httpx.AsyncClient:
        return self._client

    async def __aexit__(self, *_exc: object) -> None:
        return None


class _PooledArboristClient(ArboristClient):
    def __init__(self, http: httpx.AsyncClient, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.client_cls = lambda: _BorrowedClient(http)

    async def request(self, method: str, url: str, **kwargs: Any) -> Any:
        # gen3authz's default on a timeout is to poll /health for up to 10 s; a request must
        # fail fast (503) instead.
        kwargs.setdefault("retry", False)
        return await super().request(method, url, **kwargs)


class DecisionCache:
    """Remembers decisions per (token, service, method, resource), never past the token's expiry."""

    def __init__(self, ttl: float, max_entries: int) -> None:
        self.ttl = ttl
        self.cache: AsyncCache[tuple[str, str, str, str], bool] = AsyncCache(
            "authz_decisions", ttl=ttl, max_entries=max_entries
        )

    async def decide(self, identity: Identity, service: str, method: str, resource: str, ask):
        if self.ttl <= 0:
            return await ask()
        key = (identity.token_hash, service, method, resource)
        cached = self.cache.peek(key)
        if cached is not None:
            return cached
        ttl = min(self.ttl, identity.seconds_left(time.time()))
        return await self.cache.get(key, ask, ttl=ttl)


class ArboristAuthorizer:
    """Asks Arborist's ``/auth/request`` through the gen3authz client, on one pooled connection."""

    def __init__(
        self,
        base_url: str,
        http: httpx.AsyncClient,
        *,
        timeout: float,
        decisions: DecisionCache,
        observe: Callable[[str, float, bool], None] | None = None,
    ) -> None:
        self.client = _PooledArboristClient(http, arborist_base_url=base_url, timeout=timeout)
        self.decisions = decisions
        self.calls = 0
        self._observe = observe

    async def authorize(self, identity: Identity, service: str, method: str, resource: str) -> bool:
        async def ask() -> bool:
            self.calls += 1
            started = time.perf_counter()
            ok = False
            try:
                answer = bool(
                    await self.client.auth_request(identity.token, service, [method], [resource])
                )
                ok = True
                return answer
            except ArboristError as exc:
                code = getattr(exc, "code", None) or 500
                if code >= 500:
                    raise DependencyUnavailable("arborist") from None
                # Arborist answers 4xx when it cannot judge this user/token: deny, do not error.
                log.info("arborist refused to judge the request", extra={"status": code})
                return False
            except (ArboristTimeoutError, httpx.HTTPError, OSError) as exc:
                raise DependencyUnavailable("arborist") from exc
            finally:
                if self._observe is not None:
                    self._observe("arborist", time.perf_counter() - started, ok)

        return await self.decisions.decide(identity, service, method, resource, ask)


class LocalPolicyAuthorizer:
    """Decisions from a local policy file (development mode only)."""

    def __init__(self, document: PolicyDocument) -> None:
        self.document = document
        self.calls = 0

    async def authorize(self, identity: Identity, service: str, method: str, resource: str) -> bool:
        self.calls += 1
        return self.document.allows(identity.username, service, method, resource)
