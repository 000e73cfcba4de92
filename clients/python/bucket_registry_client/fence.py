"""What Fence's ``fence/blueprints/data/indexd.py`` and ``blueprint.py`` call, with Fence's own
argument names, so each call site changes by a few lines.

Every method answers ``Delegated(value)`` (the registry did it) or ``UseLegacy(reason)`` (run
Fence's existing code for this bucket), or raises a typed ``RegistryClientError`` that Fence maps
with ``error.fence_status``. docs/fence-integration.md has the call sites, the configuration keys
and the service-token setup.

The user is given as Fence knows them: ``token`` (``get_jwt()`` when the request has one) and/or
``auth_info``, the dict of ``_get_auth_info_for_id_or_from_request`` (``user_id``, ``username``,
``client_id``); a username alone (a GA4GH passport's user) works too. See ``fence_caller``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlparse

from bucket_registry_client.client import BucketRegistryClient, Part
from bucket_registry_client.errors import ConfigurationError, Invalid, NotFound, UnsignedNotAllowed
from bucket_registry_client.models import Audit, Caller, Grant, OnBehalfOf, PresignedUrl
from bucket_registry_client.routing import (
    UNSUPPORTED,
    Delegated,
    LegacyFallback,
    Routed,
    UseLegacy,
    dynamic_buckets_enabled,
)

# Fence's own constants for a request without a user (indexd.py).
ANONYMOUS_USER_ID = "-1"
ANONYMOUS_USERNAME = "anonymous"

# Fence's actions, as registry ops and as the Arborist method Fence itself checks.
ACTION_TO_OP = {"download": "read", "upload": "write"}
ACTION_TO_METHOD = {"download": "read-storage", "upload": "write-storage"}
# Fence's data-upload flow authorizes uploads without a record authz on this resource.
DATA_FILE_RESOURCE = "/data_file"
FILE_UPLOAD_METHOD = "file_upload"
# /data/upload with an authz list checks both (blueprint.py).
CREATE_UPLOAD_METHODS = ("create", "write-storage")

# The provider a location's scheme implies. An s3:// bucket may be aws, minio or any
# S3-compatible store, which the registry knows; gs:// and az:// are decided here.
SCHEME_PROVIDER: dict[str, str | None] = {"s3": None, "gs": "gcp", "az": "azure"}

UserInfo = Mapping[str, Any]


def fence_caller(
    token: str | None = None,
    auth_info: UserInfo | None = None,
    username: str | None = None,
) -> Caller:
    """The user as the registry wants them, from what Fence has at hand.

    The token wins (the registry verifies it itself); else a username Fence resolved (a
    passport's user, or ``auth_info["username"]``); else anonymous. ``auth_info`` also
    becomes the ``audit`` block."""
    info = auth_info or {}
    user_id = info.get("user_id")
    name = username or info.get("username")
    anonymous = name in (None, "", ANONYMOUS_USERNAME) or str(user_id) == ANONYMOUS_USER_ID
    if token:
        who = OnBehalfOf.user_token(token)
    elif name and not (anonymous and not username):
        who = OnBehalfOf.user(str(name))
    else:
        who = OnBehalfOf.nobody()
    audit = Audit(
        user_id=None if user_id is None else str(user_id),
        username=None if name is None else str(name),
        client_id=info.get("client_id") or None,
    )
    return Caller(who, audit if audit.to_json() else None)


def record_grant(
    index_document: Mapping[str, Any], action: str, *, force_signed_url: bool = True
) -> Grant:
    """The grant for an indexd record: its ``authz`` with the method Fence checks for
    ``action``, or, for a record without ``authz``, the legacy decision Fence made from its
    ``uploader`` or ACL fields (``check_legacy_authorization``)."""
    if action not in ACTION_TO_METHOD:
        raise Invalid(f"action {action!r} is not supported", code="invalid_argument")
    authz = tuple(index_document.get("authz") or ())
    if authz:
        return Grant(authz=authz, method=ACTION_TO_METHOD[action], unsigned=not force_signed_url)
    legacy = "uploader" if index_document.get("uploader") else "acl"
    return Grant(legacy=legacy, unsigned=not force_signed_url)


def parse_location(url: str) -> tuple[str, str, str]:
    """``(scheme, bucket, key)`` of an indexd URL such as ``s3://bucket/guid/file``."""
    parsed = urlparse(url) if isinstance(url, str) else None
    if parsed is None or not parsed.scheme or not parsed.netloc:
        raise Invalid("the file location is not a storage URL", code="invalid_argument")
    return parsed.scheme, parsed.netloc, parsed.path.strip("/")


class FenceBucketRegistry:
    """The adapter: one per Fence worker, built by ``from_config(flask_app.config)``."""

    def __init__(
        self, client: BucketRegistryClient, fallback: LegacyFallback | None = None
    ) -> None:
        self.client = client
        self.fallback = fallback or LegacyFallback()

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **client_options: Any) -> FenceBucketRegistry:
        """Build from Fence's configuration keys (docs/fence-integration.md):
        ``BUCKET_REGISTRY_URL``, ``BUCKET_REGISTRY_TOKEN_PATH``, ``BUCKET_REGISTRY_TIMEOUT``,
        ``BUCKET_REGISTRY_RETRIES``, ``BUCKET_REGISTRY_LEGACY_PROVIDERS`` and
        ``FENCE_ENABLE_DYNAMIC_BUCKETS`` (the environment variable of that name wins)."""
        enabled = _flag(config.get("FENCE_ENABLE_DYNAMIC_BUCKETS"))
        if os.environ.get("FENCE_ENABLE_DYNAMIC_BUCKETS") is not None:
            enabled = dynamic_buckets_enabled()
        url = config.get("BUCKET_REGISTRY_URL")
        if enabled and not url:
            raise ConfigurationError(
                "FENCE_ENABLE_DYNAMIC_BUCKETS is on but BUCKET_REGISTRY_URL is not set"
            )
        options: dict[str, Any] = {}
        if config.get("BUCKET_REGISTRY_TOKEN_PATH"):
            options["token_path"] = config["BUCKET_REGISTRY_TOKEN_PATH"]
        try:
            if config.get("BUCKET_REGISTRY_TIMEOUT") is not None:
                options["timeout"] = float(config["BUCKET_REGISTRY_TIMEOUT"])
            if config.get("BUCKET_REGISTRY_RETRIES") is not None:
                options["retries"] = int(config["BUCKET_REGISTRY_RETRIES"])
        except (TypeError, ValueError):
            raise ConfigurationError(
                "BUCKET_REGISTRY_TIMEOUT and BUCKET_REGISTRY_RETRIES must be numbers"
            ) from None
        options.update(client_options)
        providers = config.get("BUCKET_REGISTRY_LEGACY_PROVIDERS", ("gcp", "azure"))
        if isinstance(providers, str):
            providers = [item.strip() for item in providers.split(",") if item.strip()]
        client = BucketRegistryClient(url or "http://bucket-registry-service", **options)
        return cls(client, LegacyFallback(enabled=enabled, legacy_providers=providers))

    def __enter__(self) -> FenceBucketRegistry:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    # -- downloads and uploads of indexed files ---------------------------------------------------

    def get_signed_url(
        self,
        url: str,
        action: str,
        expires_in: int | None,
        *,
        authz: Sequence[str] | None = None,
        legacy: str | None = None,
        force_signed_url: bool = True,
        r_pays_project: str | None = None,
        token: str | None = None,
        auth_info: UserInfo | None = None,
        username: str | None = None,
    ) -> Routed[str]:
        """``IndexedFileLocation.get_signed_url`` for one of the record's ``urls``.

        ``authz`` is the record's authz list (or ``legacy="acl"|"uploader"`` with none);
        ``r_pays_project`` is Fence's ``userProject`` (gcp requester-pays billing)."""
        scheme, bucket, key = parse_location(url)
        return self.get_signed_url_for_bucket(
            bucket,
            key,
            action,
            expires_in,
            protocol=scheme,
            authz=authz,
            legacy=legacy,
            force_signed_url=force_signed_url,
            r_pays_project=r_pays_project,
            token=token,
            auth_info=auth_info,
            username=username,
        )

    def get_signed_url_for_bucket(
        self,
        bucket: str,
        key: str,
        action: str,
        expires_in: int | None,
        *,
        protocol: str = "s3",
        authz: Sequence[str] | None = None,
        legacy: str | None = None,
        force_signed_url: bool = True,
        r_pays_project: str | None = None,
        token: str | None = None,
        auth_info: UserInfo | None = None,
        username: str | None = None,
    ) -> Routed[str]:
        """The same for a ``bucket`` and ``key`` Fence already split."""
        op = _op(action)
        method = ACTION_TO_METHOD[action] if authz else None
        grant = Grant(
            authz=tuple(authz or ()), method=method, legacy=legacy, unsigned=not force_signed_url
        )
        if not grant.authz and grant.legacy is None:
            raise Invalid(
                "a record without authz needs legacy='acl' or 'uploader'", code="invalid_argument"
            )
        caller = fence_caller(token, auth_info, username)

        def sign() -> Any:
            try:
                return self.client.presign(
                    bucket,
                    key,
                    op,
                    caller,
                    expires_in=expires_in,
                    user_project=r_pays_project or None,
                    grant=grant,
                )
            except Invalid as exc:
                # A registry that does not hand out plain URLs yet refuses the field by name.
                if grant.unsigned and _refused_field(exc, "unsigned"):
                    return UseLegacy(UNSUPPORTED, bucket)
                raise
            except UnsignedNotAllowed:
                # As Fence: without force_signed_url a public record gets a plain URL and any
                # other record a signed one.
                return self.client.presign(
                    bucket,
                    key,
                    op,
                    caller,
                    expires_in=expires_in,
                    user_project=r_pays_project or None,
                    grant=dataclasses.replace(grant, unsigned=False),
                )

        return self._url(bucket, _provider(protocol), caller, sign)

    def make_signed_url(
        self,
        guid: str,
        file_name: str,
        protocol: str | None = None,
        expires_in: int | None = None,
        bucket: str | None = None,
        *,
        authz: Sequence[str] | None = None,
        token: str | None = None,
        auth_info: UserInfo | None = None,
        username: str | None = None,
    ) -> Routed[str]:
        """``BlankIndex.make_signed_url``: the upload URL for ``{guid}/{file_name}``.

        ``bucket=None`` is the registry's default upload bucket (Fence's
        ``DATA_UPLOAD_BUCKET``). ``authz`` is what ``/data/upload`` was given (checked as
        ``create`` + ``write-storage``); without it, ``file_upload`` on ``/data_file``."""
        if authz:
            grant = Grant(authz=tuple(authz), method=CREATE_UPLOAD_METHODS)
        else:
            grant = Grant(authz=(DATA_FILE_RESOURCE,), method=FILE_UPLOAD_METHOD)
        caller = fence_caller(token, auth_info, username)
        key = f"{guid}/{file_name}"
        provider = _provider(protocol or "s3")

        def sign(name: str) -> PresignedUrl:
            return self.client.presign(
                name, key, "write", caller, expires_in=expires_in, grant=grant
            )

        return self._upload(bucket, provider, caller, sign, lambda url: url.url)

    def init_multipart_upload(
        self,
        key: str,
        expires_in: int | None = None,
        bucket: str | None = None,
        *,
        token: str | None = None,
        auth_info: UserInfo | None = None,
        username: str | None = None,
    ) -> Routed[str]:
        """``BlankIndex.init_multipart_upload``: the ``uploadId``. ``expires_in`` is accepted
        for Fence's signature; the registry does not need it to start an upload."""
        caller = fence_caller(token, auth_info, username)

        def start(name: str) -> str:
            return self.client.multipart_init(name, key, caller, grant=_upload_grant())

        return self._upload(bucket, "s3", caller, start, lambda upload_id: upload_id)

    def generate_aws_presigned_url_for_part(
        self,
        key: str,
        uploadId: str,
        partNumber: int,
        expires_in: int | None,
        bucket: str | None = None,
        *,
        token: str | None = None,
        auth_info: UserInfo | None = None,
        username: str | None = None,
    ) -> Routed[str]:
        """``BlankIndex.generate_aws_presigned_url_for_part``: the URL to PUT one part to."""
        caller = fence_caller(token, auth_info, username)

        def sign(name: str) -> PresignedUrl:
            return self.client.presign_part(
                name,
                key,
                uploadId,
                partNumber,
                caller,
                expires_in=expires_in,
                grant=_upload_grant(),
            )

        return self._upload(bucket, "s3", caller, sign, lambda url: url.url)

    def complete_multipart_upload(
        self,
        key: str,
        uploadId: str,
        parts: Sequence[Part],
        expires_in: int | None = None,
        bucket: str | None = None,
        *,
        token: str | None = None,
        auth_info: UserInfo | None = None,
        username: str | None = None,
    ) -> Routed[None]:
        """``BlankIndex.complete_multipart_upload``; ``parts`` in Fence's
        ``[{"Etag", "PartNumber"}]`` shape."""
        caller = fence_caller(token, auth_info, username)

        def complete(name: str) -> None:
            self.client.multipart_complete(
                name, key, uploadId, parts, caller, grant=_upload_grant()
            )

        return self._upload(bucket, "s3", caller, complete, lambda nothing: nothing)

    # -- buckets ----------------------------------------------------------------------------------

    def get_default_upload_bucket(
        self,
        owner_project: str | None = None,
        *,
        token: str | None = None,
        auth_info: UserInfo | None = None,
    ) -> Routed[str]:
        """The bucket uploads go to when Fence was given none (its ``DATA_UPLOAD_BUCKET``)."""
        caller = fence_caller(token, auth_info)
        if not self._can_act_for(caller):
            return UseLegacy(UNSUPPORTED)
        return self.fallback.run(
            lambda: self.client.default_upload_bucket(owner_project, caller).name
        )

    def get_bucket_region(
        self, bucket: str, *, token: str | None = None, auth_info: UserInfo | None = None
    ) -> Routed[str | None]:
        """``S3IndexedFileLocation.get_bucket_region``: the region the registry has."""
        caller = fence_caller(token, auth_info)
        if not self._can_act_for(caller):
            return UseLegacy(UNSUPPORTED, bucket)
        return self.fallback.run(lambda: self.client.resolve(bucket, caller).region, bucket=bucket)

    def get_bucket_region_info(
        self, legacy: Mapping[str, Any] | None = None, *, token: str | None = None
    ) -> dict[str, Any]:
        """``GET /data/buckets``: ``{"S3_BUCKETS", "GS_BUCKETS"}``. ``legacy`` is what Fence
        would answer from its own configuration (without ``role-arn``/``cred``); buckets the
        registry has replace entries of the same name, the others stay (they still take
        Fence's own path)."""
        merged: dict[str, Any] = {
            "S3_BUCKETS": dict((legacy or {}).get("S3_BUCKETS") or {}),
            "GS_BUCKETS": dict((legacy or {}).get("GS_BUCKETS") or {}),
        }
        caller = fence_caller(token)
        if not self._can_act_for(caller):
            return merged
        routed = self.fallback.run(_served(lambda: self.client.fence_buckets(caller)))
        if isinstance(routed, Delegated) and isinstance(routed.value, dict):
            for cloud in ("S3_BUCKETS", "GS_BUCKETS"):
                merged[cloud].update(routed.value[cloud])
        return merged

    def delete_data_file(
        self,
        bucket: str,
        prefix: str,
        *,
        authz: Sequence[str] | None = None,
        legacy: str | None = None,
        protocol: str = "s3",
        token: str | None = None,
        auth_info: UserInfo | None = None,
    ) -> Routed[int]:
        """``BotoManager.delete_data_file(bucket, prefix)`` behind ``IndexedFile.delete_files``.

        Fence passes the object's key (``guid/filename``) and deletes the one object it names;
        a value ending in ``/`` deletes everything under it. The answer is how many objects went
        (Fence answers 404 for 0)."""
        target = {"prefix": prefix} if prefix.endswith("/") else {"key": prefix}
        grant = Grant(authz=tuple(authz or ()), method="delete" if authz else None, legacy=legacy)
        if not grant.authz and grant.legacy is None:
            raise Invalid("a record without authz needs legacy='uploader'", code="invalid_argument")
        caller = fence_caller(token, auth_info)
        return self._url(
            bucket,
            _provider(protocol),
            caller,
            _served(lambda: self.client.delete_objects(bucket, caller, grant=grant, **target)),
        )

    # -- routing ----------------------------------------------------------------------------------

    def _can_act_for(self, caller: Caller) -> bool:
        # Forwarding needs the user's token; other users take Fence's path until a service
        # token is configured (rather than failing the request).
        return self.client.uses_service_token or caller.on_behalf_of.token is not None

    def _url(self, bucket: str, provider: str | None, caller: Caller, call: Any) -> Routed[Any]:
        early = self.fallback.precheck(bucket, provider)
        if early is not None:
            return early
        if not self._can_act_for(caller):
            return UseLegacy(UNSUPPORTED, bucket)
        routed = self.fallback.run(call, bucket=bucket, provider=provider)
        if isinstance(routed, Delegated) and isinstance(routed.value, UseLegacy):
            return routed.value
        if isinstance(routed, Delegated) and isinstance(routed.value, PresignedUrl):
            return Delegated(routed.value.url)
        return routed

    def _upload(
        self,
        bucket: str | None,
        provider: str | None,
        caller: Caller,
        call: Any,
        value: Any,
    ) -> Routed[Any]:
        early = self.fallback.precheck(bucket, provider)
        if early is not None:
            return early
        if not self._can_act_for(caller):
            return UseLegacy(UNSUPPORTED, bucket)
        if bucket is None:
            default = self.fallback.run(lambda: self.client.default_upload_bucket(None, caller))
            if isinstance(default, UseLegacy):
                return default
            bucket = default.value.name
        name = bucket
        routed = self.fallback.run(lambda: call(name), bucket=name, provider=provider)
        if isinstance(routed, Delegated):
            return Delegated(value(routed.value))
        return routed


