"""The Google identities the registry signs and calls as: its own (ADC / Workload Identity)
and service accounts it impersonates, as access-token providers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

import google.auth
import google.auth.exceptions
import urllib3
from google.auth.transport.urllib3 import Request as Urllib3Request

from app.errors import DependencyUnavailable

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
DEVSTORAGE_READ_ONLY_SCOPE = "https://www.googleapis.com/auth/devstorage.read_only"
DEVSTORAGE_READ_WRITE_SCOPE = "https://www.googleapis.com/auth/devstorage.read_write"


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
