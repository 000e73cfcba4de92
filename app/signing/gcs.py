"""V4 signed URLs, and the one JSON API call the registry makes, for gcp buckets (docs/signing.md).

Two ways to sign:

- ``static``: the secret holds a service-account JSON key; URLs are signed in memory with its
  RSA key. ``presign`` is synchronous and does no I/O, like the S3 signer.
- ``workload_identity``: the registry holds no key. The string to sign is sent to the IAM
  Credentials ``signBlob`` API as the bucket's ``service_account``, authenticated as the pod's
  own Google identity (which needs ``roles/iam.serviceAccountTokenCreator`` on that account).
  That is a network call per URL, so ``presign`` cannot do it: it raises
  ``AsyncSigningRequired`` and callers use ``apresign``, which every ``GcsBucketSigner`` has.

Uploads: Cloud Storage's answer to S3 multipart uploads is the resumable upload. ``presign(key,
"POST", ...)`` signs the request that starts one (the client must send the returned
``x-goog-resumable: start`` header); Cloud Storage answers with a session URI in ``Location``
to which the client PUTs the data in chunks, with no further signatures. The S3-style multipart
calls therefore raise ``InvalidInput`` for gcp buckets.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable, Hashable, Mapping
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import quote

import google.auth
import google.auth.exceptions
import httpx
import urllib3
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from google.auth.transport.urllib3 import Request as Urllib3Request
from google.oauth2 import service_account
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from app.config import Settings
from app.errors import DependencyUnavailable, InvalidInput, SecretNotFound
from app.registry.records import AuthMode, BucketRecord
from app.signing import gcs_v4
from app.signing.base import BucketSigner, PresignedRequest, utcnow
from app.signing.credentials import SecretSource

GCS_ENDPOINT = "https://storage.googleapis.com"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
DEVSTORAGE_READ_ONLY_SCOPE = "https://www.googleapis.com/auth/devstorage.read_only"
RESUMABLE_START_HEADERS = {"x-goog-resumable": "start"}

_PRESIGNABLE_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "POST"})
_MULTIPART_UNSUPPORTED = (
    "gcp buckets use resumable uploads, not multipart uploads: presign a POST to start one"
)
# User-managed service accounts are ``name@PROJECT.iam.gserviceaccount.com``.
_SERVICE_ACCOUNT_PROJECT = re.compile(
    r"@([a-z][a-z0-9-]{4,28}[a-z0-9])\.iam\.gserviceaccount\.com$"
)


class AsyncSigningRequired(RuntimeError):
    """``presign`` was called on a signer whose signatures come from a network call.

    A programming error, not a caller's: the signing path must use ``apresign``.
    """


class IamSigningDenied(DependencyUnavailable):
    """IAM refuses to let the registry's identity sign as the bucket's service account."""

    code = "iam_signing_denied"

    def __init__(self, message: str) -> None:
        super().__init__("iam", message)


class AccessTokenProvider(Protocol):
    """Supplies OAuth2 access tokens for Google APIs."""

    async def token(self, *, force_refresh: bool = False) -> str:
        """A currently valid access token; a new one when ``force_refresh`` is set."""
        ...


class GoogleAuthTokens:
    """Access tokens from google-auth credentials, loaded and refreshed in a worker thread.

    google-auth does blocking HTTP (metadata server, token endpoint) when it discovers or
    refreshes credentials; doing that on the event loop would stall every request. One refresh
    runs at a time; callers arriving meanwhile wait for it and share its token.
    """

    def __init__(self, load: Callable[[], Any], *, describe: str) -> None:
        self._load = load
        self._describe = describe
        self._credentials: Any = None
        self._lock = asyncio.Lock()
        self._transport: Urllib3Request | None = None

    async def token(self, *, force_refresh: bool = False) -> str:
        credentials = self._credentials
        if credentials is not None and credentials.valid and not force_refresh:
            return str(credentials.token)
        stale = credentials.token if credentials is not None else None
        async with self._lock:
            try:
                if self._credentials is None:
                    self._credentials = await asyncio.to_thread(self._load)
                credentials = self._credentials
                # Someone else refreshed while we waited for the lock.
                refreshed_meanwhile = force_refresh and credentials.token != stale
                if not credentials.valid or (force_refresh and not refreshed_meanwhile):
                    await asyncio.to_thread(credentials.refresh, self._request())
            except (google.auth.exceptions.GoogleAuthError, ValueError) as exc:
                raise DependencyUnavailable(
                    "iam", f"{self._describe} is unavailable ({type(exc).__name__})"
                ) from None
            return str(credentials.token)

    def _request(self) -> Urllib3Request:
        # urllib3 already ships with botocore; google-auth's ``requests`` transport would add a
        # dependency for the same job.
        if self._transport is None:
            pool = urllib3.PoolManager(timeout=urllib3.Timeout(connect=2.0, read=10.0))
            self._transport = Urllib3Request(pool)
        return self._transport


def default_google_tokens() -> GoogleAuthTokens:
    """The pod's own identity (GKE Workload Identity, metadata server, or ADC)."""

    def load() -> Any:
        credentials, _project = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
        return credentials

    return GoogleAuthTokens(load, describe="the registry's Google identity")


