"""HashiCorp Vault KV v2 backend (``vault://mount/path``), authenticated by a static token or
by the Kubernetes auth method with the pod's service-account token."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.errors import SecretNotFound, SecretUnavailable
from app.secrets.base import SecretPayload, SecretRef, StagedSecret, payload_from_mapping

log = logging.getLogger(__name__)

DEFAULT_JWT_PATH = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")

# A renewal that pushes the expiry out by less than this (Vault rounds TTLs to seconds) did not
# really extend the token.
_MIN_EXTENSION = 5.0


@dataclass(slots=True)
class _Lease:
    token: str = field(repr=False)
    obtained_at: float
    duration: float  # seconds; 0 means the token never expires
    renewable: bool

    @property
    def expires_at(self) -> float:
        return self.obtained_at + self.duration if self.duration > 0 else float("inf")

    def due(self, now: float, fraction: float) -> bool:
        return self.duration > 0 and now >= self.obtained_at + self.duration * fraction

    def expired(self, now: float) -> bool:
        return now >= self.expires_at


class _RenewalFailed(Exception):
    pass


class VaultResolver:
    """Reads JSON-object payloads from a KV v2 mount over one shared HTTP client.

    With ``token`` set, that token is used as is. Otherwise the resolver logs in with the
    Kubernetes auth method (``role`` + the JWT at ``jwt_path``, re-read at every login because
    projected tokens rotate), renews its token once ``renew_fraction`` of the lease has passed,
    and logs in again when renewal fails, the lease can no longer be extended, or Vault answers
    403 to a read (the token was revoked). The token never appears in logs or errors.
    """

    def __init__(
        self,
        *,
        addr: str,
        token: str | None = None,
        role: str = "bucket-registry",
        auth_mount: str = "kubernetes",
        jwt_path: Path = DEFAULT_JWT_PATH,
        namespace: str | None = None,
        connect_timeout: float = 2.0,
        read_timeout: float = 5.0,
        verify: bool | str = True,
        renew_fraction: float = 2 / 3,
        clock: Callable[[], float] = time.monotonic,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        if not 0 < renew_fraction < 1:
            raise ValueError("renew_fraction must be in (0, 1)")
        self._static_token = token or None
        self._role = role
        self._auth_mount = auth_mount.strip("/")
        self._jwt_path = jwt_path
        self._renew_fraction = renew_fraction
        self._clock = clock
        headers = {"X-Vault-Request": "true"}
        if namespace:
            headers["X-Vault-Namespace"] = namespace
        self._owns_client = http_client is None
        self._http = http_client or httpx.AsyncClient(
            base_url=addr.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            verify=verify,
        )
        self._lease: _Lease | None = None
        self._auth_lock = asyncio.Lock()
        self.logins = 0
        self.renewals = 0

    async def get(self, ref: SecretRef, version: str | None) -> SecretPayload:
        mount, _, path = ref.location.partition("/")
        params = {"version": version} if version is not None else None
        token = await self._token()
        response = await self._send(ref, "GET", f"/v1/{mount}/data/{path}", token, params=params)
        if response.status_code == 403 and self._static_token is None:
            # A revoked or expired token looks like a policy denial; only a fresh login tells.
            self._forget(token)
            token = await self._token()
            response = await self._send(
                ref, "GET", f"/v1/{mount}/data/{path}", token, params=params
            )

        status = response.status_code
        if status in (400, 403, 404):
            raise SecretNotFound(f"secret {ref.raw} not found or not readable (HTTP {status})")
        if status != 200:
            raise SecretUnavailable(f"Vault failed for {ref.raw} (HTTP {status})")
        body = _json(response, f"Vault sent a malformed answer for {ref.raw}")
        data = body.get("data")
        if not isinstance(data, dict) or data.get("data") is None:
            raise SecretNotFound(f"secret {ref.raw} has no data at that version")
        metadata = data.get("metadata") or {}
        read_version = metadata.get("version") if isinstance(metadata, dict) else None
        return payload_from_mapping(
            data["data"], ref, str(read_version) if read_version is not None else None
        )

    # Rotation uses KV v2 versions. A write is the latest version at once, but buckets read
    # registry-owned secrets by pinned version only, so a staged version is used by nothing
    # until validation moves the bucket's pin to it; a refused one is destroyed.

    async def stage(self, ref: SecretRef, payload: Mapping[str, str]) -> StagedSecret:
        mount, _, path = ref.location.partition("/")
        response = await self._call(
            ref, "POST", f"/v1/{mount}/data/{path}", {"data": dict(payload)}
        )
        self._check_write(ref, response)
        data = _json(response, f"Vault sent a malformed write answer for {ref.raw}").get("data")
        version = data.get("version") if isinstance(data, dict) else None
        if not isinstance(version, int):
            raise SecretUnavailable(f"Vault named no version for the write to {ref.raw}")
        return StagedSecret(ref.raw, str(version))

    async def promote(self, ref: SecretRef, staged: StagedSecret) -> None:
        return None

    async def discard(self, ref: SecretRef, staged: StagedSecret) -> None:
        await self._destroy(ref, [int(str(staged.version))])

    async def prune(self, ref: SecretRef, keep: StagedSecret) -> int:
        mount, _, path = ref.location.partition("/")
        response = await self._call(ref, "GET", f"/v1/{mount}/metadata/{path}")
        self._check_write(ref, response)
        data = _json(response, f"Vault sent malformed metadata for {ref.raw}").get("data")
        versions = data.get("versions") if isinstance(data, dict) else None
        if not isinstance(versions, dict):
            raise SecretUnavailable(f"Vault sent malformed metadata for {ref.raw}")
        old = sorted(
            int(number)
            for number, info in versions.items()
            if str(number) != str(keep.version)
            and str(number).isdigit()
            and not (isinstance(info, dict) and info.get("destroyed"))
        )
        if old:
            await self._destroy(ref, old)
        return len(old)

    async def remove(self, ref: SecretRef) -> None:
        # Deleting the metadata destroys every version and the key's history.
        mount, _, path = ref.location.partition("/")
        response = await self._call(ref, "DELETE", f"/v1/{mount}/metadata/{path}")
        if response.status_code != 404:
            self._check_write(ref, response)

    async def _destroy(self, ref: SecretRef, versions: list[int]) -> None:
        mount, _, path = ref.location.partition("/")
        response = await self._call(
            ref, "POST", f"/v1/{mount}/destroy/{path}", {"versions": versions}
        )
        self._check_write(ref, response)

    async def _call(
        self, ref: SecretRef, method: str, url: str, body: dict[str, Any] | None = None
    ) -> httpx.Response:
        token = await self._token()
        response = await self._send(ref, method, url, token, json=body)
        if response.status_code == 403 and self._static_token is None:
            self._forget(token)
            response = await self._send(ref, method, url, await self._token(), json=body)
        return response

    @staticmethod
    def _check_write(ref: SecretRef, response: httpx.Response) -> None:
        status = response.status_code
        if status in (400, 403, 404):
            raise SecretNotFound(f"secret {ref.raw} is not writable here (HTTP {status})")
        if status not in (200, 204):
            raise SecretUnavailable(f"Vault failed for {ref.raw} (HTTP {status})")

    async def aclose(self) -> None:
        self._lease = None
        if self._owns_client:
            await self._http.aclose()

    async def _token(self) -> str:
        if self._static_token is not None:
            return self._static_token
        lease = self._lease
        if lease is not None and not lease.due(self._clock(), self._renew_fraction):
            return lease.token
        async with self._auth_lock:
            lease = self._lease
            now = self._clock()
            if lease is not None and not lease.due(now, self._renew_fraction):
                return lease.token
            if lease is not None and lease.renewable and not lease.expired(now):
                try:
                    self._lease = await self._renew(lease)
                    return self._lease.token
                except _RenewalFailed:
                    log.info("vault token renewal failed; logging in again")
            self._lease = await self._login()
            return self._lease.token

    def _forget(self, token: str) -> None:
        if self._lease is not None and self._lease.token == token:
            self._lease = None

    async def _login(self) -> _Lease:
        try:
            jwt = (await asyncio.to_thread(self._jwt_path.read_text)).strip()
        except OSError as exc:
            raise SecretUnavailable(
                f"cannot read the service-account token for Vault login ({type(exc).__name__})"
            ) from None
        try:
            response = await self._http.post(
                f"/v1/auth/{self._auth_mount}/login", json={"role": self._role, "jwt": jwt}
            )
        except httpx.HTTPError as exc:
            raise SecretUnavailable(f"Vault unreachable for login ({type(exc).__name__})") from None
        if response.status_code != 200:
            raise SecretUnavailable(f"Vault login refused (HTTP {response.status_code})")
        lease = self._lease_from(response, "login")
        self.logins += 1
        return lease

    async def _renew(self, lease: _Lease) -> _Lease:
        try:
            response = await self._http.post(
                "/v1/auth/token/renew-self", headers={"X-Vault-Token": lease.token}, json={}
            )
        except httpx.HTTPError:
            raise _RenewalFailed from None
        if response.status_code != 200:
            raise _RenewalFailed
        try:
            renewed = self._lease_from(response, "renewal")
        except SecretUnavailable:
            raise _RenewalFailed from None
        if renewed.expires_at < lease.expires_at + _MIN_EXTENSION:
            # The token hit its max TTL: renewing again cannot help, so log in at the next due.
            renewed.renewable = False
        self.renewals += 1
        return renewed

    def _lease_from(self, response: httpx.Response, what: str) -> _Lease:
        body = _json(response, f"Vault sent a malformed {what} answer")
        auth = body.get("auth")
        if not isinstance(auth, dict) or not isinstance(auth.get("client_token"), str):
            raise SecretUnavailable(f"Vault sent no token in its {what} answer")
        return _Lease(
            token=auth["client_token"],
            obtained_at=self._clock(),
            duration=float(auth.get("lease_duration") or 0),
            renewable=bool(auth.get("renewable")),
        )

    async def _send(
        self,
        ref: SecretRef,
        method: str,
        url: str,
        token: str,
        *,
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
    ) -> httpx.Response:
        try:
            return await self._http.request(
                method, url, params=params, json=json, headers={"X-Vault-Token": token}
            )
        except httpx.HTTPError as exc:
            raise SecretUnavailable(
                f"Vault unreachable for {ref.raw} ({type(exc).__name__})"
            ) from None


def _json(response: httpx.Response, message: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        raise SecretUnavailable(message) from None
    if not isinstance(body, dict):
        raise SecretUnavailable(message)
    return body
