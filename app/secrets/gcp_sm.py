"""GCP Secret Manager backend (``gcp-sm://projects/P/secrets/S``) over the REST API."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any, Protocol

import google.auth
import google.auth.exceptions
import httpx
import urllib3
from google.auth.transport.urllib3 import Request as Urllib3Request

from app.errors import SecretNotFound, SecretUnavailable
from app.secrets.base import SecretPayload, SecretRef, StagedSecret, payload_from_json

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
# The Secret's version alias that records which version a rotation made current.
CURRENT_ALIAS = "current"
_LIVE_STATES = frozenset({"ENABLED", "DISABLED"})


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
        response = await self._call(ref, "GET", url)

        status = response.status_code
        # 400 is FAILED_PRECONDITION for a disabled or destroyed version.
        if status in (400, 403, 404):
            raise SecretNotFound(f"secret {ref.raw} not found or not readable (HTTP {status})")
        if status != 200:
            raise SecretUnavailable(f"GCP Secret Manager failed for {ref.raw} (HTTP {status})")
        data, version_id = _decode_access_response(response, ref)
        return payload_from_json(data, ref, version_id)

    # Rotation uses Secret Manager versions. A new version is ``latest`` at once, but buckets
    # read registry-owned secrets by pinned version only, so a staged version is used by
    # nothing until validation moves the bucket's pin to it. The Secret's ``current`` alias
    # records the promoted one (for operators and rollback); a refused version is destroyed.

    async def stage(self, ref: SecretRef, payload: Mapping[str, str]) -> StagedSecret:
        data = json.dumps(dict(payload), sort_keys=True).encode()
        body = {
            "payload": {
                "data": base64.b64encode(data).decode(),
                "dataCrc32c": str(crc32c(data)),
            }
        }
        url = f"/v1/{ref.location}:addVersion"
        response = await self._call(ref, "POST", url, json=body)
        if response.status_code == 404:
            await self._create_secret(ref)
            response = await self._call(ref, "POST", url, json=body)
        _check_write(ref, response)
        version = _version_id(_json_body(response, ref).get("name"))
        if version is None:
            raise SecretUnavailable(f"GCP Secret Manager named no version for {ref.raw}")
        return StagedSecret(ref.raw, version)

    async def promote(self, ref: SecretRef, staged: StagedSecret) -> None:
        await self._set_current_alias(ref, str(staged.version))

    async def discard(self, ref: SecretRef, staged: StagedSecret) -> None:
        await self._destroy(ref, str(staged.version))

    async def prune(self, ref: SecretRef, keep: StagedSecret) -> int:
        # A version that carries an alias cannot be destroyed, and the kept one is the one the
        # bucket uses: the alias moves to it first (a no-op unless an admin rolled back).
        kept = str(keep.version)
        await self._set_current_alias(ref, kept)
        old = [
            version
            for version, state in await self._versions(ref)
            if version != kept and state in _LIVE_STATES
        ]
        for version in old:
            await self._destroy(ref, version)
        return len(old)

    async def remove(self, ref: SecretRef) -> None:
        # Deleting the Secret destroys every version with it.
        response = await self._call(ref, "DELETE", f"/v1/{ref.location}")
        if response.status_code != 404:
            _check_write(ref, response)

    async def _create_secret(self, ref: SecretRef) -> None:
        project, _, secret = ref.location.removeprefix("projects/").partition("/secrets/")
        response = await self._call(
            ref,
            "POST",
            f"/v1/projects/{project}/secrets",
            params={"secretId": secret},
            json={
                "replication": {"automatic": {}},
                "labels": {"managed-by": "bucket-registry"},
            },
        )
        if response.status_code != 409:  # ALREADY_EXISTS: another replica was first
            _check_write(ref, response)

    async def _set_current_alias(self, ref: SecretRef, version: str) -> None:
        response = await self._call(ref, "GET", f"/v1/{ref.location}")
        _check_write(ref, response)
        secret = _json_body(response, ref)
        aliases = secret.get("versionAliases") or {}
        if not isinstance(aliases, dict):
            raise SecretUnavailable(f"GCP Secret Manager sent a malformed Secret for {ref.raw}")
        if str(aliases.get(CURRENT_ALIAS)) == version:
            return
        # updateMask replaces the whole map, so the other aliases are sent back as they were;
        # the etag makes a concurrent change of the Secret fail instead of being overwritten.
        body: dict[str, Any] = {"versionAliases": {**aliases, CURRENT_ALIAS: version}}
        if secret.get("etag"):
            body["etag"] = secret["etag"]
        response = await self._call(
            ref, "PATCH", f"/v1/{ref.location}", params={"updateMask": "versionAliases"}, json=body
        )
        _check_write(ref, response)

    async def _versions(self, ref: SecretRef) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        params: dict[str, str] = {"pageSize": "100"}
        while True:
            response = await self._call(ref, "GET", f"/v1/{ref.location}/versions", params=params)
            _check_write(ref, response)
            body = _json_body(response, ref)
            for item in body.get("versions") or []:
                version = _version_id(item.get("name")) if isinstance(item, dict) else None
                if version is not None:
                    found.append((version, str(item.get("state"))))
            token = body.get("nextPageToken")
            if not token:
                return found
            params = {**params, "pageToken": str(token)}

    async def _destroy(self, ref: SecretRef, version: str) -> None:
        response = await self._call(
            ref, "POST", f"/v1/{ref.location}/versions/{version}:destroy", json={}
        )
        _check_write(ref, response)

    async def _call(
        self,
        ref: SecretRef,
        method: str,
        url: str,
        *,
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
    ) -> httpx.Response:
        response = await self._request(ref, method, url, await self._tokens.token(), params, json)
        if response.status_code == 401:
            # The cached token may have been revoked before its stated expiry.
            token = await self._tokens.token(force_refresh=True)
            response = await self._request(ref, method, url, token, params, json)
        return response

    async def _request(
        self,
        ref: SecretRef,
        method: str,
        url: str,
        token: str,
        params: dict[str, str] | None,
        json: dict[str, Any] | None,
    ) -> httpx.Response:
        try:
            return await self._http.request(
                method,
                url,
                params=params,
                json=json,
                headers={"Authorization": f"Bearer {token}"},
            )
        except httpx.HTTPError as exc:
            raise SecretUnavailable(
                f"GCP Secret Manager unreachable for {ref.raw} ({type(exc).__name__})"
            ) from None

    async def aclose(self) -> None:
        if self._owns_client:
            await self._http.aclose()


def _check_write(ref: SecretRef, response: httpx.Response) -> None:
    status = response.status_code
    if status in (400, 403, 404, 409):
        raise SecretNotFound(f"secret {ref.raw} is not writable here (HTTP {status})")
    if status != 200:
        raise SecretUnavailable(f"GCP Secret Manager failed for {ref.raw} (HTTP {status})")


def _json_body(response: httpx.Response, ref: SecretRef) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise SecretUnavailable(f"GCP Secret Manager sent a malformed answer for {ref.raw}")
    return body


def _version_id(name: object) -> str | None:
    """The version number at the end of ``projects/N/secrets/S/versions/V``."""
    if not isinstance(name, str) or "/versions/" not in name:
        return None
    version = name.rsplit("/", 1)[-1]
    return version if version.isdigit() else None


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
