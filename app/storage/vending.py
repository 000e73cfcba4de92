"""Scoped temporary credentials: one STS AssumeRole per request, with an inline session policy.

A role bucket's session is assumed with the registry's own identity, as for signing; a static
bucket on an S3-compatible store asks the store's own STS (MinIO's AssumeRole) with the
bucket's keys. Every session is new and belongs to one caller: nothing here is cached, and
the keys are handed back to the caller only — never logged, counted or stored.

``SourceIdentity`` and the session tags name the user, so CloudTrail does; the session name
starts with the registry's request id, so S3 server access logs (whose Requester is the
session's ARN) join the registry's decision log line by line.
"""

from __future__ import annotations

import logging
import re
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from app.config import Settings
from app.errors import DependencyUnavailable, InvalidInput, SecretNotFound
from app.netguard import DestinationRefused, refusal_in
from app.registry.records import AuthMode, BucketRecord
from app.storage.base import as_utc
from app.storage.credentials import SecretSource, SigningCredentials, static_secret
from app.storage.session_policy import (
    MAX_SESSION_POLICY_CHARS,
    CredentialOp,
    packed,
    partition_of,
    session_policy,
)
from app.storage.sts_clients import StsClients

log = logging.getLogger(__name__)

# STS issues no session shorter than this.
MIN_DURATION = 900
# A static bucket's STS (MinIO) takes any RoleArn and ignores it; botocore requires one.
STORE_STS_ROLE_ARN = "arn:aws:iam::000000000000:role/bucket-registry-vended"

MAX_TAGS = 50
MAX_TAG_VALUE = 256
_IDENTITY_FORBIDDEN = re.compile(r"[^\w+=,.@-]", re.ASCII)
_TAG_PUNCTUATION = frozenset("_.:/=+-@")

# Answers by which STS says the bucket's configuration, not the network, is wrong.
_CONFIGURATION_ERRORS = frozenset(
    {"AccessDenied", "AccessDeniedException", "ValidationError", "RegionDisabledException"}
)


class VendingRefused(DependencyUnavailable):
    """STS refused the session: trust policy, duration or the store's STS does not fit."""

    code = "credential_vending_refused"

    def __init__(self, bucket: str, sts_code: str) -> None:
        super().__init__(
            "sts",
            f"STS refused a scoped session for bucket {bucket} ({sts_code}): the role's trust"
            " policy must allow sts:AssumeRole, sts:SetSourceIdentity and sts:TagSession for the"
            " registry, and max_credential_ttl must not exceed the role's maximum session"
            " duration",
        )
        self.sts_code = sts_code


@dataclass(frozen=True, slots=True)
class SessionUser:
    """Whom a session is for, as the cloud's logs will name it."""

    name: str
    user_id: str | None = None
    client_id: str | None = None
    via: str | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class VendedCredentials:
    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    expiration: datetime
    region: str
    endpoint: str | None
    source_identity: str
    session_name: str


def source_identity(user: SessionUser) -> str:
    """STS's SourceIdentity: 2-64 characters of ``[A-Za-z0-9_+=,.@-]``."""
    return _identity_text(user.name, 64)


def session_name(user: SessionUser) -> str:
    """The RoleSessionName: the request id first (at most 32 characters, a uuid's hex), then
    the user, within STS's 64 characters."""
    request = _IDENTITY_FORBIDDEN.sub("-", user.request_id or "")[:32]
    who = _IDENTITY_FORBIDDEN.sub("-", user.name)
    raw = f"{request}-{who}" if request else who
    return _identity_text(raw, 64)


def session_tags(user: SessionUser, bucket: str) -> list[dict[str, str]]:
    values = {
        "gen3-user": user.name,
        "gen3-user-id": user.user_id,
        "gen3-client-id": user.client_id,
        "gen3-via": user.via,
        "gen3-request-id": user.request_id,
        "gen3-bucket": bucket,
    }
    return [{"Key": key, "Value": _tag_value(value)} for key, value in values.items() if value][
        :MAX_TAGS
    ]


def _identity_text(raw: str, limit: int) -> str:
    text = _IDENTITY_FORBIDDEN.sub("-", raw)[:limit]
    return text.ljust(2, "_")


def _tag_value(raw: str) -> str:
    # STS takes letters, digits, separators and _.:/=+-@ in tag values.
    kept = (
        ch if ch in _TAG_PUNCTUATION or unicodedata.category(ch)[0] in "LNZ" else "-" for ch in raw
    )
    return "".join(kept)[:MAX_TAG_VALUE]


