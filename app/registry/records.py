"""Immutable snapshots of registry rows, safe to cache and share between requests."""

from __future__ import annotations

import enum
import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# The fields of a registration, in the order the API and the audit trail present them.
BUCKET_FIELDS: tuple[str, ...] = (
    "name",
    "provider",
    "region",
    "endpoint",
    "auth_mode",
    "role_arn",
    "external_id",
    "secret_ref",
    "secret_version",
    "service_account",
    "owner_project",
    "labels",
    "status",
    "data_upload_allowed",
    "is_default_upload",
    "requester_pays",
    "public",
    "credential_vending",
    "sts_endpoint",
    "max_credential_ttl",
    "billing_projects",
)

# Self-service fields: stored, shown and audited with the others, but kept out of
# ``BUCKET_FIELDS``, which fence-config.yaml entries and the importer's plans are compared on
# and which they know nothing of.
SELF_SERVICE_FIELDS: tuple[str, ...] = ("project_resource", "pending_external_id")


def secret_fingerprint(ref: str | None) -> str | None:
    """A secret reference as shown to people who may not know it: that it is, not where."""
    if ref is None:
        return None
    return "sha256:" + hashlib.sha256(ref.encode()).hexdigest()[:12]


class Provider(enum.StrEnum):
    AWS = "aws"
    GCP = "gcp"
    MINIO = "minio"
    S3_COMPATIBLE = "s3_compatible"

    @property
    def speaks_s3(self) -> bool:
        return self is not Provider.GCP

    @property
    def needs_endpoint(self) -> bool:
        return self in (Provider.MINIO, Provider.S3_COMPATIBLE)


class AuthMode(enum.StrEnum):
    ROLE = "role"
    STATIC = "static"
    WORKLOAD_IDENTITY = "workload_identity"


class BucketStatus(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    # A self-registered bucket before a validation (and, when required, an admin) lets it serve.
    PENDING = "pending"
    REJECTED = "rejected"


class Op(enum.StrEnum):
    """Operations a binding may allow; ``multipart`` gates multipart uploads."""

    READ = "read"
    WRITE = "write"
    DELETE = "delete"
    MULTIPART = "multipart"


@dataclass(frozen=True, slots=True)
class BindingRecord:
    id: uuid.UUID
    bucket_id: uuid.UUID
    prefix_id: uuid.UUID | None
    prefix: str  # "" when the binding covers the whole bucket
    resource_path: str
    allowed_ops: frozenset[Op]

    def covers(self, key: str, op: Op) -> bool:
        """True when this binding applies to ``key`` and allows ``op`` (docs/authorization.md)."""
        return op in self.allowed_ops and key.startswith(self.prefix)


@dataclass(frozen=True, slots=True)
class BucketRecord:
    id: uuid.UUID
    name: str
    provider: Provider
    region: str | None
    endpoint: str | None
    auth_mode: AuthMode
    role_arn: str | None
    external_id: str | None
    secret_ref: str | None
    secret_version: str | None
    owner_project: str | None
    labels: dict[str, str]
    status: BucketStatus
    data_upload_allowed: bool
    is_default_upload: bool
    version: int
    created_at: datetime
    updated_at: datetime
    requester_pays: bool = False
    service_account: str | None = None
    # Anyone may read it without credentials (Fence's ``cred: '*'``): unsigned URLs are allowed.
    public: bool = False
    # POST /credentials: vend scoped STS sessions, from this STS, living at most this long.
    credential_vending: bool = False
    sts_endpoint: str | None = None
    max_credential_ttl: int | None = None
    # gcp: projects a caller may name as ``user_project`` (besides the configured default).
    billing_projects: tuple[str, ...] = ()
    bindings: tuple[BindingRecord, ...] = field(default=())

    @classmethod
    def of(
        cls,
        values: Mapping[str, Any],
        *,
        id: uuid.UUID,
        version: int,
        created_at: datetime,
        updated_at: datetime,
        bindings: tuple[BindingRecord, ...] = (),
    ) -> BucketRecord:
        """The one way a record is built, from a registration's ``BUCKET_FIELDS`` values
        (a database row or a registration mapped from fence-config.yaml)."""
        fields: dict[str, Any] = {name: values[name] for name in BUCKET_FIELDS}
        fields["provider"] = Provider(fields["provider"])
        fields["auth_mode"] = AuthMode(fields["auth_mode"])
        fields["status"] = BucketStatus(fields["status"])
        fields["labels"] = dict(fields["labels"] or {})
        fields["billing_projects"] = tuple(fields["billing_projects"] or ())
        return cls(
            id=id,
            version=version,
            created_at=created_at,
            updated_at=updated_at,
            bindings=bindings,
            **fields,
        )

    @property
    def is_active(self) -> bool:
        return self.status is BucketStatus.ACTIVE

    def credential_generation(self) -> tuple[Any, ...]:
        """What the signing credentials depend on; a change means new clients and sessions."""
        return (
            self.provider,
            self.region,
            self.endpoint,
            self.auth_mode,
            self.role_arn,
            self.external_id,
            self.secret_ref,
            self.secret_version,
            self.service_account,
            # Vending buckets sign with a session that carries the registry's SourceIdentity.
            self.credential_vending,
        )

    @property
    def has_signing_identity(self) -> bool:
        """Whether the registration names credentials of its own to sign with.

        A public bucket imported from ``cred: '*'`` names none: Fence never signed for it.
        """
        if self.provider is Provider.GCP:
            return self.auth_mode is AuthMode.STATIC or bool(self.service_account)
        return bool(self.secret_ref or self.role_arn)

    def bindings_for(self, key: str, op: Op) -> list[BindingRecord]:
        return [binding for binding in self.bindings if binding.covers(key, op)]
