"""The console's pages and form posts. Every read and change goes through the same services
as the admin API (``RegistryService``, ``SelfService``), and who may see or change what is
decided by the same rule (``authz.managers``): a bucket admin manages every bucket, a project
registrant only the buckets of their projects, under the self-service rules."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute

from app.authz.managers import may_manage
from app.console import selfservice
from app.console.forms import MAX_FORM_BYTES, Form, build, labels
from app.console.session import (
    CSRF_COOKIE,
    HOME,
    ConsoleUser,
    SignInRequired,
    check_csrf,
    console_user,
    login_url,
    new_csrf_token,
    require_admin,
    safe_return,
)
from app.container import Services
from app.errors import AccessDenied, BucketNotFound, InvalidInput, NotFound, RegistryError
from app.health.drift import active_bucket_names, check_buckets
from app.registry.models import Bucket
from app.registry.records import AuthMode, BucketStatus, Provider, secret_fingerprint
from app.registry.schemas import BindingCreate, BucketCreate, BucketUpdate
from app.registry.service import Actor, BucketFilter

log = logging.getLogger(__name__)

_HERE = Path(__file__).parent
_STATIC_TYPES = {".js": "text/javascript", ".css": "text/css"}
# Read once: the assets are public, data-free and few; serving them from memory keeps the
# console's responses on one code path (headers, errors) with no file access per request.
STATIC = {
    path.name: (path.read_bytes(), _STATIC_TYPES[path.suffix])
    for path in (_HERE / "static").iterdir()
    if path.suffix in _STATIC_TYPES
}

# No inline script or style, nothing from another origin, no framing, forms post only here.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
AUDIT_ON_BUCKET_PAGE = 10
# The drift check runs nightly: a result older than two nights means it has stopped running
# for that bucket (or never ran).
STALE_AFTER = timedelta(hours=48)
HEALTH_ROWS = 200

templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _services(request: Request) -> Services:
    return request.app.state.services


def _secure_cookie(request: Request) -> bool:
    proto = request.headers.get("x-forwarded-proto", request.url.scheme)
    return proto.split(",")[0].strip() == "https"


def _finish(request: Request, response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    if request.url.path.startswith("/console/static/"):
        response.headers["Cache-Control"] = "public, max-age=3600"
    else:
        response.headers["Cache-Control"] = "no-store"
    if not request.cookies.get(CSRF_COOKIE):
        # The revproxy sets this cookie in a commons; set it when nothing in front did.
        # Script must read it, so not HttpOnly; SameSite keeps other sites from sending it.
        response.set_cookie(
            CSRF_COOKIE,
            new_csrf_token(),
            path="/",
            samesite="strict",
            secure=_secure_cookie(request),
            httponly=False,
        )
    return response


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("user", getattr(request.state, "console_user", None))
    context.setdefault("error", None)
    context.setdefault("notice", request.query_params.get("done"))
    html = templates.get_template(template).render(request=request, **context)
    return HTMLResponse(html, status_code=status_code)


class ConsoleRoute(APIRoute):
    """Console responses: HTML for errors (never the API's JSON), sign-in by redirect, and
    the security headers on every answer."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                response = await handler(request)
            except SignInRequired as exc:
                user_api = _services(request).settings.user_api
                response = RedirectResponse(login_url(user_api, exc.back_to), status_code=303)
            except RegistryError as exc:
                if exc.status_code >= 500:
                    log.warning("console: dependency error", extra={"error": exc.code})
                response = _error_page(request, exc.status_code, exc.message)
            except RequestValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {}
                where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "path"))
                response = _error_page(request, 400, f"{where}: {first.get('msg', 'invalid')}")
            return _finish(request, response)

        return route


def _error_page(request: Request, status: int, message: str) -> HTMLResponse:
    titles = {400: "Invalid input", 403: "Not allowed", 404: "Not found", 409: "Conflict"}
    title = titles.get(status, "Service unavailable" if status >= 500 else "Error")
    response = render(request, "error.html", status, title=title, message=message)
    if status == 503:
        response.headers["Retry-After"] = "1"
    return response


router = APIRouter(prefix="/console", include_in_schema=False, route_class=ConsoleRoute)


async def _signed_in(request: Request) -> tuple[Services, ConsoleUser]:
    """The services and the signed-in bucket admin or registrant (403 for anyone else)."""
    services = _services(request)
    user = await console_user(request, services)
    request.state.console_user = user
    return services, user


