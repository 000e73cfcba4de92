"""Which path a bucket takes: the registry's (``Delegated``) or Fence's own (``UseLegacy``).

Fence moves to the registry bucket by bucket rather than all at once:

- the switch (``FENCE_ENABLE_DYNAMIC_BUCKETS``) off: every bucket is legacy, no network call;
- a provider kept in Fence (``legacy_providers``; by default ``gcp``, whose signing stays in
  Fence's Google proxy-group model, and ``azure``, which the registry does not serve): legacy,
  no network call;
- the registry holds no bucket at all (404 with ``details.registry_empty``): legacy;
- the registry does not know *this* bucket (404 ``bucket_not_found``): legacy for it, unless
  ``fallback_unregistered=False``;
- anything else is the registry's answer, errors included. A suspended bucket (403
  ``bucket_suspended``) or a denial is never a reason to try Fence's path: the registry's
  decision stands, so suspension cannot be bypassed.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar, Union

from bucket_registry_client.errors import BucketNotFound, RegistryEmpty

ENABLE_ENV = "FENCE_ENABLE_DYNAMIC_BUCKETS"
_TRUE = frozenset({"1", "true", "yes", "on"})

# Why a call was left to Fence.
DISABLED = "disabled"
PROVIDER = "provider"
REGISTRY_EMPTY = "registry_empty"
UNREGISTERED = "unregistered"
UNSUPPORTED = "unsupported"

T = TypeVar("T")


def dynamic_buckets_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``FENCE_ENABLE_DYNAMIC_BUCKETS`` switches the registry on (unset: off)."""
    value = (os.environ if environ is None else environ).get(ENABLE_ENV, "")
    return value.strip().lower() in _TRUE


@dataclass(frozen=True)
class Delegated(Generic[T]):
    """The registry handled it; ``value`` is its typed answer."""

    value: T

    @property
    def delegated(self) -> bool:
        return True


@dataclass(frozen=True)
class UseLegacy:
    """Fence should do this itself, exactly as before the registry (fence-config.yaml).
    ``reason`` is one of ``disabled``, ``provider``, ``registry_empty``, ``unregistered`` or
    ``unsupported``; ``bucket`` is the bucket it is about, when there is one."""

    reason: str
    bucket: str | None = None

    @property
    def delegated(self) -> bool:
        return False


Routed = Union[Delegated[T], UseLegacy]


class LegacyFallback:
    """The policy above. ``enabled`` defaults to the environment switch, read once here."""

    def __init__(
        self,
        *,
        enabled: bool | None = None,
        legacy_providers: Iterable[str] = ("gcp", "azure"),
        fallback_unregistered: bool = True,
    ) -> None:
        self.enabled = dynamic_buckets_enabled() if enabled is None else enabled
        self.legacy_providers = frozenset(legacy_providers)
        self.fallback_unregistered = fallback_unregistered

    def precheck(self, bucket: str | None, provider: str | None) -> UseLegacy | None:
        """A decision that needs no registry call, or ``None`` to ask the registry."""
        if not self.enabled:
            return UseLegacy(DISABLED, bucket)
        if provider is not None and provider in self.legacy_providers:
            return UseLegacy(PROVIDER, bucket)
        return None

    def after(self, error: Exception, bucket: str | None) -> UseLegacy | None:
        """The legacy decision an error from the registry means, or ``None`` to raise it."""
        if isinstance(error, RegistryEmpty):
            return UseLegacy(REGISTRY_EMPTY, bucket)
        if isinstance(error, BucketNotFound) and self.fallback_unregistered:
            return UseLegacy(UNREGISTERED, bucket)
        return None

    def run(
        self, call: Callable[[], T], *, bucket: str | None = None, provider: str | None = None
    ) -> Routed[T]:
        early = self.precheck(bucket, provider)
        if early is not None:
            return early
        try:
            return Delegated(call())
        except BucketNotFound as exc:
            decision = self.after(exc, bucket)
            if decision is None:
                raise
            return decision

    async def run_async(
        self,
        call: Callable[[], Awaitable[T]],
        *,
        bucket: str | None = None,
        provider: str | None = None,
    ) -> Routed[T]:
        early = self.precheck(bucket, provider)
        if early is not None:
            return early
        try:
            return Delegated(await call())
        except BucketNotFound as exc:
            decision = self.after(exc, bucket)
            if decision is None:
                raise
            return decision
