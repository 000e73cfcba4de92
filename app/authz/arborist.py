"""Authorization decisions: Arborist over HTTP (production) or a local policy file (dev mode)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import httpx
from gen3authz.client.arborist.async_client import ArboristClient
from gen3authz.client.arborist.errors import ArboristError, ArboristTimeoutError

from app.authz.policy import PolicyDocument
from app.authz.principals import Principal, PrincipalKind
from app.authz.tokens import Identity
from app.cache import AsyncCache
from app.errors import DependencyUnavailable

log = logging.getLogger(__name__)


Who = Principal | Identity


def principal_of(who: Who) -> Principal:
    return who.principal if isinstance(who, Identity) else who


class Authorizer(Protocol):
    async def authorize(self, who: Who, service: str, method: str, resource: str) -> bool:
        """True when Arborist grants ``service``/``method`` on ``resource`` to the principal.

        Raises ``DependencyUnavailable`` when no decision can be had: callers fail closed.
        """
        ...

    async def authorize_all(
        self, who: Who, service: str, methods: Sequence[str], resources: Sequence[str]
    ) -> bool:
        """True only when every method is granted on every resource (one question to Arborist)."""
        ...

    async def granted_resources(self, who: Who, service: str, method: str) -> tuple[str, ...]:
        """The resource paths on which the principal holds ``service``/``method`` (a grant on a
        path covers what lies below it), from Arborist's ``/auth/mapping``.

        Raises ``DependencyUnavailable`` when Arborist gives no usable answer.
        """
        ...


def paths_holding(mapping: object, service: str, method: str) -> tuple[str, ...] | None:
    """The paths of an ``/auth/mapping`` answer whose actions include ``service``/``method``
    (``*`` matching any), sorted; None when the answer does not have the mapping's shape."""
    if not isinstance(mapping, dict):
        return None
    found: set[str] = set()
    for path, actions in mapping.items():
        if not isinstance(path, str) or not isinstance(actions, list):
            return None
        for action in actions:
            if not isinstance(action, dict):
                return None
            held_service, held_method = action.get("service"), action.get("method")
            if not isinstance(held_service, str) or not isinstance(held_method, str):
                return None
            if held_service in ("*", service) and held_method in ("*", method):
                found.add(path)
    return tuple(sorted(found))


