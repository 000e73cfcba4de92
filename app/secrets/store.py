"""The secret store: one entry point that routes references to backends and caches payloads."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from app.cache import AsyncCache
from app.config import Settings
from app.errors import InvalidInput, SecretNotFound, SecretUnavailable
from app.secrets.aws_sm import AwsSecretsManagerResolver
from app.secrets.base import (
    AWS_SM,
    FILE,
    GCP_SM,
    K8S,
    SCHEMES,
    VAULT,
    SecretPayload,
    SecretRef,
    SecretResolver,
    StagedSecret,
    StagingSecretResolver,
    WritableSecretResolver,
    backend_scheme,
    parse_secret_ref,
    validate_secret_version,
)
from app.secrets.file import FileSecretResolver
from app.secrets.gcp_sm import GcpSecretManagerResolver
from app.secrets.k8s import KubernetesSecretResolver
from app.secrets.vault import VaultResolver

log = logging.getLogger(__name__)

ResolverFactory = Callable[[Settings], SecretResolver]

DEFAULT_FACTORIES: Mapping[str, ResolverFactory] = MappingProxyType(
    {
        AWS_SM: lambda settings: AwsSecretsManagerResolver(),
        GCP_SM: lambda settings: GcpSecretManagerResolver(
            endpoint=settings.gcp_secret_manager_endpoint
        ),
        VAULT: lambda settings: VaultResolver(
            addr=settings.vault_addr,
            token=settings.vault_token,
            role=settings.vault_role,
            auth_mount=settings.vault_auth_mount,
            jwt_path=settings.kubernetes_token_path,
        ),
        K8S: lambda settings: KubernetesSecretResolver(
            kubeconfig=str(settings.kubeconfig) if settings.kubeconfig else None
        ),
        FILE: lambda settings: _file_resolver(settings),
    }
)

FILE_SECRETS_DISABLED = (
    "file:// secrets are not enabled here: they need development mode or"
    " BUCKET_REGISTRY_FILE_SECRETS_DIR (the directory where the Secrets are mounted)"
)


def _file_resolver(settings: Settings) -> FileSecretResolver:
    # Without a root there is no file backend at all: an admin must never be able to make
    # the registry sign with whatever key file happens to be on the pod.
    if settings.file_secrets_dir is None:
        raise SecretNotFound(FILE_SECRETS_DISABLED)
    return FileSecretResolver(root=settings.file_secrets_dir)


@dataclass(slots=True)
class BackendStats:
    """Counters for one backend; ``fetch_count`` counts real backend calls, not cache hits."""

    fetch_count: int = 0
    not_found: int = 0
    unavailable: int = 0
    other_errors: int = 0
    latency_seconds_total: float = 0.0
    latency_seconds_max: float = 0.0


@dataclass(frozen=True, slots=True)
class _Refusal:
    """A definitive "no" from a backend, passed through the cache instead of raised so that a
    stale value is never served for a secret that is known to be gone or denied."""

    message: str


_Key = tuple[str, str | None]
_Outcome = SecretPayload | _Refusal


class SecretStore:
    """Resolves ``secret_ref`` strings to payloads, caching by ``(ref, version)``.

    Promises (docs/secrets.md): concurrent misses for one key make one backend call; a payload is
    reused for ``secret_cache_ttl`` (with jitter); when a backend is unavailable, the last good
    payload is served for up to ``secret_grace_period`` past its expiry (counted in
    ``cache.stats.stale_served`` and logged as a warning without the value). A backend's "not
    found / denied" is never masked by a stale value. Backends are created on first use from
    ``factories`` unless given ready in ``backends``; the store owns and closes all of them.
    """

    def __init__(
        self,
        settings: Settings,
        backends: Mapping[str, SecretResolver] | None = None,
        *,
        factories: Mapping[str, ResolverFactory] = DEFAULT_FACTORIES,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
        observe: Callable[[str, float, bool], None] | None = None,
    ) -> None:
        self._observe = observe
        self._default_backend = settings.secrets_backend
        backend_scheme(self._default_backend)  # fail at startup on an unknown backend name
        self._settings = settings
        self._factories = {backend_scheme(name): factory for name, factory in factories.items()}
        self._backends: dict[str, SecretResolver] = {
            backend_scheme(name): backend for name, backend in (backends or {}).items()
        }
        self._ttl = settings.secret_cache_ttl
        self.cache: AsyncCache[_Key, _Outcome] = AsyncCache(
            "secrets",
            ttl=settings.secret_cache_ttl,
            max_entries=settings.cache_max_entries,
            grace_period=settings.secret_grace_period,
            clock=clock,
            rng=rng,
        )
        self.backend_stats: dict[str, BackendStats] = {scheme: BackendStats() for scheme in SCHEMES}

    @property
    def fetch_count(self) -> int:
        """Real backend calls across all backends."""
        return sum(stats.fetch_count for stats in self.backend_stats.values())

    def parse(self, raw_ref: str) -> SecretRef:
        """``parse_secret_ref`` with this store's default backend (raises ``InvalidInput``)."""
        return parse_secret_ref(raw_ref, self._default_backend)

    def check(self, raw_ref: str, version: str | None) -> None:
        """Registration-time check of a reference and its pin; ``InvalidInput`` if unusable.

        Beyond the form (``parse``, ``validate_secret_version``), a ``file://`` reference
        needs the file backend to exist and must stay inside its directory. Nothing is read.
        """
        ref = self.parse(raw_ref)
        validate_secret_version(ref, version)
        if ref.scheme == FILE:
            if FILE not in self._backends and self._settings.file_secrets_dir is None:
                raise InvalidInput(FILE_SECRETS_DISABLED)
            backend = self._backend(FILE)
            if isinstance(backend, FileSecretResolver):
                backend.check(ref)

    async def get(self, raw_ref: str, version: str | None = None) -> SecretPayload:
        """The payload for ``raw_ref`` at ``version`` (None: current).

        Raises ``SecretNotFound`` when the reference (or a stored, malformed one) resolves to
        nothing, ``SecretUnavailable`` when the backend cannot answer and no payload within the
        grace period is cached.
        """
        try:
            ref = self.parse(raw_ref)
            validate_secret_version(ref, version)
        except InvalidInput as exc:
            # At resolution time a bad reference is stored configuration, not caller input.
            raise SecretNotFound(f"stored secret reference is invalid: {exc.message}") from None
        key: _Key = (ref.raw, version)
        outcome = await self.cache.get(key, lambda: self._load(ref, version, key), ttl=self._ttl_of)
        if isinstance(outcome, _Refusal):
            raise SecretNotFound(outcome.message)
        return outcome

    def fresh_for(self, raw_ref: str, version: str | None) -> float | None:
        """Seconds until the cached payload for ``(raw_ref, version)`` must be re-read."""
        return self.cache.fresh_for((raw_ref, version))

    def invalidate(self, raw_ref: str) -> int:
        """Forget every cached version of ``raw_ref`` (and any load in flight); returns how many."""
        return self.cache.invalidate_where(lambda key: key[0] == raw_ref)

    async def put(self, raw_ref: str, payload: Mapping[str, str]) -> str | None:
        """Store ``payload`` under ``raw_ref`` as its new current version; returns the version id
        when the backend has one. Raises ``InvalidInput`` for a backend that cannot write."""
        ref = self.parse(raw_ref)
        backend = self._backend(ref.scheme)
        if not isinstance(backend, WritableSecretResolver):
            raise InvalidInput(f"the {ref.scheme} secrets backend does not accept writes")
        version = await backend.put(ref, payload)
        self.invalidate(ref.raw)
        return version

    def _staging(self, raw_ref: str) -> tuple[SecretRef, StagingSecretResolver]:
        ref = self.parse(raw_ref)
        backend = self._backend(ref.scheme)
        if not isinstance(backend, StagingSecretResolver):
            raise InvalidInput(
                f"the {ref.scheme} secrets backend cannot stage versions; API-submitted keys"
                " need a backend that can (SELF_SERVICE_SECRETS)"
            )
        return ref, backend

    async def stage(self, raw_ref: str, payload: Mapping[str, str]) -> StagedSecret:
        """Write ``payload`` next to (or as a new version of) ``raw_ref`` without making it
        current; read it back with ``get(staged.ref, staged.version)``."""
        ref, backend = self._staging(raw_ref)
        return await backend.stage(ref, payload)

    async def promote(self, raw_ref: str, staged: StagedSecret) -> None:
        ref, backend = self._staging(raw_ref)
        await backend.promote(ref, staged)
        self.invalidate(ref.raw)

    async def discard(self, raw_ref: str, staged: StagedSecret) -> None:
        ref, backend = self._staging(raw_ref)
        await backend.discard(ref, staged)
        self.invalidate(staged.ref)

    async def prune(self, raw_ref: str, keep: StagedSecret) -> int:
        """Remove every kept version of ``raw_ref``'s payloads but ``keep``; how many."""
        ref, backend = self._staging(raw_ref)
        return await backend.prune(ref, keep)

    async def remove(self, raw_ref: str) -> None:
        """Delete every version of ``raw_ref``'s payloads, current included."""
        ref, backend = self._staging(raw_ref)
        await backend.remove(ref)
        self.invalidate(ref.raw)

    async def aclose(self) -> None:
        backends, self._backends = list(self._backends.values()), {}
        self.cache.clear()
        results = await asyncio.gather(
            *(backend.aclose() for backend in backends), return_exceptions=True
        )
        for result in results:
            if isinstance(result, Exception):
                log.warning(
                    "closing a secrets backend failed", extra={"error": type(result).__name__}
                )

    def _backend(self, scheme: str) -> SecretResolver:
        backend = self._backends.get(scheme)
        if backend is None:
            factory = self._factories.get(scheme)
            if factory is None:
                raise SecretNotFound(f"no {scheme} secrets backend is configured")
            backend = self._backends[scheme] = factory(self._settings)
        return backend

    def _ttl_of(self, outcome: _Outcome) -> float:
        return self._ttl if isinstance(outcome, SecretPayload) else 0.0

    async def _load(self, ref: SecretRef, version: str | None, key: _Key) -> _Outcome:
        stats = self.backend_stats[ref.scheme]
        backend = self._backend(ref.scheme)
        stats.fetch_count += 1
        started = time.perf_counter()
        ok = False
        try:
            result = await backend.get(ref, version)
            ok = True
        except SecretNotFound as exc:
            stats.not_found += 1
            log.info(
                "secret not found",
                extra={"secret_ref": ref.raw, "backend": ref.scheme, "reason": exc.message},
            )
            # Drop the previous payload so a later outage cannot bring it back as stale.
            self.cache.invalidate(key)
            return _Refusal(exc.message)
        except SecretUnavailable as exc:
            stats.unavailable += 1
            log.warning(
                "secrets backend unavailable",
                extra={"secret_ref": ref.raw, "backend": ref.scheme, "reason": exc.message},
            )
            raise
        except Exception as exc:
            stats.other_errors += 1
            log.warning(
                "secrets backend failed",
                extra={"secret_ref": ref.raw, "backend": ref.scheme, "error": type(exc).__name__},
            )
            raise
        finally:
            elapsed = time.perf_counter() - started
            stats.latency_seconds_total += elapsed
            stats.latency_seconds_max = max(stats.latency_seconds_max, elapsed)
            if self._observe is not None:
                self._observe(f"secrets:{ref.scheme}", elapsed, ok)
        if isinstance(result, SecretPayload):
            return result
        return SecretPayload(result)
