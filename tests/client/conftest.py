"""The service running for real (uvicorn on 127.0.0.1, PostgreSQL, Arborist stub, JWKS issuer,
moto behind a SigV4-checking gateway) for the Fence client to talk to over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from tests.support.arborist import ArboristStub
from tests.support.fence import FenceIssuer
from tests.support.live import LiveServer
from tests.support.moto import MotoServer
from tests.support.s3_gateway import S3Gateway

PROJECT = "/programs/DEV/projects/ABC"
BUCKET = "client-data"
KEY_ID = "AKIACLIENTTESTKEY001"
SECRET = "client-test-secret-value-0001"


@pytest.fixture
def gateway(gateway: S3Gateway) -> S3Gateway:
    gateway.add_key(KEY_ID, SECRET)
    return gateway


@pytest.fixture
def live(
    make_settings: Any, pg_url: str, tmp_path: Path, gateway: S3Gateway
) -> Iterator[LiveServer]:
    """The service, with file secrets, an empty registry and 127.0.0.1 allow-listed."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "client-data.json").write_text(
        json.dumps({"access_key_id": KEY_ID, "secret_access_key": SECRET})
    )
    settings = make_settings(
        pg_url,
        secrets_backend="file",
        file_secrets_dir=secrets,
        endpoint_allowlist="127.0.0.1",
    )
    server = LiveServer(settings).start()
    server.secrets_dir = secrets  # type: ignore[attr-defined]
    yield server
    server.stop()


@dataclass
class Commons:
    url: str
    issuer: FenceIssuer
    arborist: ArboristStub
    gateway: S3Gateway

    def token(self, user: str) -> str:
        return self.issuer.token(user)

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.issuer.token('admin')}"}
        return httpx.request(method, self.url + path, headers=headers, timeout=10, **kwargs)


@pytest.fixture
def commons(
    live: LiveServer,
    issuer: FenceIssuer,
    arborist: ArboristStub,
    gateway: S3Gateway,
    moto: MotoServer,
) -> Commons:
    """One registered MinIO-style bucket, bound to a project; alice may read and write it."""
    boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    commons = Commons(live.url, issuer, arborist, gateway)
    secret_ref = f"file://{live.secrets_dir}/client-data.json"  # type: ignore[attr-defined]
    created = commons.admin(
        "POST",
        "/admin/buckets",
        json={
            "name": BUCKET,
            "provider": "minio",
            "endpoint": gateway.url,
            "auth_mode": "static",
            "secret_ref": secret_ref,
            "owner_project": "ABC",
            "data_upload_allowed": True,
            "is_default_upload": True,
        },
    )
    assert created.status_code == 201, created.text
    bound = commons.admin(
        "POST",
        f"/admin/buckets/{BUCKET}/bindings",
        json={
            "resource_path": PROJECT,
            "allowed_ops": {"read": True, "write": True, "delete": True, "multipart": True},
        },
    )
    assert bound.status_code == 201, bound.text
    arborist.grant("alice", "reader", PROJECT)
    arborist.grant("alice", "writer", PROJECT)
    return commons
