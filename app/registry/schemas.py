"""A registration's shapes: what a bucket, a prefix and a binding are made of (the admin API
takes them as request bodies; the importer validates fence-config entries with them)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StrictBool, model_validator

from app.registry.records import AuthMode, BucketStatus, Provider

_NAME = Field(min_length=1, max_length=255)
BILLING_PROJECTS = (
    "gcp only: projects a caller may bill through user_project (at most 32 project ids);"
    " empty: only the configured default billing project"
)


class StrictModel(BaseModel):
    # Unknown fields are a client mistake worth a 400, not something to drop silently.
    model_config = ConfigDict(extra="forbid")


class BucketCreate(StrictModel):
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
    public: StrictBool = Field(
        default=False, description="Anyone may read it: unsigned read URLs are allowed"
    )
    credential_vending: StrictBool = Field(
        default=False,
        description="POST /credentials may vend scoped temporary credentials (S3 with STS)",
    )
    sts_endpoint: str | None = Field(
        default=None, max_length=2048, description="The STS that vends them (default: AWS's)"
    )
    max_credential_ttl: int | None = Field(
        default=None, ge=900, le=43200, description="Seconds; at most the registry's maximum"
    )
    project_resource: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="The Arborist path of the project the bucket belongs to; required when a"
        " project member (bucket_register) registers it. owner_project defaults to its last"
        " segment",
    )
    billing_projects: list[str] = Field(default_factory=list, description=BILLING_PROJECTS)


class BucketUpdate(StrictModel):
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
    public: StrictBool | None = None
    credential_vending: StrictBool | None = None
    sts_endpoint: str | None = Field(default=None, max_length=2048)
    max_credential_ttl: int | None = Field(default=None, ge=900, le=43200)
    project_resource: str | None = Field(default=None, min_length=1, max_length=1024)
    billing_projects: list[str] | None = Field(default=None, description=BILLING_PROJECTS)

    @model_validator(mode="after")
    def _required_fields_cannot_be_cleared(self) -> BucketUpdate:
        # ``None`` is how an optional field is cleared; these have no "unset" value.
        for name in _NOT_CLEARABLE:
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


_NOT_CLEARABLE = (
    "provider",
    "auth_mode",
    "labels",
    "data_upload_allowed",
    "is_default_upload",
    "requester_pays",
    "credential_vending",
    "billing_projects",
)


class PrefixCreate(StrictModel):
    prefix: str = Field(min_length=1, max_length=1024)


class AllowedOps(StrictModel):
    read: StrictBool = False
    write: StrictBool = False
    delete: StrictBool = False
    multipart: StrictBool = False


class BindingCreate(StrictModel):
    prefix: str | None = Field(default=None, min_length=1, max_length=1024)
    resource_path: str = Field(min_length=1, max_length=1024)
    allowed_ops: AllowedOps


class S3Keys(StrictModel):
    """New static keys for an S3-speaking bucket; write-only (never returned)."""

    access_key_id: str = Field(min_length=3, max_length=128, pattern=r"^[\x21-\x7e]+$")
    secret_access_key: SecretStr = Field(min_length=1, max_length=1024)


class GcpKey(StrictModel):
    """A new service-account key (the JSON file Google issues) for a gcp bucket; write-only."""

    service_account_key_json: SecretStr = Field(min_length=2, max_length=16_384)
