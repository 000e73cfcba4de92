"""What the API layer sees of signing, whatever the provider."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Protocol, runtime_checkable

from app.errors import DependencyUnavailable
from app.registry.records import BucketRecord, Op

HTTP_METHOD_FOR_OP: Mapping[Op, str] = MappingProxyType(
    {Op.READ: "GET", Op.WRITE: "PUT", Op.DELETE: "DELETE"}
)


@dataclass(frozen=True, slots=True)
class PresignedRequest:
    """A request anyone holding it may send until ``expires_at`` (UTC).

    ``headers`` are those the client must send for the signature to match (none for S3 query
    signing). ``expires_at`` is None for an unsigned URL to a public object: nothing in it
    expires, the bucket's public access decides.
    """

    url: str
    method: str
    expires_at: datetime | None
    headers: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class BucketSigner(Protocol):
    """Signs requests for one bucket with one set of credentials.

    ``presign`` and ``presign_upload_part`` are synchronous and do no I/O: they are the warm
    path. They never sign a URL that outlives ``credentials_expire_at``; a longer
    ``expires_in`` is shortened. The async methods talk to the store with the same credentials.
    """

    @property
    def access_key_id(self) -> str:
        """The (non-secret) key id the signatures carry; for logs and tests."""
        ...

    @property
    def credentials_expire_at(self) -> datetime | None:
        """When the signing credentials expire (UTC); None when they do not."""
        ...

    def presign(
        self,
        key: str,
        method: str,
        expires_in: int,
        *,
        params: Mapping[str, str] | None = None,
    ) -> PresignedRequest: ...

    def presign_upload_part(
        self, key: str, upload_id: str, part_number: int, expires_in: int
    ) -> PresignedRequest: ...

    async def create_multipart_upload(self, key: str) -> str: ...

    async def complete_multipart_upload(
        self, key: str, upload_id: str, parts: list[tuple[int, str]]
    ) -> None: ...

    async def abort_multipart_upload(self, key: str, upload_id: str) -> None: ...

    async def head_bucket(self) -> None: ...

    async def list_one(self) -> None: ...

    async def aclose(self) -> None:
        """Release clients once in-flight calls finish; presigning keeps working."""
        ...


class SignerFactory(Protocol):
    """Builds signers for the providers it serves; ``StorageService`` caches what it builds."""

    async def build(
        self, bucket: BucketRecord, *, min_lifetime: int, previous: BucketSigner | None = None
    ) -> BucketSigner:
        """A signer able to sign for ``min_lifetime`` seconds where its credentials allow it.

        ``previous`` is the bucket's current signer of the same credential generation; the
        factory returns it unchanged when its credentials have not changed.
        """
        ...

    def fresh_enough(self, signer: BucketSigner, bucket: BucketRecord, min_lifetime: int) -> bool:
        """Whether a cached ``signer`` may still be used for a URL living ``min_lifetime``."""
        ...

    def ttl(self, signer: BucketSigner) -> float:
        """Seconds the service may cache ``signer`` for."""
        ...

    async def aclose(self) -> None: ...


def lifetime_within(expires_in: int, expires_at: datetime | None, now: datetime) -> int:
    """``expires_in`` shortened so a URL signed at ``now`` dies no later than its credentials.

    A URL signed with temporary credentials stops working when they expire, whatever its
    X-Amz-Expires says; promising the caller more would hand out a URL that breaks mid-download.
    """
    if expires_at is None:
        return expires_in
    left = math.floor((expires_at - now).total_seconds())
    if left < 1:
        raise DependencyUnavailable("sts", "signing credentials have expired; retry")
    return min(expires_in, left)


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime (botocore hands out both naive and local-zone ones)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
