"""V4 signed URLs, and the one JSON API call the registry makes, for gcp buckets
(docs/signing.md).

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
import hashlib
import re
from collections.abc import Callable, Hashable, Mapping
from datetime import datetime
from typing import Any

import httpx
from google.oauth2 import service_account

from app.config import Settings
from app.errors import DependencyUnavailable, InvalidInput
from app.netguard import NetGuard
from app.registry.records import AuthMode, BucketRecord
from app.storage.base import BucketSigner, PresignedRequest, utcnow
from app.storage.credentials import SecretSource
from app.storage.gcs import v4
from app.storage.gcs.apis import GCS_ENDPOINT, GoogleApis, _ImpersonatedTokens
from app.storage.gcs.identity import (
    DEVSTORAGE_READ_ONLY_SCOPE,
    DEVSTORAGE_READ_WRITE_SCOPE,
    AccessTokenProvider,
    GoogleAuthTokens,
    default_google_tokens,
)
from app.storage.gcs.keys import (
    BlobSigner,
    IamBlobSigner,
    parse_service_account_key,
    service_account_key_json,
    token_endpoint_of,
)
from app.storage.gcs.objects import BearerToken, ObjectCalls

RESUMABLE_START_HEADERS = {"x-goog-resumable": "start"}

_PRESIGNABLE_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "POST"})
_MULTIPART_UNSUPPORTED = (
    "gcp buckets use resumable uploads, not multipart uploads: presign a POST to start one"
)
# User-managed service accounts are ``name@PROJECT.iam.gserviceaccount.com``.
_SERVICE_ACCOUNT_PROJECT = re.compile(
    r"@([a-z][a-z0-9-]{4,28}[a-z0-9])\.iam\.gserviceaccount\.com$"
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
        writer_tokens: AccessTokenProvider | None = None,
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
        # Read-only tokens list the bucket; only removing objects needs a writing scope.
        self._storage_tokens = storage_tokens
        self._writer_tokens = writer_tokens
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
    ) -> tuple[v4.V4Draft, dict[str, str]]:
        method = method.upper()
        if method not in _PRESIGNABLE_METHODS:
            raise InvalidInput(f"cannot presign HTTP method {method}")
        # Signed URLs accept POST only to start a resumable upload, announced by this header.
        headers = dict(RESUMABLE_START_HEADERS) if method == "POST" else {}
        query = dict(params or {})
        if self.user_project and "userProject" not in query:
            query["userProject"] = self.user_project
        draft = v4.draft(
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
    def _finish(draft: v4.V4Draft, headers: dict[str, str], signature: bytes) -> PresignedRequest:
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

    def calls_as(self, token: str) -> ObjectCalls:
        """Object calls on this bucket made with ``token`` (a downscoped token of its account),
        billed to the project this signer bills on a requester-pays bucket."""
        return ObjectCalls(
            self._apis, self.bucket_name, BearerToken(token), user_project=self.user_project
        )

    async def delete_object(self, key: str) -> bool:
        """Delete ``key`` as the bucket's own account; False when there was nothing to delete.
        ``DependencyUnavailable`` when the account may not (or the store does not answer)."""
        if self._writer_tokens is None:
            raise DependencyUnavailable(
                "storage", f"no credentials of bucket {self.bucket_name} may delete objects"
            )
        calls = ObjectCalls(
            self._apis, self.bucket_name, self._writer_tokens, user_project=self.user_project
        )
        status = await calls.delete(key)
        if status in (200, 204):
            return True
        if status == 404:
            return False
        raise DependencyUnavailable(
            "storage",
            f"the bucket's credentials may not delete {key} from {self.bucket_name}"
            f" (HTTP {status})",
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
        netguard: NetGuard | None = None,
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
            netguard=netguard,
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

    @property
    def pod_tokens(self) -> AccessTokenProvider:
        """The registry's own Google identity, as IAM calls are made with it."""
        return self._pod_tokens

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
        key_json = await service_account_key_json(self._secrets, bucket)
        ref = str(bucket.secret_ref)
        digest = hashlib.sha256(key_json.encode("utf-8")).hexdigest()
        source = ("static", digest, bucket.requester_pays)
        if isinstance(previous, GcsBucketSigner) and previous.source == source:
            # The same key re-read after the secret TTL: keep the parsed key.
            return previous
        # Parsing and checking an RSA key takes milliseconds of CPU: not on the event loop.
        key, info = await asyncio.to_thread(parse_service_account_key, key_json, ref)

        def credentials_for(scope: str) -> Callable[[], Any]:
            def load() -> Any:
                return service_account.Credentials.from_service_account_info(
                    token_endpoint_of(info, self._settings), scopes=[scope]
                )

            return load

        describe = f"an access token for {key.email}"
        return GcsBucketSigner(
            bucket.name,
            key,
            apis=self.apis,
            storage_tokens=GoogleAuthTokens(
                credentials_for(DEVSTORAGE_READ_ONLY_SCOPE), describe=describe
            ),
            writer_tokens=GoogleAuthTokens(
                credentials_for(DEVSTORAGE_READ_WRITE_SCOPE), describe=describe
            ),
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
            writer_tokens=_ImpersonatedTokens(
                email, self.apis, self._pod_tokens, scope=DEVSTORAGE_READ_WRITE_SCOPE
            ),
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
