"""SecretStore: routing by scheme, caching, single flight, invalidation, and no leaks."""

from __future__ import annotations

import asyncio
import json
import logging
import traceback
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import boto3
import pytest
from kubernetes_asyncio import client

from app.config import Settings
from app.errors import InvalidInput, SecretNotFound, SecretUnavailable
from app.secrets.aws_sm import AwsSecretsManagerResolver
from app.secrets.base import SecretPayload, SecretRef
from app.secrets.gcp_sm import GcpSecretManagerResolver
from app.secrets.k8s import KubernetesSecretResolver
from app.secrets.store import SecretStore
from app.secrets.vault import VaultResolver
from tests.secrets.conftest import FakeClock
from tests.secrets.stubs import GcpSecretManagerStub, KubernetesStub, VaultStub
from tests.support.moto import MotoServer

SECRET = "Sup3r-Secret-Value/never-logged"
CREDS = {"access_key_id": "AKIASTORE", "secret_access_key": SECRET}


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "secret_cache_ttl": 10.0,
        "secret_grace_period": 30.0,
        "file_secrets_dir": tmp_path,
    }
    values.update(overrides)
    return Settings(**values)


def write(path: Path, payload: Mapping[str, str]) -> str:
    path.write_text(json.dumps(dict(payload)))
    return f"file://{path}"


@pytest.fixture
async def store(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SecretStore]:
    secret_store = SecretStore(settings(tmp_path), clock=clock)
    yield secret_store
    await secret_store.aclose()


async def test_routes_each_scheme_to_its_backend(
    tmp_path: Path,
    moto: MotoServer,
    vault_stub: VaultStub,
    k8s_stub: KubernetesStub,
    gcp_stub: GcpSecretManagerStub,
):
    class Tokens:
        async def token(self, *, force_refresh: bool = False) -> str:
            return "ya29.valid-access-token"

    k8s_config = client.Configuration(host=k8s_stub.url)
    k8s_config.api_key = {"BearerToken": f"Bearer {k8s_stub.token}"}
    store = SecretStore(
        settings(tmp_path),
        {
            "aws_sm": AwsSecretsManagerResolver(endpoint_url=moto.url),
            "vault": VaultResolver(addr=vault_stub.url, token=vault_stub.root_token),
            "k8s": KubernetesSecretResolver(configuration=k8s_config),
            "gcp_sm": GcpSecretManagerResolver(endpoint=gcp_stub.url, token_provider=Tokens()),
        },
    )
    boto3.client("secretsmanager", endpoint_url=moto.url).create_secret(
        Name="routed", SecretString=json.dumps({"from": "aws"})
    )
    vault_stub.put("secret/routed", {"from": "vault"})
    k8s_stub.put("gen3", "routed", {"from": "k8s"})
    gcp_stub.add_version("p1", "routed", json.dumps({"from": "gcp"}).encode())
    file_ref = write(tmp_path / "routed.json", {"from": "file"})
    try:
        answers = {
            "aws-sm": await store.get("aws-sm://routed"),
            "vault": await store.get("vault://secret/routed"),
            "k8s": await store.get("k8s://gen3/routed"),
            "gcp-sm": await store.get("gcp-sm://projects/p1/secrets/routed"),
            "file": await store.get(file_ref),
        }
        assert {scheme: dict(payload) for scheme, payload in answers.items()} == {
            "aws-sm": {"from": "aws"},
            "vault": {"from": "vault"},
            "k8s": {"from": "k8s"},
            "gcp-sm": {"from": "gcp"},
            "file": {"from": "file"},
        }
        assert {s: stats.fetch_count for s, stats in store.backend_stats.items()} == {
            "aws-sm": 1,
            "vault": 1,
            "k8s": 1,
            "gcp-sm": 1,
            "file": 1,
        }
        assert store.fetch_count == 5
    finally:
        await store.aclose()


async def test_a_bare_arn_goes_to_the_default_backend_once_for_100_concurrent_misses(
    tmp_path: Path, moto: MotoServer
):
    arn = boto3.client("secretsmanager", endpoint_url=moto.url).create_secret(
        Name="hot", SecretString=json.dumps(CREDS)
    )["ARN"]
    store = SecretStore(
        settings(tmp_path), {"aws_sm": AwsSecretsManagerResolver(endpoint_url=moto.url)}
    )
    try:
        results = await asyncio.gather(*(store.get(arn, None) for _ in range(100)))
        assert all(result == CREDS for result in results)
        assert store.backend_stats["aws-sm"].fetch_count == 1
        assert store.cache.stats.loads == 1
        assert await store.get(arn, None) == CREDS
        assert store.backend_stats["aws-sm"].fetch_count == 1
    finally:
        await store.aclose()


