"""Fixtures for the signing tests: a SigV4-checking gateway in front of moto, a dict-backed
secret source, bucket records and a wall clock the test can move."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from app.config import Settings
from app.errors import SecretNotFound
from app.registry.records import AuthMode, BucketRecord, BucketStatus, Provider
from app.storage.service import StorageService
from tests.support.moto import MotoServer
from tests.support.s3_gateway import S3Gateway

STATIC_KEY_ID = "AKIASTATICEXAMPLE01"
STATIC_SECRET = "static-secret-key-for-the-gateway"
ROLE_ARN = "arn:aws:iam::123456789012:role/bucket-registry-data"


class DictSecrets:
    """A ``SecretSource`` backed by a dict; counts reads."""

    def __init__(self) -> None:
        self.payloads: dict[tuple[str, str | None], dict[str, str]] = {}
        self.reads = 0

    def put(self, ref: str, payload: Mapping[str, str], version: str | None = None) -> None:
        self.payloads[(ref, version)] = dict(payload)

    async def get(self, raw_ref: str, version: str | None) -> Mapping[str, str]:
        self.reads += 1
        try:
            return self.payloads[(raw_ref, version)]
        except KeyError:
            raise SecretNotFound(f"secret {raw_ref} not found") from None


class WallClock:
    """UTC wall clock that starts at the real time and moves only when told to."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def make_bucket(**overrides: Any) -> BucketRecord:
    now = datetime.now(UTC)
    fields: dict[str, Any] = {
        "id": uuid.uuid4(),
        "name": "data-bucket",
        "provider": Provider.MINIO,
        "region": "us-east-1",
        "endpoint": None,
        "auth_mode": AuthMode.STATIC,
        "role_arn": None,
        "external_id": None,
        "secret_ref": "file:///secrets/data-bucket",
        "secret_version": None,
        "owner_project": "DEV",
        "labels": {},
        "status": BucketStatus.ACTIVE,
        "data_upload_allowed": True,
        "is_default_upload": False,
        "version": 1,
        "created_at": now,
        "updated_at": now,
    }
    fields.update(overrides)
    return BucketRecord(**fields)


@pytest.fixture
def gateway(gateway: S3Gateway) -> S3Gateway:
    """The gateway in front of a freshly reset moto, knowing only the static test key."""
    gateway.add_key(STATIC_KEY_ID, STATIC_SECRET)
    return gateway


@pytest.fixture
def moto_s3(moto: MotoServer) -> Any:
    """A plain boto3 client straight to moto, for arranging buckets (no gateway)."""
    return boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1")


@pytest.fixture
def secrets() -> DictSecrets:
    source = DictSecrets()
    source.put(
        "file:///secrets/data-bucket",
        {"access_key_id": STATIC_KEY_ID, "secret_access_key": STATIC_SECRET},
    )
    return source


@pytest.fixture
def clock() -> WallClock:
    return WallClock()


@pytest.fixture
def settings(moto: MotoServer) -> Settings:
    # moto listens on loopback, which reaches the store only through the allow-list.
    return Settings(sts_endpoint_url=moto.url, endpoint_allowlist=["127.0.0.1"])


@pytest.fixture
async def service(
    settings: Settings, secrets: DictSecrets, clock: WallClock
) -> AsyncIterator[StorageService]:
    signing = StorageService(settings, secrets, clock=clock, max_attempts=2)
    yield signing
    await signing.aclose()
