"""SigV4 signing, and the few S3 calls the registry makes, for aws/minio/s3_compatible buckets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import botocore
import botocore.session
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession
from botocore.auth import SIGV4_TIMESTAMP, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from app.cache import AsyncCache
from app.config import Settings
from app.errors import DependencyUnavailable, InvalidInput, SecretNotFound
from app.netguard import DestinationRefused, GuardedResolver, NetGuard, refusal_in
from app.registry.records import AuthMode, BucketRecord
from app.storage.base import BucketSigner, PresignedRequest, as_utc, lifetime_within, utcnow
from app.storage.credentials import SecretSource, SigningCredentials, static_secret
from app.storage.sigv4 import SigV4QuerySigner, quote_key
from app.storage.sts import StsSessions

log = logging.getLogger(__name__)

# SigV4 presigned URLs may not live longer than seven days.
MAX_SIGV4_EXPIRES = 7 * 24 * 3600
MAX_PART_NUMBER = 10_000
# Matches the API's bound on the upload_id callers send back.
MAX_UPLOAD_ID = 1024
_PRESIGNABLE_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})

# Error codes by which the store says the request itself was wrong, not that it is unwell.
_CALLER_ERRORS = frozenset(
    {
        "NoSuchUpload",
        "InvalidPart",
        "InvalidPartOrder",
        "EntityTooSmall",
        "InvalidArgument",
        "MalformedXML",
        "InvalidRequest",
    }
)

# A key that botocore leaves as it is in a URL, used once to learn a bucket's URL layout.
_PROBE_KEY = "bucket-registry-layout-probe"


@dataclass(frozen=True, slots=True)
class S3Layout:
    """Where a bucket's object URLs live and how they are scoped: ``base_url + quoted key``."""

    base_url: str
    host: str
    signing_region: str


@dataclass(frozen=True, slots=True)
class S3ClientOptions:
    """How to reach the bucket with an SDK client (multipart, head, list)."""

    region: str
    endpoint_url: str | None
    ca_bundle_pem: str | None
    max_attempts: int = 3

    @property
    def path_style(self) -> bool:
        # Custom endpoints (MinIO, on-prem stores) rarely have wildcard DNS for bucket names.
        return self.endpoint_url is not None

    def botocore_config(self) -> dict[str, Any]:
        return {
            "signature_version": "s3v4",
            "s3": {"addressing_style": "path"} if self.path_style else None,
            "retries": {"mode": "standard", "total_max_attempts": self.max_attempts},
            "connect_timeout": 5,
            "read_timeout": 60,
        }


