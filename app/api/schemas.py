"""The HTTP API's bodies: data-path requests, and every response shape.

A registration's own shapes (``BucketCreate``, ``BindingCreate``, ...) live with its tables in
``app.registry.schemas``; these are what the API adds around them.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from app.registry.records import AuthMode, BucketStatus, Provider
from app.registry.schemas import AllowedOps, StrictModel

BucketName = Field(min_length=1, max_length=255)
ObjectKey = Field(min_length=1, max_length=4096, description="Object key (≤ 1024 bytes UTF-8)")
UploadId = Field(min_length=1, max_length=1024, pattern=r"^[\x21-\x7e]+$")


_AUDIT_VALUE = Field(default=None, min_length=1, max_length=256, pattern=r"^[\x21-\x7e ]+$")


class OnBehalfOf(StrictModel):
    """Exactly one of: the user's access token, a user name (e.g. a GA4GH passport holder's),
    or ``anonymous: true`` (Arborist's anonymous policies)."""

    token: str | None = Field(default=None, min_length=1, max_length=16_384)
    username: str | None = Field(default=None, min_length=1, max_length=256)
    anonymous: Literal[True] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> OnBehalfOf:
        given = [name for name in ("token", "username", "anonymous") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError("give exactly one of token, username or anonymous")
        return self


class AuditParams(StrictModel):
    """Signed into GET URLs so the store's access logs name the user (as gen3cirrus does)."""

    user_id: str | None = _AUDIT_VALUE
    username: str | None = _AUDIT_VALUE
    client_id: str | None = _AUDIT_VALUE


class OnBehalf(StrictModel):
    """Fields only a trusted caller (Fence) may send: whom it acts for, the record's authz."""

    on_behalf_of: OnBehalfOf | None = Field(
        default=None, description="Trusted callers only: the principal the request is for"
    )
    authz: list[str] | None = Field(
        default=None,
        max_length=32,
        description="Trusted callers only: the record's authz; every path is checked",
    )
    method: str | list[str] | None = Field(
        default=None,
        description="Trusted callers only: Arborist method(s) to require, all of them",
    )
    audit: AuditParams | None = Field(
        default=None, description="Trusted callers only: signed into GET URLs"
    )
    legacy: Literal["acl", "uploader"] | None = Field(
        default=None,
        description="Trusted callers only, with authz []: decided by Fence's legacy rule",
    )

    @property
    def delegates(self) -> bool:
        return any(
            value is not None
            for value in (self.on_behalf_of, self.authz, self.method, self.audit, self.legacy)
        )


class PresignRequest(OnBehalf):
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
    unsigned: bool = Field(
        default=False,
        description="read only: the plain URL of an object in a public bucket (403 otherwise)",
    )


class CredentialsRequest(OnBehalf):
    bucket: str = BucketName
    prefix: str = Field(
        max_length=1024,
        description="Empty (the whole bucket, if a binding covers it) or ending with '/';"
        " '*', '?' and '${' are refused",
    )
    ops: list[Literal["read", "write", "delete", "list"]] = Field(min_length=1, max_length=4)
    duration: int | None = Field(
        default=None,
        ge=1,
        le=10**9,
        description="Seconds (at least 900); shortened to the bucket's and the registry's maximum",
    )


class VendedCredentials(BaseModel):
    """Temporary keys for the caller alone: the one response that carries a secret."""

    access_key_id: str
    secret_access_key: str
    session_token: str
    expiration: datetime
    region: str
    endpoint: str | None = Field(
        default=None, description="The S3 endpoint to use them with; null for AWS"
    )
    bucket: str
    prefix: str


class DownscopedAccessToken(BaseModel):
    """A gcp bucket's answer: an OAuth access token limited by a Credential Access Boundary to
    the prefix and the ops asked, for the caller alone."""

    access_token: str = Field(description="Send as 'Authorization: Bearer' to Cloud Storage")
    expiration: datetime
    bucket: str
    prefix: str
    provider: Literal["gcp"] = "gcp"


class PresignedUrl(BaseModel):
    url: str
    method: str
    expires_at: datetime | None = Field(
        description="When the URL stops working; null for an unsigned URL to a public object"
    )
    headers: dict[str, str] = Field(default_factory=dict)


MAX_BATCH = 100


class PresignBatch(StrictModel):
    requests: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_BATCH,
        description="1-100 presign bodies; an invalid one fails alone, as its result's error",
        json_schema_extra={"items": {"$ref": "#/components/schemas/PresignRequest"}},
    )


class ItemError(BaseModel):
    code: str
    message: str


class PresignFailure(BaseModel):
    error: ItemError
    status: int = Field(description="The HTTP status the request alone would have had")


class PresignBatchResults(BaseModel):
    results: list[PresignedUrl | PresignFailure] = Field(description="One per request, in order")


class ObjectsDelete(OnBehalf):
    bucket: str = BucketName
    key: str | None = Field(default=None, min_length=1, max_length=4096)
    prefix: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="Ends with '/'; at most 1,000 objects under it, else nothing is deleted",
    )


