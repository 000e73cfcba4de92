"""What the registry answers and what Fence sends, as small typed objects."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Union

from bucket_registry_client.errors import Invalid, RegistryClientError


def _timestamp(value: str) -> datetime:
    # Python < 3.11 reads neither a trailing "Z" nor fractions other than 3 or 6 digits.
    value = value.replace("Z", "+00:00")
    head, dot, rest = value.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        value = f"{head}.{rest[:digits][:6].ljust(6, '0')}{rest[digits:]}"
    return datetime.fromisoformat(value)


@dataclass(frozen=True)
class Binding:
    prefix: str
    resource_path: str
    allowed_ops: dict[str, bool]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Binding:
        return cls(
            prefix=data.get("prefix") or "",
            resource_path=data["resource_path"],
            allowed_ops=dict(data.get("allowed_ops") or {}),
        )


@dataclass(frozen=True)
class ResolvedBucket:
    """A bucket's non-secret metadata (``GET /resolve/{name}``): no credentials, ever."""

    name: str
    provider: str
    region: str | None
    endpoint: str | None
    auth_mode: str
    status: str
    owner_project: str | None
    data_upload_allowed: bool
    is_default_upload: bool
    requester_pays: bool
    labels: dict[str, str]
    version: int
    bindings: list[Binding] = field(default_factory=list)
    public: bool = False
    # gcp requester-pays: the projects a caller may name as ``user_project``.
    billing_projects: list[str] = field(default_factory=list)

    @property
    def is_active(self) -> bool:
        return self.status == "active"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ResolvedBucket:
        return cls(
            name=data["name"],
            provider=data["provider"],
            region=data.get("region"),
            endpoint=data.get("endpoint"),
            auth_mode=data["auth_mode"],
            status=data["status"],
            owner_project=data.get("owner_project"),
            data_upload_allowed=bool(data.get("data_upload_allowed")),
            is_default_upload=bool(data.get("is_default_upload")),
            requester_pays=bool(data.get("requester_pays")),
            labels=dict(data.get("labels") or {}),
            version=int(data.get("version") or 0),
            bindings=[Binding.from_json(item) for item in data.get("bindings") or []],
            public=bool(data.get("public")),
            billing_projects=list(data.get("billing_projects") or []),
        )


@dataclass(frozen=True)
class PresignedUrl:
    """A URL anyone holding it may use with ``method`` (and ``headers``) until ``expires_at``
    (None for the unsigned URL of a public object, which does not expire)."""

    url: str
    method: str
    expires_at: datetime | None
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PresignedUrl:
        return cls(
            url=data["url"],
            method=data["method"],
            expires_at=_timestamp(data["expires_at"]) if data.get("expires_at") else None,
            headers=dict(data.get("headers") or {}),
        )


