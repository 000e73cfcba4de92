"""Registry tables (docs/data-model.md). Credentials are never columns: only references to them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

# SQLite only auto-increments an ``INTEGER PRIMARY KEY``.
BigIntId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(sa.TypeDecorator[datetime]):
    """Timestamps that come back timezone-aware on every database (SQLite keeps no zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


def _tz_column(**kwargs: Any) -> Any:
    return sa.Column(UtcDateTime(), nullable=False, default=utcnow, **kwargs)


class Bucket(SQLModel, table=True):
    __tablename__ = "bucket"
    __table_args__ = (
        # At most one default upload bucket per project, and at most one global default.
        sa.Index(
            "uq_bucket_default_upload_project",
            "owner_project",
            unique=True,
            postgresql_where=sa.text("is_default_upload AND owner_project IS NOT NULL"),
            sqlite_where=sa.text("is_default_upload AND owner_project IS NOT NULL"),
        ),
        sa.Index(
            "uq_bucket_default_upload_global",
            "is_default_upload",
            unique=True,
            postgresql_where=sa.text("is_default_upload AND owner_project IS NULL"),
            sqlite_where=sa.text("is_default_upload AND owner_project IS NULL"),
        ),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    name: str = Field(max_length=255, unique=True, index=True)
    provider: str = Field(max_length=32, index=True)
    region: str | None = Field(default=None, max_length=64)
    endpoint: str | None = Field(default=None, max_length=2048)
    auth_mode: str = Field(max_length=32)
    role_arn: str | None = Field(default=None, max_length=2048)
    external_id: str | None = Field(default=None, max_length=1224)
    secret_ref: str | None = Field(default=None, max_length=2048)
    secret_version: str | None = Field(default=None, max_length=256)
    service_account: str | None = Field(default=None, max_length=320)
    owner_project: str | None = Field(default=None, max_length=255, index=True)
    labels: dict[str, str] = Field(
        default_factory=dict, sa_column=sa.Column(sa.JSON, nullable=False, default=dict)
    )
    status: str = Field(default="active", max_length=16, index=True)
    data_upload_allowed: bool = False
    is_default_upload: bool = False
    requester_pays: bool = False
    public: bool = False
    # Temporary credentials (POST /credentials): off unless an admin turns them on, because
    # the role's trust policy must first allow sts:SetSourceIdentity and sts:TagSession.
    credential_vending: bool = False
    sts_endpoint: str | None = Field(default=None, max_length=2048)
    max_credential_ttl: int | None = None
    # Self-service (docs/self-service.md): the Arborist path of the project the bucket belongs
    # to, the next external ID while a rotation waits for validation, the last validation.
    project_resource: str | None = Field(default=None, max_length=1024, index=True)
    pending_external_id: str | None = Field(default=None, max_length=1224)
    validation: dict[str, Any] | None = Field(
        default=None, sa_column=sa.Column(sa.JSON, nullable=True)
    )
    billing_projects: list[str] = Field(
        default_factory=list, sa_column=sa.Column(sa.JSON, nullable=False, default=list)
    )
    version: int = 1
    created_at: datetime = Field(default_factory=utcnow, sa_column=_tz_column())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_tz_column())


class BucketPrefix(SQLModel, table=True):
    __tablename__ = "bucket_prefix"
    __table_args__ = (sa.UniqueConstraint("bucket_id", "prefix", name="uq_bucket_prefix"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    bucket_id: uuid.UUID = Field(
        sa_column=sa.Column(
            sa.Uuid, sa.ForeignKey("bucket.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    prefix: str = Field(max_length=1024)
    created_at: datetime = Field(default_factory=utcnow, sa_column=_tz_column())


class BucketPolicyBinding(SQLModel, table=True):
    __tablename__ = "bucket_policy_binding"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    bucket_id: uuid.UUID = Field(
        sa_column=sa.Column(
            sa.Uuid, sa.ForeignKey("bucket.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    prefix_id: uuid.UUID | None = Field(
        default=None,
        sa_column=sa.Column(
            sa.Uuid, sa.ForeignKey("bucket_prefix.id", ondelete="CASCADE"), nullable=True
        ),
    )
    resource_path: str = Field(max_length=1024)
    allowed_ops: dict[str, bool] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_tz_column())


class BucketAudit(SQLModel, table=True):
    """Append-only: rows are inserted in the transaction of the change they describe."""

    __tablename__ = "bucket_audit"
    __table_args__ = (sa.Index("ix_bucket_audit_bucket_id_id", "bucket_id", "id"),)

    id: int | None = Field(default=None, sa_column=sa.Column(BigIntId, primary_key=True))
    # No foreign key: the trail outlives anything it describes.
    bucket_id: uuid.UUID | None = Field(default=None, sa_column=sa.Column(sa.Uuid, nullable=True))
    bucket_name: str = Field(max_length=255)
    actor: str = Field(max_length=255, index=True)
    action: str = Field(max_length=32)
    diff: dict[str, Any] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    request_id: str | None = Field(default=None, max_length=128)
    at: datetime = Field(default_factory=utcnow, sa_column=_tz_column(index=True))
