"""Request and response bodies of the admin and resolve APIs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from app.registry.records import AuthMode, BucketStatus, Provider

_NAME = Field(min_length=1, max_length=255)


class _Strict(BaseModel):
    # Unknown fields are a client mistake worth a 400, not something to drop silently.
    model_config = ConfigDict(extra="forbid")


class BucketCreate(_Strict):
    name: str = _NAME
    provider: Provider
    region: str | None = Field(default=None, max_length=64)
    endpoint: str | None = Field(default=None, max_length=2048)
    auth_mode: AuthMode
    role_arn: str | None = Field(default=None, max_length=2048)
    external_id: str | None = Field(default=None, max_length=1224)
    secret_ref: str | None = Field(default=None, max_length=2048)
    secret_version: str | None = Field(default=None, min_length=1, max_length=256)
    service_account: str | None = Field(default=None, max_length=320)
    owner_project: str | None = Field(default=None, min_length=1, max_length=255)
    labels: dict[str, str] = Field(default_factory=dict)
    status: BucketStatus = BucketStatus.ACTIVE
    data_upload_allowed: StrictBool = False
    is_default_upload: StrictBool = False
    requester_pays: StrictBool = False


class BucketUpdate(_Strict):
    """A partial update: fields left out stay as they are; ``null`` clears an optional field."""

    provider: Provider | None = None
    region: str | None = Field(default=None, max_length=64)
    endpoint: str | None = Field(default=None, max_length=2048)
    auth_mode: AuthMode | None = None
    role_arn: str | None = Field(default=None, max_length=2048)
    external_id: str | None = Field(default=None, max_length=1224)
    secret_ref: str | None = Field(default=None, max_length=2048)
    secret_version: str | None = Field(default=None, min_length=1, max_length=256)
    service_account: str | None = Field(default=None, max_length=320)
    owner_project: str | None = Field(default=None, min_length=1, max_length=255)
    labels: dict[str, str] | None = None
    data_upload_allowed: StrictBool | None = None
    is_default_upload: StrictBool | None = None
    requester_pays: StrictBool | None = None


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


class PrefixCreate(_Strict):
    prefix: str = Field(min_length=1, max_length=1024)


class PrefixOut(BaseModel):
    id: uuid.UUID
    prefix: str
    created_at: datetime


class AllowedOps(_Strict):
    read: StrictBool = False
    write: StrictBool = False
    delete: StrictBool = False
    multipart: StrictBool = False


class BindingCreate(_Strict):
    prefix: str | None = Field(default=None, min_length=1, max_length=1024)
    resource_path: str = Field(min_length=1, max_length=1024)
    allowed_ops: AllowedOps


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