@dataclass(frozen=True)
class S3Credentials:
    """Temporary S3 keys scoped to ``prefix`` of ``bucket`` (``POST /credentials``). The
    secret parts are left out of ``repr`` so a log line of the object does not leak them."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    expiration: datetime
    region: str
    endpoint: str | None
    bucket: str
    prefix: str
    provider: str = "aws"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> S3Credentials:
        return cls(
            access_key_id=str(data["access_key_id"]),
            secret_access_key=str(data["secret_access_key"]),
            session_token=str(data["session_token"]),
            expiration=_timestamp(data["expiration"]),
            region=str(data["region"]),
            endpoint=data.get("endpoint"),
            bucket=str(data["bucket"]),
            prefix=str(data["prefix"]),
        )


@dataclass(frozen=True)
class GcsAccessToken:
    """A Cloud Storage access token limited to ``prefix`` of ``bucket`` (gcp buckets)."""

    access_token: str = field(repr=False)
    expiration: datetime
    bucket: str
    prefix: str
    provider: str = "gcp"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GcsAccessToken:
        return cls(
            access_token=str(data["access_token"]),
            expiration=_timestamp(data["expiration"]),
            bucket=str(data["bucket"]),
            prefix=str(data["prefix"]),
        )


TemporaryCredentials = Union[S3Credentials, GcsAccessToken]


def temporary_credentials(data: Mapping[str, Any]) -> TemporaryCredentials:
    """The answer of ``POST /credentials``: a gcp token when it says so, else S3 keys."""
    if data.get("provider") == "gcp":
        return GcsAccessToken.from_json(data)
    return S3Credentials.from_json(data)


# -- what Fence sends --------------------------------------------------------------------------

OPS = ("read", "write", "delete")
LEGACY_MODES = ("acl", "uploader")


def _invalid(message: str) -> Invalid:
    return Invalid(message, code="invalid_argument")


@dataclass(frozen=True)
class OnBehalfOf:
    """The end user a service-token call acts for: their token, a username Fence already
    resolved (e.g. from a GA4GH passport), or nobody (``anonymous``). Build one with
    ``OnBehalfOf.user_token(jwt)``, ``OnBehalfOf.user(name)`` or ``OnBehalfOf.nobody()``."""

    token: str | None = None
    username: str | None = None
    anonymous: bool = False

    def __post_init__(self) -> None:
        given = [self.token is not None, self.username is not None, self.anonymous]
        if sum(given) != 1:
            raise _invalid("on_behalf_of needs exactly one of a token, a username or anonymous")
        if self.token is not None and not _bare_token(self.token):
            raise _invalid("on_behalf_of token is empty")
        if self.username is not None and not self.username.strip():
            raise _invalid("on_behalf_of username is empty")

    @classmethod
    def user_token(cls, token: str) -> OnBehalfOf:
        return cls(token=_bare_token(token) or token)

    @classmethod
    def user(cls, username: str) -> OnBehalfOf:
        return cls(username=username)

    @classmethod
    def nobody(cls) -> OnBehalfOf:
        return cls(anonymous=True)

    def to_json(self) -> dict[str, Any]:
        if self.token is not None:
            return {"token": _bare_token(self.token)}
        if self.username is not None:
            return {"username": self.username}
        return {"anonymous": True}

    def __repr__(self) -> str:
        # A token is a credential: keep it out of reprs, logs and tracebacks.
        if self.token is not None:
            return "OnBehalfOf(token=<redacted>)"
        return (
            f"OnBehalfOf(username={self.username!r})" if self.username else "OnBehalfOf(anonymous)"
        )


@dataclass(frozen=True)
class Audit:
    """Who Fence says the request is for, recorded by the registry next to its own decision
    (the shape of Fence's ``_get_auth_info_for_id_or_from_request``)."""

    user_id: str | None = None
    username: str | None = None
    client_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            name: str(value)
            for name, value in (
                ("user_id", self.user_id),
                ("username", self.username),
                ("client_id", self.client_id),
            )
            if value not in (None, "")
        }


@dataclass(frozen=True)
class Caller:
    """The user side of a data-path call: on whose behalf, and what to audit."""

    on_behalf_of: OnBehalfOf
    audit: Audit | None = None


#: What the client methods accept as the user: a token string, an ``OnBehalfOf`` or a ``Caller``.
UserLike = Union[str, OnBehalfOf, Caller]


def as_caller(user: UserLike) -> Caller:
    if isinstance(user, Caller):
        return user
    if isinstance(user, OnBehalfOf):
        return Caller(user)
    if isinstance(user, str):
        return Caller(OnBehalfOf.user_token(user))
    raise _invalid("the user must be a token string, an OnBehalfOf or a Caller")


