"""Registration rules for credential vending, and revision 0005 on both databases."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from app.db import migrate
from app.errors import InvalidInput
from app.registry.validation import validate_bucket_spec
from tests.support.database import database_at, run_in_thread

ROLE_ARN = "arn:aws:iam::123456789012:role/gen3-data"


def spec(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": "commons-data",
        "provider": "aws",
        "auth_mode": "role",
        "role_arn": ROLE_ARN,
        "credential_vending": True,
    }
    values.update(overrides)
    return values


@pytest.mark.parametrize(
    "values",
    [
        spec(),
        spec(sts_endpoint="https://sts.us-west-2.amazonaws.com/", max_credential_ttl=900),
        spec(
            provider="minio",
            endpoint="http://10.0.0.5:9000",
            auth_mode="static",
            role_arn=None,
            secret_ref="aws-sm://minio",
        ),
        # Staged configuration: an STS endpoint with vending still off.
        spec(credential_vending=False, sts_endpoint="https://sts.example.org"),
        # gcp: downscoped tokens of the service account, through Google's or a named STS.
        spec(
            provider="gcp",
            name="gcs-data",
            auth_mode="static",
            role_arn=None,
            secret_ref="aws-sm://k",
            max_credential_ttl=3600,
        ),
        spec(
            provider="gcp",
            name="gcs-data",
            auth_mode="workload_identity",
            role_arn=None,
            service_account="reader@gen3-data.iam.gserviceaccount.com",
            sts_endpoint="https://sts.googleapis.com",
        ),
    ],
)
def test_what_may_vend(values: dict[str, Any]) -> None:
    checked = validate_bucket_spec(values, ["10.0.0.0/8"])
    if values.get("sts_endpoint"):
        assert not checked["sts_endpoint"].endswith("/")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (spec(auth_mode="workload_identity", role_arn=None), "needs auth_mode role"),
        (
            spec(auth_mode="static", role_arn=None, secret_ref="aws-sm://k"),
            "aws buckets vend through a role",
        ),
        (spec(sts_endpoint="http://169.254.169.254"), "sts_endpoint:"),
        (spec(sts_endpoint="http://127.0.0.1:9000"), "sts_endpoint:"),
        (
            spec(sts_endpoint="https://sts.example.org/path"),
            "sts_endpoint: must not contain a path",
        ),
        (
            spec(
                provider="gcp",
                name="gcs-data",
                auth_mode="workload_identity",
                role_arn=None,
                service_account="reader@gen3-data.iam.gserviceaccount.com",
                sts_endpoint="http://169.254.169.254",
            ),
            "sts_endpoint:",
        ),
    ],
)
def test_what_may_not(values: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        validate_bucket_spec(values, [])


async def test_vending_fields_through_the_admin_api(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    admin = admin_headers
    created = await client.post(
        "/admin/buckets", json={**spec(), "sts_endpoint": "https://sts.example.org"}, headers=admin
    )
    assert created.status_code == 201, created.text
    shown = (await client.get("/admin/buckets/commons-data", headers=admin)).json()
    assert (shown["credential_vending"], shown["sts_endpoint"], shown["max_credential_ttl"]) == (
        True,
        "https://sts.example.org",
        None,
    )
    for bad in ({"max_credential_ttl": 60}, {"credential_vending": None}, {"sts_endpoint": "x"}):
        answer = await client.patch("/admin/buckets/commons-data", json=bad, headers=admin)
        assert answer.status_code == 400, (bad, answer.text)
    ok = await client.patch(
        "/admin/buckets/commons-data", json={"max_credential_ttl": 1800}, headers=admin
    )
    assert ok.status_code == 200, ok.text


@pytest.fixture(params=["postgresql", "sqlite"])
async def database_at_0002(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    with database_at(request.param, "0002", tmp_path) as url:
        yield url


async def test_0005_adds_vending_off_for_every_bucket(database_at_0002: str) -> None:
    url = database_at_0002
    engine = create_async_engine(url)
    now = datetime.now(UTC)
    async with engine.begin() as connection:
        await connection.execute(
            sa.text(
                "INSERT INTO bucket (id, name, provider, auth_mode, role_arn, labels, status,"
                " data_upload_allowed, is_default_upload, requester_pays, public, version,"
                " created_at, updated_at) VALUES (:id, 'old-role', 'aws', 'role', :arn, '{}',"
                " 'active', false, false, false, false, 1, :now, :now)"
            ).bindparams(sa.bindparam("id", type_=sa.Uuid())),
            {"id": uuid.uuid4(), "arn": ROLE_ARN, "now": now},
        )
    await engine.dispose()

    run_in_thread(migrate, url)

    engine = create_async_engine(url)
    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                sa.text(
                    "SELECT name, credential_vending, sts_endpoint, max_credential_ttl FROM bucket"
                )
            )
        ).all()
    await engine.dispose()
    assert [(name, bool(on), sts, ttl) for name, on, sts, ttl in rows] == [
        ("old-role", False, None, None)
    ]