class _Transient(Exception):
    """An answer worth retrying (429, 5xx, connection trouble); ``reason`` holds no secrets."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class GoogleApis:
    """The IAM Credentials and Cloud Storage JSON API calls signers make, over one client.

    One ``httpx.AsyncClient`` serves every gcp bucket, so connections to Google are pooled
    across buckets. 429s, 5xx answers and transport errors are retried with exponential
    backoff and jitter; after ``max_attempts`` the dependency is reported unavailable.
    """

    def __init__(
        self,
        *,
        iam_endpoint: str,
        storage_endpoint: str = GCS_ENDPOINT,
        http_client: httpx.AsyncClient | None = None,
        max_attempts: int = 3,
        backoff: float = 0.2,
        max_backoff: float = 2.0,
    ) -> None:
        self._iam = iam_endpoint.rstrip("/")
        self._storage = storage_endpoint.rstrip("/")
        self._owns_client = http_client is None
        # Created on first use: building a TLS context costs milliseconds that a registry
        # without gcp buckets (or a test) should not pay.
        self._http = http_client
        self._max_attempts = max(1, max_attempts)
        self._backoff = backoff
        self._max_backoff = max_backoff

    async def sign_blob(self, email: str, blob: bytes, tokens: AccessTokenProvider) -> bytes:
        """``blob`` signed (RSA PKCS#1 v1.5, SHA-256) by a Google-managed key of ``email``."""
        url = f"{self._iam}/v1/projects/-/serviceAccounts/{quote(email, safe='@')}:signBlob"
        body = {"payload": base64.b64encode(blob).decode("ascii")}
        response = await self._send("iam", f"IAM signBlob as {email}", url, tokens, json=body)
        _raise_for_iam(response.status_code, email, "sign")
        try:
            return base64.b64decode(response.json()["signedBlob"], validate=True)
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise DependencyUnavailable("iam", "IAM signBlob sent a malformed answer") from None

    async def generate_access_token(
        self, email: str, scopes: list[str], tokens: AccessTokenProvider
    ) -> str:
        """A short-lived access token for ``email``, obtained as the caller of ``tokens``."""
        url = (
            f"{self._iam}/v1/projects/-/serviceAccounts/"
            f"{quote(email, safe='@')}:generateAccessToken"
        )
        body = {"scope": scopes, "lifetime": "300s"}
        what = f"IAM generateAccessToken for {email}"
        response = await self._send("iam", what, url, tokens, json=body)
        _raise_for_iam(response.status_code, email, "obtain tokens for")
        try:
            return str(response.json()["accessToken"])
        except (ValueError, KeyError, TypeError):
            raise DependencyUnavailable("iam", f"{what} sent a malformed answer") from None

    async def list_one(
        self, bucket: str, tokens: AccessTokenProvider, *, user_project: str | None
    ) -> None:
        """List at most one object of ``bucket``: proves it exists and the identity may read it."""
        url = f"{self._storage}/storage/v1/b/{quote(bucket, safe='')}/o"
        params = {"maxResults": "1", "fields": "kind"}
        if user_project:
            params["userProject"] = user_project
        what = f"listing bucket {bucket}"
        response = await self._send("storage", what, url, tokens, method="GET", params=params)
        status = response.status_code
        if status == 200:
            return
        if status == 404:
            raise DependencyUnavailable("storage", f"bucket {bucket} does not exist (HTTP 404)")
        if status in (401, 403):
            raise DependencyUnavailable(
                "storage", f"the bucket's credentials may not list {bucket} (HTTP {status})"
            )
        raise DependencyUnavailable("storage", f"{what} was refused (HTTP {status})")

    async def aclose(self) -> None:
        if self._owns_client and self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _send(
        self,
        dependency: str,
        what: str,
        url: str,
        tokens: AccessTokenProvider,
        *,
        method: str = "POST",
        **kwargs: Any,
    ) -> httpx.Response:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._max_attempts),
            wait=wait_exponential_jitter(
                initial=self._backoff, max=self._max_backoff, jitter=self._backoff
            ),
            retry=retry_if_exception_type(_Transient),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._send_once(method, url, tokens, **kwargs)
        except _Transient as exc:
            raise DependencyUnavailable(
                dependency, f"{what} failed after {self._max_attempts} attempts ({exc.reason})"
            ) from None
        raise AssertionError("tenacity stopped without an answer or an error")

    async def _send_once(
        self, method: str, url: str, tokens: AccessTokenProvider, **kwargs: Any
    ) -> httpx.Response:
        response = await self._request(method, url, await tokens.token(), **kwargs)
        if response.status_code == 401:
            # A cached token revoked before its stated expiry: try once more with a new one.
            token = await tokens.token(force_refresh=True)
            response = await self._request(method, url, token, **kwargs)
        if response.status_code == 429 or response.status_code >= 500:
            raise _Transient(f"HTTP {response.status_code}")
        return response

    async def _request(self, method: str, url: str, token: str, **kwargs: Any) -> httpx.Response:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=2.0))
        headers = {"Authorization": f"Bearer {token}"}
        try:
            return await self._http.request(method, url, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            raise _Transient(type(exc).__name__) from None


def _raise_for_iam(status: int, email: str, action: str) -> None:
    if status == 200:
        return
    if status in (403, 404):
        # IAM answers 404 as readily as 403 when the caller lacks permission, so the two are
        # reported together.
        raise IamSigningDenied(
            f"the registry's identity may not {action} {email} (HTTP {status}): the service "
            "account must exist and grant it roles/iam.serviceAccountTokenCreator"
        )
    if status == 401:
        raise DependencyUnavailable(
            "iam", f"IAM rejected the registry's own credentials (HTTP 401) for {email}"
        )
    raise DependencyUnavailable("iam", f"IAM refused to {action} {email} (HTTP {status})")


class BlobSigner(Protocol):
    """Produces RSA-SHA256 signatures as one service account."""

    @property
    def email(self) -> str: ...

    def sign(self, blob: bytes) -> bytes:
        """Sign without I/O, or raise ``AsyncSigningRequired``."""
        ...

    async def asign(self, blob: bytes) -> bytes: ...


class ServiceAccountKey:
    """A service-account key held in memory; signs locally."""

    def __init__(
        self,
        email: str,
        private_key: rsa.RSAPrivateKey,
        *,
        key_id: str | None = None,
        project_id: str | None = None,
    ) -> None:
        self._email = email
        self._private_key = private_key
        self.key_id = key_id
        self.project_id = project_id

    def __repr__(self) -> str:
        return f"ServiceAccountKey(email={self._email!r}, key_id={self.key_id!r})"

    @property
    def email(self) -> str:
        return self._email

    def sign(self, blob: bytes) -> bytes:
        return self._private_key.sign(blob, padding.PKCS1v15(), hashes.SHA256())

    async def asign(self, blob: bytes) -> bytes:
        return self.sign(blob)


class IamBlobSigner:
    """Signs as ``email`` through the IAM Credentials ``signBlob`` API."""

    def __init__(self, email: str, apis: GoogleApis, tokens: AccessTokenProvider) -> None:
        self._email = email
        self._apis = apis
        self._tokens = tokens

    def __repr__(self) -> str:
        return f"IamBlobSigner(email={self._email!r})"

    @property
    def email(self) -> str:
        return self._email

    def sign(self, blob: bytes) -> bytes:
        raise AsyncSigningRequired(
            f"{self._email} signs through the IAM signBlob API; use apresign, not presign"
        )

    async def asign(self, blob: bytes) -> bytes:
        return await self._apis.sign_blob(self._email, blob, self._tokens)


class _ImpersonatedTokens:
    """Read-only storage tokens for a service account the registry may impersonate.

    Used only by ``list_one`` (bucket validation), so tokens are not cached: what matters is
    that the check runs as the account whose signatures the URLs will carry.
    """

    def __init__(self, email: str, apis: GoogleApis, tokens: AccessTokenProvider) -> None:
        self._email = email
        self._apis = apis
        self._tokens = tokens

    async def token(self, *, force_refresh: bool = False) -> str:
        return await self._apis.generate_access_token(
            self._email, [DEVSTORAGE_READ_ONLY_SCOPE], self._tokens
        )


class GcsBucketSigner:
    """A ``BucketSigner`` for one gcp bucket and one service account.

    Besides the protocol, ``apresign`` signs on any gcp signer; ``presign`` only on those whose
    key is in memory (``signs_locally``).
    """

    def __init__(
        self,
        bucket_name: str,
        blob_signer: BlobSigner,
        *,
        apis: GoogleApis,
        storage_tokens: AccessTokenProvider,
        user_project: str | None = None,
        source: tuple[Hashable, ...] = (),
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.bucket_name = bucket_name
        self.blob_signer = blob_signer
        self.user_project = user_project
        # What the signer was built from; the factory keeps the signer while this is unchanged.
        self.source = source
        self._apis = apis
        self._storage_tokens = storage_tokens
        self._now = clock or utcnow

    def __repr__(self) -> str:
        return f"GcsBucketSigner(bucket={self.bucket_name!r}, email={self.access_key_id!r})"

    @property
    def access_key_id(self) -> str:
        """The service account e-mail, which every signature names in X-Goog-Credential."""
        return self.blob_signer.email

    @property
    def credentials_expire_at(self) -> datetime | None:
        # Neither a key file nor signBlob hands out credentials that expire under the URL.
        return None

    @property
    def signs_locally(self) -> bool:
        return not isinstance(self.blob_signer, IamBlobSigner)

    # -- presigning ----------------------------------------------------------------------------

    def presign(
        self,
        key: str,
        method: str,
        expires_in: int,
        *,
        params: Mapping[str, str] | None = None,
    ) -> PresignedRequest:
        """A V4 signed URL, without I/O; raises ``AsyncSigningRequired`` under signBlob."""
        draft, headers = self._draft(key, method, expires_in, params)
        return self._finish(draft, headers, self.blob_signer.sign(draft.string_to_sign))

    async def apresign(
        self,
        key: str,
        method: str,
        expires_in: int,
        *,
        params: Mapping[str, str] | None = None,
    ) -> PresignedRequest:
        """Like ``presign``, for every credential mode (one signBlob call under Workload
        Identity)."""
        draft, headers = self._draft(key, method, expires_in, params)
        return self._finish(draft, headers, await self.blob_signer.asign(draft.string_to_sign))

    def _draft(
        self, key: str, method: str, expires_in: int, params: Mapping[str, str] | None
    ) -> tuple[gcs_v4.V4Draft, dict[str, str]]:
        method = method.upper()
        if method not in _PRESIGNABLE_METHODS:
            raise InvalidInput(f"cannot presign HTTP method {method}")
        # Signed URLs accept POST only to start a resumable upload, announced by this header.
        headers = dict(RESUMABLE_START_HEADERS) if method == "POST" else {}
        query = dict(params or {})
        if self.user_project and "userProject" not in query:
            query["userProject"] = self.user_project
        draft = gcs_v4.draft(
            method=method,
            bucket=self.bucket_name,
            key=key,
            email=self.blob_signer.email,
            signed_at=self._now(),
            expires_in=expires_in,
            headers=headers,
            params=query,
        )
        return draft, headers

    @staticmethod
    def _finish(
        draft: gcs_v4.V4Draft, headers: dict[str, str], signature: bytes
    ) -> PresignedRequest:
        return PresignedRequest(
            url=draft.url(signature),
            method=draft.method,
            expires_at=draft.expires_at,
            headers=headers,
        )

    def presign_upload_part(
        self, key: str, upload_id: str, part_number: int, expires_in: int
    ) -> PresignedRequest:
        raise InvalidInput(_MULTIPART_UNSUPPORTED)

    # -- calls to the store --------------------------------------------------------------------

    async def create_multipart_upload(self, key: str) -> str:
        raise InvalidInput(_MULTIPART_UNSUPPORTED)

    async def complete_multipart_upload(
        self, key: str, upload_id: str, parts: list[tuple[int, str]]
    ) -> None:
        raise InvalidInput(_MULTIPART_UNSUPPORTED)

    async def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        raise InvalidInput(_MULTIPART_UNSUPPORTED)

    async def head_bucket(self) -> None:
        # Listing needs only object read access, which is what the signing account usually
        # has; the bucket metadata call would need storage.buckets.get as well.
        await self.list_one()

    async def list_one(self) -> None:
        await self._apis.list_one(
            self.bucket_name, self._storage_tokens, user_project=self.user_project
        )

    async def aclose(self) -> None:
        """Nothing to release: the HTTP client is the factory's, shared by every gcp bucket."""


class GcsSignerFactory:
    """Builds ``GcsBucketSigner``s: a key from the secret, or signBlob under Workload Identity.

    ``gcs_endpoint`` is where JSON API calls go (tests point it at a local server); signed URLs
    always name ``storage.googleapis.com``. ``billing_project`` is the project charged for
    requester-pays buckets when the caller names none; without it, the service account's own
    project is charged.
    """

    def __init__(
        self,
        settings: Settings,
        secrets: SecretSource,
        *,
        gcs_endpoint: str = GCS_ENDPOINT,
        iam_endpoint: str | None = None,
        billing_project: str | None = None,
        token_provider: AccessTokenProvider | None = None,
        http_client: httpx.AsyncClient | None = None,
        clock: Callable[[], datetime] | None = None,
        max_attempts: int = 3,
        backoff: float = 0.2,
    ) -> None:
        self._settings = settings
        self._secrets = secrets
        self._billing_project = billing_project
        self._pod_tokens = token_provider or default_google_tokens()
        self._now = clock or utcnow
        self.apis = GoogleApis(
            iam_endpoint=iam_endpoint or settings.gcp_iam_credentials_endpoint,
            storage_endpoint=gcs_endpoint,
            http_client=http_client,
            max_attempts=max_attempts,
            backoff=backoff,
        )

    async def build(
        self, bucket: BucketRecord, *, min_lifetime: int, previous: BucketSigner | None = None
    ) -> BucketSigner:
        if bucket.auth_mode is AuthMode.STATIC:
            return await self._build_static(bucket, previous)
        if bucket.auth_mode is AuthMode.WORKLOAD_IDENTITY:
            return self._build_workload_identity(bucket, previous)
        raise DependencyUnavailable(
            "storage", f"bucket {bucket.name}: gcp buckets sign with static or workload_identity"
        )

    def fresh_enough(self, signer: BucketSigner, bucket: BucketRecord, min_lifetime: int) -> bool:
        """Always: gcp signing credentials do not expire under a URL."""
        return True

    def ttl(self, signer: BucketSigner) -> float:
        """The secret TTL, so a rotated key is picked up as soon as the secrets store sees it."""
        return self._settings.secret_cache_ttl

    async def aclose(self) -> None:
        await self.apis.aclose()

    async def _build_static(
        self, bucket: BucketRecord, previous: BucketSigner | None
    ) -> GcsBucketSigner:
        ref = bucket.secret_ref
        if not ref:
            raise SecretNotFound(f"bucket {bucket.name} uses static keys but has no secret_ref")
        payload = await self._secrets.get(ref, bucket.secret_version)
        key_json = payload.get("service_account_key_json")
        if not key_json:
            raise SecretNotFound(f"secret {ref} lacks service_account_key_json")
        digest = hashlib.sha256(key_json.encode("utf-8")).hexdigest()
        source = ("static", digest, bucket.requester_pays)
        if isinstance(previous, GcsBucketSigner) and previous.source == source:
            # The same key re-read after the secret TTL: keep the parsed key.
            return previous
        # Parsing and checking an RSA key takes milliseconds of CPU: not on the event loop.
        key, info = await asyncio.to_thread(parse_service_account_key, key_json, ref)

        def load_credentials() -> Any:
            return service_account.Credentials.from_service_account_info(
                info, scopes=[DEVSTORAGE_READ_ONLY_SCOPE]
            )

        tokens = GoogleAuthTokens(load_credentials, describe=f"an access token for {key.email}")
        return GcsBucketSigner(
            bucket.name,
            key,
            apis=self.apis,
            storage_tokens=tokens,
            user_project=self._user_project(bucket, key.project_id),
            source=source,
            clock=self._now,
        )

    def _build_workload_identity(
        self, bucket: BucketRecord, previous: BucketSigner | None
    ) -> GcsBucketSigner:
        email = bucket.service_account
        if not email:
            raise DependencyUnavailable(
                "iam", f"bucket {bucket.name} uses workload_identity but has no service_account"
            )
        source = ("workload_identity", email, bucket.requester_pays)
        if isinstance(previous, GcsBucketSigner) and previous.source == source:
            return previous
        project = match.group(1) if (match := _SERVICE_ACCOUNT_PROJECT.search(email)) else None
        return GcsBucketSigner(
            bucket.name,
            IamBlobSigner(email, self.apis, self._pod_tokens),
            apis=self.apis,
            storage_tokens=_ImpersonatedTokens(email, self.apis, self._pod_tokens),
            user_project=self._user_project(bucket, project),
            source=source,
            clock=self._now,
        )

    def _user_project(self, bucket: BucketRecord, account_project: str | None) -> str | None:
        """The project billed for requests to a requester-pays bucket; None for other buckets."""
        if not bucket.requester_pays:
            return None
        project = self._billing_project or account_project
        if not project:
            raise DependencyUnavailable(
                "storage",
                f"bucket {bucket.name} is requester-pays but no billing project is known; "
                "configure gcp_billing_project",
            )
        return project


def parse_service_account_key(key_json: str, ref: str) -> tuple[ServiceAccountKey, dict[str, Any]]:
    """The signing key and the parsed JSON of a service-account key file.

    Errors say what is wrong with the secret, never what it contains.
    """

    def unusable(reason: str) -> SecretNotFound:
        return SecretNotFound(f"secret {ref} does not hold a usable service-account key: {reason}")

    try:
        info = json.loads(key_json)
    except ValueError:
        raise unusable("service_account_key_json is not JSON") from None
    if not isinstance(info, dict):
        raise unusable("service_account_key_json is not a JSON object")
    if info.get("type", "service_account") != "service_account":
        raise unusable("its type is not service_account")
    missing = [
        name for name in ("client_email", "private_key") if not isinstance(info.get(name), str)
    ]
    if missing:
        raise unusable(f"it lacks {', '.join(missing)}")
    try:
        private_key = serialization.load_pem_private_key(
            info["private_key"].encode("utf-8"), password=None
        )
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise unusable("private_key is not an unencrypted PEM private key") from None
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise unusable("private_key is not an RSA key")
    key = ServiceAccountKey(
        info["client_email"],
        private_key,
        key_id=info.get("private_key_id"),
        project_id=info.get("project_id"),
    )
    return key, info
