"""The commands as an operator runs them: settings from the environment, exit codes, --help.

They are registered here exactly as ``app/cli.py`` registers them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from app.db import migrate
from app.fence_config.reader import parse_fence_config
from app.migration.commands import export_command, import_fence_config
from tests.migration.conftest import GCP_SIGNER, KEY_VALUES, secret_json

cli = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
cli.command("import-fence-config")(import_fence_config)
cli.command("export")(export_command)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aws_sm: Any) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}"
    migrate(url)
    monkeypatch.setenv("BUCKET_REGISTRY_DATABASE_URL", url)
    monkeypatch.setenv("BUCKET_REGISTRY_SECRETS_BACKEND", "aws_sm")
    return url


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), prog_name="bucket-registry")


@pytest.mark.parametrize("command", ["import-fence-config", "export"])
def test_help(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert "Usage: bucket-registry " + command in result.output


def test_import_then_export_from_the_command_line(
    env: str, fence_yaml: Path, tmp_path: Path, aws_sm: Any
) -> None:
    dry = invoke("import-fence-config", str(fence_yaml), "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "Summary (dry run: nothing was written)" in dry.output

    done = invoke(
        "import-fence-config",
        str(fence_yaml),
        "--write-secrets",
        "--owner-project",
        "DEV",
        "--actor",
        "ops@example.org",
        "--gcp-service-account",
        GCP_SIGNER,
        "--resource-path",
        "/programs/DEV",
    )
    assert done.exit_code == 0, done.output
    assert "created" in done.output and not any(value in done.output for value in KEY_VALUES)
    assert (
        secret_json(aws_sm, "gen3/bucket-registry/CRED2")["access_key_id"]
        == "AKIAFENCECRED2EXAMPLE"
    )

    again = invoke(
        "import-fence-config",
        str(fence_yaml),
        "--gcp-service-account",
        GCP_SIGNER,
        "--owner-project",
        "DEV",
        "--resource-path",
        "/programs/DEV",
    )
    assert again.exit_code == 0 and "Nothing to change" in again.output

    output = tmp_path / "export.yaml"
    exported = invoke("export", "--format", "fence-yaml", "--output", str(output))
    assert exported.exit_code == 0, exported.output
    config = parse_fence_config(output.read_text())
    entry = next(e for e in config.s3_buckets if e.key == "commons-data")
    assert entry.registry["owner_project"] == "DEV"
    assert entry.registry["bindings"][0]["resource_path"] == "/programs/DEV"

    as_json = invoke("export", "--format", "json")
    assert as_json.exit_code == 0 and '"format": "bucket-registry/v1"' in as_json.output


def test_a_malformed_file_exits_2(env: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("S3_BUCKETS:\n  b:\n    cred: missing\n")
    result = invoke("import-fence-config", str(path))
    assert result.exit_code == 2
    assert "S3_BUCKETS.b: cred 'missing' not in AWS_CREDENTIALS" in result.output


def test_an_unknown_export_format_is_refused(env: str) -> None:
    result = invoke("export", "--format", "xml")
    assert result.exit_code == 2


def test_an_unmigrated_database_is_explained(
    tmp_path: Path, fence_yaml: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUCKET_REGISTRY_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'new.db'}")
    result = invoke("import-fence-config", str(fence_yaml), "--dry-run")
    assert result.exit_code == 1
    assert "bucket-registry migrate" in result.output
