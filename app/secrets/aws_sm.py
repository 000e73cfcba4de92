"""AWS Secrets Manager backend (``aws-sm://name``, ``aws-sm://<arn>`` or a bare ARN)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import Any

import aioboto3
import aiohttp
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from app.errors import SecretNotFound, SecretUnavailable
from app.secrets.base import AWS_SECRET_ARN, SecretPayload, SecretRef, payload_from_json

# Answers about the reference itself: retrying or waiting will not change them.
_NOT_FOUND_CODES = frozenset(
    {
        "ResourceNotFoundException",
        "AccessDeniedException",
        "DecryptionFailure",
        "InvalidRequestException",  # e.g. the secret is scheduled for deletion
        "InvalidParameterException",
    }
)


# What a Secrets Manager call can raise besides bugs; anything else propagates unchanged.
_SDK_ERRORS = (ClientError, BotoCoreError, aiohttp.ClientError, TimeoutError, OSError)


def region_of(ref: SecretRef) -> str | None:
    """The region named by an ARN reference, or None for a plain secret name."""
    match = AWS_SECRET_ARN.fullmatch(ref.location)
    return match.group("region") if match else None


class AwsSecretsManagerResolver:
    """Reads (and writes) JSON payloads in AWS Secrets Manager.

    One client per region, created on first use and kept until ``aclose``; creating a client
    costs milliseconds, so never per call. ``endpoint_url`` defaults to what botocore reads from
    ``AWS_ENDPOINT_URL_SECRETS_MANAGER`` / ``AWS_ENDPOINT_URL``.
    """

    def __init__(
        self,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        connect_timeout: float = 2.0,
        read_timeout: float = 5.0,
        max_attempts: int = 3,
        session: aioboto3.Session | None = None,
    ) -> None:
        self._region = region
        self._endpoint_url = endpoint_url
        self._session = session or aioboto3.Session()
        self._config = AioConfig(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "standard", "max_attempts": max_attempts},
        )
        self._clients: dict[str | None, Any] = {}
        self._lock = asyncio.Lock()
        self._stack = AsyncExitStack()

    async def get(self, ref: SecretRef, version: str | None) -> SecretPayload:
        client = await self._client_for(ref)
        params: dict[str, str] = {"SecretId": ref.location}
        if version is None:
            params["VersionStage"] = "AWSCURRENT"
        else:
            params["VersionId"] = version
        try:
            response = await client.get_secret_value(**params)
        except _SDK_ERRORS as exc:
            raise _translate(exc, ref) from None
        version_id = response.get("VersionId")
        if "SecretString" in response:
            return payload_from_json(response["SecretString"], ref, version_id)
        if "SecretBinary" in response:
            return payload_from_json(response["SecretBinary"], ref, version_id)
        raise SecretNotFound(f"secret {ref.raw} has no value")

    async def put(self, ref: SecretRef, payload: Mapping[str, str]) -> str | None:
        """Store ``payload`` as the new AWSCURRENT version, creating a named secret if missing."""
        client = await self._client_for(ref)
        body = json.dumps(dict(payload))
        try:
            try:
                response = await client.put_secret_value(SecretId=ref.location, SecretString=body)
            except ClientError as exc:
                if _code(exc) != "ResourceNotFoundException" or region_of(ref) is not None:
                    raise
                response = await client.create_secret(Name=ref.location, SecretString=body)
        except _SDK_ERRORS as exc:
            raise _translate(exc, ref) from None
        version_id = response.get("VersionId")
        return str(version_id) if version_id is not None else None

    async def aclose(self) -> None:
        async with self._lock:
            self._clients.clear()
            await self._stack.aclose()

    async def _client_for(self, ref: SecretRef) -> Any:
        region = region_of(ref) or self._region
        client = self._clients.get(region)
        if client is not None:
            return client
        async with self._lock:
            client = self._clients.get(region)
            if client is None:
                try:
                    client = await self._stack.enter_async_context(
                        self._session.client(
                            "secretsmanager",
                            region_name=region,
                            endpoint_url=self._endpoint_url,
                            config=self._config,
                        )
                    )
                except BotoCoreError as exc:
                    # e.g. no region configured anywhere: an outage of configuration, not of ref.
                    raise SecretUnavailable(
                        f"cannot create a Secrets Manager client: {type(exc).__name__}"
                    ) from None
                self._clients[region] = client
        return client


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _translate(exc: Exception, ref: SecretRef) -> SecretNotFound | SecretUnavailable:
    """A domain error for an SDK failure. Only the error code and HTTP status are kept: SDK
    messages are free text from the server and are never passed on."""
    if isinstance(exc, ClientError):
        code = _code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _NOT_FOUND_CODES:
            return SecretNotFound(f"secret {ref.raw} not found or not readable ({code})")
        return SecretUnavailable(
            f"AWS Secrets Manager failed for {ref.raw} ({code or 'error'}, HTTP {status})"
        )
    return SecretUnavailable(
        f"AWS Secrets Manager unreachable for {ref.raw} ({type(exc).__name__})"
    )
