"""The ``import-fence-config`` and ``export`` commands (registered on ``app.cli.cli``).

Both read ``Settings()`` from the environment, like ``migrate``. Exit codes: 0 done (or
nothing to do), 1 refused or failed (nothing written), 2 the file is unreadable or malformed.
"""

from __future__ import annotations

import asyncio
import enum
import getpass
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from aiobotocore.session import AioSession

from app.config import Settings
from app.db import Database
from app.errors import DependencyUnavailable, RegistryError
from app.fence_config.mapping import DEFAULT_RESOURCE_PATHS
from app.fence_config.reader import FenceConfigError, load_fence_config
from app.migration.exporter import collect, render_fence_yaml, render_json
from app.migration.importer import (
    ImportOptions,
    apply_import,
    default_secret_prefix,
    plan_import,
)
from app.migration.report import render_plan, render_summary
from app.registry.service import Actor, RegistryService
from app.secrets.store import SecretStore
from app.storage.s3 import lookup_bucket_region

Echo = Callable[[str], None]


class ExportFormat(enum.StrEnum):
    FENCE_YAML = "fence-yaml"
    JSON = "json"


@dataclass(frozen=True, slots=True)
class ImportRequest:
    path: Path
    dry_run: bool = False
    write_secrets: bool = False
    owner_project: str | None = None
    actor: str | None = None
    resource_paths: tuple[str, ...] = DEFAULT_RESOURCE_PATHS
    gcp_service_account: str | None = None
    secret_prefix: str | None = None
    lookup_regions: bool = False


def import_fence_config(
    path: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, readable=True, help="Fence's fence-config.yaml."
        ),
    ],
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print the exact changes and write nothing."),
    ] = False,
    write_secrets: Annotated[
        bool,
        typer.Option(
            "--write-secrets",
            help="Store AWS_CREDENTIALS keys in the secrets backend (never in the database);"
            " without it, buckets whose keys are not there yet are imported suspended.",
        ),
    ] = False,
    owner_project: Annotated[
        str | None,
        typer.Option(help="Project that owns every imported bucket (and its default upload)."),
    ] = None,
    actor: Annotated[
        str | None,
        typer.Option(help="Name recorded in the audit trail (default: cli:<os user>)."),
    ] = None,
    resource_path: Annotated[
        list[str] | None,
        typer.Option(
            "--resource-path",
            help="Arborist path each bucket is bound to (repeatable; default /, the root).",
        ),
    ] = None,
    gcp_service_account: Annotated[
        str | None,
        typer.Option(help="Service account that signs for GS_BUCKETS (Workload Identity)."),
    ] = None,
    secret_prefix: Annotated[
        str | None,
        typer.Option(
            help="Where keys are stored: prefix + credential name (default"
            " aws-sm://gen3/bucket-registry/, or file://<file secrets dir>/).",
        ),
    ] = None,
    lookup_regions: Annotated[
        bool,
        typer.Option(
            "--lookup-regions",
            help="Ask S3 (anonymous HeadBucket) for the region of AWS buckets that have none;"
            " each answer or failure is reported.",
        ),
    ] = False,
) -> None:
    """Import S3_BUCKETS, GS_BUCKETS, ALLOWED_DATA_UPLOAD_BUCKETS and DATA_UPLOAD_BUCKET.

    Idempotent: a second run changes nothing. All or nothing: one invalid entry refuses the
    whole import.
    """
    request = ImportRequest(
        path=path,
        dry_run=dry_run,
        write_secrets=write_secrets,
        owner_project=owner_project,
        actor=actor,
        resource_paths=tuple(resource_path) if resource_path else DEFAULT_RESOURCE_PATHS,
        gcp_service_account=gcp_service_account,
        secret_prefix=secret_prefix,
        lookup_regions=lookup_regions,
    )
    code = asyncio.run(run_import(Settings(), request, out=typer.echo, err=_echo_err))
    raise typer.Exit(code)


def export_command(
    format: Annotated[
        ExportFormat,
        typer.Option("--format", help="fence-yaml (S3_BUCKETS style) or json."),
    ] = ExportFormat.FENCE_YAML,
    output: Annotated[
        Path | None, typer.Option(help="Write to this file instead of standard output.")
    ] = None,
) -> None:
    """Export every registration (secret references, never secrets) for review or rollback."""
    try:
        text = asyncio.run(run_export(Settings(), format))
    except RegistryError as exc:
        _echo_err(f"error: {_explained(exc)}")
        raise typer.Exit(1) from None
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")


async def run_import(
    settings: Settings,
    request: ImportRequest,
    *,
    out: Echo,
    err: Echo,
    secrets: SecretStore | None = None,
) -> int:
    """The whole command; returns its exit code. ``secrets`` defaults to one from ``settings``."""
    try:
        config = load_fence_config(request.path)
    except FenceConfigError as exc:
        err(f"error: {request.path} was not imported; nothing was written:")
        for problem in exc.problems:
            err(f"  {problem}")
        return 2
    db = Database(settings)
    store = secrets or SecretStore(settings)
    registry = RegistryService(
        db,
        endpoint_allowlist=settings.endpoint_allowlist,
        check_secret_ref=store.check,
    )
    options = ImportOptions(
        owner_project=request.owner_project,
        resource_paths=request.resource_paths,
        gcp_service_account=request.gcp_service_account,
        secret_prefix=request.secret_prefix or default_secret_prefix(settings),
    )
    try:
        lookup = None
        if request.lookup_regions:
            session = AioSession()

            async def lookup(name: str) -> str:
                return await lookup_bucket_region(session, name)

        plan = await plan_import(
            config,
            registry,
            store,
            options=options,
            write_secrets=request.write_secrets,
            region_lookup=lookup,
        )
        out(render_plan(plan))
        if request.dry_run or plan.invalid:
            out(render_summary(plan, applied=False))
            if plan.invalid:
                err("error: the import was refused (invalid entries above); nothing was written")
            return 1 if plan.invalid else 0
        actor = Actor(request.actor or _default_actor(), request_id=f"import-{uuid.uuid4().hex}")
        await apply_import(plan, registry, store, actor=actor)
        out(render_summary(plan, applied=True))
        return 0
    except RegistryError as exc:
        err(f"error: {_explained(exc)}")
        return 1
    finally:
        if secrets is None:
            await store.aclose()
        await db.dispose()


async def run_export(settings: Settings, format: ExportFormat) -> str:
    db = Database(settings)
    try:
        buckets = await collect(RegistryService(db))
    finally:
        await db.dispose()
    if format is ExportFormat.JSON:
        return render_json(buckets)
    return render_fence_yaml(buckets)


def _explained(exc: RegistryError) -> str:
    if isinstance(exc, DependencyUnavailable) and exc.dependency == "database":
        # A missing table looks like an outage to the driver; say both.
        return (
            f"{exc.message} (is BUCKET_REGISTRY_DATABASE_URL reachable, and migrated with"
            " `bucket-registry migrate`?)"
        )
    return exc.message


def _default_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        # No passwd entry, as in many containers.
        return "cli"


def _echo_err(message: str) -> None:
    typer.echo(message, err=True)
