"""Bodies of the data-path (presign, multipart) and resolve endpoints."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.registry.records import AuthMode, BucketStatus, Provider
from app.registry.schemas import AllowedOps

BucketName = Field(min_length=1, max_length=255)
ObjectKey = Field(min_length=1, max_length=4096, description="Object key (≤ 1024 bytes UTF-8)")
UploadId = Field(min_length=1, max_length=1024, pattern=r"^[\x21-\x7e]+$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PresignRequest(_Strict):
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


class MultipartInit(_Strict):
    bucket: str = BucketName
    key: str = ObjectKey


class MultipartStarted(BaseModel):
    upload_id: str


class MultipartPartRequest(_Strict):
    bucket: str = BucketName
    key: str = ObjectKey
    upload_id: str = UploadId
    part_number: int = Field(ge=1, le=10_000)
    expires_in: int | None = Field(default=None, ge=1, le=10**9)


class Part(_Strict):
    part_number: int = Field(ge=1, le=10_000)
    etag: str = Field(min_length=1, max_length=1024)


class MultipartComplete(_Strict):
    bucket: str = BucketName
    key: str = ObjectKey
    upload_id: str = UploadId
    parts: list[Part] = Field(min_length=1, max_length=10_000)


class MultipartAbort(_Strict):
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
