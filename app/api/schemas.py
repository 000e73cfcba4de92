"""The HTTP API's bodies: data-path requests, and every response shape.

A registration's own shapes (``BucketCreate``, ``BindingCreate``, ...) live with its tables in
``app.registry.schemas``; these are what the API adds around them.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from app.registry.records import AuthMode, BucketStatus, Provider
from app.registry.schemas import AllowedOps, StrictModel

BucketName = Field(min_length=1, max_length=255)
ObjectKey = Field(min_length=1, max_length=4096, description="Object key (≤ 1024 bytes UTF-8)")
UploadId = Field(min_length=1, max_length=1024, pattern=r"^[\x21-\x7e]+$")


class PresignRequest(StrictModel):
    bucket: str = BucketName
    key: str = ObjectKey
    op: Literal["read", "write", "delete"]
    expires_in: int | None = Field(
        default=None, ge=1, le=10**9, description="Seconds; capped at the configured maximum"
    )
    user_project: str | None = Field(
        default=None,
        pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$",
        description="gcp only: the project billed for a requester-pays bucket",
    )
    resumable: bool = Field(
        default=False, description="gcp write only: sign the POST that starts a resumable upload"
    )


class PresignedUrl(BaseModel):
    url: str
    method: str
    expires_at: datetime
    headers: dict[str, str] = Field(default_factory=dict)


class MultipartInit(StrictModel):
    bucket: str = BucketName
    key: str = ObjectKey


class MultipartStarted(BaseModel):
    upload_id: str


class MultipartPartRequest(StrictModel):
    bucket: str = BucketName
    key: str = ObjectKey
    upload_id: str = UploadId
    part_number: int = Field(ge=1, le=10_000)
    expires_in: int | None = Field(default=None, ge=1, le=10**9)


class Part(StrictModel):
    part_number: int = Field(ge=1, le=10_000)
    etag: str = Field(min_length=1, max_length=1024, pattern=r"^[\x20-\x7e]+$")


class MultipartComplete(StrictModel):
    bucket: str = BucketName
    key: str = ObjectKey
    upload_id: str = UploadId
    parts: list[Part] = Field(min_length=1, max_length=10_000)


class MultipartAbort(StrictModel):
    bucket: str = BucketName
    key: str = ObjectKey
    upload_id: str = UploadId


class ResolvedBinding(BaseModel):
    prefix: str
    resource_path: str
    allowed_ops: AllowedOps


class ResolvedBucket(BaseModel):
    """Everything Fence may know about a bucket: no credentials, no secret references."""

    id: uuid.UUID
    name: str
    provider: Provider
    region: str | None
    endpoint: str | None
    auth_mode: AuthMode
    status: BucketStatus
    owner_project: str | None
    data_upload_allowed: bool
    is_default_upload: bool
    requester_pays: bool
    labels: dict[str, str]
    version: int
    bindings: list[ResolvedBinding]


# -- admin responses ----------------------------------------------------------------------


class BucketOut(BaseModel):
    id: uuid.UUID
    name: str
    provider: Provider
    region: str | None
    endpoint: str | None
    auth_mode: AuthMode
    role_arn: str | None
    external_id: str | None
    secret_ref: bool = Field(description="Whether a secret reference is set; never its value.")
    secret_version: str | None
    service_account: str | None
    owner_project: str | None
    labels: dict[str, str]
    status: BucketStatus
    data_upload_allowed: bool
    is_default_upload: bool
    requester_pays: bool
    version: int
    created_at: datetime
    updated_at: datetime


class PrefixOut(BaseModel):
    id: uuid.UUID
    prefix: str
    created_at: datetime


class BindingOut(BaseModel):
    id: uuid.UUID
    prefix_id: uuid.UUID | None
    prefix: str | None
    resource_path: str
    allowed_ops: AllowedOps
    created_at: datetime


class AuditOut(BaseModel):
    id: int
    bucket_id: uuid.UUID | None
    bucket_name: str
    actor: str
    action: str
    diff: dict[str, Any]
    request_id: str | None
    at: datetime


class Ok(BaseModel):
    ok: bool = True


class CreatedBucket(Ok):
    id: uuid.UUID
    name: str


class StatusChanged(Ok):
    status: BucketStatus


class CreatedPrefix(Ok):
    prefix_id: uuid.UUID


class CreatedBinding(Ok):
    binding_id: uuid.UUID


class ErrorBody(BaseModel):
    ok: bool = False
    error: str
    message: str
    details: Any | None = None
