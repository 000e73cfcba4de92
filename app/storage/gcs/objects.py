"""Cloud Storage JSON API object calls for one bucket as one identity, answered with the
store's status, so a caller can tell a refusal (403) from success.

``validate`` makes them with a downscoped token to learn whether Cloud Storage applies its
access boundary, and with the bucket's own account to remove what it wrote.
"""

from __future__ import annotations

from urllib.parse import quote

from app.storage.gcs.apis import GoogleApis
from app.storage.gcs.identity import AccessTokenProvider


class BearerToken:
    """An ``AccessTokenProvider`` for one token that cannot be refreshed (a downscoped one)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __repr__(self) -> str:
        return "BearerToken(<hidden>)"

    async def token(self, *, force_refresh: bool = False) -> str:
        return self._token


class ObjectCalls:
    """List, upload, read and delete objects of ``bucket`` as ``tokens``' identity.

    Each call answers with the store's HTTP status (and a read with the bytes as well); an
    outage (429, 5xx or no connection after retries) or a refused destination raises
    ``DependencyUnavailable`` whose message names the call and object, never a token.
    """

    def __init__(
        self,
        apis: GoogleApis,
        bucket: str,
        tokens: AccessTokenProvider,
        *,
        user_project: str | None = None,
    ) -> None:
        self.bucket = bucket
        self._apis = apis
        self._tokens = tokens
        self._user_project = user_project
        self._path = f"/storage/v1/b/{quote(bucket, safe='')}/o"

    async def list(self, prefix: str) -> int:
        """List at most one object whose name starts with ``prefix`` (``''``: the bucket)."""
        params = self._params({"prefix": prefix, "maxResults": "1", "fields": "kind"})
        answer = await self._apis.storage_request(
            f"listing {prefix or 'the whole bucket'} of {self.bucket}",
            "GET",
            self._path,
            self._tokens,
            params=params,
        )
        return answer.status_code

    async def upload(self, name: str, data: bytes) -> int:
        """Create (or replace) object ``name`` holding ``data``, in one media upload."""
        answer = await self._apis.storage_request(
            f"uploading {name} to {self.bucket}",
            "POST",
            "/upload" + self._path,
            self._tokens,
            params=self._params({"uploadType": "media", "name": name}),
            content=data,
        )
        return answer.status_code

    async def read(self, name: str) -> tuple[int, bytes]:
        """Object ``name``'s status and, when 200, its bytes (``b''`` otherwise)."""
        answer = await self._apis.storage_request(
            f"reading {name} of {self.bucket}",
            "GET",
            self._object_path(name),
            self._tokens,
            params=self._params({"alt": "media"}),
        )
        return answer.status_code, answer.content if answer.status_code == 200 else b""

    async def delete(self, name: str) -> int:
        """Delete object ``name``; Cloud Storage answers 204, or 404 when there is none."""
        answer = await self._apis.storage_request(
            f"deleting {name} of {self.bucket}",
            "DELETE",
            self._object_path(name),
            self._tokens,
            params=self._params({}),
        )
        return answer.status_code

    def _object_path(self, name: str) -> str:
        # An object name is one path segment of the JSON API: its slashes are escaped too.
        return f"{self._path}/{quote(name, safe='')}"

    def _params(self, params: dict[str, str]) -> dict[str, str]:
        if self._user_project:
            params["userProject"] = self._user_project
        return params
