"""The IAM Credentials (signBlob, generateAccessToken) and Cloud Storage JSON API calls, with
retries on transient answers."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from app.errors import DependencyUnavailable
from app.netguard import NetGuard, guarded_transport, refusal_in
from app.storage.base import as_utc
from app.storage.gcs.identity import DEVSTORAGE_READ_ONLY_SCOPE, AccessTokenProvider

GCS_ENDPOINT = "https://storage.googleapis.com"


class IamSigningDenied(DependencyUnavailable):
    """IAM refuses to let the registry's identity sign as the bucket's service account."""

    code = "iam_signing_denied"

    def __init__(self, message: str) -> None:
        super().__init__("iam", message)


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
        netguard: NetGuard | None = None,
    ) -> None:
        self._iam = iam_endpoint.rstrip("/")
        # Operator-configured endpoints are trusted by name; every address they resolve to is
        # still checked on each connection.
        self._netguard = netguard or NetGuard().trusting(iam_endpoint, storage_endpoint)
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
        token, _expires = await self.issue_access_token(email, scopes, tokens, lifetime=300)
        return token

    async def issue_access_token(
        self, email: str, scopes: list[str], tokens: AccessTokenProvider, *, lifetime: int
    ) -> tuple[str, datetime]:
        """An access token for ``email`` living ``lifetime`` seconds, and its expiry as IAM
        states it. IAM refuses more than an hour unless the organization allows longer."""
        url = (
            f"{self._iam}/v1/projects/-/serviceAccounts/"
            f"{quote(email, safe='@')}:generateAccessToken"
        )
        body = {"scope": scopes, "lifetime": f"{lifetime}s"}
        what = f"IAM generateAccessToken for {email}"
        response = await self._send("iam", what, url, tokens, json=body)
        if response.status_code == 400:
            raise DependencyUnavailable(
                "iam",
                f"{what} refused a lifetime of {lifetime} s (HTTP 400): IAM issues at most"
                " 3600 s unless the organization policy allows longer; lower the duration",
            )
        _raise_for_iam(response.status_code, email, "obtain tokens for")
        try:
            answer = response.json()
            expires = datetime.fromisoformat(str(answer["expireTime"]).replace("Z", "+00:00"))
            return str(answer["accessToken"]), as_utc(expires)
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

    async def storage_request(
        self,
        what: str,
        method: str,
        path: str,
        tokens: AccessTokenProvider,
        *,
        params: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        """A Cloud Storage request to ``path`` (below the endpoint, e.g. ``/storage/v1/b/…``)
        as the identity of ``tokens``, answered as the store answers. 429s, 5xx answers and
        transport errors are retried, then reported as ``DependencyUnavailable`` naming
        ``what``, which must therefore hold nothing secret."""
        return await self._send(
            "storage",
            what,
            self._storage + path,
            tokens,
            method=method,
            params=params,
            content=content,
        )

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
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(10.0, connect=2.0),
                transport=guarded_transport(self._netguard),
                trust_env=False,
            )
        headers = {"Authorization": f"Bearer {token}"}
        try:
            return await self._http.request(method, url, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            refused = refusal_in(exc)
            if refused is not None:
                raise DependencyUnavailable(
                    "storage", f"not contacted: {refused.message}"
                ) from None
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


class _ImpersonatedTokens:
    """Storage tokens (read-only unless another ``scope`` is given) for a service account the
    registry may impersonate.

    Used only by bucket validation (``list_one``, and removing what its probes wrote), so
    tokens are not cached: what matters is that the check runs as the account whose
    signatures the URLs will carry.
    """

    def __init__(
        self,
        email: str,
        apis: GoogleApis,
        tokens: AccessTokenProvider,
        *,
        scope: str = DEVSTORAGE_READ_ONLY_SCOPE,
    ) -> None:
        self._email = email
        self._apis = apis
        self._tokens = tokens
        self._scope = scope

    async def token(self, *, force_refresh: bool = False) -> str:
        return await self._apis.generate_access_token(self._email, [self._scope], self._tokens)
