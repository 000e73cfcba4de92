"""Sync and async clients for the Bucket Registry's Fence-facing API.

Both forward the end user's token (``Authorization: Bearer``), retry what is worth retrying,
and turn answers into typed results or typed errors. See README.md for the contract with
Fence, in particular when ``UseYamlFallback`` is raised.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable, Union
from urllib.parse import quote

import httpx

from bucket_registry_client.errors import (
    DISABLED,
    REGISTRY_EMPTY,
    Forbidden,
    Invalid,
    NotFound,
    RegistryClientError,
    Unauthorized,
    Unavailable,
    UseYamlFallback,
)
from bucket_registry_client.models import PresignedUrl, ResolvedBucket

ENABLE_ENV = "FENCE_ENABLE_DYNAMIC_BUCKETS"
_TRUE = frozenset({"1", "true", "yes", "on"})
# Statuses a retry can fix: the registry (or the proxy in front of it) is briefly unable.
_RETRY_STATUSES = frozenset({502, 503, 504})
# Failures after the request may have been sent. Connection failures (nothing sent) are
# retried by the transport itself.
_RETRY_ERRORS = (httpx.TimeoutException, httpx.ReadError, httpx.RemoteProtocolError)
_ERRORS = {400: Invalid, 401: Unauthorized, 403: Forbidden, 404: NotFound}

Part = Union[tuple[int, str], Mapping[str, Any]]


def dynamic_buckets_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``FENCE_ENABLE_DYNAMIC_BUCKETS`` switches the registry on (unset: off)."""
    value = (os.environ if environ is None else environ).get(ENABLE_ENV, "")
    return value.strip().lower() in _TRUE


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    json: dict[str, Any] | None = None
    params: dict[str, str] | None = None


class _Base:
    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        retries: int,
        backoff: float,
        max_backoff: float,
        enabled: bool | None,
    ) -> None:
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.enabled = dynamic_buckets_enabled() if enabled is None else enabled

    # -- requests -----------------------------------------------------------------------------

    @staticmethod
    def _resolve(name: str) -> _Request:
        return _Request("GET", "/resolve/" + quote(name, safe=""))

    @staticmethod
    def _default_upload(owner_project: str | None) -> _Request:
        params = {"purpose": "upload"}
        if owner_project:
            params["owner_project"] = owner_project
        return _Request("GET", "/resolve", params=params)

    @staticmethod
    def _presign(bucket: str, key: str, op: str, expires_in: int | None) -> _Request:
        body: dict[str, Any] = {"bucket": bucket, "key": key, "op": op}
        if expires_in is not None:
            body["expires_in"] = expires_in
        return _Request("POST", "/presign", json=body)

    @staticmethod
    def _multipart_init(bucket: str, key: str) -> _Request:
        return _Request("POST", "/multipart/init", json={"bucket": bucket, "key": key})

    @staticmethod
    def _presign_part(
        bucket: str, key: str, upload_id: str, part_number: int, expires_in: int | None
    ) -> _Request:
        body: dict[str, Any] = {
            "bucket": bucket,
            "key": key,
            "upload_id": upload_id,
            "part_number": part_number,
        }
        if expires_in is not None:
            body["expires_in"] = expires_in
        return _Request("POST", "/multipart/presign", json=body)

    @staticmethod
    def _complete(bucket: str, key: str, upload_id: str, parts: Iterable[Part]) -> _Request:
        body = {
            "bucket": bucket,
            "key": key,
            "upload_id": upload_id,
            "parts": [_part(part) for part in parts],
        }
        return _Request("POST", "/multipart/complete", json=body)

    @staticmethod
    def _abort(bucket: str, key: str, upload_id: str) -> _Request:
        return _Request(
            "POST", "/multipart/abort", json={"bucket": bucket, "key": key, "upload_id": upload_id}
        )

    # -- answers ------------------------------------------------------------------------------

    def _require_enabled(self) -> None:
        if not self.enabled:
            raise UseYamlFallback(DISABLED)

    @staticmethod
    def _headers(token: str) -> dict[str, str]:
        if not token:
            raise ValueError("the user's access token is required")
        if token.lower().startswith("bearer "):
            token = token[7:]
        return {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    def _should_retry(self, response: httpx.Response, attempt: int) -> bool:
        return response.status_code in _RETRY_STATUSES and attempt < self.retries

    def _delay(self, attempt: int, response: httpx.Response | None = None) -> float:
        delay = self.backoff * (2**attempt)
        if response is not None:
            try:
                delay = max(delay, float(response.headers.get("Retry-After", "0")))
            except ValueError:
                pass
        return min(delay, self.max_backoff)

    @staticmethod
    def _outcome(response: httpx.Response) -> Any:
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        if 200 <= status < 300:
            if body is None:
                raise RegistryClientError(
                    f"the registry answered {status} without a JSON body", status=status
                )
            return body
        error = body if isinstance(body, dict) else {}
        code = error.get("error")
        message = error.get("message") or f"the registry answered HTTP {status}"
        details = error.get("details")
        if status == 404 and (
            code == REGISTRY_EMPTY
            or (isinstance(details, dict) and details.get(REGISTRY_EMPTY) is True)
        ):
            raise UseYamlFallback(REGISTRY_EMPTY)
        kind = _ERRORS.get(status) or (
            Unavailable if status in _RETRY_STATUSES else RegistryClientError
        )
        raise kind(message, status=status, code=code, details=details)

    def _unreachable(self, exc: Exception) -> Unavailable:
        # The exception's text never carries the token; keep only its kind and the host.
        return Unavailable(
            f"the bucket registry at {self.base_url} did not answer ({type(exc).__name__})"
        )


def _part(part: Part) -> dict[str, Any]:
    """A part as the registry wants it, from ``(number, etag)`` or Fence's/boto's mappings."""
    if isinstance(part, Mapping):
        number = part.get("part_number", part.get("PartNumber"))
        etag = part.get("etag", part.get("ETag", part.get("Etag")))
    else:
        number, etag = part
    if number is None or etag is None:
        raise ValueError("each part needs a part number and an ETag")
    return {"part_number": int(number), "etag": str(etag)}


class BucketRegistryClient(_Base):
    """Blocking client (Fence is a Flask app). Safe to share between threads.

    ``retries`` applies twice, at different layers: the transport retries failed connections,
    and 502/503/504 answers and read failures are retried here with exponential backoff
    (``backoff * 2**attempt``, at most ``max_backoff``, at least the ``Retry-After``).
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 5.0,
        retries: int = 2,
        backoff: float = 0.2,
        max_backoff: float = 1.0,
        enabled: bool | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(
            base_url,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            enabled=enabled,
        )
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport or httpx.HTTPTransport(retries=retries),
        )

    def __enter__(self) -> BucketRegistryClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def resolve(self, name: str, token: str) -> ResolvedBucket:
        """The bucket's non-secret metadata. ``NotFound`` if unregistered."""
        return ResolvedBucket.from_json(self._call(self._resolve(name), token))

    def default_upload_bucket(self, owner_project: str | None, token: str) -> ResolvedBucket:
        """The project's default upload bucket, else the commons-wide one."""
        return ResolvedBucket.from_json(self._call(self._default_upload(owner_project), token))

    def presign(
        self, bucket: str, key: str, op: str, token: str, expires_in: int | None = None
    ) -> PresignedUrl:
        """A URL to ``read``, ``write`` or ``delete`` ``key``, if the user may."""
        return PresignedUrl.from_json(self._call(self._presign(bucket, key, op, expires_in), token))

    def multipart_init(self, bucket: str, key: str, token: str) -> str:
        """Start a multipart upload; returns its upload id."""
        return str(self._call(self._multipart_init(bucket, key), token)["upload_id"])

    def presign_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        part_number: int,
        token: str,
        expires_in: int | None = None,
    ) -> PresignedUrl:
        request = self._presign_part(bucket, key, upload_id, part_number, expires_in)
        return PresignedUrl.from_json(self._call(request, token))

    def multipart_complete(
        self, bucket: str, key: str, upload_id: str, parts: Sequence[Part], token: str
    ) -> None:
        self._call(self._complete(bucket, key, upload_id, parts), token)

    def multipart_abort(self, bucket: str, key: str, upload_id: str, token: str) -> None:
        self._call(self._abort(bucket, key, upload_id), token)

    def _call(self, request: _Request, token: str) -> Any:
        self._require_enabled()
        headers = self._headers(token)
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    request.method,
                    request.path,
                    json=request.json,
                    params=request.params,
                    headers=headers,
                )
            except httpx.TransportError as exc:
                if isinstance(exc, _RETRY_ERRORS) and attempt < self.retries:
                    self._sleep(self._delay(attempt))
                    attempt += 1
                    continue
                raise self._unreachable(exc) from None
            if self._should_retry(response, attempt):
                self._sleep(self._delay(attempt, response))
                attempt += 1
                continue
            return self._outcome(response)


