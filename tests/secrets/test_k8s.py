"""Kubernetes Secrets backend through kubernetes-asyncio against a stub API server."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from kubernetes_asyncio import client

from app.errors import SecretNotFound, SecretUnavailable
from app.secrets.base import SecretRef, parse_secret_ref
from app.secrets.k8s import KubernetesSecretResolver
from tests.secrets.stubs import KubernetesStub

S3_KEYS = {
    "access_key_id": "AKIAK8SEXAMPLE",
    "secret_access_key": "k8s-secret-value-123",
    "ca_bundle_pem": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
}


def ref(raw: str) -> SecretRef:
    return parse_secret_ref(raw, "aws_sm")


def configuration(stub: KubernetesStub, token: str | None = None) -> client.Configuration:
    config = client.Configuration(host=stub.url)
    config.api_key = {"BearerToken": f"Bearer {token or stub.token}"}
    return config


@pytest.fixture
async def resolver(k8s_stub: KubernetesStub) -> AsyncIterator[KubernetesSecretResolver]:
    backend = KubernetesSecretResolver(configuration=configuration(k8s_stub))
    yield backend
    await backend.aclose()


async def test_data_keys_are_the_payload_keys(
    k8s_stub: KubernetesStub, resolver: KubernetesSecretResolver
):
    version = k8s_stub.put("gen3", "bucket-creds", S3_KEYS)

    payload = await resolver.get(ref("k8s://gen3/bucket-creds"), None)

    assert payload == S3_KEYS
    assert payload.version == version


async def test_a_pinned_resource_version_must_match(
    k8s_stub: KubernetesStub, resolver: KubernetesSecretResolver
):
    old = k8s_stub.put("gen3", "pinned", S3_KEYS)
    assert await resolver.get(ref("k8s://gen3/pinned"), old) == S3_KEYS

    new = k8s_stub.put("gen3", "pinned", {"access_key_id": "other", "secret_access_key": "x"})
    with pytest.raises(SecretNotFound, match=f"at resourceVersion {new}, not the pinned {old}"):
        await resolver.get(ref("k8s://gen3/pinned"), old)


async def test_missing_and_forbidden_secrets_are_not_found(
    k8s_stub: KubernetesStub, resolver: KubernetesSecretResolver
):
    k8s_stub.forbidden_namespaces.add("kube-system")
    with pytest.raises(SecretNotFound, match="HTTP 404"):
        await resolver.get(ref("k8s://gen3/nope"), None)
    with pytest.raises(SecretNotFound, match="HTTP 403"):
        await resolver.get(ref("k8s://kube-system/admin-token"), None)


async def test_server_errors_and_bad_credentials_are_unavailable(k8s_stub: KubernetesStub):
    k8s_stub.put("gen3", "creds", S3_KEYS)
    wrong = KubernetesSecretResolver(configuration=configuration(k8s_stub, token="wrong"))
    right = KubernetesSecretResolver(configuration=configuration(k8s_stub))
    try:
        with pytest.raises(SecretUnavailable, match="HTTP 401"):
            await wrong.get(ref("k8s://gen3/creds"), None)
        k8s_stub.fail_with = 500
        with pytest.raises(SecretUnavailable, match="HTTP 500"):
            await right.get(ref("k8s://gen3/creds"), None)
    finally:
        await wrong.aclose()
        await right.aclose()


async def test_an_unreachable_or_slow_api_server_is_unavailable(k8s_stub: KubernetesStub):
    k8s_stub.put("gen3", "creds", S3_KEYS)
    backend = KubernetesSecretResolver(configuration=configuration(k8s_stub), read_timeout=0.2)
    try:
        k8s_stub.delay = 0.5
        with pytest.raises(SecretUnavailable, match="TimeoutError"):
            await backend.get(ref("k8s://gen3/creds"), None)
        k8s_stub.delay = 0.0
        k8s_stub.stop()
        with pytest.raises(SecretUnavailable, match="unreachable"):
            await backend.get(ref("k8s://gen3/creds"), None)
    finally:
        await backend.aclose()


async def test_loads_a_kubeconfig_when_not_in_a_cluster(k8s_stub: KubernetesStub, tmp_path: Path):
    k8s_stub.put("gen3", "creds", S3_KEYS)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "stub", "cluster": {"server": k8s_stub.url}}],
                "users": [{"name": "sa", "user": {"token": k8s_stub.token}}],
                "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "sa"}}],
                "current-context": "stub",
            }
        )
    )
    backend = KubernetesSecretResolver(in_cluster=False, kubeconfig=str(kubeconfig))
    try:
        assert await backend.get(ref("k8s://gen3/creds"), None) == S3_KEYS
    finally:
        await backend.aclose()


async def test_a_missing_kubeconfig_is_unavailable(tmp_path: Path):
    backend = KubernetesSecretResolver(in_cluster=False, kubeconfig=str(tmp_path / "absent"))
    try:
        with pytest.raises(SecretUnavailable, match="no usable Kubernetes configuration"):
            await backend.get(ref("k8s://gen3/creds"), None)
    finally:
        await backend.aclose()


async def test_no_secret_reaches_the_logs_even_at_debug(
    k8s_stub: KubernetesStub,
    resolver: KubernetesSecretResolver,
    caplog: pytest.LogCaptureFixture,
):
    k8s_stub.put("gen3", "creds", S3_KEYS)
    with caplog.at_level(logging.DEBUG):
        payload = await resolver.get(ref("k8s://gen3/creds"), None)
    assert payload["secret_access_key"] == "k8s-secret-value-123"
    assert "k8s-secret-value-123" not in caplog.text
    # Nor in base64, as the API sends it.
    assert "azhzLXNlY3JldC12YWx1ZS0xMjM" not in caplog.text
