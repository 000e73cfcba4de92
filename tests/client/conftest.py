"""The service running for real (uvicorn on 127.0.0.1, PostgreSQL, Arborist stub, JWKS issuer,
moto behind a SigV4-checking gateway) for the Fence client to talk to over HTTP: forwarding user
tokens (``commons``) or trusting Fence's ServiceAccount token (``trusted``)."""

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
from tests.support.fence import FenceIssuer, ServiceAccountIssuer
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


FENCE_SA = "system:serviceaccount:default:fence"


def _serve(make_settings: Any, pg_url: str, tmp_path: Path, **extra: Any) -> LiveServer:
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
        **extra,
    )
    server = LiveServer(settings).start()
    server.secrets_dir = secrets  # type: ignore[attr-defined]
    return server


@pytest.fixture
def live(
    make_settings: Any, pg_url: str, tmp_path: Path, gateway: S3Gateway
) -> Iterator[LiveServer]:
    """The service, with file secrets, an empty registry and 127.0.0.1 allow-listed."""
    server = _serve(make_settings, pg_url, tmp_path)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cluster() -> Iterator[ServiceAccountIssuer]:
    """The Kubernetes ServiceAccount token issuer Fence's projected token comes from."""
    sa_issuer = ServiceAccountIssuer().start()
    yield sa_issuer
    sa_issuer.server.stop()


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


def _register(commons: Commons, live: LiveServer, moto: MotoServer) -> None:
    boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    secret_ref = f"file://{live.secrets_dir}/client-data.json"  # type: ignore[attr-defined]
    created = commons.admin(
        "POST",
        "/admin/buckets",
        json={
            "name": BUCKET,
            "provider": "minio",
            "endpoint": commons.gateway.url,
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
    commons.arborist.grant("alice", "reader", PROJECT)
    commons.arborist.grant("alice", "writer", PROJECT)


@pytest.fixture
def commons(
    live: LiveServer,
    issuer: FenceIssuer,
    arborist: ArboristStub,
    gateway: S3Gateway,
    moto: MotoServer,
) -> Commons:
    """One registered MinIO-style bucket, bound to a project; alice may read and write it."""
    commons = Commons(live.url, issuer, arborist, gateway)
    _register(commons, live, moto)
    return commons


@dataclass
class Trusted(Commons):
    cluster: ServiceAccountIssuer
    token_path: Path


@pytest.fixture
def trusted(
    make_settings: Any,
    pg_url: str,
    tmp_path: Path,
    issuer: FenceIssuer,
    arborist: ArboristStub,
    gateway: S3Gateway,
    moto: MotoServer,
    cluster: ServiceAccountIssuer,
) -> Iterator[Trusted]:
    """The same commons, with Fence's ServiceAccount as a trusted caller and its projected
    token in a file. The bucket also serves Fence's data-upload flow (``/data_file``)."""
    server = _serve(
        make_settings,
        pg_url,
        tmp_path,
        service_token_issuer=cluster.issuer,
        service_token_jwks_url=cluster.issuer + "/openid/v1/jwks",
        trusted_callers=FENCE_SA,
    )
    token_path = tmp_path / "bucket-registry-token"
    token_path.write_text(cluster.token())
    commons = Trusted(server.url, issuer, arborist, gateway, cluster, token_path)
    _register(commons, server, moto)
    bound = commons.admin(
        "POST",
        f"/admin/buckets/{BUCKET}/bindings",
        json={
            "resource_path": "/data_file",
            "allowed_ops": {"read": True, "write": True, "multipart": True},
        },
    )
    assert bound.status_code == 201, bound.text
    arborist.grant("alice", "uploader", "/data_file")
    yield commons
    server.stop()
