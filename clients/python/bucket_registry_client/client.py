"""Sync and async clients for the Bucket Registry's Fence-facing API.

Two ways to authenticate, chosen when the client is built:

- **Service token** (``token_path=`` or ``service_token=``): Fence sends its own token (a
  Kubernetes projected ServiceAccount token, re-read from its file as the kubelet rotates it)
  and names the user in each data-path body (``on_behalf_of``), with the record's ``authz``,
  the Arborist ``method``, an ``audit`` block and the ``legacy``/``unsigned`` flags.
- **Forwarding** (neither given): the user's own token is the bearer token, and the registry
  decides from its bindings alone; the trusted-caller fields are not sent.

Every call has a short budget (``timeout`` per attempt, ``retries`` more attempts) and goes
through a circuit breaker, so a registry that is down costs a Fence worker microseconds per
request once the breaker has opened, not a timeout each time. See README.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable, TypeVar, Union
from urllib.parse import quote

import httpx
import pybreaker

from bucket_registry_client.errors import (
    BUCKET_CONFIGURATION_CODES,
    ConfigurationError,
    Invalid,
    RegistryClientError,
    Unavailable,
    UnexpectedResponse,
    error_for,
)
from bucket_registry_client.models import (
    BatchError,
    BatchResult,
    Caller,
    Grant,
    PresignedUrl,
    PresignRequest,
    ResolvedBucket,
    TemporaryCredentials,
    UserLike,
    as_caller,
    check_expires_in,
    check_location,
    credentials_body,
    temporary_credentials,
)

DEFAULT_TIMEOUT = 2.0
DEFAULT_RETRIES = 1
#: The most items one ``/presign/batch`` call carries; longer lists are sent in chunks.
BATCH_LIMIT = 100

# The registry (or the proxy in front of it) could not act now; a retry may work.
_OUTAGE_STATUSES = frozenset({502, 503, 504})
# Nothing reached the registry: always safe to send again.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

Part = Union[tuple[int, str], Mapping[str, Any]]
TokenSource = Union[str, Callable[[], str]]
_R = TypeVar("_R")


class ServiceToken:
    """Fence's own token, read from a file and read again when the file changes.

    A projected ServiceAccount token is rotated by the kubelet (an atomic symlink swap), so the
    file is checked at most every ``check_every`` seconds (one ``stat``) and re-read only when
    it changed. A missing, unreadable or empty file is a ``ConfigurationError``; the message
    names the path, never the content.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        check_every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = os.fspath(path)
        self.check_every = check_every
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._checked_at = 0.0

    def __call__(self) -> str:
        now = self._clock()
        with self._lock:
            if self._token is None or now - self._checked_at >= self.check_every:
                self._refresh()
                self._checked_at = now
            assert self._token is not None
            return self._token

    def _refresh(self) -> None:
        try:
            info = os.stat(self.path)
            stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
            if stamp == self._stamp and self._token is not None:
                return
            with open(self.path, encoding="utf-8") as handle:
                token = handle.read().strip()
        except (OSError, UnicodeError) as exc:
            raise ConfigurationError(
                f"the service token file {self.path} cannot be read ({type(exc).__name__})",
                code="service_token_unreadable",
            ) from None
        if not token:
            raise ConfigurationError(
                f"the service token file {self.path} is empty", code="service_token_missing"
            )
        self._token, self._stamp = token, stamp


def new_breaker(fail_max: int = 5, reset_timeout: float = 10.0) -> pybreaker.CircuitBreaker:
    """A breaker that opens after ``fail_max`` failed calls in a row (outages only: a 4xx
    never counts) and lets one call through after ``reset_timeout`` seconds."""
    return pybreaker.CircuitBreaker(
        fail_max=fail_max, reset_timeout=reset_timeout, name="bucket-registry"
    )


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    json: dict[str, Any] | None = None
    params: dict[str, str] | None = None
    # Whether sending it twice is harmless. A request that may have reached the registry is
    # repeated only if so (a second ``multipart/complete`` would fail on a finished upload).
    idempotent: bool = True
    # Non-secret metadata (resolve, the bucket listing) rather than the data path.
    metadata: bool = False