async def _visible(services: Services, user: ConsoleUser, name: str) -> Bucket:
    """The bucket, if the user may manage it (the admin API's rule). To a registrant, a bucket
    of another project and an unknown name get the same 403, so the answer tells nothing
    about other projects' buckets."""
    try:
        bucket = await services.registry.get_bucket(name)
    except BucketNotFound:
        if user.is_admin:
            raise
        bucket = None
    if bucket is None or not await may_manage(
        services.authorizer, services.settings, user.manager, bucket.project_resource
    ):
        raise AccessDenied(
            f"bucket {name!r} is not a bucket of a project you hold"
            f" {services.settings.register_method} on"
        )
    return bucket


def _scope(user: ConsoleUser) -> tuple[str, ...] | None:
    """The project paths a listing is limited to: None (every bucket) for an admin."""
    return None if user.is_admin else user.projects


async def _change(request: Request) -> tuple[Services, ConsoleUser, Form, Actor]:
    """A state change: CSRF first (before any token or Arborist work), then who is asking."""
    check_csrf(request)
    services, user = await _signed_in(request)
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_FORM_BYTES):
        raise InvalidInput(f"form body larger than {MAX_FORM_BYTES} bytes")
    form = Form(await request.body())
    actor = Actor(user.name, request.scope.get("state", {}).get("request_id"))
    return services, user, form, actor


def _done(path: str, message: str) -> RedirectResponse:
    return RedirectResponse(f"{path}?{urlencode({'done': message})}", status_code=303)


def _bucket_path(name: str) -> str:
    return f"/console/buckets/{name}"


# ----- pages -----------------------------------------------------------------------------


@router.get("")
@router.get("/")
async def home() -> RedirectResponse:
    return RedirectResponse(HOME, status_code=303)


@router.get("/login")
async def login(request: Request, next: str | None = None) -> RedirectResponse:
    """Start Fence's login explicitly; ``next`` must be a console path (no open redirect)."""
    user_api = _services(request).settings.user_api
    return RedirectResponse(login_url(user_api, safe_return(next)), status_code=303)


@router.get("/static/{name}")
async def static(name: str) -> Response:
    asset = STATIC.get(name)
    if asset is None:
        raise NotFound("no such asset")
    body, media_type = asset
    return Response(body, media_type=media_type)


@router.get("/buckets")
async def bucket_list(
    request: Request,
    status: BucketStatus | None = None,
    owner_project: str | None = None,
    provider: Provider | None = None,
    label: str | None = None,
    cursor: str | None = None,
    limit: int = PAGE_SIZE,
) -> HTMLResponse:
    services, user = await _signed_in(request)
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidInput(f"limit: between 1 and {MAX_PAGE_SIZE}")
    if owner_project is not None and len(owner_project) > 255:
        raise InvalidInput("owner_project: at most 255 characters")
    if cursor is not None and len(cursor) > 512:
        raise InvalidInput("cursor: at most 512 characters")
    owner_project = owner_project or None
    filters = BucketFilter(
        status, owner_project, provider, labels(label), project_resources=_scope(user)
    )
    page = await services.registry.list_buckets(filters, limit, cursor or None)
    query = {
        key: value
        for key, value in (
            ("status", status.value if status else None),
            ("owner_project", owner_project),
            ("provider", provider.value if provider else None),
            ("label", label or None),
            ("limit", str(limit) if limit != PAGE_SIZE else None),
        )
        if value
    }
    next_url = None
    if page.next_cursor:
        next_url = "/console/buckets?" + urlencode({**query, "cursor": page.next_cursor})
    return render(
        request,
        "buckets.html",
        buckets=page.items,
        filters={
            "status": status,
            "owner_project": owner_project,
            "provider": provider,
            "label": label or "",
        },
        statuses=list(BucketStatus),
        providers=list(Provider),
        first_url="/console/buckets?" + urlencode(query) if cursor else None,
        next_url=next_url,
    )


@router.get("/buckets/new")
async def new_bucket(request: Request) -> HTMLResponse:
    _services, user = await _signed_in(request)
    return _bucket_form(request, user, None)