class CredentialVendor:
    def __init__(
        self,
        settings: Settings,
        secrets: SecretSource,
        *,
        clients: StsClients,
        observe: Callable[[str, float, bool], None] | None = None,
    ) -> None:
        self._settings = settings
        self._secrets = secrets
        # Kept across vends; the registry's own STS endpoint is trusted there, a bucket's not.
        self._clients = clients
        self._trusted_sts = settings.sts_endpoint_url
        self._observe = observe
        self.vend_count = 0

    def duration_for(self, bucket: BucketRecord, requested: int | None) -> int:
        """The session's lifetime: the request's (or the default), shortened to the bucket's
        and the registry's maximum; ``InvalidInput`` below STS's minimum."""
        maximum = self._settings.max_credential_ttl
        if bucket.max_credential_ttl is not None:
            maximum = min(maximum, bucket.max_credential_ttl)
        if requested is None:
            return min(self._settings.default_credential_ttl, maximum)
        if requested < MIN_DURATION:
            raise InvalidInput(
                f"duration: at least {MIN_DURATION} seconds (STS issues no shorter session)"
            )
        return min(requested, maximum)

    def policy_text(self, bucket: BucketRecord, prefix: str, ops: Iterable[CredentialOp]) -> str:
        """The session policy as sent; ``InvalidInput`` when STS would refuse its size."""
        text = packed(
            session_policy(bucket.name, prefix, ops, partition=partition_of(bucket.role_arn))
        )
        if len(text) > MAX_SESSION_POLICY_CHARS:
            raise InvalidInput(
                f"prefix: the session policy for it would be {len(text)} characters and STS"
                f" takes at most {MAX_SESSION_POLICY_CHARS}; ask for a shorter prefix"
            )
        return text

    async def vend(
        self,
        bucket: BucketRecord,
        prefix: str,
        ops: Iterable[CredentialOp],
        duration: int,
        user: SessionUser,
    ) -> VendedCredentials:
        if not bucket.credential_vending or not bucket.provider.speaks_s3:
            raise InvalidInput(f"bucket {bucket.name!r} does not vend credentials")
        policy = self.policy_text(bucket, prefix, ops)
        identity = source_identity(user)
        name = session_name(user)
        params: dict[str, Any] = {
            "RoleArn": bucket.role_arn or STORE_STS_ROLE_ARN,
            "RoleSessionName": name,
            "DurationSeconds": duration,
            "Policy": policy,
            "SourceIdentity": identity,
            "Tags": session_tags(user, bucket.name),
        }
        if bucket.auth_mode is AuthMode.ROLE and bucket.external_id:
            params["ExternalId"] = bucket.external_id
        keys, ca_bundle_pem = await self._caller_keys(bucket)
        endpoint = self._sts_endpoint(bucket)
        region = bucket.region or "us-east-1"
        self.vend_count += 1
        started = time.perf_counter()
        ok = False
        try:
            answer = await self._assume(bucket, endpoint, region, keys, ca_bundle_pem, params)
            ok = True
        finally:
            if self._observe is not None:
                self._observe("sts", time.perf_counter() - started, ok)
        creds = answer.get("Credentials") if isinstance(answer, dict) else None
        fields = ("AccessKeyId", "SecretAccessKey", "SessionToken")
        if not isinstance(creds, dict) or not all(
            isinstance(creds.get(name), str) and creds[name] for name in fields
        ):
            raise DependencyUnavailable("sts", "STS answered AssumeRole without usable credentials")
        if not isinstance(creds.get("Expiration"), datetime):
            raise DependencyUnavailable("sts", "STS answered AssumeRole without an expiry")
        return VendedCredentials(
            access_key_id=creds["AccessKeyId"],
            secret_access_key=creds["SecretAccessKey"],
            session_token=creds["SessionToken"],
            expiration=as_utc(creds["Expiration"]),
            region=region,
            endpoint=bucket.endpoint,
            source_identity=identity,
            session_name=name,
        )

    def _sts_endpoint(self, bucket: BucketRecord) -> str | None:
        if bucket.sts_endpoint:
            return bucket.sts_endpoint
        if bucket.auth_mode is AuthMode.STATIC:
            # MinIO serves STS on its S3 endpoint.
            return bucket.endpoint
        return self._trusted_sts

    async def _caller_keys(
        self, bucket: BucketRecord
    ) -> tuple[SigningCredentials | None, str | None]:
        """The keys the AssumeRole call is signed with (None: the registry's identity)."""
        if bucket.auth_mode is AuthMode.ROLE:
            return None, None
        if not bucket.secret_ref:
            raise SecretNotFound(f"bucket {bucket.name} uses static keys but has no secret_ref")
        payload = await self._secrets.get(bucket.secret_ref, bucket.secret_version)
        secret = static_secret(payload, bucket.secret_ref)
        return secret.credentials, secret.ca_bundle_pem

    async def _assume(
        self,
        bucket: BucketRecord,
        endpoint: str | None,
        region: str,
        keys: SigningCredentials | None,
        ca_bundle_pem: str | None,
        params: Mapping[str, Any],
    ) -> Any:
        try:
            if endpoint is not None:
                # aiohttp hands address literals straight to connect(), past the resolver hook.
                await self._clients.guard_for(endpoint).check_url(endpoint)
            client = await self._clients.client(endpoint, region, keys, ca_bundle_pem)
            return await client.assume_role(**params)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "Unknown"))
            if code == "PackedPolicyTooLarge":
                raise InvalidInput(
                    "prefix: STS found the session policy and tags too large once packed; ask"
                    " for a shorter prefix"
                ) from exc
            if code in _CONFIGURATION_ERRORS:
                raise VendingRefused(bucket.name, code) from exc
            raise DependencyUnavailable("sts", f"STS AssumeRole failed ({code})") from exc
        except NoCredentialsError as exc:
            raise DependencyUnavailable(
                "sts", "the registry has no AWS credentials to call STS with"
            ) from exc
        except DestinationRefused as exc:
            raise DependencyUnavailable("sts", f"STS not contacted: {exc.message}") from exc
        except BotoCoreError as exc:
            refused = refusal_in(exc)
            if refused is not None:
                raise DependencyUnavailable("sts", f"STS not contacted: {refused.message}") from exc
            raise DependencyUnavailable(
                "sts", f"STS is unreachable ({type(exc).__name__})"
            ) from exc
