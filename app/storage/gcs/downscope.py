"""Downscoped Cloud Storage tokens: an access token of the bucket's service account, exchanged
at Google's Security Token Service for one limited by a Credential Access Boundary.

1. The source token: for a ``static`` bucket, one from the service-account key in its secret
   (Google issues it for an hour, which is therefore the shortest such bucket can vend); under
   ``workload_identity``, one that IAM ``generateAccessToken`` issues for the bucket's
   ``service_account`` to the registry's own identity, living the duration asked.
2. The exchange (RFC 8693, google-auth's ``sts.Client``): ``subject_token`` is the source token,
   ``options`` the boundary (``boundary.py``) as URL-encoded JSON. The answer lives no longer
   than the source token.

google-auth makes blocking calls; they run in a worker thread, and their HTTP requests are
carried out on the event loop by the registry's own guarded client (``LoopTransport``), so a
bucket's ``sts_endpoint`` passes the same destination policy as every other outbound call.
A key file's own ``token_uri`` is never used: its tokens come from the operator's
``gcp_oauth_token_endpoint``, trusted by name like ``gcp_sts_endpoint``. Tokens are handed
to the caller only: never logged, counted or stored.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import google.auth.exceptions
import google.auth.transport
import httpx
from google.oauth2 import service_account, sts

from app.config import Settings
from app.errors import DependencyUnavailable, InvalidInput
from app.netguard import DestinationRefused, NetGuard, guarded_transport, refusal_in
from app.registry.records import AuthMode, BucketRecord
from app.storage.base import as_utc, utcnow
from app.storage.credentials import SecretSource
from app.storage.gcs.apis import GoogleApis
from app.storage.gcs.boundary import access_boundary, boundary_problem
from app.storage.gcs.identity import CLOUD_PLATFORM_SCOPE, AccessTokenProvider
from app.storage.gcs.keys import (
    parse_service_account_key,
    service_account_key_json,
    token_endpoint_of,
)
from app.storage.session_policy import CredentialOp

GOOGLE_STS_ENDPOINT = "https://sts.googleapis.com/v1/token"
TOKEN_EXCHANGE_PATH = "/v1/token"  # noqa: S105 - a path
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a name
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a name
# Google's token for a service-account key always lives an hour.
KEY_TOKEN_LIFETIME = 3600
_TIMEOUT = 10.0
_OAUTH_ERROR = re.compile(r"^[a-z_]{1,64}$")


class DownscopingRefused(DependencyUnavailable):
    """Google's STS refused the exchange: the source account, the boundary or the endpoint."""

    code = "credential_vending_refused"

    def __init__(self, bucket: str, reason: str) -> None:
        super().__init__(
            "gcp_sts",
            f"Google's STS refused a downscoped token for bucket {bucket} ({reason}): the"
            " bucket's service account needs the roles it is to hand out, on the bucket",
        )


@dataclass(frozen=True, slots=True)
class DownscopedToken:
    access_token: str = field(repr=False)
    expiration: datetime
    # The account whose permissions the token narrows (in the decision log, not the answer).
    service_account: str


class _Response(google.auth.transport.Response):
    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    @property
    def data(self) -> bytes:
        return self._response.content


class LoopTransport(google.auth.transport.Request):
    """google-auth's transport interface over an ``httpx.AsyncClient`` running on ``loop``.

    Called from a worker thread only (calling it on the loop itself would deadlock). Keeps
    the status and ``error`` code of the last answer, so a refusal can be told from an outage.
    """

    def __init__(self, http: httpx.AsyncClient, loop: asyncio.AbstractEventLoop) -> None:
        self._http = http
        self._loop = loop
        self.last_status: int | None = None
        self.last_error: str | None = None

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> _Response:
        call = self._http.request(
            method, url, content=body, headers=dict(headers or {}), timeout=timeout or _TIMEOUT
        )
        try:
            response = asyncio.run_coroutine_threadsafe(call, self._loop).result()
        except httpx.TransportError as exc:
            refused = refusal_in(exc)
            reason = f"not contacted: {refused.message}" if refused else type(exc).__name__
            raise google.auth.exceptions.TransportError(reason) from None
        self.last_status = response.status_code
        self.last_error = _oauth_error(response)
        return _Response(response)


def _oauth_error(response: httpx.Response) -> str | None:
    """The OAuth ``error`` code of an error answer, when it is one (never its description,
    which a token service may fill with what it was sent)."""
    if response.status_code < 400:
        return None
    try:
        code = response.json().get("error")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, str) and _OAUTH_ERROR.match(code) else None