@dataclass(frozen=True)
class _Answer:
    status: int
    body: Any
    retry_after: float

    @property
    def code(self) -> str | None:
        return self.body.get("error") if isinstance(self.body, dict) else None

    @property
    def is_outage(self) -> bool:
        return self.status in _OUTAGE_STATUSES and self.code not in BUCKET_CONFIGURATION_CODES


def _answer(response: httpx.Response) -> _Answer:
    try:
        body = response.json()
    except ValueError:
        body = None
    try:
        retry_after = max(0.0, float(response.headers.get("Retry-After", "0")))
    except ValueError:
        retry_after = 0.0
    return _Answer(response.status_code, body, retry_after)


class _Base:
    def __init__(
        self,
        base_url: str,
        *,
        token_path: str | os.PathLike[str] | None,
        service_token: TokenSource | None,
        timeout: float,
        retries: int,
        backoff: float,
        max_backoff: float,
        breaker: pybreaker.CircuitBreaker | None,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ConfigurationError("the registry URL must start with http:// or https://")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigurationError("retries must be a whole number >= 0")
        if not timeout or timeout <= 0:
            raise ConfigurationError("timeout must be a positive number of seconds")
        if token_path is not None and service_token is not None:
            raise ConfigurationError("give token_path or service_token, not both")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.breaker = breaker
        self._service_token: Callable[[], str] | None
        if token_path is not None:
            self._service_token = ServiceToken(token_path)
        elif isinstance(service_token, str):
            fixed = service_token
            self._service_token = lambda: fixed
        else:
            self._service_token = service_token

    @property
    def uses_service_token(self) -> bool:
        return self._service_token is not None

    # -- requests -----------------------------------------------------------------------------

    def _bearer(self, caller: Caller | None, *, metadata: bool = False) -> dict[str, str]:
        token: str | None
        user_token = caller.on_behalf_of.token if caller is not None else None
        if metadata and user_token:
            # Metadata routes answer any valid user token; the user's is sent when there is
            # one, so they work whether or not the registry accepts service tokens there.
            token = user_token
        elif self._service_token is not None:
            try:
                token = self._service_token()
            except RegistryClientError:
                raise
            except Exception as exc:
                raise ConfigurationError(
                    f"the service token could not be obtained ({type(exc).__name__})",
                    code="service_token_unreadable",
                ) from None
            if not token:
                raise ConfigurationError("the service token is empty", code="service_token_missing")
        else:
            token = user_token
            if not token:
                raise ConfigurationError(
                    "this client forwards the user's token, and none was given: configure a "
                    "service token to act for a username or an anonymous user",
                    code="user_token_missing",
                )
        return {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    def _data_body(
        self, body: dict[str, Any], caller: Caller, grant: Grant | None
    ) -> dict[str, Any]:
        # Forwarding: the registry knows the user from the bearer token and decides from its
        # bindings; the trusted-caller fields would be refused as unknown.
        if self._service_token is not None:
            body.update(self._trusted_fields(caller))
            body.update(_required(grant).to_json())
        return body

    @staticmethod
    def _trusted_fields(caller: Caller) -> dict[str, Any]:
        fields: dict[str, Any] = {"on_behalf_of": caller.on_behalf_of.to_json()}
        audit = caller.audit.to_json() if caller.audit is not None else {}
        if audit:
            fields["audit"] = audit
        return fields

    def _resolve(self, name: str) -> _Request:
        if not isinstance(name, str) or not name:
            raise Invalid("bucket must be a non-empty string", code="invalid_argument")
        return _Request("GET", "/resolve/" + quote(name, safe=""), metadata=True)

    @staticmethod
    def _default_upload(owner_project: str | None) -> _Request:
        params = {"purpose": "upload"}
        if owner_project:
            params["owner_project"] = owner_project
        return _Request("GET", "/resolve", params=params, metadata=True)

    def _presign(self, request: PresignRequest, caller: Caller) -> _Request:
        return _Request(
            "POST", "/presign", json=self._data_body(request.to_json(), caller, request.grant)
        )

    def _presign_batch(self, requests: Sequence[PresignRequest], caller: Caller) -> _Request:
        items = []
        for request in requests:
            item = request.to_json()
            if self._service_token is not None:
                item.update(_required(request.grant).to_json())
            items.append(item)
        body: dict[str, Any] = {"requests": items}
        if self._service_token is not None:
            body.update(self._trusted_fields(caller))
        return _Request("POST", "/presign/batch", json=body)

    def _multipart(
        self,
        action: str,
        fields: dict[str, Any],
        caller: Caller,
        grant: Grant | None,
        idempotent: bool = True,
    ) -> _Request:
        check_location(fields.get("bucket"), fields.get("key"))
        return _Request(
            "POST",
            f"/multipart/{action}",
            json=self._data_body(fields, caller, grant),
            idempotent=idempotent,
        )

    def _delete(
        self,
        bucket: str,
        key: str | None,
        prefix: str | None,
        caller: Caller,
        grant: Grant | None,
    ) -> _Request:
        if (key is None) == (prefix is None):
            raise Invalid("give a key or a prefix to delete, not both", code="invalid_argument")
        check_location(bucket, key if key is not None else prefix)
        body: dict[str, Any] = {"bucket": bucket}
        body["key" if key is not None else "prefix"] = key if key is not None else prefix
        return _Request("POST", "/objects/delete", json=self._data_body(body, caller, grant))

    def _credentials(
        self,
        bucket: str,
        prefix: str,
        ops: Sequence[str],
        duration: int | None,
        caller: Caller,
        grant: Grant | None,
    ) -> _Request:
        body = credentials_body(bucket, prefix, ops, duration)
        # Sending it twice mints a second session and changes nothing in the store.
        return _Request("POST", "/credentials", json=self._data_body(body, caller, grant))

    # -- attempts -----------------------------------------------------------------------------

    def _delay(self, attempt: int, answer: _Answer | None = None) -> float:
        delay = float(self.backoff * (2**attempt))
        if answer is not None:
            delay = max(delay, answer.retry_after)
        return min(delay, self.max_backoff)

    def _retry_after_error(self, request: _Request, exc: Exception, attempt: int) -> bool:
        if attempt >= self.retries or not isinstance(exc, httpx.TransportError):
            return False
        return isinstance(exc, _NOT_SENT) or (
            request.idempotent
            and isinstance(
                exc, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
            )
        )

    def _retry_answer(self, request: _Request, answer: _Answer, attempt: int) -> bool:
        if attempt >= self.retries or not answer.is_outage:
            return False
        # A 503 is the registry saying it did not act; a proxy's 502/504 may hide one that did.
        return answer.status == 503 or request.idempotent

    def _failure(self, exc: Exception) -> RegistryClientError:
        if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
            return ConfigurationError(f"the registry URL {self.base_url} cannot be used")
        # The exception's text may quote the request; keep only its kind and the host.
        return Unavailable(
            f"the bucket registry at {self.base_url} did not answer ({type(exc).__name__})",
            code="unreachable",
        )

    @contextlib.contextmanager
    def _guarded(self) -> Iterator[None]:
        """Run one logical call through the breaker; an open breaker is ``Unavailable``."""
        if self.breaker is None:
            yield
            return
        try:
            with self.breaker.calling():
                yield
        except pybreaker.CircuitBreakerError as exc:
            # The call that trips the breaker keeps its own error.
            if isinstance(exc.__context__, Unavailable):
                raise exc.__context__ from None
            raise Unavailable(
                "the bucket registry is failing; calls are paused for "
                f"{self.breaker.reset_timeout:g} s (circuit open)",
                code="circuit_open",
            ) from None

    @staticmethod
    def _outcome(answer: _Answer) -> Any:
        status, body = answer.status, answer.body
        if 200 <= status < 300:
            if not isinstance(body, dict):
                raise UnexpectedResponse(
                    f"the registry answered {status} without a JSON object", status=status
                )
            return body
        error = body if isinstance(body, dict) else {}
        code = error.get("error") if isinstance(error.get("error"), str) else None
        message = error.get("message")
        if not isinstance(message, str) or not message:
            message = f"the registry answered HTTP {status}"
        details = error.get("details")
        raise error_for(status, code, details)(message, status=status, code=code, details=details)

    @staticmethod
    def _read(build: Callable[[Any], _R], body: Any) -> _R:
        try:
            return build(body)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UnexpectedResponse(
                f"the registry's answer does not have the documented shape ({type(exc).__name__})"
            ) from None

    @classmethod
    def _batch_results(cls, body: Any, expected: int) -> list[BatchResult]:
        results = body.get("results")
        if not isinstance(results, list) or len(results) != expected:
            raise UnexpectedResponse("the batch answer does not have one result per request")
        out: list[BatchResult] = []
        for item in results:
            if isinstance(item, dict) and isinstance(item.get("error"), dict):
                error = item["error"]
                status = int(item.get("status") or 500)
                code = error.get("code")
                message = str(error.get("message") or f"HTTP {status}")
                details = error.get("details")
                kind = error_for(status, code, details)
                out.append(
                    BatchError(
                        status,
                        code,
                        message,
                        kind(message, status=status, code=code, details=details),
                    )
                )
            else:
                out.append(cls._read(PresignedUrl.from_json, item))
        return out


def _required(grant: Grant | None) -> Grant:
    # A trusted caller is authorized on the record, so the registry needs the record's authz.
    if grant is None:
        raise Invalid(
            "a service-token call needs the record's authz: pass grant=Grant(authz=...) "
            "(or Grant(legacy=...) for a record without authz)",
            code="invalid_argument",
        )
    return grant


def _part(part: Part) -> dict[str, Any]:
    """A part as the registry wants it, from ``(number, etag)`` or Fence's/boto's mappings."""
    try:
        if isinstance(part, Mapping):
            number = part.get("part_number", part.get("PartNumber"))
            etag = part.get("etag", part.get("ETag", part.get("Etag")))
        else:
            number, etag = part
        if number is None or etag is None or isinstance(number, bool):
            raise ValueError
        return {"part_number": int(number), "etag": str(etag)}
    except (TypeError, ValueError):
        raise Invalid(
            "each part needs a part number and an ETag", code="invalid_argument"
        ) from None


def _parts(parts: Iterable[Part]) -> list[dict[str, Any]]:
    if isinstance(parts, (str, bytes, Mapping)):
        raise Invalid("parts must be a list", code="invalid_argument")
    try:
        listed = [_part(part) for part in parts]
    except TypeError:
        raise Invalid("parts must be a list", code="invalid_argument") from None
    if not listed:
        raise Invalid("a multipart upload needs at least one part", code="invalid_argument")
    return listed


def _check_upload_id(upload_id: Any) -> None:
    if not isinstance(upload_id, str) or not upload_id:
        raise Invalid("upload_id must be a non-empty string", code="invalid_argument")


def _check_part_number(part_number: Any) -> int:
    if isinstance(part_number, bool):
        raise Invalid("part_number must be 1-10000", code="invalid_argument")
    try:
        number = int(part_number)
    except (TypeError, ValueError):
        raise Invalid("part_number must be 1-10000", code="invalid_argument") from None
    if not 1 <= number <= 10_000:
        raise Invalid("part_number must be 1-10000", code="invalid_argument")
    return number


def _chunks(requests: Sequence[PresignRequest]) -> list[Sequence[PresignRequest]]:
    return [requests[start : start + BATCH_LIMIT] for start in range(0, len(requests), BATCH_LIMIT)]


_DEFAULT_BREAKER: Any = object()


class BucketRegistryClient(_Base):
    """Blocking client (Fence is a Flask app). Safe to share between a worker's threads.

    ``timeout`` bounds each attempt (connect, read, write, pool), ``retries`` is how many more
    attempts an outage gets (connection failures; 503; for idempotent calls also timeouts,
    broken answers, 502 and 504), waiting ``backoff * 2**attempt`` seconds (at least the
    ``Retry-After``, at most ``max_backoff``) in between. The breaker (``new_breaker()`` by
    default; pass your own to share or tune it, ``None`` to go without) counts calls that
    ended in an outage.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token_path: str | os.PathLike[str] | None = None,
        service_token: TokenSource | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = 0.1,
        max_backoff: float = 0.5,
        breaker: pybreaker.CircuitBreaker | None = _DEFAULT_BREAKER,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(
            base_url,
            token_path=token_path,
            service_token=service_token,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            breaker=new_breaker() if breaker is _DEFAULT_BREAKER else breaker,
        )
        self._sleep = sleep
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)

    def __enter__(self) -> BucketRegistryClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def resolve(self, name: str, user: UserLike | None = None) -> ResolvedBucket:
        """The bucket's non-secret metadata (``GET /resolve/{name}``), whatever its status.
        ``user`` is needed only when forwarding user tokens."""
        caller = as_caller(user) if user is not None else None
        return self._read(ResolvedBucket.from_json, self._call(self._resolve(name), caller))

    def default_upload_bucket(
        self, owner_project: str | None = None, user: UserLike | None = None
    ) -> ResolvedBucket:
        """The project's default upload bucket, else the commons-wide one."""
        caller = as_caller(user) if user is not None else None
        body = self._call(self._default_upload(owner_project), caller)
        return self._read(ResolvedBucket.from_json, body)

    def presign(
        self,
        bucket: str,
        key: str,
        op: str,
        user: UserLike,
        *,
        expires_in: int | None = None,
        user_project: str | None = None,
        resumable: bool = False,
        grant: Grant | None = None,
    ) -> PresignedUrl:
        """A URL to ``read``, ``write`` or ``delete`` ``key``, if the user may."""
        request = PresignRequest(bucket, key, op, expires_in, user_project, resumable, grant)
        return self.sign(request, user)

    def sign(self, request: PresignRequest, user: UserLike) -> PresignedUrl:
        """``presign`` for a prepared ``PresignRequest``."""
        caller = as_caller(user)
        return self._read(
            PresignedUrl.from_json, self._call(self._presign(request, caller), caller)
        )

    def presign_batch(
        self, requests: Sequence[PresignRequest], user: UserLike
    ) -> list[BatchResult]:
        """Many URLs for one user (``POST /presign/batch``), in order: each result is a
        ``PresignedUrl`` or a ``BatchError``. Lists over 100 go in several calls."""
        caller = as_caller(user)
        requests = list(requests)
        results: list[BatchResult] = []
        for chunk in _chunks(requests):
            body = self._call(self._presign_batch(chunk, caller), caller)
            results.extend(self._batch_results(body, len(chunk)))
        return results

    def multipart_init(
        self, bucket: str, key: str, user: UserLike, *, grant: Grant | None = None
    ) -> str:
        """Start a multipart upload; returns its upload id."""
        caller = as_caller(user)
        request = self._multipart("init", {"bucket": bucket, "key": key}, caller, grant, False)
        return self._read(lambda body: str(body["upload_id"]), self._call(request, caller))

    def presign_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        part_number: int,
        user: UserLike,
        *,
        expires_in: int | None = None,
        grant: Grant | None = None,
    ) -> PresignedUrl:
        """The URL to PUT one part to."""
        caller = as_caller(user)
        _check_upload_id(upload_id)
        check_expires_in(expires_in)
        fields: dict[str, Any] = {
            "bucket": bucket,
            "key": key,
            "upload_id": upload_id,
            "part_number": _check_part_number(part_number),
        }
        if expires_in is not None:
            fields["expires_in"] = expires_in
        request = self._multipart("presign", fields, caller, grant)
        return self._read(PresignedUrl.from_json, self._call(request, caller))

    def multipart_complete(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        parts: Sequence[Part],
        user: UserLike,
        *,
        grant: Grant | None = None,
    ) -> None:
        """Assemble the parts: ``(number, etag)`` pairs or Fence's ``{"PartNumber", "Etag"}``."""
        caller = as_caller(user)
        _check_upload_id(upload_id)
        fields = {"bucket": bucket, "key": key, "upload_id": upload_id, "parts": _parts(parts)}
        self._call(self._multipart("complete", fields, caller, grant, False), caller)

    def multipart_abort(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        user: UserLike,
        *,
        grant: Grant | None = None,
    ) -> None:
        caller = as_caller(user)
        _check_upload_id(upload_id)
        fields = {"bucket": bucket, "key": key, "upload_id": upload_id}
        self._call(self._multipart("abort", fields, caller, grant), caller)

    def delete_objects(
        self,
        bucket: str,
        user: UserLike,
        *,
        key: str | None = None,
        prefix: str | None = None,
        grant: Grant | None = None,
    ) -> int:
        """Delete one object or every object under a prefix; returns how many went."""
        caller = as_caller(user)
        body = self._call(self._delete(bucket, key, prefix, caller, grant), caller)
        return self._read(lambda answer: int(answer["deleted"]), body)

    def credentials(
        self,
        bucket: str,
        prefix: str,
        ops: Sequence[str],
        user: UserLike,
        *,
        duration: int | None = None,
        grant: Grant | None = None,
    ) -> TemporaryCredentials:
        """Temporary credentials for ``ops`` (``read``, ``write``, ``delete``, ``list``) under
        ``prefix`` (``''`` or ending with ``/``), for bulk tools: ``S3Credentials`` for S3
        stores, ``GcsAccessToken`` for gcp buckets. ``duration`` in seconds (at least 900) is
        shortened by the registry to the bucket's maximum; ``expiration`` says when they end."""
        caller = as_caller(user)
        request = self._credentials(bucket, prefix, ops, duration, caller, grant)
        return self._read(temporary_credentials, self._call(request, caller))

    def fence_buckets(self, user: UserLike | None = None) -> dict[str, Any]:
        """Every registered bucket in Fence's ``/data/buckets`` shape (no credentials)."""
        caller = as_caller(user) if user is not None else None
        return self._read(
            _fence_buckets, self._call(_Request("GET", "/fence/buckets", metadata=True), caller)
        )

    def _call(self, request: _Request, caller: Caller | None) -> Any:
        headers = self._bearer(caller, metadata=request.metadata)
        with self._guarded():
            answer = self._exchange(request, headers)
            if answer.is_outage:
                self._outcome(answer)
        return self._outcome(answer)

    def _exchange(self, request: _Request, headers: dict[str, str]) -> _Answer:
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
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                if self._retry_after_error(request, exc, attempt):
                    self._sleep(self._delay(attempt))
                    attempt += 1
                    continue
                raise self._failure(exc) from None
            answer = _answer(response)
            if self._retry_answer(request, answer, attempt):
                self._sleep(self._delay(attempt, answer))
                attempt += 1
                continue
            return answer


class AsyncBucketRegistryClient(_Base):
    """The same client for asyncio code (``httpx.AsyncClient``), with the same options."""

    def __init__(
        self,
        base_url: str,
        *,
        token_path: str | os.PathLike[str] | None = None,
        service_token: TokenSource | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = 0.1,
        max_backoff: float = 0.5,
        breaker: pybreaker.CircuitBreaker | None = _DEFAULT_BREAKER,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url,
            token_path=token_path,
            service_token=service_token,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            breaker=new_breaker() if breaker is _DEFAULT_BREAKER else breaker,
        )
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport)

    async def __aenter__(self) -> AsyncBucketRegistryClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def resolve(self, name: str, user: UserLike | None = None) -> ResolvedBucket:
        caller = as_caller(user) if user is not None else None
        return self._read(ResolvedBucket.from_json, await self._call(self._resolve(name), caller))

    async def default_upload_bucket(
        self, owner_project: str | None = None, user: UserLike | None = None
    ) -> ResolvedBucket:
        caller = as_caller(user) if user is not None else None
        body = await self._call(self._default_upload(owner_project), caller)
        return self._read(ResolvedBucket.from_json, body)

    async def presign(
        self,
        bucket: str,
        key: str,
        op: str,
        user: UserLike,
        *,
        expires_in: int | None = None,
        user_project: str | None = None,
        resumable: bool = False,
        grant: Grant | None = None,
    ) -> PresignedUrl:
        request = PresignRequest(bucket, key, op, expires_in, user_project, resumable, grant)
        return await self.sign(request, user)

    async def sign(self, request: PresignRequest, user: UserLike) -> PresignedUrl:
        caller = as_caller(user)
        body = await self._call(self._presign(request, caller), caller)
        return self._read(PresignedUrl.from_json, body)

    async def presign_batch(
        self, requests: Sequence[PresignRequest], user: UserLike
    ) -> list[BatchResult]:
        caller = as_caller(user)
        requests = list(requests)
        results: list[BatchResult] = []
        for chunk in _chunks(requests):
            body = await self._call(self._presign_batch(chunk, caller), caller)
            results.extend(self._batch_results(body, len(chunk)))
        return results

    async def multipart_init(
        self, bucket: str, key: str, user: UserLike, *, grant: Grant | None = None
    ) -> str:
        caller = as_caller(user)
        request = self._multipart("init", {"bucket": bucket, "key": key}, caller, grant, False)
        return self._read(lambda body: str(body["upload_id"]), await self._call(request, caller))

    async def presign_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        part_number: int,
        user: UserLike,
        *,
        expires_in: int | None = None,
        grant: Grant | None = None,
    ) -> PresignedUrl:
        caller = as_caller(user)
        _check_upload_id(upload_id)
        check_expires_in(expires_in)
        fields: dict[str, Any] = {
            "bucket": bucket,
            "key": key,
            "upload_id": upload_id,
            "part_number": _check_part_number(part_number),
        }
        if expires_in is not None:
            fields["expires_in"] = expires_in
        request = self._multipart("presign", fields, caller, grant)
        return self._read(PresignedUrl.from_json, await self._call(request, caller))

    async def multipart_complete(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        parts: Sequence[Part],
        user: UserLike,
        *,
        grant: Grant | None = None,
    ) -> None:
        caller = as_caller(user)
        _check_upload_id(upload_id)
        fields = {"bucket": bucket, "key": key, "upload_id": upload_id, "parts": _parts(parts)}
        await self._call(self._multipart("complete", fields, caller, grant, False), caller)

    async def multipart_abort(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        user: UserLike,
        *,
        grant: Grant | None = None,
    ) -> None:
        caller = as_caller(user)
        _check_upload_id(upload_id)
        fields = {"bucket": bucket, "key": key, "upload_id": upload_id}
        await self._call(self._multipart("abort", fields, caller, grant), caller)

    async def delete_objects(
        self,
        bucket: str,
        user: UserLike,
        *,
        key: str | None = None,
        prefix: str | None = None,
        grant: Grant | None = None,
    ) -> int:
        caller = as_caller(user)
        body = await self._call(self._delete(bucket, key, prefix, caller, grant), caller)
        return self._read(lambda answer: int(answer["deleted"]), body)

    async def credentials(
        self,
        bucket: str,
        prefix: str,
        ops: Sequence[str],
        user: UserLike,
        *,
        duration: int | None = None,
        grant: Grant | None = None,
    ) -> TemporaryCredentials:
        caller = as_caller(user)
        request = self._credentials(bucket, prefix, ops, duration, caller, grant)
        return self._read(temporary_credentials, await self._call(request, caller))

    async def fence_buckets(self, user: UserLike | None = None) -> dict[str, Any]:
        caller = as_caller(user) if user is not None else None
        body = await self._call(_Request("GET", "/fence/buckets", metadata=True), caller)
        return self._read(_fence_buckets, body)

    async def _call(self, request: _Request, caller: Caller | None) -> Any:
        headers = self._bearer(caller, metadata=request.metadata)
        with self._guarded():
            answer = await self._exchange(request, headers)
            if answer.is_outage:
                self._outcome(answer)
        return self._outcome(answer)

    async def _exchange(self, request: _Request, headers: dict[str, str]) -> _Answer:
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
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                if self._retry_after_error(request, exc, attempt):
                    await asyncio.sleep(self._delay(attempt))
                    attempt += 1
                    continue
                raise self._failure(exc) from None
            answer = _answer(response)
            if self._retry_answer(request, answer, attempt):
                await asyncio.sleep(self._delay(attempt, answer))
                attempt += 1
                continue
            return answer


def _fence_buckets(body: Mapping[str, Any]) -> dict[str, Any]:
    s3, gs = body["S3_BUCKETS"], body["GS_BUCKETS"]
    if not isinstance(s3, dict) or not isinstance(gs, dict):
        raise TypeError("S3_BUCKETS and GS_BUCKETS must be objects")
    return {"S3_BUCKETS": dict(s3), "GS_BUCKETS": dict(gs)}