def _bucket_form(
    request: Request,
    user: ConsoleUser,
    bucket: Any,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    # A registrant is offered only what the self-service rules let them set: no
    # workload_identity, no secret reference, external ID, service account or default flag,
    # and a project among their own.
    auth_modes = [m for m in AuthMode if user.is_admin or m is not AuthMode.WORKLOAD_IDENTITY]
    return render(
        request,
        "bucket_form.html",
        status_code,
        bucket=bucket,
        providers=list(Provider),
        auth_modes=auth_modes,
        projects=user.projects,
        error=error,
    )


@router.get("/buckets/{name}")
async def bucket_page(request: Request, name: str) -> HTMLResponse:
    services, user = await _signed_in(request)
    bucket = await _visible(services, user, name)
    registry = services.registry
    prefixes = await registry.list_prefixes(name)
    bindings = await registry.list_bindings(name)
    audit = await registry.audit(bucket_name=name, limit=AUDIT_ON_BUCKET_PAGE)
    return render(
        request,
        "bucket.html",
        bucket=bucket,
        secret_fingerprint=secret_fingerprint(bucket.secret_ref),
        prefixes=prefixes,
        bindings=bindings,
        audit=audit.items,
        validation=selfservice.stored_validation(name, bucket.validation, bucket.secret_ref),
        key_rotation=selfservice.supports_key_rotation(registry),
    )


@router.get("/buckets/{name}/edit")
async def edit_bucket(request: Request, name: str) -> HTMLResponse:
    services, user = await _signed_in(request)
    return _bucket_form(request, user, await _visible(services, user, name))


@router.get("/health")
async def health(request: Request) -> HTMLResponse:
    services, user = await _signed_in(request)
    registry = services.registry
    stale_before = datetime.now(UTC) - STALE_AFTER
    overview = await registry.validation_health(
        stale_before=stale_before, limit=HEALTH_ROWS, project_resources=_scope(user)
    )
    suspended = await registry.list_buckets(
        BucketFilter(status=BucketStatus.SUSPENDED, project_resources=_scope(user)),
        HEALTH_ROWS,
        None,
    )
    return render(
        request,
        "health.html",
        total=await registry.count_buckets() if user.is_admin else None,
        failing=[_row_validation(row) for row in overview.failing],
        failing_total=overview.failing_total,
        stale=[(row, _row_validation(row)) for row in overview.stale],
        stale_total=overview.stale_total,
        stale_hours=int(STALE_AFTER.total_seconds() // 3600),
        suspended=suspended.items,
        more_suspended=suspended.next_cursor is not None,
        row_limit=HEALTH_ROWS,
    )


def _row_validation(row: Any) -> selfservice.ValidationResult | None:
    return selfservice.stored_validation(row.name, row.validation, row.secret_ref)


@router.get("/audit")
async def audit_page(
    request: Request,
    bucket: str | None = None,
    actor: str | None = None,
    since: str | None = None,
    cursor: str | None = None,
) -> HTMLResponse:
    services, user = await _signed_in(request)
    for field, value in (("bucket", bucket), ("actor", actor)):
        if value is not None and len(value) > 255:
            raise InvalidInput(f"{field}: at most 255 characters")
    since_at = None
    if since:
        try:
            since_at = datetime.fromisoformat(since)
        except ValueError:
            raise InvalidInput("since: expected a date or time such as 2024-05-01") from None
    if bucket:
        await _visible(services, user, bucket)
    page = await services.registry.audit(
        bucket_name=bucket or None,
        since=since_at,
        actor=actor or None,
        limit=PAGE_SIZE,
        cursor=cursor or None,
        project_resources=_scope(user),
    )
    query = {k: v for k, v in (("bucket", bucket), ("actor", actor), ("since", since)) if v}
    next_url = None
    if page.next_cursor:
        next_url = "/console/audit?" + urlencode({**query, "cursor": page.next_cursor})
    return render(
        request,
        "audit.html",
        rows=page.items,
        filters={"bucket": bucket or "", "actor": actor or "", "since": since or ""},
        next_url=next_url,
    )


@router.get("/pending")
async def pending(request: Request) -> HTMLResponse:
    services, user = await _signed_in(request)
    registry = services.registry
    enabled = selfservice.supports_pending(registry)
    items: list[Any] = []
    if enabled:
        status = BucketStatus(selfservice.PENDING)
        filters = BucketFilter(status, project_resources=_scope(user))
        items = list((await registry.list_buckets(filters, MAX_PAGE_SIZE, None)).items)
    return render(
        request,
        "pending.html",
        enabled=enabled,
        buckets=items,
        admin_approves=not services.selfservice.validation_activates,
    )


# ----- changes ---------------------------------------------------------------------------

# Fields both kinds of user fill in, and those only an admin is offered. A registrant's form
# has no admin-only field, but one posted anyway is passed on, so the self-service rules
# refuse it (403) rather than the console silently dropping it.
_FIELDS = ("provider", "region", "endpoint", "auth_mode", "role_arn")
_ADMIN_FIELDS = ("external_id", "service_account", "owner_project", "project_resource")
_FLAGS = ("data_upload_allowed", "requester_pays", "public")
_ADMIN_FLAGS = ("is_default_upload",)


def _bucket_values(form: Form, user: ConsoleUser, *, creating: bool) -> dict[str, Any]:
    values: dict[str, Any] = {name: form.text(name) for name in _FIELDS}
    values["labels"] = labels(form.text("labels"))
    values.update({flag: form.flag(flag) for flag in _FLAGS})
    if user.is_admin:
        values.update({name: form.text(name) for name in _ADMIN_FIELDS})
        values.update({flag: form.flag(flag) for flag in _ADMIN_FLAGS})
    else:
        # Blank or absent: the registry's own choice stands (an external ID it generated
        # must not be cleared by an empty field).
        values.update({n: form.text(n) for n in _ADMIN_FIELDS if form.text(n) is not None})
        values.update({f: True for f in _ADMIN_FLAGS if form.flag(f)})
    if creating:
        values["name"] = form.text("name")
        values["secret_ref"] = form.text("secret_ref")
        values["secret_version"] = form.text("secret_version")
        return {k: v for k, v in values.items() if v is not None}
    return values


@router.post("/buckets")
async def create_bucket(request: Request) -> Response:
    services, user, form, actor = await _change(request)
    body = build(BucketCreate, _bucket_values(form, user, creating=True))
    if user.is_admin:
        bucket = await services.registry.create_bucket(body, actor)
        return _done(_bucket_path(bucket.name), "Bucket registered")
    # As the admin API: a registrant registers for a project they hold bucket_register on;
    # the bucket starts pending and is validated at once.
    if body.project_resource and not await may_manage(
        services.authorizer, services.settings, user.manager, body.project_resource
    ):
        raise AccessDenied(
            f"{services.settings.register_method} on {body.project_resource} is required"
            " to register a bucket of that project"
        )
    bucket = await services.registry.create_bucket(body, actor, registrant=True)
    report = await services.selfservice.validate(bucket.name, actor)
    outcome = "validation passed" if report.ok else "validation failed"
    return _done(_bucket_path(bucket.name), f"Bucket registered; {outcome}")


@router.post("/buckets/{name}/edit")
async def update_bucket(request: Request, name: str) -> Response:
    services, user, form, actor = await _change(request)
    await _visible(services, user, name)
    version = form.text("version")
    if version is None or not version.isdigit():
        raise InvalidInput("version: reload the page; the form lost the bucket's version")
    patch = build(BucketUpdate, _bucket_values(form, user, creating=False))
    await services.registry.update_bucket(
        name, patch, actor, if_match=int(version), registrant=not user.is_admin
    )
    return _done(_bucket_path(name), "Changes saved")


@router.post("/buckets/{name}/suspend")
async def suspend(request: Request, name: str) -> Response:
    services, user, _form, actor = await _change(request)
    await _visible(services, user, name)
    await services.registry.set_status(name, BucketStatus.SUSPENDED, actor)
    return _done(_bucket_path(name), "Bucket suspended")


@router.post("/buckets/{name}/resume")
async def resume(request: Request, name: str) -> Response:
    services, user, _form, actor = await _change(request)
    # As the admin API: a suspension may be an admin's answer to a compromise, and resuming
    # would skip a pending bucket's validation: only an admin lifts it.
    require_admin(user, services, "resuming a bucket")
    await services.registry.set_status(name, BucketStatus.ACTIVE, actor)
    return _done(_bucket_path(name), "Bucket resumed")


@router.post("/buckets/{name}/prefixes")
async def add_prefix(request: Request, name: str) -> Response:
    services, user, form, actor = await _change(request)
    await _visible(services, user, name)
    prefix = form.text("prefix")
    if prefix is None:
        raise InvalidInput("prefix: required")
    await services.registry.add_prefix(name, prefix, actor)
    return _done(_bucket_path(name), "Prefix added")


def _uuid(form: Form, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(form.text(field) or "")
    except ValueError:
        raise InvalidInput(f"{field}: not an id from this page") from None


@router.post("/buckets/{name}/prefixes/remove")
async def remove_prefix(request: Request, name: str) -> Response:
    services, user, form, actor = await _change(request)
    await _visible(services, user, name)
    await services.registry.remove_prefix(name, _uuid(form, "prefix_id"), actor)
    return _done(_bucket_path(name), "Prefix removed")


@router.post("/buckets/{name}/bindings")
async def add_binding(request: Request, name: str) -> Response:
    services, user, form, actor = await _change(request)
    await _visible(services, user, name)
    ops = {op: form.flag(op) for op in ("read", "write", "delete", "multipart")}
    values: dict[str, Any] = {"resource_path": form.text("resource_path"), "allowed_ops": ops}
    if form.text("prefix"):
        values["prefix"] = form.text("prefix")
    binding = build(BindingCreate, values)
    await services.registry.add_binding(name, binding, actor, registrant=not user.is_admin)
    return _done(_bucket_path(name), "Binding added")


@router.post("/buckets/{name}/bindings/remove")
async def remove_binding(request: Request, name: str) -> Response:
    services, user, form, actor = await _change(request)
    await _visible(services, user, name)
    await services.registry.remove_binding(name, _uuid(form, "binding_id"), actor)
    return _done(_bucket_path(name), "Binding removed")


@router.post("/buckets/{name}/validate")
async def validate(request: Request, name: str) -> Response:
    services, user, form, actor = await _change(request)
    await _visible(services, user, name)
    # Through the same service as the API: the result is kept on the bucket (every replica
    # sees it) and may activate a pending registration.
    report = await services.selfservice.validate(name, actor, write_probe=form.flag("write_probe"))
    return _done(_bucket_path(name), "Validation passed" if report.ok else "Validation failed")


@router.post("/buckets/{name}/credentials")
async def rotate(request: Request, name: str) -> Response:
    """Rotate a bucket's credentials. Nothing typed here is ever rendered back."""
    services, user, form, actor = await _change(request)
    await _visible(services, user, name)
    registry = services.registry
    registrant = not user.is_admin
    keys = {
        field: form.text(field)
        for field in ("access_key_id", "secret_access_key", "service_account_key_json")
    }
    if selfservice.supports_key_rotation(registry) and any(keys.values()):
        payload = {k: v for k, v in keys.items() if v is not None}
        await selfservice.put_credentials(
            services.selfservice, name, payload, actor, registrant=registrant
        )
        return _done(_bucket_path(name), "Credentials rotated")
    secret_ref = form.text("secret_ref")
    if secret_ref is None:
        raise InvalidInput("secret_ref: the new secret reference is required")
    patch = build(
        BucketUpdate, {"secret_ref": secret_ref, "secret_version": form.text("secret_version")}
    )
    # A registrant naming a secret is refused by the self-service rules (403).
    await registry.update_bucket(name, patch, actor, if_match=None, registrant=registrant)
    return _done(_bucket_path(name), "Credentials rotated")


@router.post("/health/check")
async def check_all(request: Request) -> Response:
    services, user, _form, _actor = await _change(request)
    require_admin(user, services, "the drift check")
    names = await active_bucket_names(services.registry)
    result = await check_buckets(services.registry, services.probe, names, record=True)
    failed = len(result.failures)
    return _done("/console/health", f"Checked {len(result.reports)} bucket(s), {failed} failing")


@router.post("/pending/{name}/approve")
async def approve(request: Request, name: str) -> Response:
    services, user, _form, actor = await _change(request)
    require_admin(user, services, "approving a registration")
    if not selfservice.supports_pending(services.registry):
        raise InvalidInput("self-service registration is not enabled on this registry")
    await selfservice.approve(services.selfservice, name, actor)
    return _done("/console/pending", f"{name} approved")


@router.post("/pending/{name}/reject")
async def reject(request: Request, name: str) -> Response:
    services, user, _form, actor = await _change(request)
    require_admin(user, services, "rejecting a registration")
    if not selfservice.supports_pending(services.registry):
        raise InvalidInput("self-service registration is not enabled on this registry")
    await selfservice.reject(services.selfservice, name, actor)
    return _done("/console/pending", f"{name} rejected")
