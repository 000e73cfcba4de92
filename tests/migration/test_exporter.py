"""export: Fence-style YAML and JSON, secret references only, and a faithful round trip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from app.config import Settings
from app.db import Database
from app.fence_config.reader import parse_fence_config
from app.migration.commands import ExportFormat, ImportRequest, run_export, run_import
from app.registry.schemas import BindingCreate, BucketCreate
from app.registry.service import Actor, RegistryService
from tests.migration.conftest import GCP_SIGNER, KEY_VALUES, dump_tables
from tests.support.database import PostgresDatabase

COMPARED = (
    "provider",
    "region",
    "endpoint",
    "auth_mode",
    "role_arn",
    "external_id",
    "secret_ref",
    "secret_version",
    "service_account",
    "owner_project",
    "labels",
    "status",
    "data_upload_allowed",
    "is_default_upload",
    "requester_pays",
    "billing_projects",
)


async def imported(settings: Settings, path: Path, **options: Any) -> str:
    out: list[str] = []
    options.setdefault("gcp_service_account", GCP_SIGNER)
    code = await run_import(
        settings, ImportRequest(path, **options), out=out.append, err=out.append
    )
    assert code == 0, "\n".join(out)
    return "\n".join(out)


async def registrations(database_url: str) -> dict[str, Any]:
    dump = await dump_tables(database_url)
    ids = {row["id"]: row["name"] for row in dump["bucket"]}
    prefixes = {row["id"]: row["prefix"] for row in dump["bucket_prefix"]}
    state: dict[str, Any] = {
        row["name"]: {key: row[key] for key in COMPARED} | {"bindings": [], "prefixes": []}
        for row in dump["bucket"]
    }
    for row in dump["bucket_prefix"]:
        state[ids[row["bucket_id"]]]["prefixes"].append(row["prefix"])
    for row in dump["bucket_policy_binding"]:
        state[ids[row["bucket_id"]]]["bindings"].append(
            (prefixes.get(row["prefix_id"]), row["resource_path"], row["allowed_ops"])
        )
    for value in state.values():
        value["bindings"].sort(key=str)
        value["prefixes"].sort()
    return state


async def add_admin_extras(settings: Settings) -> None:
    """Registrations no Fence file describes: a per-project default, a prefix binding, a
    workload-identity bucket, a pinned secret version, a gcp bucket with billing projects."""
    db = Database(settings)
    registry = RegistryService(db)
    admin = Actor("admin")
    try:
        await registry.create_bucket(
            BucketCreate(
                name="abc-submissions",
                provider="aws",
                region="us-east-2",
                auth_mode="workload_identity",
                owner_project="ABC",
                labels={"team": "genomics"},
                data_upload_allowed=True,
                is_default_upload=True,
            ),
            admin,
        )
        await registry.add_prefix("abc-submissions", "incoming/", admin)
        await registry.add_binding(
            "abc-submissions",
            BindingCreate(
                prefix="incoming/",
                resource_path="/programs/DEV/projects/ABC",
                allowed_ops={"read": True, "write": True, "multipart": True},
            ),
            admin,
        )
        await registry.create_bucket(
            BucketCreate(
                name="pinned-archive",
                provider="aws",
                auth_mode="static",
                secret_ref="aws-sm://gen3/other/archive",
                secret_version="a1b2c3d4-e5f6-47a8-99b0-c1d2e3f4a5b6",
                external_id=None,
            ),
            admin,
        )
        await registry.create_bucket(
            BucketCreate(
                name="gcs-billed",
                provider="gcp",
                auth_mode="workload_identity",
                service_account=GCP_SIGNER,
                requester_pays=True,
                billing_projects=["lab-billing-01", "lab-billing-02"],
            ),
            admin,
        )
    finally:
        await db.dispose()


async def test_export_round_trips_to_the_same_registrations(
    postgres: PostgresDatabase, pg_url: str, fence_yaml: Path, aws_sm: Any, tmp_path: Path
) -> None:
    settings = Settings(database_url=pg_url, secrets_backend="aws_sm")
    await imported(settings, fence_yaml, write_secrets=True)
    await add_admin_extras(settings)
    original = await registrations(pg_url)

    exported = await run_export(settings, ExportFormat.FENCE_YAML)

    assert not any(value in exported for value in KEY_VALUES)
    config = parse_fence_config(exported)
    assert config.aws_credentials["CRED1"].secret_ref == "aws-sm://gen3/bucket-registry/CRED1"
    assert not any(cred.has_keys for cred in config.aws_credentials.values())
    s3 = {entry.key: entry for entry in config.s3_buckets}
    assert s3["commons-public-refs"].cred == "*"
    assert s3["commons-role-data"].role_arn and s3["onprem-archive"].endpoint_url
    assert config.data_upload_bucket == "commons-uploads"
    assert set(config.allowed_upload_buckets) == {
        "commons-uploads",
        "minio-scratch",
        "abc-submissions",
    }

    # Importing the export into the same registry changes nothing...
    path = tmp_path / "exported.yaml"
    path.write_text(exported)
    out = await imported(settings, path, write_secrets=True)
    assert "0 to create, 0 to update, 12 unchanged" in out
    # ... and into an empty one rebuilds the same registrations.
    await postgres.truncate()
    await imported(settings, path)
    assert await registrations(pg_url) == original
    assert original["gcs-billed"]["billing_projects"] == ["lab-billing-01", "lab-billing-02"]


async def test_json_export_holds_references_never_secrets(
    pg_url: str, fence_yaml: Path, aws_sm: Any
) -> None:
    settings = Settings(database_url=pg_url, secrets_backend="aws_sm")
    await imported(settings, fence_yaml, write_secrets=True)

    text = await run_export(settings, ExportFormat.JSON)

    document = json.loads(text)
    assert document["format"] == "bucket-registry/v1"
    by_name = {bucket["name"]: bucket for bucket in document["buckets"]}
    assert len(by_name) == 9
    assert by_name["commons-data"]["secret_ref"] == "aws-sm://gen3/bucket-registry/CRED1"
    assert by_name["commons-uploads"]["bindings"] == [
        {
            "resource_path": "/",
            "allowed_ops": {"read": True, "write": True, "delete": True, "multipart": True},
        }
    ]
    assert not any(value in text for value in KEY_VALUES)


async def test_an_empty_registry_exports_an_empty_configuration(pg_url: str) -> None:
    text = await run_export(Settings(database_url=pg_url), ExportFormat.FENCE_YAML)
    config = parse_fence_config(text)
    assert config.s3_buckets == () and config.gs_buckets == () and config.data_upload_bucket is None


SELF_SERVICE_COMPARED = (*COMPARED, "project_resource", "pending_external_id")


async def self_service_state(database_url: str) -> dict[str, Any]:
    dump = await dump_tables(database_url)
    return {row["name"]: {key: row[key] for key in SELF_SERVICE_COMPARED} for row in dump["bucket"]}


async def test_self_service_registrations_round_trip(
    postgres: PostgresDatabase, pg_url: str, aws_sm: Any, tmp_path: Path
) -> None:
    settings = Settings(database_url=pg_url, secrets_backend="aws_sm")
    db = Database(settings)
    registry = RegistryService(db)
    owner = Actor("owner")
    project = "/programs/DEV/projects/ABC"
    try:
        for name in ("abc-pending", "abc-rejected", "abc-rotating"):
            await registry.create_bucket(
                BucketCreate(
                    name=name,
                    provider="aws",
                    region="us-east-1",
                    auth_mode="role",
                    role_arn=f"arn:aws:iam::123456789012:role/{name}",
                    project_resource=project,
                ),
                owner,
                registrant=True,
            )
        await registry.create_bucket(
            BucketCreate(
                name="abc-static",
                provider="minio",
                endpoint="https://minio.example.org",
                auth_mode="static",
                project_resource=project,
            ),
            owner,
            registrant=True,
        )
        await registry.change(
            "abc-rejected", Actor("admin"), "reject", lambda _row: {"status": "rejected"}
        )
        await registry.change(
            "abc-rotating",
            Actor("admin"),
            "rotate",
            lambda _row: {"status": "active", "pending_external_id": "gen3-bucket-registry-next"},
        )
    finally:
        await db.dispose()
    original = await self_service_state(pg_url)
    assert original["abc-pending"]["status"] == "pending"
    assert original["abc-pending"]["external_id"].startswith("gen3-bucket-registry-")
    assert original["abc-rejected"]["status"] == "rejected"
    assert original["abc-static"]["owner_project"] == "ABC"

    document = json.loads(await run_export(settings, ExportFormat.JSON))
    by_name = {bucket["name"]: bucket for bucket in document["buckets"]}
    assert by_name["abc-rotating"]["project_resource"] == project
    assert by_name["abc-rotating"]["pending_external_id"] == "gen3-bucket-registry-next"

    exported = await run_export(settings, ExportFormat.FENCE_YAML)
    assert f"project_resource: {project}" in exported
    path = tmp_path / "exported.yaml"
    path.write_text(exported)
    # Into the same registry: nothing to change; into an empty one: the same buckets, pending,
    # rejected and mid-rotation alike, each still managed by its project.
    out = await imported(settings, path)
    assert "0 to create, 0 to update, 4 unchanged" in out, out
    await postgres.truncate()
    await imported(settings, path)
    assert await self_service_state(pg_url) == original
