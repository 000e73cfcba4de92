"""Long-lived STS clients for vending: one per endpoint, region and signing identity.

Building an aiobotocore client costs milliseconds of CPU (service model, endpoint rules) and a
new TLS connection on its first call; a vend per request that paid both would spend more on
setup than on AssumeRole. Clients here are built once and reused by every vend that asks the
same STS with the same keys, so their connections stay pooled.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession

from app.netguard import GuardedResolver, NetGuard
from app.storage.credentials import SigningCredentials
from app.storage.s3 import _remove_quietly, _write_temp_pem

# Static buckets each sign with their own keys, so each has a client; past this many, the
# least recently used one is closed.
MAX_CLIENTS = 64


@dataclass(frozen=True, slots=True)
class ClientKey:
    """What a client is bound to. Keys enter only as a digest: no secret is held as a key."""

    endpoint: str | None
    region: str
    keys_digest: str | None
    ca_digest: str | None


@dataclass(slots=True)
class _Entry:
    client: Any
    stack: AsyncExitStack
    ca_path: str | None


def client_key(
    endpoint: str | None, region: str, keys: SigningCredentials | None, ca_bundle_pem: str | None
) -> ClientKey:
    keys_digest = None
    if keys is not None:
        material = "\n".join((keys.access_key_id, keys.secret_access_key, keys.session_token or ""))
        keys_digest = hashlib.sha256(material.encode()).hexdigest()
    ca_digest = hashlib.sha256(ca_bundle_pem.encode()).hexdigest() if ca_bundle_pem else None
    return ClientKey(endpoint, region, keys_digest, ca_digest)


class StsClients:
    """STS clients kept across vends, keyed by ``ClientKey``, closed together by ``aclose``.

    ``trusted_endpoint`` is the registry's own STS (operator configuration): its name is
    trusted as the signing path trusts it; every other endpoint (a bucket's ``sts_endpoint``
    or ``endpoint``) passes the destination policy by name and on every connection.
    """

    def __init__(
        self,
        session: AioSession,
        netguard: NetGuard,
        *,
        trusted_endpoint: str | None = None,
        max_attempts: int = 3,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self._session = session
        self._netguard = netguard
        self._trusted = trusted_endpoint
        self._max_attempts = max_attempts
        self._max_clients = max_clients
        self._clients: OrderedDict[ClientKey, _Entry] = OrderedDict()
        self._lock = asyncio.Lock()
        self.created = 0

    def guard_for(self, endpoint: str | None) -> NetGuard:
        if endpoint is not None and endpoint == self._trusted:
            return self._netguard.trusting(endpoint)
        return self._netguard

    async def client(
        self,
        endpoint: str | None,
        region: str,
        keys: SigningCredentials | None = None,
        ca_bundle_pem: str | None = None,
    ) -> Any:
        """The client for this STS and these keys (None: the registry's own identity)."""
        key = client_key(endpoint, region, keys, ca_bundle_pem)
        entry = self._clients.get(key)
        if entry is not None:
            self._clients.move_to_end(key)
            return entry.client
        async with self._lock:
            entry = self._clients.get(key)
            if entry is None:
                entry = await self._build(endpoint, region, keys, ca_bundle_pem)
                self._clients[key] = entry
                self.created += 1
                while len(self._clients) > self._max_clients:
                    _, evicted = self._clients.popitem(last=False)
                    await _close(evicted)
        return entry.client

    async def _build(
        self,
        endpoint: str | None,
        region: str,
        keys: SigningCredentials | None,
        ca_bundle_pem: str | None,
    ) -> _Entry:
        guard = self.guard_for(endpoint)
        ca_path = await asyncio.to_thread(_write_temp_pem, ca_bundle_pem) if ca_bundle_pem else None
        config = AioConfig(
            retries={"mode": "standard", "total_max_attempts": self._max_attempts},
            connect_timeout=5,
            read_timeout=10,
            connector_args={"resolver": GuardedResolver(guard)},
        )
        key_args: dict[str, Any] = {}
        if keys is not None:
            key_args = {
                "aws_access_key_id": keys.access_key_id,
                "aws_secret_access_key": keys.secret_access_key,
                "aws_session_token": keys.session_token,
            }
        stack = AsyncExitStack()
        try:
            client = await stack.enter_async_context(
                self._session.create_client(
                    "sts",
                    region_name=region,
                    endpoint_url=endpoint,
                    config=config,
                    verify=ca_path,
                    **key_args,
                )
            )
        except BaseException:
            await stack.aclose()
            if ca_path is not None:
                await asyncio.to_thread(_remove_quietly, ca_path)
            raise
        return _Entry(client, stack, ca_path)

    def __len__(self) -> int:
        return len(self._clients)

    async def aclose(self) -> None:
        entries = list(self._clients.values())
        self._clients.clear()
        for entry in entries:
            await _close(entry)


async def _close(entry: _Entry) -> None:
    try:
        await entry.stack.aclose()
    finally:
        if entry.ca_path is not None:
            await asyncio.to_thread(_remove_quietly, entry.ca_path)
