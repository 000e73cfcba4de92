"""Bucket snapshots for the data path, cached so the warm path never touches the database."""

from __future__ import annotations

import logging

from app.cache import AsyncCache
from app.errors import BucketNotFound
from app.registry.records import BucketRecord
from app.registry.service import BucketChange, RegistryService

log = logging.getLogger(__name__)

# Unknown names are remembered briefly so a stream of typos cannot turn into database load,
# yet a bucket registered a moment later is found quickly.
NEGATIVE_TTL = 5.0


class BucketDirectory:
    """Looks buckets up by name: one database query per bucket per TTL, whatever the concurrency.

    Entries are dropped at once when the registry announces a change (locally, or from another
    replica through PostgreSQL ``NOTIFY``); the TTL is the safety net for lost notifications.
    """

    def __init__(self, registry: RegistryService, *, ttl: float, max_entries: int) -> None:
        self.registry = registry
        self.buckets: AsyncCache[str, BucketRecord | None] = AsyncCache(
            "buckets", ttl=ttl, max_entries=max_entries
        )
        self.defaults: AsyncCache[str | None, str | None] = AsyncCache(
            "default_upload", ttl=ttl, max_entries=max_entries
        )
        self._ttl = ttl

    async def get(self, name: str) -> BucketRecord:
        record = await self.buckets.get(name, lambda: self._load(name), ttl=self._ttl_for)
        if record is None:
            raise BucketNotFound(f"bucket {name!r} is not registered")
        return record

    async def default_upload(self, owner_project: str | None) -> BucketRecord:
        """The project's default upload bucket, else the commons-wide one."""
        name = await self.defaults.get(
            owner_project, lambda: self.registry.default_upload_bucket(owner_project)
        )
        if name is None:
            scope = f"project {owner_project!r}" if owner_project else "this commons"
            raise BucketNotFound(f"no default upload bucket is registered for {scope}")
        return await self.get(name)

    def forget(self, change: BucketChange) -> BucketRecord | None:
        """Drop what a registry change makes stale; returns the snapshot it replaced, if any."""
        previous = self.buckets.peek(change.name)
        self.buckets.invalidate(change.name)
        # Any change can move the default-upload flag; the map is small, rebuild it.
        self.defaults.clear()
        return previous

    def forget_everything(self) -> None:
        self.buckets.clear()
        self.defaults.clear()

    async def _load(self, name: str) -> BucketRecord | None:
        try:
            return await self.registry.load_record(name)
        except BucketNotFound:
            return None

    def _ttl_for(self, record: BucketRecord | None) -> float:
        return self._ttl if record is not None else min(self._ttl, NEGATIVE_TTL)
