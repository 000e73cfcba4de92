"""The ``bucket-registry`` command line."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from app.config import Settings
from app.migration.commands import export_command, import_fence_config

if TYPE_CHECKING:
    from app.dev import DevMode
    from app.dev_store import EmbeddedStore

cli = typer.Typer(
    help="Gen3 Bucket Registry: buckets as data, credentials in secrets managers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DEV_STATE_DIR = Path(".bucket-registry-dev")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "0.0.0.0",  # noqa: S104
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[
        int, typer.Option(envvar="BUCKET_REGISTRY_WORKERS", help="Worker processes.")
    ] = 1,
    dev: Annotated[
        bool,
        typer.Option(
            "--dev",
            help="Local development mode: local token key and policy file, file secrets,"
            " loopback only. Never for production.",
        ),
    ] = False,
    store_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="With --dev: port of the embedded S3 store on 127.0.0.1 (default 9100; 0 picks"
            " a free one).",
        ),
    ] = None,
) -> None:
    """Run the HTTP service (uvicorn)."""
    from app.db import migrate
    from app.dev import DevMode
    from app.logs import configure_logging

    settings = Settings()
    configure_logging(settings.log_level, json_format=settings.log_json)
    dev_mode = None
    if store_port is not None and not dev:
        typer.echo("--store-port only applies with --dev", err=True)
        raise typer.Exit(2)
    if dev:
        if host == "0.0.0.0":  # noqa: S104 - the default; dev mode narrows it
            host = "127.0.0.1"
        if not _is_loopback(host):
            typer.echo("--dev binds to loopback only; refusing host " + host, err=True)
            raise typer.Exit(2)
        if workers != 1:
            typer.echo("--dev runs a single worker", err=True)
            workers = 1
        dev_mode = DevMode(DEV_STATE_DIR.resolve())
        dev_mode.secrets_dir.mkdir(parents=True, exist_ok=True)
        settings = settings.model_copy(
            update={
                "secrets_backend": "file",
                "file_secrets_dir": dev_mode.secrets_dir,
                # The embedded store (or a local MinIO) listens on loopback.
                "endpoint_allowlist": [*settings.endpoint_allowlist, "127.0.0.1", "localhost"],
            }
        )
    if settings.is_sqlite:
        # The embedded default creates and upgrades its own file; PostgreSQL is migrated by
        # `bucket-registry migrate` (the Helm hook) so replicas never race on DDL.
        migrate(settings.database_url)
    store = None
    if dev_mode is not None:
        store = _start_dev_store(settings, dev_mode, store_port)
        _dev_banner(settings, dev_mode, host, port, store.url)
    try:
        _run(settings, dev_mode, host, port, workers)
    finally:
        if store is not None:
            store.stop()


def _start_dev_store(settings: Settings, mode: DevMode, port: int | None) -> EmbeddedStore:
    from app.dev_store import DEFAULT_STORE_PORT, StorePortInUse, start_demo

    try:
        return start_demo(settings, mode, DEFAULT_STORE_PORT if port is None else port)
    except StorePortInUse as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


def _dev_banner(settings: Settings, mode: DevMode, host: str, port: int, store_url: str) -> None:
    from app.dev_store import DEMO_BUCKET, DEMO_PREFIX, DEMO_RESOURCE

    typer.secho(
        "\n  LOCAL DEVELOPMENT MODE — not for production.\n"
        f"  Registry: http://{host}:{port}   Database: {settings.database_url}\n"
        f"  S3 store: {store_url} (embedded moto, in memory: empty at each start)\n"
        f"  Demo:     bucket {DEMO_BUCKET}, {DEMO_PREFIX} bound to {DEMO_RESOURCE}"
        " (alice reads/writes, bob reads)\n"
        "  Tokens:   bucket-registry dev-token --user alice\n"
        f"  Policy:   {mode.policy_file}   Secrets: {mode.secrets_dir}\n",
        fg=typer.colors.YELLOW,
        bold=True,
        err=True,
    )


def _run(settings: Settings, dev_mode: DevMode | None, host: str, port: int, workers: int) -> None:
    import uvicorn

    from app.main import create_app

    if workers > 1:
        uvicorn.run(
            "app.main:create_app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_config=None,
            proxy_headers=True,
            limit_concurrency=settings.limit_concurrency,
        )
    else:
        uvicorn.run(
            create_app(settings, dev=dev_mode),
            host=host,
            port=port,
            log_config=None,
            proxy_headers=True,
            limit_concurrency=settings.limit_concurrency,
        )


@cli.command("migrate")
def migrate_command(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Upgrade the database schema (Alembic) to the latest revision."""
    from app.db import migrate

    settings = Settings()
    migrate(settings.database_url, revision)
    typer.echo(f"database at revision {revision}")


@cli.command("dev-token")
def dev_token(
    user: Annotated[str, typer.Option(help="User name to put in the token.")] = "alice",
    lifetime: Annotated[int, typer.Option(help="Seconds until the token expires.")] = 3600,
) -> None:
    """Mint an access token for local development mode (`serve --dev`)."""
    from app.dev import DevMode, mint_dev_token

    typer.echo(mint_dev_token(DevMode(DEV_STATE_DIR.resolve()), user, lifetime=lifetime))


def render_openapi() -> str:
    """The app's OpenAPI document as YAML (what ``openapi.yaml`` at the repo root holds)."""
    import yaml

    from app.main import create_app

    spec = create_app(Settings(database_url="sqlite+aiosqlite:///:memory:")).openapi()
    return yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=100)


@cli.command()
def openapi(
    output: Annotated[
        Path | None, typer.Option(help="Write to this file instead of standard output.")
    ] = None,
) -> None:
    """Print (or write) the OpenAPI document the service serves."""
    text = render_openapi()
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)


