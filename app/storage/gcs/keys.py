"""Who produces a V4 signature: a service-account key in memory, or IAM signBlob."""

from __future__ import annotations

import json
from typing import Any, Protocol

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from app.config import Settings
from app.errors import SecretNotFound
from app.registry.records import BucketRecord
from app.storage.credentials import SecretSource
from app.storage.gcs.apis import GoogleApis
from app.storage.gcs.identity import AccessTokenProvider


class AsyncSigningRequired(RuntimeError):
    """``presign`` was called on a signer whose signatures come from a network call.

    A programming error, not a caller's: the signing path must use ``apresign``.
    """


class BlobSigner(Protocol):
    """Produces RSA-SHA256 signatures as one service account."""

    @property
    def email(self) -> str: ...

    def sign(self, blob: bytes) -> bytes:
        """Sign without I/O, or raise ``AsyncSigningRequired``."""
        ...

    async def asign(self, blob: bytes) -> bytes: ...


class ServiceAccountKey:
    """A service-account key held in memory; signs locally."""

    def __init__(
        self,
        email: str,
        private_key: rsa.RSAPrivateKey,
        *,
        key_id: str | None = None,
        project_id: str | None = None,
    ) -> None:
        self._email = email
        self._private_key = private_key
        self.key_id = key_id
        self.project_id = project_id

    def __repr__(self) -> str:
        return f"ServiceAccountKey(email={self._email!r}, key_id={self.key_id!r})"

    @property
    def email(self) -> str:
        return self._email

    def sign(self, blob: bytes) -> bytes:
        return self._private_key.sign(blob, padding.PKCS1v15(), hashes.SHA256())

    async def asign(self, blob: bytes) -> bytes:
        return self.sign(blob)


class IamBlobSigner:
    """Signs as ``email`` through the IAM Credentials ``signBlob`` API."""

    def __init__(self, email: str, apis: GoogleApis, tokens: AccessTokenProvider) -> None:
        self._email = email
        self._apis = apis
        self._tokens = tokens

    def __repr__(self) -> str:
        return f"IamBlobSigner(email={self._email!r})"

    @property
    def email(self) -> str:
        return self._email

    def sign(self, blob: bytes) -> bytes:
        raise AsyncSigningRequired(
            f"{self._email} signs through the IAM signBlob API; use apresign, not presign"
        )

    async def asign(self, blob: bytes) -> bytes:
        return await self._apis.sign_blob(self._email, blob, self._tokens)


def parse_service_account_key(key_json: str, ref: str) -> tuple[ServiceAccountKey, dict[str, Any]]:
    """The signing key and the parsed JSON of a service-account key file.

    Errors say what is wrong with the secret, never what it contains.
    """

    def unusable(reason: str) -> SecretNotFound:
        return SecretNotFound(f"secret {ref} does not hold a usable service-account key: {reason}")

    try:
        info = json.loads(key_json)
    except ValueError:
        raise unusable("service_account_key_json is not JSON") from None
    if not isinstance(info, dict):
        raise unusable("service_account_key_json is not a JSON object")
    if info.get("type", "service_account") != "service_account":
        raise unusable("its type is not service_account")
    missing = [
        name for name in ("client_email", "private_key") if not isinstance(info.get(name), str)
    ]
    if missing:
        raise unusable(f"it lacks {', '.join(missing)}")
    try:
        private_key = serialization.load_pem_private_key(
            info["private_key"].encode("utf-8"), password=None
        )
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise unusable("private_key is not an unencrypted PEM private key") from None
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise unusable("private_key is not an RSA key")
    key = ServiceAccountKey(
        info["client_email"],
        private_key,
        key_id=info.get("private_key_id"),
        project_id=info.get("project_id"),
    )
    return key, info


async def service_account_key_json(secrets: SecretSource, bucket: BucketRecord) -> str:
    """The ``service_account_key_json`` a static gcp bucket's secret holds (SecretNotFound
    naming the reference, never the value, when there is none)."""
    ref = bucket.secret_ref
    if not ref:
        raise SecretNotFound(f"bucket {bucket.name} uses static keys but has no secret_ref")
    payload = await secrets.get(ref, bucket.secret_version)
    key_json = payload.get("service_account_key_json")
    if not key_json:
        raise SecretNotFound(f"secret {ref} lacks service_account_key_json")
    return key_json


def token_endpoint_of(info: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """``info`` asking the operator's token endpoint, whatever the key file's ``token_uri``
    says: a key submitted by a project member must not choose where the registry sends it."""
    return {**info, "token_uri": settings.gcp_oauth_token_endpoint}