async def test_invalidate_drops_every_version_of_a_ref(
    tmp_path: Path, vault_stub: VaultStub, clock: FakeClock
):
    vault_stub.put("secret/rotating", {"n": "1"})
    store = SecretStore(
        settings(tmp_path),
        {"vault": VaultResolver(addr=vault_stub.url, token=vault_stub.root_token)},
        clock=clock,
    )
    try:
        assert await store.get("vault://secret/rotating", None) == {"n": "1"}
        assert await store.get("vault://secret/rotating", "1") == {"n": "1"}
        vault_stub.put("secret/rotating", {"n": "2"})
        assert await store.get("vault://secret/rotating", None) == {"n": "1"}  # cached

        assert store.invalidate("vault://secret/rotating") == 2
        assert await store.get("vault://secret/rotating", None) == {"n": "2"}
        assert store.invalidate("vault://secret/unrelated") == 0
        assert store.backend_stats["vault"].fetch_count == 3
    finally:
        await store.aclose()


async def test_not_found_is_never_masked_by_a_stale_value(
    store: SecretStore, tmp_path: Path, clock: FakeClock
):
    path = tmp_path / "gone.json"
    raw = write(path, CREDS)
    assert await store.get(raw) == CREDS
    path.unlink()

    clock.advance(15)  # expired but within the grace period
    with pytest.raises(SecretNotFound, match="is not usable"):
        await store.get(raw)
    assert store.cache.stats.stale_served == 0
    assert store.backend_stats["file"].not_found == 1


async def test_put_writes_and_invalidates(store: SecretStore, tmp_path: Path):
    raw = write(tmp_path / "creds.json", CREDS)
    assert await store.get(raw) == CREDS

    assert await store.put(raw, {"access_key_id": "new", "secret_access_key": "x"}) is None
    assert (await store.get(raw))["access_key_id"] == "new"
    with pytest.raises(InvalidInput, match="does not accept writes"):
        await store.put("k8s://gen3/creds", CREDS)
    with pytest.raises(InvalidInput):
        await store.put("nonsense", CREDS)


async def test_stored_garbage_is_a_configuration_error(store: SecretStore):
    with pytest.raises(SecretNotFound, match="stored secret reference is invalid"):
        await store.get("s3://not-a-secret")
    with pytest.raises(SecretNotFound, match="not versioned"):
        await store.get("file:///etc/creds.json", "7")


async def test_backends_are_built_lazily_and_only_when_configured(tmp_path: Path):
    store = SecretStore(settings(tmp_path), factories={})
    try:
        with pytest.raises(SecretNotFound, match="no aws-sm secrets backend"):
            await store.get("aws-sm://anything")
    finally:
        await store.aclose()
    with pytest.raises(ValueError, match="unknown secrets backend"):
        SecretStore(settings(tmp_path, secrets_backend="keepass"))


async def test_plain_mappings_from_custom_backends_are_wrapped(tmp_path: Path):
    class Custom:
        closed = False

        async def get(self, ref: SecretRef, version: str | None) -> Mapping[str, str]:
            return dict(CREDS)

        async def aclose(self) -> None:
            Custom.closed = True

    store = SecretStore(settings(tmp_path), {"vault": Custom()})
    payload = await store.get("vault://secret/custom")
    assert isinstance(payload, SecretPayload)
    assert SECRET not in repr(payload)
    await store.aclose()
    assert Custom.closed


async def test_secret_values_never_reach_errors_or_logs(
    tmp_path: Path,
    clock: FakeClock,
    private_moto: MotoServer,
    vault_stub: VaultStub,
    caplog: pytest.LogCaptureFixture,
):
    """Drive every failure path the store has with payloads that hold SECRET."""
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="app")
    sm = boto3.client("secretsmanager", endpoint_url=private_moto.url)
    sm.create_secret(Name="good", SecretString=json.dumps(CREDS))
    sm.create_secret(Name="plaintext", SecretString=f"user=admin password={SECRET}")
    vault_stub.put("secret/nested", {"creds": {"secret_access_key": SECRET}})
    store = SecretStore(
        settings(tmp_path),
        {
            "aws_sm": AwsSecretsManagerResolver(
                endpoint_url=private_moto.url, read_timeout=1.0, max_attempts=1
            ),
            "vault": VaultResolver(addr=vault_stub.url, token=vault_stub.root_token),
        },
        clock=clock,
    )
    broken_file = tmp_path / "broken.json"
    broken_file.write_text(f'{{"secret_access_key": "{SECRET}"')
    errors: list[BaseException] = []

    async def attempt(raw: str, version: str | None = None) -> Any:
        try:
            return await store.get(raw, version)
        except (SecretNotFound, SecretUnavailable) as exc:
            errors.append(exc)
            return None

    try:
        good = await attempt("aws-sm://good")
        assert good == CREDS
        await attempt("aws-sm://plaintext")
        await attempt("vault://secret/nested")
        await attempt(f"file://{broken_file}")
        private_moto.stop()
        clock.advance(20)
        assert await attempt("aws-sm://good") == CREDS  # stale, within grace
        clock.advance(40)
        await attempt("aws-sm://good")  # outage past grace
    finally:
        await store.aclose()

    assert len(errors) == 4
    assert isinstance(errors[-1], SecretUnavailable)
    for error in errors:
        rendered = "".join(traceback.format_exception(error))
        assert SECRET not in rendered
        assert SECRET not in repr(error)
    for record in caplog.records:
        assert SECRET not in record.getMessage()
        assert SECRET not in repr(record.__dict__)
    assert any(record.levelno == logging.WARNING for record in caplog.records)
    assert SECRET not in repr(good) + str(good)
