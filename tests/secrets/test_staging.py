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
from app.secrets.owned import OwnedSecrets
from app.secrets.store import DEFAULT_FACTORIES, SecretStore
from app.secrets.vault import VaultResolver
from tests.secrets.stubs import VaultStub
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
    finally:
        await store.aclose()


async def test_backends_without_staging_are_refused(tmp_path: Path) -> None:
    store = _store()
    try:
        with pytest.raises(InvalidInput, match="cannot stage"):
            await store.stage("k8s://gen3/b1", OLD)
    finally:
        await store.aclose()
