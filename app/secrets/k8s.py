"""Kubernetes Secrets backend (``k8s://namespace/name``): the Secret's data keys are the payload."""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hashlib
import json
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.config.config_exception import ConfigException

from app.errors import SecretNotFound, SecretUnavailable
from app.secrets.base import SecretPayload, SecretRef, StagedSecret

_NOT_FOUND_STATUSES = frozenset({403, 404})
# Labels that tie each version object to the registry-owned reference it is a version of
# (label values are at most 63 characters, so the reference is named by a hash).
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "bucket-registry"
OWNED_REF_LABEL = "bucket-registry.gen3.org/owned-ref"


class KubernetesSecretResolver:
    """Reads v1 Secrets through the Kubernetes API.

    Without a ready ``configuration`` it loads the in-cluster service account when running in a
    pod (``KUBERNETES_SERVICE_HOST`` set), else the kubeconfig (``kubeconfig`` or the client's
    default location). A pinned ``version`` must equal the Secret's
    ``metadata.resourceVersion``; any update to the Secret (even to its labels) changes that,
    so pins are brittle and null (current) is the normal choice.
    """

    def __init__(
        self,
        *,
        configuration: client.Configuration | None = None,
        in_cluster: bool | None = None,
        kubeconfig: str | None = None,
        connect_timeout: float = 2.0,
        read_timeout: float = 5.0,
    ) -> None:
        self._configuration = configuration
        self._in_cluster = in_cluster
        self._kubeconfig = kubeconfig
        self._timeout = (connect_timeout, read_timeout)
        self._api_client: client.ApiClient | None = None
        self._core: client.CoreV1Api | None = None
        self._lock = asyncio.Lock()

    async def get(self, ref: SecretRef, version: str | None) -> SecretPayload:
        namespace, _, name = ref.location.partition("/")
        core = await self._core_api()
        status, body = await self._call(
            ref,
            lambda: core.read_namespaced_secret(
                name, namespace, _preload_content=False, _request_timeout=self._timeout
            ),
        )

        if status in _NOT_FOUND_STATUSES:
            raise SecretNotFound(f"secret {ref.raw} not found or not readable (HTTP {status})")
        if status != 200:
            raise SecretUnavailable(f"Kubernetes API failed for {ref.raw} (HTTP {status})")
        try:
            secret = json.loads(body)
        except ValueError:
            raise SecretUnavailable(
                f"Kubernetes API sent a malformed Secret for {ref.raw}"
            ) from None
        if not isinstance(secret, dict):
            raise SecretUnavailable(f"Kubernetes API sent a malformed Secret for {ref.raw}")

        resource_version = (secret.get("metadata") or {}).get("resourceVersion")
        if version is not None and version != resource_version:
            raise SecretNotFound(
                f"secret {ref.raw} is at resourceVersion {resource_version}, "
                f"not the pinned {version}"
            )
        return SecretPayload(_decode_data(secret.get("data") or {}, ref), resource_version)

    # Rotation: a Secret has no versions, so each staged payload is a Secret object of its own,
    # ``<name>-<random>``, labelled with the owned reference it belongs to; the bucket's
    # reference moves to it once it is validated, and a prune deletes the other objects.

    async def stage(self, ref: SecretRef, payload: Mapping[str, str]) -> StagedSecret:
        namespace, _, name = ref.location.partition("/")
        staged_name = f"{name}-{secrets.token_hex(4)}"
        body: Any = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": staged_name,
                "namespace": namespace,
                "labels": {MANAGED_BY_LABEL: MANAGED_BY, OWNED_REF_LABEL: owned_ref_label(ref)},
            },
            "data": {
                key: base64.b64encode(value.encode()).decode() for key, value in payload.items()
            },
        }
        core = await self._core_api()
        status, _ = await self._call(
            ref,
            lambda: core.create_namespaced_secret(
                namespace, body, _preload_content=False, _request_timeout=self._timeout
            ),
        )
        _check_write(ref, status, ok=(201,))
        return StagedSecret(f"k8s://{namespace}/{staged_name}", None)

    async def promote(self, ref: SecretRef, staged: StagedSecret) -> None:
        return None

    async def discard(self, ref: SecretRef, staged: StagedSecret) -> None:
        namespace, _, name = staged.ref.removeprefix("k8s://").partition("/")
        await self._delete(ref, namespace, name)

    async def prune(self, ref: SecretRef, keep: StagedSecret) -> int:
        namespace, _, _ = ref.location.partition("/")
        kept = keep.ref.removeprefix("k8s://").partition("/")[2]
        old = [name for name in await self._versions(ref) if name != kept]
        for name in old:
            await self._delete(ref, namespace, name)
        return len(old)

    async def remove(self, ref: SecretRef) -> None:
        namespace, _, _ = ref.location.partition("/")
        for name in await self._versions(ref):
            await self._delete(ref, namespace, name)

    async def _versions(self, ref: SecretRef) -> list[str]:
        """Names of the version objects of ``ref``, by label (all pages)."""
        namespace, _, _ = ref.location.partition("/")
        selector = f"{MANAGED_BY_LABEL}={MANAGED_BY},{OWNED_REF_LABEL}={owned_ref_label(ref)}"
        core = await self._core_api()
        names: list[str] = []
        token: str | None = None
        while True:
            extra: dict[str, Any] = {"_continue": token} if token else {}
            status, body = await self._call(
                ref,
                functools.partial(
                    core.list_namespaced_secret,
                    namespace,
                    label_selector=selector,
                    limit=100,
                    _preload_content=False,
                    _request_timeout=self._timeout,
                    **extra,
                ),
            )
            _check_write(ref, status, ok=(200,))
            listing = _json_object(body, ref)
            for item in listing.get("items") or []:
                name = (item.get("metadata") or {}).get("name") if isinstance(item, dict) else None
                if isinstance(name, str):
                    names.append(name)
            token = (listing.get("metadata") or {}).get("continue")
            if not token:
                return names

    async def _delete(self, ref: SecretRef, namespace: str, name: str) -> None:
        core = await self._core_api()
        status, _ = await self._call(
            ref,
            lambda: core.delete_namespaced_secret(
                name, namespace, _preload_content=False, _request_timeout=self._timeout
            ),
        )
        if status != 404:  # gone already
            _check_write(ref, status, ok=(200, 202))

    async def _call(
        self, ref: SecretRef, request: Callable[[], Awaitable[Any]]
    ) -> tuple[int, bytes]:
        # Raw responses on purpose: with preloading, the client logs the body at DEBUG and
        # builds a V1Secret whose repr carries the data.
        try:
            response = await request()
            try:
                return response.status, await response.read()
            finally:
                response.release()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise SecretUnavailable(
                f"Kubernetes API unreachable for {ref.raw} ({type(exc).__name__})"
            ) from None

    async def aclose(self) -> None:
        async with self._lock:
            if self._api_client is not None:
                await self._api_client.close()
            self._api_client = None
            self._core = None

    async def _core_api(self) -> client.CoreV1Api:
        if self._core is not None:
            return self._core
        async with self._lock:
            if self._core is None:
                configuration = self._configuration or await self._load_configuration()
                # The ApiClient opens an aiohttp session, which must belong to the running loop.
                self._api_client = client.ApiClient(configuration)
                self._core = client.CoreV1Api(self._api_client)
            return self._core

    async def _load_configuration(self) -> client.Configuration:
        configuration = client.Configuration()
        in_cluster = self._in_cluster
        if in_cluster is None:
            in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        try:
            if in_cluster:
                config.load_incluster_config(client_configuration=configuration)
            else:
                await config.load_kube_config(
                    config_file=self._kubeconfig, client_configuration=configuration
                )
        except (ConfigException, OSError) as exc:
            raise SecretUnavailable(
                f"no usable Kubernetes configuration ({type(exc).__name__})"
            ) from None
        return configuration