class S3BucketSigner:
    """A ``BucketSigner`` for one S3-speaking bucket and one set of credentials."""

    def __init__(
        self,
        bucket_name: str,
        layout: S3Layout,
        credentials: SigningCredentials,
        client_options: S3ClientOptions,
        *,
        session: AioSession,
        clock: Callable[[], datetime] | None = None,
        secret_source: tuple[str, str | None] | None = None,
        netguard: NetGuard | None = None,
    ) -> None:
        self.bucket_name = bucket_name
        self._netguard = netguard or NetGuard()
        self.layout = layout
        self.credentials = credentials
        # The (secret_ref, secret_version) static keys came from: the signer must not outlive
        # the cached copy of that secret, or a rotation would wait for a second TTL.
        self.secret_source = secret_source
        self.client_options = client_options
        self._session = session
        self._now = clock or utcnow
        self._sigv4 = SigV4QuerySigner(
            layout.base_url,
            layout.host,
            access_key_id=credentials.access_key_id,
            secret_access_key=credentials.secret_access_key,
            session_token=credentials.session_token,
            region=layout.signing_region,
        )
        # X-Amz-Date changes once a second; formatting it is dearer than the comparison.
        self._stamped_at: datetime | None = None
        self._stamp = ""
        self._client: Any = None
        self._client_lock = asyncio.Lock()
        self._exit_stack = AsyncExitStack()
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False

    def __repr__(self) -> str:
        return (
            f"S3BucketSigner(bucket={self.bucket_name!r}, "
            f"access_key_id={self.access_key_id!r}, expires_at={self.credentials_expire_at})"
        )

    @property
    def access_key_id(self) -> str:
        return self.credentials.access_key_id

    @property
    def credentials_expire_at(self) -> datetime | None:
        return self.credentials.expires_at

    # -- presigning: synchronous, no I/O -------------------------------------------------------

    def presign(
        self,
        key: str,
        method: str,
        expires_in: int,
        *,
        params: Mapping[str, str] | None = None,
    ) -> PresignedRequest:
        method = method.upper()
        if method not in _PRESIGNABLE_METHODS:
            raise InvalidInput(f"cannot presign HTTP method {method}")
        if not 1 <= expires_in <= MAX_SIGV4_EXPIRES:
            raise InvalidInput(f"expires_in must be between 1 and {MAX_SIGV4_EXPIRES} seconds")
        now = self._now()
        expires_in = lifetime_within(expires_in, self.credentials.expires_at, now)
        signed_at = now.replace(microsecond=0)
        if signed_at != self._stamped_at:
            self._stamped_at, self._stamp = signed_at, signed_at.strftime(SIGV4_TIMESTAMP)
        url = self._sigv4.sign(method, quote_key(key), self._stamp, expires_in, params)
        return PresignedRequest(
            url=url,
            method=method,
            expires_at=signed_at + timedelta(seconds=expires_in),
        )

    def presign_upload_part(
        self, key: str, upload_id: str, part_number: int, expires_in: int
    ) -> PresignedRequest:
        if not 1 <= part_number <= MAX_PART_NUMBER:
            raise InvalidInput(f"part_number must be between 1 and {MAX_PART_NUMBER}")
        if not upload_id:
            raise InvalidInput("upload_id must not be empty")
        # Model order, as botocore writes it; the signature covers the sorted query anyway.
        params = {"partNumber": str(part_number), "uploadId": upload_id}
        return self.presign(key, "PUT", expires_in, params=params)

    # -- calls to the store --------------------------------------------------------------------

    async def create_multipart_upload(self, key: str) -> str:
        async with self._call("create multipart upload") as client:
            answer = await client.create_multipart_upload(Bucket=self.bucket_name, Key=key)
        upload_id = answer.get("UploadId") if isinstance(answer, dict) else None
        if not isinstance(upload_id, str) or not 0 < len(upload_id) <= MAX_UPLOAD_ID:
            raise DependencyUnavailable(
                "storage",
                f"create multipart upload on {self.bucket_name}: the store's answer holds no"
                " usable UploadId",
            )
        return upload_id

    async def complete_multipart_upload(
        self, key: str, upload_id: str, parts: list[tuple[int, str]]
    ) -> None:
        if not parts:
            raise InvalidInput("a multipart upload needs at least one part")
        listed = [{"PartNumber": number, "ETag": etag} for number, etag in sorted(parts)]
        async with self._call("complete multipart upload") as client:
            await client.complete_multipart_upload(
                Bucket=self.bucket_name,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": listed},
            )

    async def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        async with self._call("abort multipart upload") as client:
            await client.abort_multipart_upload(
                Bucket=self.bucket_name, Key=key, UploadId=upload_id
            )

    async def delete_object(self, key: str) -> bool:
        """Delete ``key``; False when there was nothing to delete (S3 answers 204 either way)."""
        async with self._call("head object") as client:
            try:
                await client.head_object(Bucket=self.bucket_name, Key=key)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise
        async with self._call("delete object") as client:
            await client.delete_object(Bucket=self.bucket_name, Key=key)
        return True

    async def list_keys(self, prefix: str, *, limit: int) -> list[str] | None:
        """The keys under ``prefix``, or None when there are more than ``limit`` (≤ 1000)."""
        async with self._call("list objects") as client:
            page = await client.list_objects_v2(
                Bucket=self.bucket_name, Prefix=prefix, MaxKeys=limit
            )
        if page.get("IsTruncated"):
            return None
        return [str(item["Key"]) for item in page.get("Contents", [])]

    async def delete_keys(self, keys: list[str]) -> None:
        """Delete up to 1000 keys in one DeleteObjects call; any per-key failure is an error."""
        if not keys:
            return
        objects = [{"Key": key} for key in keys]
        async with self._call("delete objects") as client:
            answer = await client.delete_objects(
                Bucket=self.bucket_name, Delete={"Objects": objects, "Quiet": True}
            )
        failed = answer.get("Errors") or []
        if failed:
            codes = sorted({str(error.get("Code", "Unknown")) for error in failed})
            raise DependencyUnavailable(
                "storage",
                f"delete objects on {self.bucket_name}: {len(failed)} of {len(keys)} failed"
                f" ({', '.join(codes)})",
            )

    async def head_bucket(self) -> None:
        async with self._call("head bucket") as client:
            await client.head_bucket(Bucket=self.bucket_name)

    async def list_one(self) -> None:
        async with self._call("list bucket") as client:
            await client.list_objects_v2(Bucket=self.bucket_name, MaxKeys=1)

    async def aclose(self, *, drain_timeout: float = 60.0) -> None:
        self._closing = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), drain_timeout)
        self._client = None
        await self._exit_stack.aclose()

    @asynccontextmanager
    async def _call(self, action: str) -> AsyncIterator[Any]:
        try:
            async with self._client_in_use() as client:
                yield client
        except ClientError as exc:
            raise _storage_error(exc, action, self.bucket_name) from exc
        except BotoCoreError as exc:
            refused = refusal_in(exc)
            if refused is not None:
                raise DependencyUnavailable(
                    "storage",
                    f"{action} on {self.bucket_name}: store not contacted, {refused.message}",
                ) from exc
            raise DependencyUnavailable(
                "storage", f"{action} on {self.bucket_name} failed ({type(exc).__name__})"
            ) from exc
        except DestinationRefused as exc:
            raise DependencyUnavailable(
                "storage", f"{action} on {self.bucket_name}: store not contacted, {exc.message}"
            ) from exc

    @asynccontextmanager
    async def _client_in_use(self) -> AsyncIterator[Any]:
        if self._closing:
            # A request that picked this signer just before it was replaced still completes,
            # on a client of its own.
            async with self._open_client() as client:
                yield client
            return
        self._in_flight += 1
        self._idle.clear()
        try:
            yield await self._shared_client()
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def _shared_client(self) -> Any:
        if self._client is None:
            async with self._client_lock:
                if self._client is None:
                    self._client = await self._exit_stack.enter_async_context(self._open_client())
        return self._client

    @asynccontextmanager
    async def _open_client(self) -> AsyncIterator[Any]:
        options = self.client_options
        if options.endpoint_url is not None:
            # aiohttp hands address literals straight to connect(), past the resolver hook.
            await self._netguard.check_url(options.endpoint_url)
        ca_path = None
        if options.ca_bundle_pem:
            ca_path = await asyncio.to_thread(_write_temp_pem, options.ca_bundle_pem)
        try:
            creds = self.credentials
            async with self._session.create_client(
                "s3",
                region_name=options.region,
                endpoint_url=options.endpoint_url,
                aws_access_key_id=creds.access_key_id,
                aws_secret_access_key=creds.secret_access_key,
                aws_session_token=creds.session_token,
                config=AioConfig(
                    connector_args={"resolver": GuardedResolver(self._netguard)},
                    **options.botocore_config(),
                ),
                verify=ca_path,
            ) as client:
                yield client
        finally:
            if ca_path is not None:
                await asyncio.to_thread(_remove_quietly, ca_path)