@cli.command()
def validate(
    names: Annotated[list[str] | None, typer.Argument(help="Buckets to check.")] = None,
    all_buckets: Annotated[
        bool, typer.Option("--all", help="Check every active bucket (the nightly drift check).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON report.")] = False,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Buckets checked at once.")] = 8,
    write_probe: Annotated[
        bool, typer.Option(help="Also PUT, GET and DELETE a small probe object.")
    ] = False,
    record: Annotated[
        bool,
        typer.Option(
            help="Keep each result as the bucket's last validation (the console's health"
            " page shows it); no status changes."
        ),
    ] = False,
) -> None:
    """Dry-run each bucket's secret, role, listing and a real presigned request.

    Exits 1 when any check fails, 2 on bad usage; changes nothing (``--record`` keeps each
    result on its bucket, nothing else).
    """
    import asyncio

    from app.container import Services
    from app.health.drift import active_bucket_names, check_buckets
    from app.logs import configure_logging
    from app.metrics import Metrics

    if bool(names) == all_buckets:
        typer.echo("name one or more buckets, or pass --all", err=True)
        raise typer.Exit(2)
    settings = Settings()
    configure_logging("WARNING", json_format=settings.log_json)

    async def run() -> str | None:
        services = await Services.start(settings, metrics=Metrics(), listen=False)
        try:
            targets = names or await active_bucket_names(services.registry)
            result = await check_buckets(
                services.registry,
                services.probe,
                targets,
                concurrency=concurrency,
                write_probe=write_probe,
                record=record,
            )
        finally:
            await services.aclose()
        typer.echo(result.as_json() if as_json else result.as_table())
        return "failed" if result.failures else None

    if asyncio.run(run()):
        raise typer.Exit(1)


def _operator() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


@cli.command()
def pending(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List self-registered buckets waiting for validation or approval, with their last
    validation."""
    import asyncio
    import json

    from app.db import Database
    from app.registry.records import BucketStatus
    from app.registry.service import BucketFilter, RegistryService

    settings = Settings()

    async def run() -> list[dict[str, object]]:
        db = Database(settings)
        try:
            registry = RegistryService(db, endpoint_allowlist=settings.endpoint_allowlist)
            found: list[dict[str, object]] = []
            cursor = None
            while True:
                page = await registry.list_buckets(
                    BucketFilter(status=BucketStatus.PENDING), 500, cursor
                )
                for row in page.items:
                    validation = row.validation or {}
                    found.append(
                        {
                            "name": row.name,
                            "project_resource": row.project_resource,
                            "validated": validation.get("ok"),
                            "validated_at": validation.get("at"),
                        }
                    )
                if not page.next_cursor:
                    return found
                cursor = page.next_cursor
        finally:
            await db.dispose()

    rows = asyncio.run(run())
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(f"{len(rows)} pending bucket(s)")
    for row in rows:
        state = {True: "passed", False: "failed", None: "not run"}[row["validated"]]  # type: ignore[index]
        typer.echo(f"{row['name']}  {row['project_resource'] or '-'}  validation {state}")


def _decide(name: str, verdict: str) -> None:
    import asyncio

    from app.container import Services
    from app.errors import RegistryError
    from app.logs import configure_logging
    from app.metrics import Metrics
    from app.registry.service import Actor

    settings = Settings()
    configure_logging("WARNING", json_format=settings.log_json)

    async def run() -> None:
        services = await Services.start(settings, metrics=Metrics(), listen=False)
        try:
            decide = getattr(services.selfservice, verdict)
            await decide(name, Actor(_operator()))
        finally:
            await services.aclose()

    try:
        asyncio.run(run())
    except RegistryError as exc:
        typer.echo(f"{name}: {exc.message}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{name}: {'active' if verdict == 'approve' else 'rejected'}")


@cli.command()
def approve(name: Annotated[str, typer.Argument(help="The pending bucket.")]) -> None:
    """Approve a pending bucket that passed validation (as POST /admin/buckets/{name}/approve).

    Exits 1 when the bucket is not pending or has not passed validation.
    """
    _decide(name, "approve")


@cli.command()
def reject(name: Annotated[str, typer.Argument(help="The pending bucket.")]) -> None:
    """Reject a pending bucket: it keeps its name and serves nothing."""
    _decide(name, "reject")


@cli.command()
def purge(
    name: Annotated[str, typer.Argument(help="The rejected or suspended bucket.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove a rejected or suspended bucket for good, with its prefixes, bindings and the
    keys the registry holds for it (as POST /admin/buckets/{name}/purge); its name is free
    again and its audit trail stays.

    Exits 1 when the bucket is neither rejected nor suspended.
    """
    import asyncio

    from app.container import Services
    from app.errors import RegistryError
    from app.logs import configure_logging
    from app.metrics import Metrics
    from app.registry.service import Actor

    if not yes:
        typer.confirm(f"Remove {name} for good?", abort=True)
    settings = Settings()
    configure_logging("WARNING", json_format=settings.log_json)

    async def run() -> bool:
        services = await Services.start(settings, metrics=Metrics(), listen=False)
        try:
            return await services.selfservice.purge(name, Actor(_operator()))
        finally:
            await services.aclose()

    try:
        secrets_removed = asyncio.run(run())
    except RegistryError as exc:
        typer.echo(f"{name}: {exc.message}", err=True)
        raise typer.Exit(1) from None
    kept = "" if secrets_removed else " (the keys the registry held could not be deleted)"
    typer.echo(f"{name}: removed{kept}")


cli.command("import-fence-config")(import_fence_config)
cli.command("export")(export_command)


def main() -> None:
    cli(prog_name="bucket-registry")


if __name__ == "__main__":
    main()