def _checked(
    methods: Sequence[str], resources: Sequence[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    # An empty question would be vacuously true; nothing asks it on purpose.
    if not methods or not resources:
        raise ValueError("authorize_all needs at least one method and one resource")
    return tuple(methods), tuple(resources)


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


DecisionKey = tuple[str, str, tuple[str, ...], tuple[str, ...]]


class DecisionCache:
    """Remembers decisions per (principal, service, methods, resources).

    The principal part is its cache key (a token's hash, a user name, ``anonymous``), and a
    token's decisions never outlive the token.
    """

    def __init__(self, ttl: float, max_entries: int) -> None:
        self.ttl = ttl
        self.cache: AsyncCache[DecisionKey, bool] = AsyncCache(
            "authz_decisions", ttl=ttl, max_entries=max_entries
        )

    async def decide(
        self,
        principal: Principal,
        service: str,
        methods: tuple[str, ...],
        resources: tuple[str, ...],
        ask: Callable[[], Awaitable[bool]],
    ) -> bool:
        if self.ttl <= 0:
            return await ask()
        key = (principal.cache_key, service, methods, resources)
        cached = self.cache.peek(key)
        if cached is not None:
            return cached
        left = principal.seconds_left(time.time())
        ttl = self.ttl if left is None else min(self.ttl, left)
        return await self.cache.get(key, ask, ttl=ttl)


class ArboristAuthorizer:
    """Asks Arborist's ``/auth/request`` through the gen3authz client, on one pooled connection.

    Only a definite answer counts: HTTP 200 with ``{"auth": true|false}``. Anything else (a 401
    when Arborist cannot judge the token, say because its own JWKS fetch failed, a 400, a 5xx, a
    body of another shape) is an outage: 503, never cached, never a denial.
    """

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
        self._url = base_url.rstrip("/") + "/auth/request"
        self._mapping_url = base_url.rstrip("/") + "/auth/mapping"
        self.decisions = decisions
        # Which projects a user may manage changes as rarely as a decision: cached as long.
        self.mappings: AsyncCache[tuple[str, str, str], tuple[str, ...]] = AsyncCache(
            "authz_mappings", ttl=decisions.ttl, max_entries=decisions.cache.max_entries
        )
        self.calls = 0
        self._observe = observe

    async def authorize(self, who: Who, service: str, method: str, resource: str) -> bool:
        return await self.authorize_all(who, service, [method], [resource])

    async def authorize_all(
        self, who: Who, service: str, methods: Sequence[str], resources: Sequence[str]
    ) -> bool:
        principal = principal_of(who)
        method_list, resource_list = _checked(methods, resources)

        async def ask() -> bool:
            return await self._ask(principal, service, method_list, resource_list)

        return await self.decisions.decide(principal, service, method_list, resource_list, ask)

    async def _ask(
        self,
        principal: Principal,
        service: str,
        methods: tuple[str, ...],
        resources: tuple[str, ...],
    ) -> bool:
        # The same body gen3authz's auth_request builds; sent here so that the answer can be
        # judged strictly (gen3authz turns any 200 body into bool() and raises on the rest).
        body: dict[str, Any] = {
            "requests": [
                {"resource": resource, "action": {"service": service, "method": method}}
                for resource in resources
                for method in methods
            ]
        }
        user = principal.arborist_user()
        if user is not None:
            body["user"] = user
        self.calls += 1
        started = time.perf_counter()
        ok = False
        try:
            response = await self.client.post(self._url, json=body)
            answer = response.json.get("auth") if isinstance(response.json, dict) else None
            if response.code == 200 and isinstance(answer, bool):
                ok = True
                return answer
            raise _undecided(principal, response.code, _error_message(response.json))
        except ArboristError as exc:
            # A body gen3authz could not even parse.
            raise _undecided(principal, getattr(exc, "code", None), str(exc.message)) from None
        except (ArboristTimeoutError, httpx.HTTPError, OSError) as exc:
            raise DependencyUnavailable("arborist") from exc
        finally:
            if self._observe is not None:
                self._observe("arborist", time.perf_counter() - started, ok)

    async def granted_resources(self, who: Who, service: str, method: str) -> tuple[str, ...]:
        principal = principal_of(who)

        async def ask() -> tuple[str, ...]:
            return await self._ask_mapping(principal, service, method)

        if self.decisions.ttl <= 0:
            return await ask()
        left = principal.seconds_left(time.time())
        ttl = self.decisions.ttl if left is None else min(self.decisions.ttl, left)
        return await self.mappings.get((principal.cache_key, service, method), ask, ttl=ttl)

    async def _ask_mapping(
        self, principal: Principal, service: str, method: str
    ) -> tuple[str, ...]:
        # The requests gen3authz's auth_mapping sends: the token in the Authorization header,
        # a user name in the body, or nothing at all for the anonymous group.
        kwargs: dict[str, Any] = {}
        if principal.kind is PrincipalKind.TOKEN:
            kwargs["headers"] = {"Authorization": f"bearer {principal.value}"}
        elif principal.kind is PrincipalKind.USER:
            kwargs["json"] = {"username": principal.value}
        self.calls += 1
        started = time.perf_counter()
        ok = False
        try:
            response = await self.client.post(self._mapping_url, **kwargs)
            paths = paths_holding(response.json, service, method) if response.code == 200 else None
            if paths is None:
                raise _undecided(principal, response.code, _error_message(response.json))
            ok = True
            return paths
        except ArboristError as exc:
            raise _undecided(principal, getattr(exc, "code", None), str(exc.message)) from None
        except (ArboristTimeoutError, httpx.HTTPError, OSError) as exc:
            raise DependencyUnavailable("arborist") from exc
        finally:
            if self._observe is not None:
                self._observe("arborist", time.perf_counter() - started, ok)


def _undecided(principal: Principal, status: int | None, message: str) -> DependencyUnavailable:
    """Logs why Arborist gave no decision (its own words, minus the token) and says 503."""
    if principal.kind is PrincipalKind.TOKEN and principal.value:
        message = message.replace(principal.value, "[token]")
    log.warning(
        "arborist gave no decision", extra={"status": status, "arborist_message": message[:500]}
    )
    return DependencyUnavailable("arborist", "arborist could not decide; retry later")


def _error_message(body: object) -> str:
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        if isinstance(error, str):
            return error
        if "auth" in body:
            return f"auth is not a boolean: {type(body['auth']).__name__}"
    return "unexpected response body"


class LocalPolicyAuthorizer:
    """Decisions from a local policy file (development mode only)."""

    def __init__(self, document: PolicyDocument) -> None:
        self.document = document
        self.calls = 0

    async def authorize(self, who: Who, service: str, method: str, resource: str) -> bool:
        return await self.authorize_all(who, service, [method], [resource])

    async def authorize_all(
        self, who: Who, service: str, methods: Sequence[str], resources: Sequence[str]
    ) -> bool:
        principal = principal_of(who)
        method_list, resource_list = _checked(methods, resources)
        self.calls += 1
        # A token reaches here verified, with its user already read from it.
        username = principal.username if principal.kind is not PrincipalKind.ANONYMOUS else None
        if principal.kind is PrincipalKind.TOKEN and username is None:
            return False
        return all(
            self.document.allows(username, service, method, resource)
            for resource in resource_list
            for method in method_list
        )

    async def granted_resources(self, who: Who, service: str, method: str) -> tuple[str, ...]:
        principal = principal_of(who)
        self.calls += 1
        username = principal.username if principal.kind is not PrincipalKind.ANONYMOUS else None
        if principal.kind is PrincipalKind.TOKEN and username is None:
            return ()
        mapping = {
            path: [{"service": perm.service, "method": perm.method} for perm in held]
            for path, held in self.document.mapping(username).items()
        }
        return paths_holding(mapping, service, method) or ()