def signing_source_identity(bucket: BucketRecord, settings: Settings) -> str | None:
    """The SourceIdentity of a role bucket's signing session: the registry's own name when
    the bucket vends credentials (its trust policy then allows ``sts:SetSourceIdentity``),
    else none, so existing role buckets keep working unchanged."""
    return settings.source_identity if bucket.credential_vending else None


class S3SignerFactory:
    """Builds ``S3BucketSigner``s: credentials by auth mode, URL layout by botocore's rules."""

    def __init__(
        self,
        settings: Settings,
        secrets: SecretSource,
        sts: StsSessions,
        *,
        session: AioSession,
        clock: Callable[[], datetime] | None = None,
        max_attempts: int = 3,
        netguard: NetGuard | None = None,
    ) -> None:
        self._settings = settings
        self._netguard = netguard or NetGuard(settings.endpoint_allowlist)
        self._secrets = secrets
        self._sts = sts
        self._session = session
        self._now = clock or utcnow
        self._max_attempts = max_attempts
        self._layouts: AsyncCache[tuple[str, str, str | None], S3Layout] = AsyncCache(
            "s3_layouts", ttl=3600, max_entries=settings.cache_max_entries
        )
        self._layout_session: botocore.session.Session | None = None
        self._layout_lock = asyncio.Lock()

    async def build(
        self, bucket: BucketRecord, *, min_lifetime: int, previous: BucketSigner | None = None
    ) -> BucketSigner:
        credentials, ca_bundle_pem = await self._credentials(bucket, min_lifetime)
        region = bucket.region or "us-east-1"
        options = S3ClientOptions(region, bucket.endpoint, ca_bundle_pem, self._max_attempts)
        if (
            isinstance(previous, S3BucketSigner)
            and previous.credentials == credentials
            and previous.client_options == options
        ):
            # Unchanged keys (a static secret re-read after its TTL): keep signer and client.
            return previous
        layout = await self._layouts.get(
            (bucket.name, region, bucket.endpoint),
            lambda: self._resolve_layout(bucket.name, region, bucket.endpoint),
        )
        source = None
        if bucket.auth_mode is AuthMode.STATIC and bucket.secret_ref is not None:
            source = (bucket.secret_ref, bucket.secret_version)
        return S3BucketSigner(
            bucket.name,
            layout,
            credentials,
            options,
            session=self._session,
            clock=self._now,
            secret_source=source,
            netguard=self._netguard,
        )

    def fresh_enough(self, signer: BucketSigner, bucket: BucketRecord, min_lifetime: int) -> bool:
        """Whether ``signer`` may sign a URL living ``min_lifetime`` without new credentials.

        Only role sessions can be renewed on demand; workload identity credentials renew on
        botocore's schedule, and URLs signed with them are shortened instead.
        """
        if bucket.auth_mode is not AuthMode.ROLE:
            return True
        return self._sts.covers(signer.credentials_expire_at, min_lifetime)

    def ttl(self, signer: BucketSigner) -> float:
        """How long the service may cache ``signer``.

        Expiring credentials: until ``margin`` before they expire. Static keys: the secret TTL,
        so a rotated secret is picked up as soon as the secrets store sees it.
        """
        expires_at = signer.credentials_expire_at
        if expires_at is None:
            ttl = self._settings.secret_cache_ttl
            source = getattr(signer, "secret_source", None)
            fresh_for = getattr(self._secrets, "fresh_for", None)
            if source is not None and fresh_for is not None:
                left = fresh_for(*source)
                if left is not None:
                    ttl = min(ttl, left)
            return ttl
        left = (expires_at - self._now()).total_seconds()
        return left - self._settings.sts_refresh_margin

    async def aclose(self) -> None:
        """Nothing to release: signers own their clients, the service owns STS."""

    async def _credentials(
        self, bucket: BucketRecord, min_lifetime: int
    ) -> tuple[SigningCredentials, str | None]:
        if bucket.auth_mode is AuthMode.STATIC:
            if not bucket.secret_ref:
                raise SecretNotFound(f"bucket {bucket.name} uses static keys but has no secret_ref")
            payload = await self._secrets.get(bucket.secret_ref, bucket.secret_version)
            secret = static_secret(payload, bucket.secret_ref)
            return secret.credentials, secret.ca_bundle_pem
        # A role or workload-identity bucket on a private store may still name a secret that
        # holds only its CA bundle.
        ca_bundle_pem = None
        if bucket.secret_ref:
            payload = await self._secrets.get(bucket.secret_ref, bucket.secret_version)
            ca_bundle_pem = payload.get("ca_bundle_pem") or None
        if bucket.auth_mode is AuthMode.ROLE:
            if not bucket.role_arn:
                raise DependencyUnavailable(
                    "sts", f"bucket {bucket.name} uses a role but has no role_arn"
                )
            session = await self._sts.session_for(
                bucket.role_arn,
                bucket.external_id,
                min_lifetime,
                bucket_name=bucket.name,
                source_identity=signing_source_identity(bucket, self._settings),
            )
            return session.credentials, ca_bundle_pem
        return await self._workload_credentials(), ca_bundle_pem

    async def _workload_credentials(self) -> SigningCredentials:
        """The process's own identity (IRSA, instance profile, environment) as of now."""
        try:
            credentials = await self._session.get_credentials()
            if credentials is None:
                raise DependencyUnavailable("sts", "the registry has no workload identity")
            # Refreshes (a web-identity AssumeRole) without blocking the loop when botocore's
            # advisory window has been reached.
            frozen = await credentials.get_frozen_credentials()
        except (BotoCoreError, ClientError) as exc:
            raise DependencyUnavailable(
                "sts", f"workload identity credentials unavailable ({type(exc).__name__})"
            ) from exc
        # botocore keeps the expiry of refreshable credentials only on this private attribute.
        expiry = getattr(credentials, "_expiry_time", None)
        return SigningCredentials(
            access_key_id=frozen.access_key,
            secret_access_key=frozen.secret_key,
            session_token=frozen.token,
            expires_at=as_utc(expiry) if isinstance(expiry, datetime) else None,
        )

    async def _resolve_layout(self, name: str, region: str, endpoint: str | None) -> S3Layout:
        # botocore's endpoint rules decide virtual-host or path style, dotted bucket names,
        # AWS_ENDPOINT_URL(_S3), FIPS and dual-stack settings. Asking it once per bucket and
        # reusing the answer keeps the per-URL work to hashing. Client creation loads the S3
        # model from disk, hence the worker thread.
        async with self._layout_lock:
            return await asyncio.to_thread(self._probe_layout, name, region, endpoint)

    def _probe_layout(self, name: str, region: str, endpoint: str | None) -> S3Layout:
        if self._layout_session is None:
            self._layout_session = botocore.session.Session()
        options = S3ClientOptions(region, endpoint, None)
        try:
            client = self._layout_session.create_client(
                "s3",
                region_name=region,
                endpoint_url=endpoint,
                aws_access_key_id="PROBE",
                aws_secret_access_key="PROBE",  # noqa: S106 - signs nothing that is sent
                config=Config(**options.botocore_config()),
            )
            url = client.generate_presigned_url(
                "get_object", Params={"Bucket": name, "Key": _PROBE_KEY}
            )
        except (BotoCoreError, ClientError, ValueError) as exc:
            raise DependencyUnavailable(
                "storage", f"cannot address bucket {name} ({type(exc).__name__})"
            ) from exc
        base_url, _, _ = url.partition(_PROBE_KEY)
        scope = parse_qs(urlsplit(url).query)["X-Amz-Credential"][0].split("/")
        request = AWSRequest(method="GET", url=base_url)
        host = S3SigV4QueryAuth(None, "s3", region).headers_to_sign(request)["host"]
        return S3Layout(base_url=base_url, host=host, signing_region=scope[2])