def owned_ref_label(ref: SecretRef) -> str:
    """The label value that marks a Secret as a version of ``ref``."""
    return hashlib.sha256(ref.raw.encode()).hexdigest()[:40]


def _check_write(ref: SecretRef, status: int, *, ok: tuple[int, ...]) -> None:
    if status in ok:
        return
    if status in (400, 403, 404, 409, 422):
        raise SecretNotFound(f"secret {ref.raw} is not writable here (HTTP {status})")
    raise SecretUnavailable(f"Kubernetes API failed for {ref.raw} (HTTP {status})")


def _json_object(body: bytes, ref: SecretRef) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise SecretUnavailable(f"Kubernetes API sent a malformed answer for {ref.raw}")
    return data


def _decode_data(data: Any, ref: SecretRef) -> dict[str, str]:
    if not isinstance(data, dict):
        raise SecretUnavailable(f"Kubernetes API sent a malformed Secret for {ref.raw}")
    decoded: dict[str, str] = {}
    for key, value in data.items():
        try:
            decoded[key] = base64.b64decode(value, validate=True).decode("utf-8")
        except (TypeError, binascii.Error, UnicodeDecodeError):
            raise SecretNotFound(f"secret {ref.raw} key {key!r} is not UTF-8 text") from None
    return decoded
