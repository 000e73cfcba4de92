"""GCP Secret Manager backend (``gcp-sm://projects/P/secrets/S``) over the REST API."""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Any, Protocol

import google.auth
import google.auth.exceptions
import httpx
import urllib3
from google.auth.transport.urllib3 import Request as Urllib3Request

from app.errors import SecretNotFound, SecretUnavailable
from app.secrets.base import SecretPayload, SecretRef, payload_from_json

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


class AccessTokenProvider(Protocol):
    """Supplies OAuth2 access tokens for Google APIs."""

    async def token(self, *, force_refresh: bool = False) -> str:
        """A currently valid access token; a new one when ``force_refresh`` is set."""
        ...


class GoogleDefaultTokenProvider:
    """Access tokens from Application Default Credentials (workload identity, metadata server,
    ``GOOGLE_APPLICATION_CREDENTIALS``). Discovery and refresh do blocking I/O, so they run in a
    worker thread; one refresh at a time."""

    def __init__(self, scopes: tuple[str, ...] = (CLOUD_PLATFORM_SCOPE,)) -> None:
        self._scopes = list(scopes)
        self._credentials: Any = None
        self._lock = asyncio.Lock()

    async def token(self, *, force_refresh: bool = False) -> str:
        credentials = self._credentials
        if credentials is not None and credentials.valid and not force_refresh:
            return str(credentials.token)
        async with self._lock:
            try:
                if self._credentials is None:
                    self._credentials, _ = await asyncio.to_thread(
                        google.auth.default, scopes=self._scopes
                    )
                credentials = self._credentials
                if force_refresh or not credentials.valid:
                    await asyncio.to_thread(credentials.refresh, _auth_request())
            except google.auth.exceptions.GoogleAuthError as exc:
                raise SecretUnavailable(
                    f"no Google credentials for Secret Manager ({type(exc).__name__})"
                ) from None
            return str(credentials.token)


def _auth_request() -> Urllib3Request:
    # urllib3 already ships with botocore; google-auth's ``requests`` transport would add a
    # dependency.
    return Urllib3Request(urllib3.PoolManager(timeout=urllib3.Timeout(connect=2.0, read=5.0)))


class GcpSecretManagerResolver:
    """Reads JSON-object payloads with ``versions/{version}:access`` (``latest`` when unpinned)
    and checks the payload against the ``dataCrc32c`` checksum the API returns."""

    def __init__(
        self,
        *,
        endpoint: str = "https://secretmanager.googleapis.com",
        token_provider: AccessTokenProvider | None = None,
        connect_timeout: float = 2.0,
        read_timeout: float = 5.0,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._tokens = token_provider or GoogleDefaultTokenProvider()
        self._owns_client = http_client is None
        self._http = http_client or httpx.AsyncClient(
            base_url=endpoint.rstrip("/"),
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
        )

    async def get(self, ref: SecretRef, version: str | None) -> SecretPayload:
        url = f"/v1/{ref.location}/versions/{version or 'latest'}:access"
        response = await self._send(ref, url, await self._tokens.token())
        if response.status_code == 401:
            # The cached token may have been revoked before its stated expiry.
            response = await self._send(ref, url, await self._tokens.token(force_refresh=True))

        status = response.status_code
        # 400 is FAILED_PRECONDITION for a disabled or destroyed version.
        if status in (400, 403, 404):
            raise SecretNotFound(f"secret {ref.raw} not found or not readable (HTTP {status})")
        if status != 200:
            raise SecretUnavailable(f"GCP Secret Manager failed for {ref.raw} (HTTP {status})")
        data, version_id = _decode_access_response(response, ref)
        return payload_from_json(data, ref, version_id)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._http.aclose()

    async def _send(self, ref: SecretRef, url: str, token: str) -> httpx.Response:
        try:
            return await self._http.get(url, headers={"Authorization": f"Bearer {token}"})
        except httpx.HTTPError as exc:
            raise SecretUnavailable(
                f"GCP Secret Manager unreachable for {ref.raw} ({type(exc).__name__})"
            ) from None


def _decode_access_response(response: httpx.Response, ref: SecretRef) -> tuple[bytes, str | None]:
    malformed = SecretUnavailable(f"GCP Secret Manager sent a malformed answer for {ref.raw}")
    try:
        body = response.json()
        payload = body["payload"]
        data = base64.b64decode(payload.get("data", ""), validate=True)
        checksum = payload.get("dataCrc32c")
        name = body.get("name")
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
        raise malformed from None
    # int64 fields arrive as JSON strings.
    if checksum is not None and str(checksum) != str(crc32c(data)):
        raise SecretUnavailable(f"GCP Secret Manager payload for {ref.raw} failed its checksum")
    version_id = name.rsplit("/", 1)[-1] if isinstance(name, str) and "/" in name else None
    return data, version_id


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum Secret Manager reports as ``dataCrc32c``."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF
