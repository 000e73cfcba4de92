"""The fence-config.yaml fallback: served while the registry is empty, gone once it is not."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from app.access.directory import BucketDirectory
from app.config import Settings
from app.db import Database
from app.errors import BucketNotFound, SecretNotFound
from app.fence_config.reader import parse_fence_config
from app.fence_config.source import (
    FenceConfigSecrets,
    FenceConfigSource,
)
from app.main import create_app
from app.registry.records import AuthMode, BucketStatus, Op, Provider
from app.registry.schemas import BucketCreate
from app.registry.service import Actor, RegistryService
from app.secrets.store import SecretStore
from app.storage.service import StorageService
from tests.migration.conftest import FIXTURE
from tests.support.arborist import ArboristStub
from tests.support.fence import FenceIssuer
from tests.support.moto import MotoServer
from tests.support.s3_gateway import S3Gateway

KEY_ID = "AKIAFALLBACKEXAMPLE1"
SECRET = "fallback-secret-value-0001"
PROGRAMS = "/programs"
PROJECT = "/programs/DEV/projects/ABC"


def fallback_yaml(gateway_url: str) -> str:
    return f"""
AWS_CREDENTIALS:
  gateway:
    aws_access_key_id: '{KEY_ID}'
    aws_secret_access_key: '{SECRET}'
  empty:
    aws_access_key_id: ''
    aws_secret_access_key: ''
S3_BUCKETS:
  yaml-data:
    cred: gateway
    region: us-east-1
    endpoint_url: '{gateway_url}'
  'yaml-run-[0-9]+':
    cred: gateway
    region: us-east-1
    endpoint_url: '{gateway_url}'
  yaml-keyless:
    cred: empty
    endpoint_url: '{gateway_url}'
  yaml-private:
    cred: gateway
    endpoint_url: 'http://10.9.8.7:9000'