def _op(action: str) -> str:
    if action not in ACTION_TO_OP:
        raise Invalid(f"action {action!r} is not supported", code="invalid_argument")
    return ACTION_TO_OP[action]


def _provider(protocol: str) -> str | None:
    if protocol not in SCHEME_PROVIDER:
        raise Invalid(f"protocol {protocol!r} is not a storage protocol", code="invalid_argument")
    return SCHEME_PROVIDER[protocol]


def _served(call: Callable[[], Any]) -> Callable[[], Any]:
    """``call``, answering ``UseLegacy("unsupported")`` when the registry does not serve the
    route yet (a plain 404 ``not_found``, not a bucket's 404): Fence keeps its own path."""

    def run() -> Any:
        try:
            return call()
        except NotFound as exc:
            if type(exc) is NotFound and exc.code == "not_found":
                return UseLegacy(UNSUPPORTED)
            raise

    return run


def _refused_field(error: Invalid, name: str) -> bool:
    details = error.details if isinstance(error.details, list) else []
    return any(isinstance(item, dict) and name in (item.get("loc") or ()) for item in details)


def _upload_grant() -> Grant:
    return Grant(authz=(DATA_FILE_RESOURCE,), method=FILE_UPLOAD_METHOD)


def _flag(value: str | bool | None) -> bool:
    if isinstance(value, bool):
        return value
    return dynamic_buckets_enabled({"FENCE_ENABLE_DYNAMIC_BUCKETS": value or ""})
