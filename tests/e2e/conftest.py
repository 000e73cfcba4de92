"""Whole data-path flows: the app with PostgreSQL, moto (S3/STS/Secrets Manager) behind a
SigV4-checking gateway, real tokens and the Arborist stub."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import httpx
import pytest

from app.config import Settings
from app.main import create_app
from tests.support.arborist import ArboristStub
from tests.support.fence import FenceIssuer
from tests.support.moto import MotoServer
from tests.support.s3_gateway import S3Gateway

PROJECT = "/programs/DEV/projects/ABC"
STATIC_KEY_ID = "AKIAMINIOSTATIC00001"
STATIC_SECRET = "minio-static-secret-value-0001"
ROTATED_KEY_ID = "AKIAMINIOSTATIC00002"
ROTATED_SECRET = "minio-static-secret-value-0002"
PINNED_KEY_ID = "AKIAMINIOSTATIC00003"
PINNED_SECRET = "minio-static-secret-value-0003"
ALL_SECRETS = (STATIC_SECRET, ROTATED_SECRET, PINNED_SECRET)
ROLE_ARN = "arn:aws:iam::123456789012:role/gen3-abc-data"
ALL_OPS = {"read": True, "write": True, "delete": True, "multipart": True}
STATIC_SECRET_REF = "aws-sm://gen3/bucket-registry/minio-abc"


def minio_bucket(endpoint: str, name: str = "minio-abc", **extra: Any) -> dict[str, Any]:
    """A MinIO-style static bucket behind ``endpoint`` (the gateway), taking uploads."""
    return {
        "name": name,
        "provider": "minio",
        "endpoint": endpoint,
        "auth_mode": "static",
        "secret_ref": STATIC_SECRET_REF,
        "owner_project": "ABC",
        "data_upload_allowed": True,
        **extra,
    }


@pytest.fixture
def gateway(gateway: S3Gateway) -> S3Gateway:
    for key_id, secret in (
        (STATIC_KEY_ID, STATIC_SECRET),
        (ROTATED_KEY_ID, ROTATED_SECRET),
        (PINNED_KEY_ID, PINNED_SECRET),
    ):
        gateway.add_key(key_id, secret)
    return gateway


@pytest.fixture
def aws_endpoints(moto: MotoServer, gateway: S3Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the app's AWS clients at moto (Secrets Manager, STS) and the gateway (S3)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", gateway.url)


def boto(moto: MotoServer, service: str) -> Any:
    return boto3.client(service, endpoint_url=moto.url, region_name="us-east-1")


@dataclass
class Flow:
    """A running app plus handles on everything around it."""

    http: httpx.AsyncClient
    app: Any
    moto: MotoServer
    gateway: S3Gateway
    issuer: FenceIssuer
    arborist: ArboristStub
    admin: dict[str, str]
    responses: list[httpx.Response]
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def services(self) -> Any:
        return self.app.state.services

    def user(self, name: str) -> dict[str, str]:
        """The user's headers; one token per user, as a real client keeps its token."""
        if name not in self.tokens:
            self.tokens[name] = self.issuer.token(name)
        return {"Authorization": f"Bearer {self.tokens[name]}"}

    async def call(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = await self.http.request(method, url, **kwargs)
        self.responses.append(response)
        return response

    async def register(
        self, body: dict[str, Any], prefix: str | None, ops: dict[str, bool]
    ) -> None:
        created = await self.call("POST", "/admin/buckets", json=body, headers=self.admin)
        assert created.status_code == 201, created.text
        base = f"/admin/buckets/{body['name']}"
        binding: dict[str, Any] = {"resource_path": PROJECT, "allowed_ops": ops}
        if prefix:
            added = await self.call(
                "POST", f"{base}/prefixes", json={"prefix": prefix}, headers=self.admin
            )
            assert added.status_code == 201, added.text
            binding["prefix"] = prefix
        bound = await self.call("POST", f"{base}/bindings", json=binding, headers=self.admin)
        assert bound.status_code == 201, bound.text

    async def presign(
        self, user: str, bucket: str, key: str, op: str, **extra: Any
    ) -> httpx.Response:
        body = {"bucket": bucket, "key": key, "op": op, **extra}
        return await self.call("POST", "/presign", json=body, headers=self.user(user))


async def send(signed: dict[str, Any], content: bytes | None = None) -> httpx.Response:
    """Use a presigned answer as a client would: its method, URL and headers."""
    async with httpx.AsyncClient(timeout=60) as http:
        return await http.request(
            signed["method"], signed["url"], headers=signed.get("headers"), content=content
        )


def put_static_secret(moto: MotoServer, name: str, key_id: str, secret: str) -> str:
    client = boto(moto, "secretsmanager")
    payload = json.dumps({"access_key_id": key_id, "secret_access_key": secret})
    try:
        return client.create_secret(Name=name, SecretString=payload)["VersionId"]
    except client.exceptions.ResourceExistsException:
        return client.put_secret_value(SecretId=name, SecretString=payload)["VersionId"]


@pytest.fixture
def flow_settings(make_settings, pg_url: str, gateway: S3Gateway, aws_endpoints: None):  # type: ignore[no-untyped-def]
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"endpoint_allowlist": "127.0.0.1", "secrets_backend": "aws_sm"}
        values.update(overrides)
        return make_settings(values.pop("database_url", pg_url), **values)

    return make


@pytest.fixture
async def make_flow(flow_settings, moto, gateway, issuer, arborist) -> AsyncIterator[Any]:
    """Start the app with the given setting overrides; yields a ``Flow``."""
    stack: list[Any] = []

    async def start(**overrides: Any) -> Flow:
        app = create_app(flow_settings(**overrides))
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://registry")
        stack.append((lifespan, http))
        arborist.make_admin("admin")
        return Flow(
            http,
            app,
            moto,
            gateway,
            issuer,
            arborist,
            {"Authorization": f"Bearer {issuer.token('admin')}"},
            [],
        )

    yield start
    for lifespan, http in reversed(stack):
        await http.aclose()
        await lifespan.__aexit__(None, None, None)


@pytest.fixture
async def static_flow(make_flow, moto, gateway) -> Flow:  # type: ignore[no-untyped-def]
    """The app with ``minio-abc`` bound at ``incoming/`` for every op on PROJECT: ``submitter``
    reads and writes there, ``reader-only`` reads."""
    flow: Flow = await make_flow()
    boto(moto, "s3").create_bucket(Bucket="minio-abc")
    put_static_secret(moto, "gen3/bucket-registry/minio-abc", STATIC_KEY_ID, STATIC_SECRET)
    await flow.register(minio_bucket(gateway.url), "incoming/", ALL_OPS)
    flow.arborist.grant("submitter", "reader", PROJECT)
    flow.arborist.grant("submitter", "writer", PROJECT)
    flow.arborist.grant("reader-only", "reader", PROJECT)
    return flow


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every record the service would log at DEBUG (its production logging setup keeps SDKs
    at WARNING), with extra fields, for leak checks."""
    from app.logs import CHATTY_LIBRARIES, quiet_libraries

    levels = {name: logging.getLogger(name).level for name in CHATTY_LIBRARIES}
    quiet_libraries(logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    yield caplog
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def rendered_logs(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(f"{record.getMessage()} {record.__dict__!r}" for record in caplog.records)
