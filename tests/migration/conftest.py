"""Fixtures for the migration tests: the fence-config.yaml fixture, settings pointing the
secrets backend at moto, and a look at every row in the database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

import app.registry.models  # noqa: F401  (registers the tables on SQLModel.metadata)
from app.config import Settings
from tests.support.moto import MotoServer

FIXTURE = Path(__file__).parent / "fence-config.yaml"
# Every key value in the fixture: none may ever reach the database, an export or the output.
KEY_VALUES = (
    "AKIAFENCECRED1EXAMPLE",
    "cred1-secret-value-never-in-the-db",
    "AKIAFENCECRED2EXAMPLE",
    "cred2-secret-value-never-in-the-db",
    "AKIACLEVERSAFEEXAMPLE",
    "cleversafe-secret-value-never-in-the-db",
)
GCP_SIGNER = "signer@commons-prod.iam.gserviceaccount.com"
S3_NAMES = [
    "commons-data",
    "commons-uploads",
    "commons-role-data",
    "commons-public-refs",
    "onprem-archive",
    "minio-scratch",
    "commons-requester-pays",
]
GS_NAMES = ["commons-gcs-data", "commons-gcs-archive"]


@pytest.fixture
def fence_yaml(tmp_path: Path) -> Path:
    """A copy of the fixture that a test may edit."""
    path = tmp_path / "fence-config.yaml"
    path.write_text(FIXTURE.read_text())
    return path


@pytest.fixture
def aws_sm(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Secrets Manager clients (the registry's through the environment, botocore's here) on a
    freshly reset moto."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto.url)
    return boto3.client("secretsmanager", endpoint_url=moto.url, region_name="us-east-1")


@pytest.fixture
def import_settings(database_url: str, aws_sm: Any) -> Settings:
    return Settings(database_url=database_url, secrets_backend="aws_sm")


def secret_json(sm: Any, name: str) -> dict[str, str]:
    return json.loads(sm.get_secret_value(SecretId=name)["SecretString"])


async def dump_tables(database_url: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of every registry table, as text-friendly dicts."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            dump = {}
            for table in SQLModel.metadata.sorted_tables:
                rows = (await connection.execute(sa.select(table))).mappings().all()
                dump[table.name] = [dict(row) for row in rows]
            return dump
    finally:
        await engine.dispose()


async def audit_rows(database_url: str) -> list[dict[str, Any]]:
    return (await dump_tables(database_url))["bucket_audit"]