class AsyncBucketRegistryClient(_Base):
    """The same client for asyncio code (``httpx.AsyncClient``)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 5.0,
        retries: int = 2,
        backoff: float = 0.2,
        max_backoff: float = 1.0,
        enabled: bool | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            enabled=enabled,
        )
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport or httpx.AsyncHTTPTransport(retries=retries),
        )

    async def __aenter__(self) -> AsyncBucketRegistryClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def resolve(self, name: str, token: str) -> ResolvedBucket:
        return ResolvedBucket.from_json(await self._call(self._resolve(name), token))

    async def default_upload_bucket(self, owner_project: str | None, token: str) -> ResolvedBucket:
        return ResolvedBucket.from_json(
            await self._call(self._default_upload(owner_project), token)
        )

    async def presign(
        self, bucket: str, key: str, op: str, token: str, expires_in: int | None = None
    ) -> PresignedUrl:
        request = self._presign(bucket, key, op, expires_in)
        return PresignedUrl.from_json(await self._call(request, token))

    async def multipart_init(self, bucket: str, key: str, token: str) -> str:
        return str((await self._call(self._multipart_init(bucket, key), token))["upload_id"])

    async def presign_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        part_number: int,
        token: str,
        expires_in: int | None = None,
    ) -> PresignedUrl:
        request = self._presign_part(bucket, key, upload_id, part_number, expires_in)
        return PresignedUrl.from_json(await self._call(request, token))

    async def multipart_complete(
        self, bucket: str, key: str, upload_id: str, parts: Sequence[Part], token: str
    ) -> None:
        await self._call(self._complete(bucket, key, upload_id, parts), token)

    async def multipart_abort(self, bucket: str, key: str, upload_id: str, token: str) -> None:
        await self._call(self._abort(bucket, key, upload_id), token)

    async def _call(self, request: _Request, token: str) -> Any:
        self._require_enabled()
        headers = self._headers(token)
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    request.method,
                    request.path,
                    json=request.json,
                    params=request.params,
                    headers=headers,
                )
            except httpx.TransportError as exc:
                if isinstance(exc, _RETRY_ERRORS) and attempt < self.retries:
                    await asyncio.sleep(self._delay(attempt))
                    attempt += 1
                    continue
                raise self._unreachable(exc) from None
            if self._should_retry(response, attempt):
                await asyncio.sleep(self._delay(attempt, response))
                attempt += 1
                continue
            return self._outcome(response)