class GcsTokenVendor:
    """Vends downscoped tokens for gcp buckets with ``credential_vending`` on."""

    def __init__(
        self,
        settings: Settings,
        secrets: SecretSource,
        *,
        apis: GoogleApis,
        pod_tokens: AccessTokenProvider,
        netguard: NetGuard,
        clock: Callable[[], datetime] | None = None,
        observe: Callable[[str, float, bool], None] | None = None,
    ) -> None:
        self._settings = settings
        self._secrets = secrets
        self._apis = apis
        self._pod_tokens = pod_tokens
        # The registry's own token-exchange endpoint is operator configuration; a bucket's
        # sts_endpoint is not, and is checked by name before each exchange as well.
        self._trusted = settings.gcp_sts_endpoint
        self._netguard = netguard
        self._now = clock or utcnow
        self._observe = observe
        self._http: httpx.AsyncClient | None = None
        self.vend_count = 0

    @staticmethod
    def shortest_duration(bucket: BucketRecord, floor: int) -> int:
        """The shortest lifetime a token of ``bucket`` can be vended for, given the registry's
        ``floor``: a key's token lives ``KEY_TOKEN_LIFETIME`` whatever is asked."""
        if bucket.auth_mode is AuthMode.STATIC:
            return max(floor, KEY_TOKEN_LIFETIME)
        return floor

    def endpoint_for(self, bucket: BucketRecord) -> str:
        """The token-exchange URL: the bucket's STS (a scheme and host, as every registered
        endpoint) with Google's path, else the registry's ``gcp_sts_endpoint``."""
        if bucket.sts_endpoint:
            return bucket.sts_endpoint.rstrip("/") + TOKEN_EXCHANGE_PATH
        return self._trusted

    async def vend(
        self, bucket: BucketRecord, prefix: str, ops: Iterable[CredentialOp], duration: int
    ) -> DownscopedToken:
        wanted = tuple(ops)
        problem = boundary_problem(prefix, wanted)
        if problem is not None:
            raise InvalidInput(problem)
        try:
            boundary = access_boundary(bucket.name, prefix, wanted)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        endpoint = self.endpoint_for(bucket)
        if endpoint != self._trusted:
            try:
                await self._netguard.check_url(endpoint)
            except DestinationRefused as exc:
                raise DependencyUnavailable(
                    "gcp_sts", f"Google's STS not contacted: {exc.message}"
                ) from None
        email, source_token, source_expiry = await self._source_token(bucket, duration)
        self.vend_count += 1
        transport = LoopTransport(self._client(), asyncio.get_running_loop())
        client = sts.Client(endpoint)
        started = time.perf_counter()
        ok = False
        try:
            answer = await asyncio.to_thread(
                client.exchange_token,
                transport,
                grant_type=TOKEN_EXCHANGE_GRANT,
                subject_token=source_token,
                subject_token_type=ACCESS_TOKEN_TYPE,
                requested_token_type=ACCESS_TOKEN_TYPE,
                additional_options=boundary.to_json(),
            )
            ok = True
        except google.auth.exceptions.TransportError as exc:
            raise DependencyUnavailable("gcp_sts", f"Google's STS is unreachable ({exc})") from None
        except (google.auth.exceptions.OAuthError, ValueError):
            status = transport.last_status
            if status is not None and status < 300:
                raise DependencyUnavailable(
                    "gcp_sts", "Google's STS sent a malformed answer"
                ) from None
            if status is None or status == 429 or status >= 500:
                raise DependencyUnavailable(
                    "gcp_sts", f"Google's STS is unavailable (HTTP {status})"
                ) from None
            raise DownscopingRefused(
                bucket.name, f"HTTP {status}, {transport.last_error or 'no error code'}"
            ) from None
        finally:
            if self._observe is not None:
                self._observe("gcp_sts", time.perf_counter() - started, ok)
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise DependencyUnavailable("gcp_sts", "Google's STS answered without a token")
        expiration = source_expiry
        lifetime = answer.get("expires_in")
        if isinstance(lifetime, int) and lifetime > 0:
            expiration = min(expiration, self._now() + timedelta(seconds=lifetime))
        return DownscopedToken(access_token=token, expiration=expiration, service_account=email)

    async def _source_token(self, bucket: BucketRecord, duration: int) -> tuple[str, str, datetime]:
        """The account, the token to narrow and its expiry."""
        if bucket.auth_mode is AuthMode.WORKLOAD_IDENTITY:
            email = bucket.service_account
            if not email:
                raise DependencyUnavailable(
                    "iam", f"bucket {bucket.name} uses workload_identity but has no service_account"
                )
            token, expires = await self._apis.issue_access_token(
                email, [CLOUD_PLATFORM_SCOPE], self._pod_tokens, lifetime=duration
            )
            return email, token, expires
        if bucket.auth_mode is not AuthMode.STATIC:
            raise InvalidInput(f"bucket {bucket.name!r} does not vend credentials")
        if duration < KEY_TOKEN_LIFETIME:
            raise InvalidInput(
                f"duration: tokens of a gcp bucket with a service-account key live"
                f" {KEY_TOKEN_LIFETIME} s, as Google issues them for the key; ask for at least"
                " that (workload_identity buckets vend shorter tokens)"
            )
        key_json = await service_account_key_json(self._secrets, bucket)
        ref = str(bucket.secret_ref)
        key, info = await asyncio.to_thread(parse_service_account_key, key_json, ref)
        credentials = service_account.Credentials.from_service_account_info(
            token_endpoint_of(info, self._settings), scopes=[CLOUD_PLATFORM_SCOPE]
        )
        transport = LoopTransport(self._client(), asyncio.get_running_loop())
        try:
            await asyncio.to_thread(credentials.refresh, transport)
        except google.auth.exceptions.TransportError as exc:
            raise DependencyUnavailable(
                "iam", f"Google's token endpoint is unreachable ({exc})"
            ) from None
        except google.auth.exceptions.GoogleAuthError:
            raise DependencyUnavailable(
                "iam",
                f"Google issued no token for {key.email} (HTTP {transport.last_status},"
                f" {transport.last_error or 'no error code'})",
            ) from None
        expiry = credentials.expiry or (self._now() + timedelta(seconds=KEY_TOKEN_LIFETIME))
        return key.email, str(credentials.token), as_utc(expiry)

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(_TIMEOUT, connect=2.0),
                transport=guarded_transport(
                    self._netguard.trusting(self._trusted, self._settings.gcp_oauth_token_endpoint)
                ),
                trust_env=False,
            )
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
