"""Serve buckets from a mounted fence-config.yaml while the registry holds none (docs/migration.md).

A cluster can point Fence at the registry before anything is imported: with
``BUCKET_REGISTRY_FENCE_CONFIG`` set and an empty registry, ``/resolve`` and ``/presign`` answer
from the YAML, read-only; the first registration switches every replica over to the registry
(through the usual change notifications).

- Records are built with the importer's mapping (``app.fence_config.mapping``), so switching from
  the fallback to imported registrations changes nothing a caller sees but the ids.
- Regex keys are served as Fence serves them: an exact key first, then the first key that
  matches the name as ``^key$``.
- Static keys stay in the YAML, as with Fence: a record's ``secret_ref`` is
  ``fence-config://<cred name>`` and ``FenceConfigSecrets`` resolves that scheme from the file, so
  the normal signing path works. Such references can never be registered (the secret store
  refuses unknown schemes), so YAML keys cannot leak into registrations.
- Bindings fail closed: Fence authorizes each file by its indexd ``authz``, which the registry
  never sees. Each bucket gets a whole-bucket binding on the configured resource paths
  (default ``/programs``, or the entry's ``registry.bindings``), reads everywhere and writes
  only where Fence allows uploads; the user still needs ``read-storage``/``write-storage`` on
  that path in Arborist, exactly the actions Fence checks.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from app.errors import InvalidInput, SecretNotFound
from app.fence_config.mapping import (
    DEFAULT_RESOURCE_PATHS,
    DesiredBucket,
    MappingOptions,
    map_fence_config,
    map_s3_entry,
)
from app.fence_config.reader import (
    AwsCredential,
    FenceBucketConfig,
    S3BucketEntry,
    load_fence_config,
)
from app.registry.records import BindingRecord, BucketRecord, BucketStatus, Op
from app.secrets.base import SecretPayload
from app.storage.credentials import SecretSource

log = logging.getLogger(__name__)

FENCE_CONFIG_SCHEME = "fence-config"
FALLBACK_LABEL = "gen3.fallback"
# Stable ids per name, so cached signers and log lines agree across restarts and replicas.
_ID_NAMESPACE = uuid.UUID("5b0e2a4c-5f55-4e47-9a53-6f1d2b1f7c11")


def fence_config_ref(credential: AwsCredential) -> str:
    return f"{FENCE_CONFIG_SCHEME}://{credential.name}"


class FenceConfigSource:
    """Read-only ``BucketRecord``s from a parsed fence-config.yaml."""

    def __init__(
        self,
        config: FenceBucketConfig,
        *,
        endpoint_allowlist: Sequence[str] = (),
        resource_paths: Sequence[str] = DEFAULT_RESOURCE_PATHS,
        loaded_at: datetime | None = None,
    ) -> None:
        self.config = config
        self.options = MappingOptions(
            resource_paths=tuple(resource_paths), endpoint_allowlist=tuple(endpoint_allowlist)
        )
        self.loaded_at = loaded_at or datetime.now(UTC)
        mapped = map_fence_config(config, self.options, fence_config_ref)
        self._records = {desired.name: self._record(desired) for desired in mapped.desired}
        # What the fallback will not serve, said once at startup rather than per request.
        self.problems = [invalid.message for invalid in mapped.invalid]
        # Regex keys are skipped by the importer but served here, by matching.
        self.skipped = [
            f"{skipped.source}: {skipped.reason}"
            for skipped in mapped.skipped
            if not skipped.source.startswith("S3_BUCKETS.")
        ]
        for problem in [*self.problems, *self.skipped, *config.warnings]:
            log.warning("fence-config fallback: %s", problem)

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        endpoint_allowlist: Sequence[str] = (),
        resource_paths: Sequence[str] = DEFAULT_RESOURCE_PATHS,
    ) -> FenceConfigSource:
        """Parse ``path`` (``FenceConfigError`` if malformed: the service should not start)."""
        return cls(
            load_fence_config(path),
            endpoint_allowlist=endpoint_allowlist,
            resource_paths=resource_paths,
        )

    @property
    def names(self) -> list[str]:
        return sorted(self._records)

    def get(self, name: str) -> BucketRecord | None:
        """The record Fence's configuration implies for ``name``, or None."""
        record = self._records.get(name)
        if record is not None:
            return record
        entry = self.config.s3_entry_for(name)
        if entry is None or not entry.is_pattern:
            return None
        return self._pattern_record(entry, name)

    def default_upload(self, owner_project: str | None) -> BucketRecord | None:
        """Fence's ``DATA_UPLOAD_BUCKET`` serves every project."""
        name = self.config.data_upload_bucket
        return self.get(name) if name else None

    def secret(self, raw_ref: str) -> SecretPayload:
        """The keys a ``fence-config://<cred>`` reference names, from ``AWS_CREDENTIALS``."""
        scheme, _, name = raw_ref.partition("://")
        credential = self.config.aws_credentials.get(name)
        if scheme != FENCE_CONFIG_SCHEME or credential is None or not credential.has_keys:
            raise SecretNotFound(f"secret {raw_ref} is not in the mounted fence-config.yaml")
        return SecretPayload(credential.payload())

    def _pattern_record(self, entry: S3BucketEntry, name: str) -> BucketRecord | None:
        # Not cached here: names come from callers; the bucket directory caches (LRU-bounded).
        try:
            desired = map_s3_entry(entry, name, self.config, self.options, fence_config_ref)
        except InvalidInput:
            return None
        return self._record(desired)

    def _record(self, desired: DesiredBucket) -> BucketRecord:
        spec = desired.spec
        bucket_id = uuid.uuid5(_ID_NAMESPACE, f"bucket:{desired.name}")
        status = BucketStatus(spec["status"])
        credential = desired.credential
        if credential is not None and not credential.has_keys:
            # Fence would fail to sign too; say so with a suspension instead of a 503 later.
            status = BucketStatus.SUSPENDED
        bindings = tuple(
            BindingRecord(
                id=uuid.uuid5(_ID_NAMESPACE, f"binding:{desired.name}:{i}"),
                bucket_id=bucket_id,
                prefix_id=(
                    uuid.uuid5(_ID_NAMESPACE, f"prefix:{desired.name}:{binding.prefix}")
                    if binding.prefix
                    else None
                ),
                prefix=binding.prefix or "",
                resource_path=binding.resource_path,
                allowed_ops=frozenset(Op(op) for op in binding.ops),
            )
            for i, binding in enumerate(desired.bindings)
        )
        return BucketRecord.of(
            {**spec, "labels": {**spec["labels"], FALLBACK_LABEL: "true"}, "status": status},
            id=bucket_id,
            # Version 0: never a registry version, which start at 1.
            version=0,
            created_at=self.loaded_at,
            updated_at=self.loaded_at,
            bindings=bindings,
        )


class FenceConfigSecrets:
    """A ``SecretSource`` that answers ``fence-config://`` references from the YAML and passes
    every other reference to the secret store."""

    def __init__(self, store: SecretSource, fallback: FenceConfigSource) -> None:
        self._store = store
        self._fallback = fallback

    async def get(self, raw_ref: str, version: str | None) -> Mapping[str, str]:
        if raw_ref.startswith(f"{FENCE_CONFIG_SCHEME}://"):
            return self._fallback.secret(raw_ref)
        return await self._store.get(raw_ref, version)

    def fresh_for(self, raw_ref: str, version: str | None) -> float | None:
        fresh_for = getattr(self._store, "fresh_for", None)
        return fresh_for(raw_ref, version) if fresh_for is not None else None