REGION_HEADER = "x-amz-bucket-region"


REGION_LOOKUP_TIMEOUT = 5.0


async def lookup_bucket_region(session: AioSession, name: str) -> str:
    """``name``'s region, from the ``x-amz-bucket-region`` header of an anonymous HeadBucket.

    S3 sends the header on 200, 301 and 403 alike, so this works for buckets of other accounts
    and public ones without any credentials; one attempt, bounded by a few seconds.
    """
    timeout = REGION_LOOKUP_TIMEOUT
    config = AioConfig(
        signature_version=botocore.UNSIGNED,
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"mode": "standard", "total_max_attempts": 1},
    )
    try:
        async with session.create_client("s3", region_name="us-east-1", config=config) as client:
            try:
                answer = await asyncio.wait_for(client.head_bucket(Bucket=name), timeout * 2)
            except ClientError as exc:
                answer = exc.response
    except (BotoCoreError, TimeoutError) as exc:
        raise DependencyUnavailable(
            "storage", f"HeadBucket {name} failed ({type(exc).__name__})"
        ) from exc
    headers = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    region = headers.get(REGION_HEADER)
    if not region:
        status = answer.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        raise DependencyUnavailable(
            "storage", f"HeadBucket {name} answered {status} without {REGION_HEADER}"
        )
    return str(region)


def _storage_error(exc: ClientError, action: str, bucket: str) -> Exception:
    code = str(exc.response.get("Error", {}).get("Code", "Unknown"))
    if code in _CALLER_ERRORS:
        return InvalidInput(f"{action}: the store rejected the request ({code})")
    return DependencyUnavailable("storage", f"{action} on {bucket} failed ({code})")


def _write_temp_pem(pem: str) -> str:
    handle, path = tempfile.mkstemp(prefix="bucket-registry-ca-", suffix=".pem")
    with os.fdopen(handle, "w") as file:
        file.write(pem)
    return path


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
