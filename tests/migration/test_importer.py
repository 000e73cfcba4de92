"""import-fence-config against a real database and moto's Secrets Manager."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.config import Settings
from app.db import Database
from app.fence_config.reader import load_fence_config
from app.migration.commands import ImportRequest, run_import
from app.migration.importer import (
    ImportOptions,
    apply_import,
    default_secret_prefix,
    plan_import,
)
from app.migration.plan import ChangeKind
from app.registry.schemas import BindingCreate, BucketCreate, BucketUpdate
from app.registry.service import Actor, RegistryService
from app.secrets.store import SecretStore
from tests.migration.conftest import (
    GCP_SIGNER,
    GS_NAMES,
    KEY_VALUES,
    S3_NAMES,
    audit_rows,
    dump_tables,
    secret_json,
)

STATIC = ["commons-data", "commons-uploads", "onprem-archive", "minio-scratch"]
STATIC += ["commons-requester-pays"]
CRED1 = {
    "access_key_id": "AKIAFENCECRED1EXAMPLE",
    "secret_access_key": "cred1-secret-value-never-in-the-db",
}


async def run(settings: Settings, path: Path, **options: Any) -> tuple[int, str, str]:
    out: list[str] = []
    err: list[str] = []
    options.setdefault("gcp_service_account", GCP_SIGNER)
    code = await run_import(
        settings, ImportRequest(path, **options), out=out.append, err=err.append
    )
    return code, "\n".join(out), "\n".join(err)


async def buckets(settings: Settings) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in (await dump_tables(settings.database_url))["bucket"]}


READ_DELETE = {"read": True, "write": False, "delete": True, "multipart": False}
UPLOADS = {"read": True, "write": True, "delete": True, "multipart": True}


async def bindings_by_bucket(settings: Settings) -> dict[str, list[tuple[str, dict[str, bool]]]]:
    tables = await dump_tables(settings.database_url)
    names = {row["id"]: row["name"] for row in tables["bucket"]}
    found: dict[str, list[tuple[str, dict[str, bool]]]] = {}
    for row in tables["bucket_policy_binding"]:
        found.setdefault(names[row["bucket_id"]], []).append(
            (row["resource_path"], row["allowed_ops"])
        )
    return found


def secret_names(sm: Any) -> list[str]:
    return sorted(entry["Name"] for entry in sm.list_secrets()["SecretList"])


async def test_dry_run_prints_the_exact_plan_and_writes_nothing(
    import_settings: Settings, fence_yaml: Path, aws_sm: Any
) -> None:
    code, out, err = await run(import_settings, fence_yaml, dry_run=True, write_secrets=True)

    assert code == 0, err
    assert "9 to create, 0 to update, 0 unchanged, 1 skipped, 0 invalid" in out
    assert "+ create    commons-data  (S3_BUCKETS.commons-data)" in out
    assert "secret_ref           aws-sm://gen3/bucket-registry/CRED1" in out
    assert "provider             s3_compatible" in out and "provider             minio" in out
    assert "- skip      commons-sequencing-.*" in out and "regex key" in out
    assert "write  aws-sm://gen3/bucket-registry/cleversafe" in out
    assert "Summary (dry run: nothing was written)" in out
    assert not any(value in out + err for value in KEY_VALUES)
    dump = await dump_tables(import_settings.database_url)
    assert all(rows == [] for rows in dump.values())
    assert secret_names(aws_sm) == []


async def test_import_registers_each_bucket_with_one_audit_row_and_no_key_anywhere(
    import_settings: Settings, fence_yaml: Path, aws_sm: Any
) -> None:
    code, out, err = await run(import_settings, fence_yaml, write_secrets=True, actor="ops")

    assert code == 0, err
    rows = await buckets(import_settings)
    assert sorted(rows) == sorted(S3_NAMES + GS_NAMES)
    audit = await audit_rows(import_settings.database_url)
    assert sorted(row["bucket_name"] for row in audit) == sorted(rows)
    assert {row["action"] for row in audit} == {"import"} and {r["actor"] for r in audit} == {"ops"}
    assert len({row["request_id"] for row in audit}) == 1

    # The mapping, bucket by bucket.
    assert rows["commons-data"]["auth_mode"] == "static"
    assert rows["commons-data"]["secret_ref"] == "aws-sm://gen3/bucket-registry/CRED1"
    assert (
        rows["commons-uploads"]["is_default_upload"]
        and rows["commons-uploads"]["data_upload_allowed"]
    )
    assert (
        rows["minio-scratch"]["provider"] == "minio"
        and rows["minio-scratch"]["data_upload_allowed"]
    )
    assert rows["onprem-archive"]["provider"] == "s3_compatible"
    assert rows["onprem-archive"]["endpoint"] == "https://cleversafe.example.org"
    role = rows["commons-role-data"]
    assert (role["auth_mode"], role["secret_ref"]) == ("role", None)
    public = rows["commons-public-refs"]
    assert public["auth_mode"] == "workload_identity" and public["labels"]["gen3.public"] == "true"
    assert public["public"] is True
    assert [name for name, row in rows.items() if row["public"]] == ["commons-public-refs"]
    assert rows["commons-requester-pays"]["requester_pays"] is True
    assert rows["commons-gcs-data"]["provider"] == "gcp"
    assert rows["commons-gcs-data"]["service_account"] == GCP_SIGNER
    assert all(row["status"] == "active" for row in rows.values())

    # No key (nor key id) in any row of any table; the audit keeps a fingerprint of refs.
    dumped = json.dumps(await dump_tables(import_settings.database_url), default=str)
    assert not any(value in dumped for value in KEY_VALUES)
    assert not any("gen3/bucket-registry" in json.dumps(row["diff"]) for row in audit)
    assert not any(value in out + err for value in KEY_VALUES)
    assert secret_json(aws_sm, "gen3/bucket-registry/CRED1") == CRED1

    # Bindings as Fence allowed: any record may point into any bucket (read, delete), and
    # into the upload buckets for uploads too; the registry's checks narrow that down.
    assert await bindings_by_bucket(import_settings) == {
        **{name: [("/", READ_DELETE)] for name in S3_NAMES},
        "commons-uploads": [("/", UPLOADS)],
        "minio-scratch": [("/", UPLOADS)],
        **{name: [("/", {**READ_DELETE, "delete": False})] for name in GS_NAMES},
    }


async def test_a_second_import_plans_nothing_and_writes_nothing(
    import_settings: Settings, fence_yaml: Path, aws_sm: Any
) -> None:
    assert (await run(import_settings, fence_yaml, write_secrets=True))[0] == 0
    before = await dump_tables(import_settings.database_url)
    versions = {
        name: len(aws_sm.list_secret_version_ids(SecretId=name)["Versions"])
        for name in secret_names(aws_sm)
    }

    code, out, _ = await run(import_settings, fence_yaml, write_secrets=True)

    assert code == 0
    assert "0 to create, 0 to update, 9 unchanged, 1 skipped" in out
    assert "Nothing to change" in out
    assert await dump_tables(import_settings.database_url) == before
    assert {
        name: len(aws_sm.list_secret_version_ids(SecretId=name)["Versions"])
        for name in secret_names(aws_sm)
    } == versions


async def test_without_write_secrets_static_buckets_wait_suspended_for_their_keys(
    make_settings: Any, pg_url: str, fence_yaml: Path, aws_sm: Any
) -> None:
    settings = Settings(database_url=pg_url, secrets_backend="aws_sm")
    code, out, _ = await run(settings, fence_yaml)

    assert code == 0
    rows = await buckets(settings)
    for name in STATIC:
        assert rows[name]["status"] == "suspended"
        assert rows[name]["labels"]["gen3.pending"] == "credentials"
        assert rows[name]["secret_ref"].startswith("aws-sm://gen3/bucket-registry/")
    assert rows["commons-role-data"]["status"] == "active"
    assert "commons-data is suspended until the keys of AWS_CREDENTIALS.CRED1 are at" in out
    assert "--write-secrets" in out
    assert secret_names(aws_sm) == []

    # The operator stores one credential's keys by hand: the next run resumes its buckets.
    aws_sm.create_secret(Name="gen3/bucket-registry/CRED1", SecretString=json.dumps(CRED1))
    audit_before = len(await audit_rows(pg_url))
    code, out, _ = await run(settings, fence_yaml)

    assert code == 0
    rows = await buckets(settings)
    assert rows["commons-data"]["status"] == "active"
    assert "gen3.pending" not in rows["commons-data"]["labels"]
    assert rows["commons-uploads"]["status"] == "suspended"
    assert len(await audit_rows(pg_url)) == audit_before + 1


async def test_an_existing_secret_is_never_overwritten(
    pg_url: str, fence_yaml: Path, aws_sm: Any
) -> None:
    rotated = {"access_key_id": "AKIAROTATED", "secret_access_key": "rotated-since-fence"}
    aws_sm.create_secret(Name="gen3/bucket-registry/CRED1", SecretString=json.dumps(rotated))
    settings = Settings(database_url=pg_url, secrets_backend="aws_sm")

    code, out, _ = await run(settings, fence_yaml, write_secrets=True)

    assert code == 0
    assert secret_json(aws_sm, "gen3/bucket-registry/CRED1") == rotated
    assert "holds other keys than AWS_CREDENTIALS.CRED1" in out
    assert (await buckets(settings))["commons-data"]["status"] == "active"


async def test_malformed_yaml_is_refused_with_the_line_and_nothing_is_written(
    pg_url: str, fence_yaml: Path, aws_sm: Any
) -> None:
    fence_yaml.write_text(fence_yaml.read_text().replace("  commons-data:\n", "  commons-data\n"))
    settings = Settings(database_url=pg_url, secrets_backend="aws_sm")

    code, out, err = await run(settings, fence_yaml, write_secrets=True)

    assert code == 2 and out == ""
    assert "invalid YAML at line" in err and "nothing was written" in err
    assert all(rows == [] for rows in (await dump_tables(pg_url)).values())
    assert secret_names(aws_sm) == []


async def test_a_malformed_entry_is_named_and_nothing_is_written(
    pg_url: str, fence_yaml: Path, aws_sm: Any
) -> None:
    fence_yaml.write_text(fence_yaml.read_text().replace("cred: 'cleversafe'", "cred: 'gone'"))
    settings = Settings(database_url=pg_url, secrets_backend="aws_sm")

    code, _, err = await run(settings, fence_yaml, write_secrets=True)

    assert code == 2
    assert "S3_BUCKETS.onprem-archive: cred 'gone' not in AWS_CREDENTIALS" in err
    assert all(rows == [] for rows in (await dump_tables(pg_url)).values())


async def test_one_refused_endpoint_refuses_the_whole_import(
    pg_url: str, fence_yaml: Path, aws_sm: Any
) -> None:
    private = "endpoint_url: 'http://10.20.30.40:9000'"
    fence_yaml.write_text(
        fence_yaml.read_text().replace("endpoint_url: 'https://cleversafe.example.org/'", private)
    )
    settings = Settings(database_url=pg_url, secrets_backend="aws_sm")

    code, out, err = await run(settings, fence_yaml, write_secrets=True)

    assert code == 1
    assert "! invalid   onprem-archive" in out
    assert "S3_BUCKETS.onprem-archive: endpoint: 10.20.30.40 is a loopback, private" in out
    assert "BUCKET_REGISTRY_ENDPOINT_ALLOWLIST" in out and "refused" in err
    assert all(rows == [] for rows in (await dump_tables(pg_url)).values())
    assert secret_names(aws_sm) == []

    allowed = Settings(
        database_url=pg_url, secrets_backend="aws_sm", endpoint_allowlist="10.20.30.40"
    )
    assert (await run(allowed, fence_yaml, write_secrets=True))[0] == 0
    assert (await buckets(allowed))["onprem-archive"]["endpoint"] == "http://10.20.30.40:9000"


async def test_a_conflict_while_applying_rolls_the_whole_import_back(
    pg_url: str, fence_yaml: Path, aws_sm: Any
) -> None:
    settings = Settings(database_url=pg_url, secrets_backend="aws_sm")
    db = Database(settings)
    secrets = SecretStore(settings)
    registry = RegistryService(db)
    try:
        config = load_fence_config(fence_yaml)
        plan = await plan_import(
            config,
            registry,
            secrets,
            options=ImportOptions(
                secret_prefix=default_secret_prefix(settings), gcp_service_account=GCP_SIGNER
            ),
        )
        # Someone registers one of the buckets between plan and apply.
        await registry.create_bucket(
            BucketCreate(
                name="commons-gcs-data",
                provider="gcp",
                auth_mode="workload_identity",
                service_account=GCP_SIGNER,
            ),
            Actor("admin"),
        )
        with pytest.raises(Exception, match="nothing was written"):
            await apply_import(plan, registry, secrets, actor=Actor("ops"))
    finally:
        await secrets.aclose()
        await db.dispose()
    assert sorted(await buckets(settings)) == ["commons-gcs-data"]
    assert [row["action"] for row in await audit_rows(pg_url)] == ["create"]


async def test_admin_changes_survive_a_reimport(pg_url: str, fence_yaml: Path, aws_sm: Any) -> None:
    settings = Settings(database_url=pg_url, secrets_backend="aws_sm")
    assert (await run(settings, fence_yaml, write_secrets=True))[0] == 0
    db = Database(settings)
    registry = RegistryService(db)
    try:
        await registry.update_bucket(
            "commons-data",
            BucketUpdate(
                labels={
                    "team": "genomics",
                    "gen3.source": "fence-config",
                    "gen3.fence-cred": "CRED1",
                }
            ),
            Actor("admin"),
            if_match=None,
        )
        await registry.add_binding(
            "commons-data",
            BindingCreate(resource_path="/programs/DEV/projects/ABC", allowed_ops={"read": True}),
            Actor("admin"),
        )
        from app.registry.records import BucketStatus

        await registry.set_status("commons-role-data", BucketStatus.SUSPENDED, Actor("admin"))
    finally:
        await db.dispose()
    audit_before = len(await audit_rows(pg_url))

    code, out, _ = await run(settings, fence_yaml, write_secrets=True)

    assert code == 0 and "0 to update" in out
    assert len(await audit_rows(pg_url)) == audit_before
    rows = await buckets(settings)
    assert rows["commons-data"]["labels"]["team"] == "genomics"
    assert rows["commons-role-data"]["status"] == "suspended"


async def test_a_changed_entry_is_planned_as_a_field_diff(
    pg_url: str, fence_yaml: Path, aws_sm: Any
) -> None:
    settings = Settings(database_url=pg_url, secrets_backend="aws_sm")
    assert (await run(settings, fence_yaml, write_secrets=True))[0] == 0
    fence_yaml.write_text(
        fence_yaml.read_text()
        .replace("region: 'us-west-2'", "region: 'eu-west-1'")
        .replace(
            "ALLOWED_DATA_UPLOAD_BUCKETS: ['commons-uploads', 'minio-scratch']",
            "ALLOWED_DATA_UPLOAD_BUCKETS: ['commons-uploads', 'minio-scratch', 'commons-data']",
        )
    )
    before = await dump_tables(pg_url)

    code, out, _ = await run(settings, fence_yaml, dry_run=True)

    assert code == 0
    assert "~ update    commons-role-data" in out and "region: us-west-2 -> eu-west-1" in out
    assert "~ update    commons-data" in out and "data_upload_allowed: false -> true" in out
    assert "~ binding whole bucket -> / [delete,multipart,read,write] (was [delete,read])" in out
    assert await dump_tables(pg_url) == before

    assert (await run(settings, fence_yaml))[0] == 0
    rows = await buckets(settings)
    assert rows["commons-role-data"]["region"] == "eu-west-1"
    assert rows["commons-data"]["data_upload_allowed"] is True
    bindings = [
        row
        for row in (await dump_tables(pg_url))["bucket_policy_binding"]
        if row["bucket_id"] == rows["commons-data"]["id"]
    ]
    assert [b["allowed_ops"]["write"] for b in bindings] == [True]
    updates = [row for row in await audit_rows(pg_url) if row["bucket_name"] == "commons-role-data"]
    assert updates[-1]["action"] == "import"
    assert updates[-1]["diff"] == {
        "before": {"region": "us-west-2"},
        "after": {"region": "eu-west-1"},
    }


async def test_a_second_default_upload_bucket_is_refused(
    pg_url: str, fence_yaml: Path, aws_sm: Any
) -> None:
    settings = Settings(database_url=pg_url, secrets_backend="aws_sm")
    db = Database(settings)
    try:
        await RegistryService(db).create_bucket(
            BucketCreate(
                name="existing-default",
                provider="aws",
                auth_mode="workload_identity",
                data_upload_allowed=True,
                is_default_upload=True,
            ),
            Actor("admin"),
        )
    finally:
        await db.dispose()

    code, out, _ = await run(settings, fence_yaml)

    assert code == 1
    assert "commons-uploads, existing-default would all be the default upload bucket" in out
    assert sorted(await buckets(settings)) == ["existing-default"]


async def test_gcs_buckets_without_a_signer_are_skipped_with_the_manual_step(
    pg_url: str, fence_yaml: Path, aws_sm: Any
) -> None:
    settings = Settings(database_url=pg_url, secrets_backend="aws_sm")

    code, out, _ = await run(settings, fence_yaml, gcp_service_account=None, write_secrets=True)

    assert code == 0
    assert "- skip      commons-gcs-data" in out and "--gcp-service-account" in out
    assert not set(GS_NAMES) & set(await buckets(settings))


async def test_file_secrets_in_development(pg_url: str, fence_yaml: Path, tmp_path: Path) -> None:
    settings = Settings(
        database_url=pg_url, secrets_backend="file", file_secrets_dir=tmp_path / "s"
    )

    assert (await run(settings, fence_yaml, write_secrets=True))[0] == 0

    stored = tmp_path / "s" / "CRED1.json"
    assert json.loads(stored.read_text()) == CRED1
    assert stored.stat().st_mode & 0o077 == 0
    assert (await buckets(settings))["commons-data"]["secret_ref"] == f"file://{stored}"


def test_every_plan_entry_kind_has_a_mark() -> None:
    from app.migration.report import _MARKS

    assert set(_MARKS) == {kind.value for kind in ChangeKind}


async def test_resource_path_overrides_replace_the_root_binding(
    import_settings: Settings, fence_yaml: Path, aws_sm: Any
) -> None:
    code, _, err = await run(
        import_settings,
        fence_yaml,
        write_secrets=True,
        resource_paths=("/programs/DEV", "/programs/QA"),
    )
    assert code == 0, err
    found = await bindings_by_bucket(import_settings)
    assert found["commons-data"] == [("/programs/DEV", READ_DELETE), ("/programs/QA", READ_DELETE)]
    assert [path for path, _ in found["commons-uploads"]] == ["/programs/DEV", "/programs/QA"]


NO_REGION_YAML = """
AWS_CREDENTIALS:
  CRED1: {aws_access_key_id: AKIAFENCECRED1EXAMPLE, aws_secret_access_key: cred1-secret-value}
