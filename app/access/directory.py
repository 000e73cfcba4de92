"""Bucket snapshots for the data path, cached so the warm path never touches the database."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from app.cache import AsyncCache
from app.errors import BucketNotFound
from app.registry.records import BucketRecord
from app.registry.service import BucketChange, RegistryService

log = logging.getLogger(__name__)

# Unknown names are remembered briefly so a stream of typos cannot turn into database load,
# yet a bucket registered a moment later is found quickly.
NEGATIVE_TTL = 5.0
# Names looked up in the database one by one per NEGATIVE_TTL window; past that, a name is
# first checked against the set of all names (one query per window), so only registered
# names cost a query of their own. Counted when the lookup starts: a concurrent burst counts.
LOOKUP_BUDGET = 64
_EMPTY_KEY = "registry"
_NAMES_KEY = "names"


class FallbackSource(Protocol):
    """Buckets served while the registry holds none (e.g. a mounted fence-config.yaml).

    Read-only and in memory: the directory caches what it returns like any registry record.
    """

    def get(self, name: str) -> BucketRecord | None: ...

    def default_upload(self, owner_project: str | None) -> BucketRecord | None: ...


class BucketDirectory:
    """Looks buckets up by name: one database query per bucket per TTL, whatever the concurrency.

    Entries are dropped at once when the registry announces a change (locally, or from another
    replica through PostgreSQL ``NOTIFY``); the TTL is the safety net for lost notifications.

    While the registry holds no bucket at all, lookups fall back to ``fallback`` (if given), and
    a miss carries ``details: {"registry_empty": true}`` so Fence's client keeps its own YAML
    path. Whether the registry is empty is cached with the bucket TTL and forgotten on every
    change; the first registration also drops every snapshot the fallback served.

    Unknown names live in a cache of their own (``unknown``), so a caller sending random names
    can neither evict hot buckets nor make each name a query: past ``LOOKUP_BUDGET`` lookups
    in a window, names are judged against the set of every registered name, loaded once per
    window (``names``), and only names in it are queried.
    """

    def __init__(
        self,
        registry: RegistryService,
        *,
        ttl: float,
        max_entries: int,
        fallback: FallbackSource | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.fallback = fallback
        self.buckets: AsyncCache[str, BucketRecord | None] = AsyncCache(
            "buckets", ttl=ttl, max_entries=max_entries
        )
        self._negative_ttl = min(ttl, NEGATIVE_TTL)
        self.unknown: AsyncCache[str, bool] = AsyncCache(
            "unknown_buckets", ttl=self._negative_ttl, max_entries=max_entries
        )
        self.names: AsyncCache[str, frozenset[str]] = AsyncCache(
            "bucket_names", ttl=self._negative_ttl, max_entries=1
        )
        self._clock = clock
        # Database lookups in the current and the previous window.
        self._window_started = clock()
        self._lookups = 0
        self._previous_lookups = 0
        # Moves on every change, so a lookup that raced one does not remember a stale miss.
        self._generation = 0
        self.defaults: AsyncCache[str | None, str | None] = AsyncCache(
            "default_upload", ttl=ttl, max_entries=max_entries
        )
        self.emptiness: AsyncCache[str, bool] = AsyncCache("registry_empty", ttl=ttl, max_entries=1)
        self._ttl = ttl
        self._served_fallback = False

    async def get(self, name: str) -> BucketRecord:
        if self.unknown.peek(name):
            raise await self._not_found(f"bucket {name!r} is not registered")
        record = await self.buckets.get(name, lambda: self._load(name), ttl=self._ttl_for)
        if record is None:
            raise await self._not_found(f"bucket {name!r} is not registered")
        return record

    async def default_upload(self, owner_project: str | None) -> BucketRecord:
        """The project's default upload bucket, else the commons-wide one."""
        name = await self.defaults.get(
            owner_project, lambda: self.registry.default_upload_bucket(owner_project)
        )
        if name is not None:
            return await self.get(name)
        if self.fallback is not None and await self.registry_is_empty():
            record = self.fallback.default_upload(owner_project)
            if record is not None:
                self._served_fallback = True
                return record
        scope = f"project {owner_project!r}" if owner_project else "this commons"
        raise await self._not_found(f"no default upload bucket is registered for {scope}")

    async def registry_is_empty(self) -> bool:
        return await self.emptiness.get(_EMPTY_KEY, self._count_is_zero)

    def forget(self, change: BucketChange) -> BucketRecord | None:
        """Drop what a registry change makes stale; returns the snapshot it replaced, if any."""
        previous = self.buckets.peek(change.name)
        self._generation += 1
        self.buckets.invalidate(change.name)
        self.unknown.invalidate(change.name)
        self.names.clear()
        # Any change can move the default-upload flag; the map is small, rebuild it.
        self.defaults.clear()
        self.emptiness.clear()
        if self._served_fallback:
            # The registry may hold its first bucket now: no fallback snapshot may outlive that.
            self.buckets.clear()
            self._served_fallback = False
        return previous

    def forget_everything(self) -> None:
        self._generation += 1
        self.buckets.clear()
        self.unknown.clear()
        self.names.clear()
        self.defaults.clear()
        self.emptiness.clear()

    async def _load(self, name: str) -> BucketRecord | None:
        generation = self._generation
        known = True
        if self._count_lookup():
            known = name in await self.names.get(_NAMES_KEY, self.registry.bucket_names)
        if known:
            try:
                return await self.registry.load_record(name)
            except BucketNotFound:
                pass
        record = None
        if self.fallback is not None and await self.registry_is_empty():
            record = self.fallback.get(name)
        if record is not None:
            self._served_fallback = True
        elif generation == self._generation:
            self.unknown.set(name, True)
        return record

    def _count_lookup(self) -> bool:
        """Count one lookup; True when this window (or the last) is past the budget, i.e.
        names should be checked against the set of all names before their own query."""
        if self._negative_ttl <= 0:
            return False
        now = self._clock()
        elapsed = now - self._window_started
        if elapsed >= self._negative_ttl:
            # A whole quiet window in between forgets the earlier pressure.
            self._previous_lookups = self._lookups if elapsed < 2 * self._negative_ttl else 0
            self._lookups = 0
            self._window_started = now
        self._lookups += 1
        return max(self._lookups, self._previous_lookups) > LOOKUP_BUDGET

    async def _not_found(self, message: str) -> BucketNotFound:
        if await self.registry_is_empty():
            return BucketNotFound(message, details={"registry_empty": True})
        return BucketNotFound(message)

    async def _count_is_zero(self) -> bool:
        return await self.registry.count_buckets() == 0

    def _ttl_for(self, record: BucketRecord | None) -> float:
        # Misses are kept in ``unknown``, never among the buckets.
        return self._ttl if record is not None else 0.0