class ObjectsDeleted(BaseModel):
    deleted: int


class FenceBucketInfo(BaseModel):
    # Absent rather than null when unset, as Fence leaves keys out.
    region: str | SkipJsonSchema[None] = None
    endpoint_url: str | SkipJsonSchema[None] = None
    requester_pays: bool | SkipJsonSchema[None] = None


class FenceBuckets(BaseModel):
    """Fence's ``GET /data/buckets`` shape; keys absent when unset. No credentials."""

    S3_BUCKETS: dict[str, FenceBucketInfo]
    GS_BUCKETS: dict[str, FenceBucketInfo]


class MultipartInit(OnBehalf):
    bucket: str = BucketName
    key: str = ObjectKey


class MultipartStarted(BaseModel):
    upload_id: str


MAX_PARTS = 10_000
PartNumber = Annotated[int, Field(ge=1, le=MAX_PARTS)]


class MultipartPartRequest(OnBehalf):
    """Exactly one of ``part_number`` (one URL, the ``PresignedUrl`` answer) or
    ``part_numbers`` (up to 10,000 distinct parts in one call, the ``PresignedParts`` answer)."""

    bucket: str = BucketName
    key: str = ObjectKey
    upload_id: str = UploadId
    part_number: PartNumber | None = None
    part_numbers: list[PartNumber] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_PARTS,
        description="1-10,000 distinct part numbers, each 1-10,000; instead of part_number",
    )
    expires_in: int | None = Field(default=None, ge=1, le=10**9)

    @model_validator(mode="after")
    def _one_way_to_name_parts(self) -> MultipartPartRequest:
        if (self.part_number is None) == (self.part_numbers is None):
            raise ValueError("give exactly one of part_number or part_numbers")
        if self.part_numbers is not None and len(set(self.part_numbers)) != len(self.part_numbers):
            raise ValueError("part_numbers: each part number may appear only once")
        return self


class PresignedPart(BaseModel):
    part_number: int
    url: str


class PresignedParts(BaseModel):
    """One PUT URL per part asked for, in the order asked; all expire together."""

    parts: list[PresignedPart]
    method: str = "PUT"
    expires_at: datetime | None
    headers: dict[str, str] = Field(default_factory=dict)


class Part(StrictModel):
    part_number: int = Field(ge=1, le=10_000)
    etag: str = Field(min_length=1, max_length=1024, pattern=r"^[\x20-\x7e]+$")


class MultipartComplete(OnBehalf):
    bucket: str = BucketName
    key: str = ObjectKey
    upload_id: str = UploadId
    parts: list[Part] = Field(min_length=1, max_length=10_000)


class MultipartAbort(OnBehalf):
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
    public: bool
    billing_projects: list[str] = Field(
        default_factory=list, description="gcp: projects a caller may name as user_project"
    )
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
    public: bool
    credential_vending: bool
    sts_endpoint: str | None
    max_credential_ttl: int | None
    billing_projects: list[str] = Field(default_factory=list)
    version: int
    created_at: datetime
    updated_at: datetime
    project_resource: str | None = Field(
        default=None, description="The Arborist path of the project the bucket belongs to"
    )
    pending_external_id: str | None = Field(
        default=None,
        description="A role bucket's next external ID, until a validation with it passes",
    )
    validation: dict[str, Any] | None = Field(
        default=None, description="The last validation: when, whether it passed, each check"
    )


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
    status: BucketStatus | None = Field(
        default=None, description="pending for a self-registered bucket until it validates"
    )


class CredentialsRotated(Ok):
    validation: dict[str, Any] = Field(description="The checks the new keys passed")
    status: BucketStatus
    secret_version: str | None = Field(description="The version the bucket now reads")


class VersionsPruned(Ok):
    versions_removed: int


class ExternalIdIssued(Ok):
    pending_external_id: str


class StatusChanged(Ok):
    status: BucketStatus


class BucketRemoved(Ok):
    name: str
    secrets_removed: bool = Field(
        description="Whether the keys the registry held for the bucket were deleted (false:"
        " the registry could not delete them; its log says why)"
    )


class CreatedPrefix(Ok):
    prefix_id: uuid.UUID


class CreatedBinding(Ok):
    binding_id: uuid.UUID


class ErrorBody(BaseModel):
    ok: bool = False
    error: str
    message: str
    details: Any | None = None