S3_BUCKETS:
  commons-eu: {cred: CRED1}
  commons-public-eu: {cred: '*'}
  commons-gone: {cred: CRED1}
  commons-west: {cred: CRED1, region: us-west-2}
"""


async def test_lookup_regions_asks_head_bucket_and_reports_each_answer(
    import_settings: Settings, tmp_path: Path, aws_sm: Any, moto: Any, monkeypatch: Any
) -> None:
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto.url)
    s3 = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1")
    for name in ("commons-eu", "commons-public-eu"):
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    path = tmp_path / "fence-config.yaml"
    path.write_text(NO_REGION_YAML)

    without = await run(import_settings, path, dry_run=True)
    assert "no region" in without[1] and "--lookup-regions" in without[1]

    code, out, err = await run(import_settings, path, write_secrets=True, lookup_regions=True)
    assert code == 0, err
    assert out.count("region eu-west-1: from S3 HeadBucket (x-amz-bucket-region)") == 2
    assert (
        "commons-gone" in out and "the lookup failed (HeadBucket commons-gone answered 404" in out
    )
    rows = await buckets(import_settings)
    assert rows["commons-eu"]["region"] == "eu-west-1"
    assert rows["commons-public-eu"]["region"] == "eu-west-1"
    assert rows["commons-gone"]["region"] is None
    assert rows["commons-west"]["region"] == "us-west-2"
    assert "cred1-secret-value" not in out + err


async def test_self_service_fields_in_a_registry_block_are_checked(
    pg_url: str, tmp_path: Path, aws_sm: Any
) -> None:
    settings = Settings(database_url=pg_url, secrets_backend="aws_sm")
    path = tmp_path / "fence-config.yaml"

    def write(block: str) -> None:
        path.write_text(
            "AWS_CREDENTIALS: {}\n"
            "S3_BUCKETS:\n"
            "  abc-role:\n"
            "    cred: '*'\n"
            "    region: us-east-1\n"
            "    role-arn: arn:aws:iam::123456789012:role/abc\n"
            "    registry: {auth_mode: role, role_arn: 'arn:aws:iam::123456789012:role/abc',"
            f" {block}}}\n"
        )

    write("status: pending, project_resource: /programs/DEV/projects/ABC")
    code, out, err = await run(settings, path)
    assert code == 0, out + err
    row = (await buckets(settings))["abc-role"]
    # owner_project follows project_resource, as at registration.
    assert (row["status"], row["project_resource"], row["owner_project"]) == (
        "pending",
        "/programs/DEV/projects/ABC",
        "ABC",
    )

    for block, words in (
        ("pending_external_id: 'no spaces allowed'", "registry.pending_external_id: 2-1224"),
        ("project_resource: not-a-path", "project_resource"),
    ):
        write(block)
        code, out, err = await run(settings, path)
        assert code == 1 and "nothing was written" in err, (block, err)
        assert f"S3_BUCKETS.abc-role: {words}" in out, out
    assert (await buckets(settings))["abc-role"]["project_resource"] == (
        "/programs/DEV/projects/ABC"
    )

    # A block without the key (an export made before it was written) keeps the project; an
    # explicit null takes the bucket out of it.
    write("status: active")
    code, out, err = await run(settings, path)
    assert code == 0, out + err
    assert (await buckets(settings))["abc-role"]["project_resource"] == (
        "/programs/DEV/projects/ABC"
    )
    write("status: active, project_resource: null")
    code, out, err = await run(settings, path)
    assert code == 0, out + err
    assert (await buckets(settings))["abc-role"]["project_resource"] is None
