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
from app.secrets.base import (
    AWS_SECRET_ARN,
    SecretPayload,
    SecretRef,
    StagedSecret,
    payload_from_json,
)

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

    # Rotation uses Secrets Manager's own staging labels: a new version is written as
    # AWSPENDING, and only after validation does AWSCURRENT move to it (the version it leaves
    # becomes AWSPREVIOUS, kept for rollback until a prune).

    async def stage(self, ref: SecretRef, payload: Mapping[str, str]) -> StagedSecret:
        client = await self._client_for(ref)
        body = json.dumps(dict(payload))
        try:
            try:
                response = await client.put_secret_value(
                    SecretId=ref.location, SecretString=body, VersionStages=["AWSPENDING"]
                )
            except ClientError as exc:
                if _code(exc) != "ResourceNotFoundException" or region_of(ref) is not None:
                    raise
                # A new secret's first version is current at once, so it starts with an empty
                # placeholder: nothing usable is current before validation, and promoting the
                # staged version is the same label move as for any later one.
                await client.create_secret(Name=ref.location, SecretString="{}")
                response = await client.put_secret_value(
                    SecretId=ref.location, SecretString=body, VersionStages=["AWSPENDING"]
                )
        except _SDK_ERRORS as exc:
            raise _translate(exc, ref) from None
        return StagedSecret(ref.raw, str(response["VersionId"]))

    async def promote(self, ref: SecretRef, staged: StagedSecret) -> None:
        client = await self._client_for(ref)
        try:
            current = _versions_with(await self._describe(client, ref), "AWSCURRENT")
            move: dict[str, str] = {"MoveToVersionId": str(staged.version)}
            if current and current[0] != staged.version:
                move["RemoveFromVersionId"] = current[0]
            await client.update_secret_version_stage(
                SecretId=ref.location, VersionStage="AWSCURRENT", **move
            )
            await client.update_secret_version_stage(
                SecretId=ref.location,
                VersionStage="AWSPENDING",
                RemoveFromVersionId=str(staged.version),
            )
        except _SDK_ERRORS as exc:
            raise _translate(exc, ref) from None

    async def discard(self, ref: SecretRef, staged: StagedSecret) -> None:
        client = await self._client_for(ref)
        try:
            # A version without labels is deprecated: Secrets Manager deletes it in time.
            await client.update_secret_version_stage(
                SecretId=ref.location,
                VersionStage="AWSPENDING",
                RemoveFromVersionId=str(staged.version),
            )
        except _SDK_ERRORS as exc:
            raise _translate(exc, ref) from None

    async def prune(self, ref: SecretRef, keep: StagedSecret) -> int:
        client = await self._client_for(ref)
        try:
            previous = [
                version
                for version in _versions_with(await self._describe(client, ref), "AWSPREVIOUS")
                if version != keep.version
            ]
            for version in previous:
                await client.update_secret_version_stage(
                    SecretId=ref.location, VersionStage="AWSPREVIOUS", RemoveFromVersionId=version
                )
        except _SDK_ERRORS as exc:
            raise _translate(exc, ref) from None
        return len(previous)

    async def remove(self, ref: SecretRef) -> None:
        client = await self._client_for(ref)
        try:
            # Without the recovery window: the name must be free for a bucket registered anew
            # under it, and a purge is meant for good.
            await client.delete_secret(SecretId=ref.location, ForceDeleteWithoutRecovery=True)
        except ClientError as exc:
            if _code(exc) != "ResourceNotFoundException":
                raise _translate(exc, ref) from None
        except _SDK_ERRORS as exc:
            raise _translate(exc, ref) from None

    @staticmethod
    async def _describe(client: Any, ref: SecretRef) -> dict[str, Any]:
        answer: dict[str, Any] = await client.describe_secret(SecretId=ref.location)
        return answer

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


def _versions_with(description: Mapping[str, Any], stage: str) -> list[str]:
    stages = description.get("VersionIdsToStages") or {}
    return [str(version) for version, labels in stages.items() if stage in (labels or [])]


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
