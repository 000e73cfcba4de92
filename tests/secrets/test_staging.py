"""Credential rotation's backend half, per backend, through the secret store: a staged payload
is readable at its version but not current, promotion makes it current and keeps the one it
replaced, a discard forgets a refused one, and a prune removes what was kept."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import boto3
import pytest

from app.config import Settings
from app.errors import InvalidInput, SecretNotFound
from app.secrets.base import StagedSecret
from app.secrets.gcp_sm import GcpSecretManagerResolver
from app.secrets.k8s import OWNED_REF_LABEL, KubernetesSecretResolver
from app.secrets.owned import OwnedSecrets
from app.secrets.store import DEFAULT_FACTORIES, SecretStore
from app.secrets.vault import VaultResolver
from tests.secrets.stubs import GcpSecretManagerStub, KubernetesStub, VaultStub
from tests.secrets.test_k8s import configuration
from tests.support.moto import MotoServer

OLD = {"access_key_id": "AKIAOLD", "secret_access_key": "old-secret"}
NEW = {"access_key_id": "AKIANEW", "secret_access_key": "new-secret"}
BAD = {"access_key_id": "AKIABAD", "secret_access_key": "bad-secret"}


def _store(
    file_secrets_dir: Path | None = None, **factories: Callable[[Settings], Any]
) -> SecretStore:
    settings = Settings(
        secrets_backend="aws_sm", secret_cache_ttl=0, file_secrets_dir=file_secrets_dir
    )
    return SecretStore(settings, factories={**DEFAULT_FACTORIES, **factories})


@pytest.fixture
async def aws_store(
    moto: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[SecretStore]:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto.url)
    store = _store()
    yield store
    await store.aclose()


async def test_aws_staging_labels(aws_store: SecretStore, moto: MotoServer) -> None:
    sm = boto3.client("secretsmanager", endpoint_url=moto.url, region_name="us-east-1")
    owned = OwnedSecrets(None, default_backend="aws_sm").ref_for("/programs/P/projects/X", "b1")
    assert owned == "aws-sm://bucket-registry/self-service/projects/programs/P/projects/X/b1"
    name = owned.removeprefix("aws-sm://")

    first = await aws_store.stage(owned, OLD)
    # A new secret holds only an empty placeholder as current until a promotion.
    assert await aws_store.get(owned) == {}
    assert await aws_store.get(first.ref, first.version) == OLD
    await aws_store.promote(owned, first)
    assert await aws_store.get(owned) == OLD

    refused = await aws_store.stage(owned, BAD)
    assert "AWSPENDING" in sm.describe_secret(SecretId=name)["VersionIdsToStages"][refused.version]
    await aws_store.discard(owned, refused)
    stages = sm.describe_secret(SecretId=name)["VersionIdsToStages"]
    assert stages[refused.version] == [] and stages[first.version] == ["AWSCURRENT"]
    assert await aws_store.get(owned) == OLD

    second = await aws_store.stage(owned, NEW)
    await aws_store.promote(owned, second)
    stages = sm.describe_secret(SecretId=name)["VersionIdsToStages"]
    assert stages[second.version] == ["AWSCURRENT"]
    assert stages[first.version] == ["AWSPREVIOUS"]  # kept for rollback
    assert await aws_store.get(owned, first.version) == OLD
    assert await aws_store.prune(owned, second) == 1
    stages = sm.describe_secret(SecretId=name)["VersionIdsToStages"]
    assert not any("AWSPREVIOUS" in labels for labels in stages.values())
    assert await aws_store.get(owned) == NEW

    # Removal (the bucket is purged) deletes the secret at once, so its name is free again.
    await aws_store.remove(owned)
    with pytest.raises(SecretNotFound):
        await aws_store.get(owned)
    await aws_store.remove(owned)  # nothing left: not an error
    assert (await aws_store.stage(owned, NEW)).version


async def test_vault_kv2_versions(vault_stub: VaultStub, tmp_path: Path) -> None:
    jwt = tmp_path / "token"
    jwt.write_text(vault_stub.jwt)
    store = _store(vault=lambda s: VaultResolver(addr=vault_stub.url, jwt_path=jwt))
    try:
        owned = OwnedSecrets(
            "vault://secret/bucket-registry/self-service", default_backend="aws_sm"
        ).ref_for(None, "b1")
        assert owned == "vault://secret/bucket-registry/self-service/admin/b1"
        first = await store.stage(owned, OLD)
        assert first == StagedSecret(owned, "1")
        refused = await store.stage(owned, BAD)
        await store.discard(owned, refused)
        with pytest.raises(SecretNotFound):
            await store.get(refused.ref, refused.version)
        second = await store.stage(owned, NEW)
        await store.promote(owned, second)
        assert await store.get(owned, first.version) == OLD
        assert await store.get(owned, second.version) == NEW
        assert await store.prune(owned, second) == 1  # the refused one is gone already
        with pytest.raises(SecretNotFound):
            await store.get(owned, first.version)
        assert await store.get(owned, second.version) == NEW
        assert vault_stub.calls["destroy"] == 2
        await store.remove(owned)
        assert "secret/bucket-registry/self-service/admin/b1" not in vault_stub.secrets
        with pytest.raises(SecretNotFound):
            await store.get(owned, second.version)
        await store.remove(owned)
    finally:
        await store.aclose()


class _StubTokens:
    async def token(self, *, force_refresh: bool = False) -> str:
        return "ya29.valid-access-token"


async def test_gcp_secret_manager_versions(gcp_stub: GcpSecretManagerStub) -> None:
    store = _store(
        gcp_sm=lambda s: GcpSecretManagerResolver(
            endpoint=gcp_stub.url, token_provider=_StubTokens()
        )
    )
    try:
        owned = OwnedSecrets(
            "gcp-sm://projects/gen3-prod/secrets/bucket-registry", default_backend="aws_sm"
        ).ref_for("/programs/P/projects/X", "b1")
        assert owned.startswith("gcp-sm://projects/gen3-prod/secrets/bucket-registry-")
        store.check(owned, "1")
        secret = owned.rsplit("/", 1)[-1]
        key = ("gen3-prod", secret)

        # The secret is created on the first write, and labelled as the registry's.
        first = await store.stage(owned, OLD)
        assert first == StagedSecret(owned, "1")
        assert gcp_stub.labels[key] == {"managed-by": "bucket-registry"}
        assert await store.get(owned, first.version) == OLD
        # Staged is not current: no alias names it until a promotion.
        assert gcp_stub.aliases.get(key) is None
        await store.promote(owned, first)
        assert gcp_stub.aliases[key] == {"current": 1}
        assert await store.get(owned, "current") == OLD

        refused = await store.stage(owned, BAD)
        await store.discard(owned, refused)
        with pytest.raises(SecretNotFound):
            await store.get(refused.ref, refused.version)
        assert gcp_stub.state_by_version(*key)[int(refused.version or 0)] == "DESTROYED"

        second = await store.stage(owned, NEW)
        assert second.version == "3"
        assert await store.get(owned, "current") == OLD  # the new version is not current yet
        await store.promote(owned, second)
        assert gcp_stub.aliases[key] == {"current": 3}
        # The replaced version stays enabled for rollback.
        assert gcp_stub.state_by_version(*key)[1] == "ENABLED"
        assert await store.get(owned, first.version) == OLD
        assert await store.get(owned, second.version) == NEW

        assert await store.prune(owned, second) == 1  # the refused one is gone already
        assert gcp_stub.state_by_version(*key) == {1: "DESTROYED", 2: "DESTROYED", 3: "ENABLED"}
        with pytest.raises(SecretNotFound):
            await store.get(owned, first.version)
        assert await store.get(owned, "current") == NEW
        assert await store.prune(owned, second) == 0
        await store.remove(owned)
        assert key not in gcp_stub.secrets
        with pytest.raises(SecretNotFound):
            await store.get(owned, second.version)
        await store.remove(owned)
    finally:
        await store.aclose()


async def test_gcp_prune_after_a_rollback_keeps_the_pinned_version(
    gcp_stub: GcpSecretManagerStub,
) -> None:
    store = _store(
        gcp_sm=lambda s: GcpSecretManagerResolver(
            endpoint=gcp_stub.url, token_provider=_StubTokens()
        )
    )
    try:
        owned = "gcp-sm://projects/gen3-prod/secrets/rolled-back"
        first = await store.stage(owned, OLD)
        await store.promote(owned, first)
        second = await store.stage(owned, NEW)
        await store.promote(owned, second)
        # An admin pinned the bucket back to the first version; pruning keeps that one, even
        # though the alias named the newer one (a version with an alias cannot be destroyed).
        assert await store.prune(owned, first) == 1
        assert gcp_stub.aliases[("gen3-prod", "rolled-back")] == {"current": 1}
        assert gcp_stub.state_by_version("gen3-prod", "rolled-back") == {
            1: "ENABLED",
            2: "DESTROYED",
        }
    finally:
        await store.aclose()


async def test_files_get_one_file_per_version(tmp_path: Path) -> None:
    # File secrets live under a configured directory (the Kubernetes Secrets mount mode).
    store = _store(tmp_path)
    try:
        owned = OwnedSecrets(None, default_backend="file", file_dir=tmp_path).ref_for(
            "/programs/P/projects/X", "b1"
        )
        assert (
            owned
            == f"file://{tmp_path.resolve()}/self-service/projects/programs/P/projects/X/b1.json"
        )
        first = await store.stage(owned, OLD)
        second = await store.stage(owned, NEW)
        assert first.ref != second.ref and first.version is None
        assert await store.get(first.ref) == OLD and await store.get(second.ref) == NEW
        path = Path(second.ref.removeprefix("file://"))
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        refused = await store.stage(owned, BAD)
        await store.discard(owned, refused)
        assert not Path(refused.ref.removeprefix("file://")).exists()
        assert await store.prune(owned, second) == 1
        assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
        assert json.loads(path.read_text()) == NEW
        await store.remove(owned)
        assert list(path.parent.iterdir()) == []
    finally:
        await store.aclose()


async def test_kubernetes_gets_one_secret_object_per_version(k8s_stub: KubernetesStub) -> None:
    store = _store(k8s=lambda s: KubernetesSecretResolver(configuration=configuration(k8s_stub)))
    try:
        owned = OwnedSecrets(None, default_backend="k8s").ref_for("/programs/P/projects/X", "b1")
        assert owned.startswith("k8s://gen3-bucket-secrets/self-service-b1-")
        store.check(owned, None)
        namespace = "gen3-bucket-secrets"
        # Someone else's Secret in the namespace is never touched by a prune.
        k8s_stub.put(namespace, "unrelated", {"access_key_id": "other"})

        first = await store.stage(owned, OLD)
        second = await store.stage(owned, NEW)
        assert first.ref != second.ref and first.version is None
        assert first.ref.startswith(owned + "-") and second.ref.startswith(owned + "-")
        store.check(first.ref, None)
        # Each version is readable by its own reference; the owned one itself names nothing.
        assert await store.get(first.ref) == OLD and await store.get(second.ref) == NEW
        with pytest.raises(SecretNotFound):
            await store.get(owned)
        labels = k8s_stub.secrets[(namespace, second.ref.rsplit("/", 1)[-1])]["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "bucket-registry"
        assert OWNED_REF_LABEL in labels
        await store.promote(owned, second)
        assert await store.get(first.ref) == OLD  # kept for rollback

        refused = await store.stage(owned, BAD)
        await store.discard(owned, refused)
        with pytest.raises(SecretNotFound):
            await store.get(refused.ref)

        assert await store.prune(owned, second) == 1
        assert k8s_stub.names(namespace) == sorted(["unrelated", second.ref.rsplit("/", 1)[-1]])
        assert await store.get(second.ref) == NEW
        assert await store.prune(owned, second) == 0
        await store.remove(owned)
        assert k8s_stub.names(namespace) == ["unrelated"]
    finally:
        await store.aclose()


async def test_kubernetes_staging_without_rbac_is_refused_and_leaves_nothing(
    k8s_stub: KubernetesStub,
) -> None:
    store = _store(k8s=lambda s: KubernetesSecretResolver(configuration=configuration(k8s_stub)))
    try:
        k8s_stub.allowed_verbs["gen3-bucket-secrets"] = frozenset({"get"})
        owned = OwnedSecrets(None, default_backend="k8s").ref_for(None, "b1")
        with pytest.raises(SecretNotFound, match="not writable here"):
            await store.stage(owned, OLD)
        assert k8s_stub.names("gen3-bucket-secrets") == []
    finally:
        await store.aclose()


def test_owned_names_suit_flat_backends_and_never_collide() -> None:
    k8s = OwnedSecrets("k8s://bucket-secrets/keys", default_backend="aws_sm")
    gcp = OwnedSecrets("gcp-sm://projects/gen3-prod/secrets/keys", default_backend="aws_sm")
    refs = set()
    for project, bucket in (
        ("/programs/a/projects/b-c", "d"),
        ("/programs/a/projects/b", "c-d"),
        (None, "Upper.Case_bucket"),
        ("/programs/ü/projects/x", "y" * 300),
    ):
        for owned in (k8s, gcp):
            ref = owned.ref_for(project, bucket)
            store_ref = _store().parse(ref)  # a valid reference of its backend
            assert store_ref.raw == ref and owned.owns(ref)
            refs.add(ref)
    assert len(refs) == 8
    assert not k8s.owns("k8s://bucket-secrets/other") and not gcp.owns(None)
    with pytest.raises(ValueError, match="SELF_SERVICE_SECRETS"):
        OwnedSecrets("k8s://Bad_Namespace/keys", default_backend="aws_sm")
    gcp_default = OwnedSecrets(None, default_backend="gcp_sm", gcp_project="gen3-prod")
    assert gcp_default.prefix == "gcp-sm://projects/gen3-prod/secrets/bucket-registry"
    assert OwnedSecrets(None, default_backend="gcp_sm").prefix is None


async def test_backends_without_staging_are_refused() -> None:
    class ReadOnly:
        async def get(self, ref: Any, version: str | None) -> dict[str, str]:
            return {}

        async def aclose(self) -> None:
            return None

    store = _store(k8s=lambda s: ReadOnly())
    try:
        with pytest.raises(InvalidInput, match="cannot stage"):
            await store.stage("k8s://gen3/b1", OLD)
    finally:
        await store.aclose()