ALLOWED_DATA_UPLOAD_BUCKETS: [yaml-data]
DATA_UPLOAD_BUCKET: yaml-data
"""


@pytest.fixture
def fallback(gateway: S3Gateway) -> FenceConfigSource:
    gateway.add_key(KEY_ID, SECRET)
    return FenceConfigSource(
        parse_fence_config(fallback_yaml(gateway.url)), endpoint_allowlist=["127.0.0.1"]
    )


@pytest.fixture
def s3(moto: MotoServer) -> Any:
    client = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1")
    for name in ("yaml-data", "yaml-run-7"):
        client.create_bucket(Bucket=name)
    return client


def test_records_follow_the_import_mapping(fallback: FenceConfigSource) -> None:
    record = fallback.get("yaml-data")

    assert record is not None
    assert (record.provider, record.auth_mode) == (Provider.S3_COMPATIBLE, AuthMode.STATIC)
    assert record.secret_ref == "fence-config://gateway"
    assert record.labels["gen3.fallback"] == "true" and record.version == 0
    assert record.data_upload_allowed and record.is_default_upload
    [binding] = record.bindings
    assert binding.resource_path == PROGRAMS and binding.prefix == ""
    assert binding.allowed_ops == {Op.READ, Op.DELETE, Op.WRITE, Op.MULTIPART}
    assert fallback.default_upload("ANY") is record
    # Same ids on every replica and restart.
    again = FenceConfigSource(fallback.config, endpoint_allowlist=["127.0.0.1"])
    assert again.get("yaml-data").id == record.id  # type: ignore[union-attr]


def test_regex_keys_are_served_per_matching_name_as_fence_does(
    fallback: FenceConfigSource,
) -> None:
    record = fallback.get("yaml-run-7")
    assert record is not None and record.name == "yaml-run-7"
    assert [b.allowed_ops for b in record.bindings] == [frozenset({Op.READ, Op.DELETE})]
    assert fallback.get("yaml-run-x") is None
    assert fallback.get("prefix-yaml-run-7") is None


def test_what_cannot_be_served_safely_is_refused(fallback: FenceConfigSource) -> None:
    keyless = fallback.get("yaml-keyless")
    assert keyless is not None and keyless.status is BucketStatus.SUSPENDED
    # A private endpoint outside the allow-list is not served at all.
    assert fallback.get("yaml-private") is None
    assert any("yaml-private" in problem for problem in fallback.problems)


def test_secrets_come_from_the_file_and_only_for_its_scheme(
    fallback: FenceConfigSource,
) -> None:
    payload = fallback.secret("fence-config://gateway")
    assert dict(payload) == {"access_key_id": KEY_ID, "secret_access_key": SECRET}
    assert SECRET not in repr(payload)
    for ref in ("fence-config://empty", "fence-config://nope", "file:///gateway"):
        with pytest.raises(SecretNotFound):
            fallback.secret(ref)


def test_the_whole_fixture_loads_as_a_fallback() -> None:
    fallback = FenceConfigSource(parse_fence_config(FIXTURE.read_text()))
    assert "commons-data" in fallback.names and "commons-gcs-data" not in fallback.names
    assert fallback.get("commons-sequencing-42") is not None


async def test_directory_serves_the_fallback_only_while_the_registry_is_empty(
    pg_url: str, fallback: FenceConfigSource, gateway: S3Gateway, s3: Any
) -> None:
    settings = Settings(database_url=pg_url, endpoint_allowlist=["127.0.0.1"])
    db = Database(settings)
    registry = RegistryService(db, endpoint_allowlist=["127.0.0.1"])
    directory = BucketDirectory(registry, ttl=60, max_entries=100, fallback=fallback)
    registry.listeners.append(directory.forget)
    secrets = SecretStore(settings)
    signing = StorageService(settings, FenceConfigSecrets(secrets, fallback))
    try:
        record = await directory.get("yaml-data")
        assert (await directory.default_upload("ABC")).name == "yaml-data"
        with pytest.raises(BucketNotFound) as missing:
            await directory.get("nope")
        assert missing.value.details == {"registry_empty": True}

        # The normal signing path, with the keys from the file.
        put = await signing.presign(record, "incoming/a.txt", Op.WRITE, 300)
        async with httpx.AsyncClient() as http:
            assert (await http.put(put.url, content=b"from the yaml")).status_code == 200
            get = await signing.presign(record, "incoming/a.txt", Op.READ, 300)
            assert (await http.get(get.url)).content == b"from the yaml"
        assert gateway.seen_access_keys == {KEY_ID}

        await registry.create_bucket(
            BucketCreate(name="first-registered", provider="aws", auth_mode="workload_identity"),
            Actor("admin"),
        )
        with pytest.raises(BucketNotFound) as gone:
            await directory.get("yaml-data")
        assert gone.value.details is None
        with pytest.raises(BucketNotFound):
            await directory.default_upload("ABC")
    finally:
        await signing.aclose()
        await secrets.aclose()
        await db.dispose()


async def test_without_a_fallback_an_empty_registry_says_so(pg_url: str) -> None:
    db = Database(Settings(database_url=pg_url))
    directory = BucketDirectory(RegistryService(db), ttl=60, max_entries=10)
    try:
        with pytest.raises(BucketNotFound) as missing:
            await directory.get("anything")
        assert missing.value.details == {"registry_empty": True}
    finally:
        await db.dispose()


# -- through the service (needs the container wiring described in docs/migration.md) ---------


@pytest.fixture
async def service(
    make_settings: Any,
    pg_url: str,
    tmp_path: Path,
    gateway: S3Gateway,
    s3: Any,
    arborist: ArboristStub,
) -> AsyncIterator[httpx.AsyncClient]:
    gateway.add_key(KEY_ID, SECRET)
    path = tmp_path / "fence-config.yaml"
    path.write_text(fallback_yaml(gateway.url))
    settings = make_settings(pg_url, fence_config=path, endpoint_allowlist="127.0.0.1")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://registry") as http:
            yield http


async def test_resolve_and_presign_serve_the_yaml_until_a_bucket_is_registered(
    service: httpx.AsyncClient, issuer: FenceIssuer, arborist: ArboristStub, gateway: S3Gateway
) -> None:
    arborist.grant("alice", "reader", PROGRAMS)
    arborist.grant("alice", "writer", PROGRAMS)
    arborist.grant("bob", "everything", PROJECT)
    alice = {"Authorization": f"Bearer {issuer.token('alice')}"}
    bob = {"Authorization": f"Bearer {issuer.token('bob')}"}

    resolved = await service.get("/resolve/yaml-data", headers=alice)
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["labels"]["gen3.fallback"] == "true"
    default = await service.get("/resolve?purpose=upload&owner_project=ABC", headers=alice)
    assert default.json()["name"] == "yaml-data"

    body = {"bucket": "yaml-data", "key": "incoming/b.bin", "op": "write"}
    signed = await service.post("/presign", json=body, headers=alice)
    assert signed.status_code == 200, signed.text
    async with httpx.AsyncClient() as http:
        assert (await http.put(signed.json()["url"], content=b"bytes via fallback")).is_success
        read = await service.post("/presign", json=body | {"op": "read"}, headers=alice)
        assert (await http.get(read.json()["url"])).content == b"bytes via fallback"
    # Fail closed: a grant on one project does not reach a bucket bound to /programs
    # (the fallback binds where a direct user's grant can be checked; imports bind "/").
    denied = await service.post("/presign", json=body | {"op": "read"}, headers=bob)
    assert denied.status_code == 403

    admin = {"Authorization": f"Bearer {issuer.token('admin')}"}
    created = await service.post(
        "/admin/buckets",
        json={"name": "first-registered", "provider": "aws", "auth_mode": "workload_identity"},
        headers=admin,
    )
    assert created.status_code == 201, created.text

    gone = await service.get("/resolve/yaml-data", headers=alice)
    assert gone.status_code == 404
    assert "details" not in gone.json()
    assert (await service.post("/presign", json=body, headers=alice)).status_code == 404


async def test_a_suspended_registration_is_never_served_from_the_yaml(
    service: httpx.AsyncClient, issuer: FenceIssuer, arborist: ArboristStub, gateway: S3Gateway
) -> None:
    arborist.grant("alice", "writer", PROGRAMS)
    alice = {"Authorization": f"Bearer {issuer.token('alice')}"}
    admin = {"Authorization": f"Bearer {issuer.token('admin')}"}
    body = {"bucket": "yaml-data", "key": "incoming/b.bin", "op": "write"}
    assert (await service.post("/presign", json=body, headers=alice)).status_code == 200

    # The same bucket registered, bound, then suspended: suspension wins over the YAML entry.
    registered = {
        "name": "yaml-data",
        "provider": "minio",
        "endpoint": gateway.url,
        "auth_mode": "static",
        "secret_ref": "aws-sm://gen3/bucket-registry/yaml-data",
    }
    assert (await service.post("/admin/buckets", json=registered, headers=admin)).status_code == 201
    binding = {"resource_path": PROGRAMS, "allowed_ops": {"write": True, "read": True}}
    bound = await service.post("/admin/buckets/yaml-data/bindings", json=binding, headers=admin)
    assert bound.status_code == 201
    assert (await service.delete("/admin/buckets/yaml-data", headers=admin)).status_code == 200

    refused = await service.post("/presign", json=body, headers=alice)
    assert refused.status_code == 403 and refused.json()["error"] == "bucket_suspended"
    resolved = await service.get("/resolve/yaml-data", headers=alice)
    assert resolved.json()["status"] == "suspended"
    assert "gen3.fallback" not in resolved.json()["labels"]
    default = await service.get("/resolve?purpose=upload&owner_project=ABC", headers=alice)
    assert default.status_code in (403, 404)