@dataclass(frozen=True)
class Grant:
    """What the record says about access, sent by a trusted caller with the request:
    ``authz`` (the record's resource paths), ``method`` (one Arborist method or several, when
    not the op's default), ``legacy`` (``"acl"`` or ``"uploader"``: Fence decided by the
    record's ACL or uploader field; ``authz`` must then be empty) and ``unsigned`` (hand back
    the plain URL, Fence's ``force_signed_url=False``)."""

    authz: tuple[str, ...] = ()
    method: str | tuple[str, ...] | None = None
    legacy: str | None = None
    unsigned: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.authz, str) or not all(
            isinstance(path, str) and path.startswith("/") for path in self.authz
        ):
            raise _invalid("authz must be a list of resource paths starting with '/'")
        object.__setattr__(self, "authz", tuple(self.authz))
        method = self.method
        if method is not None and not isinstance(method, str):
            method = tuple(method)
            if not method or not all(isinstance(item, str) and item for item in method):
                raise _invalid("method must be an Arborist method or a non-empty list of them")
            object.__setattr__(self, "method", method)
        elif isinstance(method, str) and not method:
            raise _invalid("method is empty")
        if self.legacy is not None:
            if self.legacy not in LEGACY_MODES:
                raise _invalid("legacy must be 'acl' or 'uploader'")
            if self.authz:
                raise _invalid("a legacy decision goes with an empty authz")

    @property
    def is_default(self) -> bool:
        return self == Grant()

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"authz": list(self.authz)}
        if self.method is not None:
            body["method"] = self.method if isinstance(self.method, str) else list(self.method)
        if self.legacy is not None:
            body["legacy"] = self.legacy
        if self.unsigned:
            body["unsigned"] = True
        return body


@dataclass(frozen=True)
class PresignRequest:
    """One ``POST /presign`` (or one item of ``/presign/batch``)."""

    bucket: str
    key: str
    op: str = "read"
    expires_in: int | None = None
    user_project: str | None = None
    resumable: bool = False
    grant: Grant | None = None

    def __post_init__(self) -> None:
        check_location(self.bucket, self.key)
        if self.op not in OPS:
            raise _invalid("op must be 'read', 'write' or 'delete'")
        check_expires_in(self.expires_in)
        if self.user_project is not None and not isinstance(self.user_project, str):
            raise _invalid("user_project must be a string")

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"bucket": self.bucket, "key": self.key, "op": self.op}
        if self.expires_in is not None:
            body["expires_in"] = int(self.expires_in)
        if self.user_project:
            body["user_project"] = self.user_project
        if self.resumable:
            body["resumable"] = True
        return body


@dataclass(frozen=True)
class BatchError:
    """One failed item of ``/presign/batch``: ``error`` is the typed error it would have raised."""

    status: int
    code: str | None
    message: str
    error: RegistryClientError


BatchResult = Union[PresignedUrl, BatchError]


def check_location(bucket: Any, key: Any) -> None:
    if not isinstance(bucket, str) or not bucket:
        raise _invalid("bucket must be a non-empty string")
    if not isinstance(key, str) or not key:
        raise _invalid("key must be a non-empty string")


CREDENTIAL_OPS = ("read", "write", "delete", "list")


def credentials_body(bucket: Any, prefix: Any, ops: Any, duration: Any) -> dict[str, Any]:
    """The ``POST /credentials`` body, or ``Invalid`` before anything is sent."""
    if not isinstance(bucket, str) or not bucket:
        raise _invalid("bucket must be a non-empty string")
    if not isinstance(prefix, str) or (prefix and not prefix.endswith("/")):
        raise _invalid("prefix must be '' (the whole bucket) or end with '/'")
    if isinstance(ops, str):
        raise _invalid("ops must be a list of operations, not one string")
    wanted = list(dict.fromkeys(ops))
    if not wanted or any(op not in CREDENTIAL_OPS for op in wanted):
        raise _invalid(f"ops must be a non-empty list drawn from {', '.join(CREDENTIAL_OPS)}")
    body: dict[str, Any] = {"bucket": bucket, "prefix": prefix, "ops": wanted}
    if duration is not None:
        if isinstance(duration, bool) or not isinstance(duration, int) or duration < 1:
            raise _invalid("duration must be a positive number of seconds")
        body["duration"] = duration
    return body


def check_expires_in(expires_in: Any) -> None:
    if expires_in is None:
        return
    if isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in < 1:
        raise _invalid("expires_in must be a positive number of seconds")


def _bare_token(token: str) -> str:
    """The token without a ``Bearer`` scheme in front, as Fence's ``get_jwt()`` may give it."""
    if not isinstance(token, str):
        return ""
    parts = token.strip().split(None, 1)
    if parts and parts[0].lower() == "bearer":
        return parts[1].strip() if len(parts) > 1 else ""
    return token.strip()
