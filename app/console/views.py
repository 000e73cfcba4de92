"""The console's pages and form posts. Every read and change goes through the same services
as the admin API (``RegistryService``, ``BucketProbe``), with the same Arborist check."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute

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
from app.errors import InvalidInput, NotFound, RegistryError
from app.health.drift import active_bucket_names, check_buckets
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

templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _services(request: Request) -> Services:
    return request.app.state.services


def _recent(request: Request) -> selfservice.RecentValidations:
    state = request.app.state
    if not hasattr(state, "console_validations"):
        state.console_validations = selfservice.RecentValidations()
    return state.console_validations


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


async def _admin(request: Request) -> tuple[Services, ConsoleUser]:
    services = _services(request)
    user = await console_user(request, services)
    request.state.console_user = user
    require_admin(user, services)
    return services, user


async def _change(request: Request) -> tuple[Services, ConsoleUser, Form, Actor]:
    """A state change: CSRF first (before any token or Arborist work), then the admin check."""
    check_csrf(request)
    services, user = await _admin(request)
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_FORM_BYTES):
        raise InvalidInput(f"form body larger than {MAX_FORM_BYTES} bytes")
    form = Form(await request.body())
    actor = Actor(user.identity.actor, request.scope.get("state", {}).get("request_id"))
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
    services, _user = await _admin(request)
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidInput(f"limit: between 1 and {MAX_PAGE_SIZE}")
    if owner_project is not None and len(owner_project) > 255:
        raise InvalidInput("owner_project: at most 255 characters")
    if cursor is not None and len(cursor) > 512:
        raise InvalidInput("cursor: at most 512 characters")
    owner_project = owner_project or None
    filters = BucketFilter(status, owner_project, provider, labels(label))
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
    await _admin(request)
    return _bucket_form(request, None)


def _bucket_form(
    request: Request, bucket: Any, *, error: str | None = None, status_code: int = 200
) -> HTMLResponse:
    return render(
        request,
        "bucket_form.html",
        status_code,
        bucket=bucket,
        providers=list(Provider),
        auth_modes=list(AuthMode),
        error=error,
    )


@router.get("/buckets/{name}")
async def bucket_page(request: Request, name: str) -> HTMLResponse:
    services, _user = await _admin(request)
    registry = services.registry
    bucket = await registry.get_bucket(name)
    prefixes = await registry.list_prefixes(name)
    bindings = await registry.list_bindings(name)
    audit = await registry.audit(bucket_name=name, limit=AUDIT_ON_BUCKET_PAGE)
    validation = await selfservice.last_validation(registry, _recent(request), name)
    return render(
        request,
        "bucket.html",
        bucket=bucket,
        secret_fingerprint=secret_fingerprint(bucket.secret_ref),
        prefixes=prefixes,
        bindings=bindings,
        audit=audit.items,
        validation=validation,
        key_rotation=selfservice.supports_key_rotation(registry),
    )


@router.get("/buckets/{name}/edit")
async def edit_bucket(request: Request, name: str) -> HTMLResponse:
    services, _user = await _admin(request)
    return _bucket_form(request, await services.registry.get_bucket(name))


@router.get("/health")
async def health(request: Request) -> HTMLResponse:
    services, _user = await _admin(request)
    registry = services.registry
    results = sorted(_recent(request).all(), key=lambda r: (r.ok, r.bucket))
    suspended = await registry.list_buckets(
        BucketFilter(status=BucketStatus.SUSPENDED), MAX_PAGE_SIZE, None
    )
    return render(
        request,
        "health.html",
        total=await registry.count_buckets(),
        results=results,
        failing=[r for r in results if not r.ok],
        suspended=suspended.items,
        more_suspended=suspended.next_cursor is not None,
    )


@router.get("/audit")
async def audit_page(
    request: Request,
    bucket: str | None = None,
    actor: str | None = None,
    since: str | None = None,
    cursor: str | None = None,
) -> HTMLResponse:
    services, _user = await _admin(request)
    for field, value in (("bucket", bucket), ("actor", actor)):
        if value is not None and len(value) > 255:
            raise InvalidInput(f"{field}: at most 255 characters")
    since_at = None
    if since:
        try:
            since_at = datetime.fromisoformat(since)
        except ValueError:
            raise InvalidInput("since: expected a date or time such as 2024-05-01") from None
    page = await services.registry.audit(
        bucket_name=bucket or None,
        since=since_at,
        actor=actor or None,
        limit=PAGE_SIZE,
        cursor=cursor or None,
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
    services, _user = await _admin(request)
    registry = services.registry
    enabled = selfservice.supports_pending(registry)
    items: list[Any] = []
    if enabled:
        status = BucketStatus(selfservice.PENDING)
        items = list((await registry.list_buckets(BucketFilter(status), MAX_PAGE_SIZE, None)).items)
    return render(request, "pending.html", enabled=enabled, buckets=items)


# ----- changes ---------------------------------------------------------------------------


def _bucket_values(form: Form, *, creating: bool) -> dict[str, Any]:
    values: dict[str, Any] = {
        name: form.text(name)
        for name in (
            "provider",
            "region",
            "endpoint",
            "auth_mode",
            "role_arn",
            "external_id",
            "service_account",
            "owner_project",
        )
    }
    values["labels"] = labels(form.text("labels"))
    for flag in ("data_upload_allowed", "is_default_upload", "requester_pays", "public"):
        values[flag] = form.flag(flag)
    if creating:
        values["name"] = form.text("name")
        values["secret_ref"] = form.text("secret_ref")
        values["secret_version"] = form.text("secret_version")
        return {k: v for k, v in values.items() if v is not None}
    return values


@router.post("/buckets")
async def create_bucket(request: Request) -> Response:
    services, _user, form, actor = await _change(request)
    body = build(BucketCreate, _bucket_values(form, creating=True))
    bucket = await services.registry.create_bucket(body, actor)
    return _done(_bucket_path(bucket.name), "Bucket registered")


@router.post("/buckets/{name}/edit")
async def update_bucket(request: Request, name: str) -> Response:
    services, _user, form, actor = await _change(request)
    version = form.text("version")
    if version is None or not version.isdigit():
        raise InvalidInput("version: reload the page; the form lost the bucket's version")
    patch = build(BucketUpdate, _bucket_values(form, creating=False))
    await services.registry.update_bucket(name, patch, actor, if_match=int(version))
    return _done(_bucket_path(name), "Changes saved")


@router.post("/buckets/{name}/suspend")
async def suspend(request: Request, name: str) -> Response:
    services, _user, _form, actor = await _change(request)
    await services.registry.set_status(name, BucketStatus.SUSPENDED, actor)
    return _done(_bucket_path(name), "Bucket suspended")


@router.post("/buckets/{name}/resume")
async def resume(request: Request, name: str) -> Response:
    services, _user, _form, actor = await _change(request)
    await services.registry.set_status(name, BucketStatus.ACTIVE, actor)
    return _done(_bucket_path(name), "Bucket resumed")


@router.post("/buckets/{name}/prefixes")
async def add_prefix(request: Request, name: str) -> Response:
    services, _user, form, actor = await _change(request)
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
    services, _user, form, actor = await _change(request)
    await services.registry.remove_prefix(name, _uuid(form, "prefix_id"), actor)
    return _done(_bucket_path(name), "Prefix removed")


@router.post("/buckets/{name}/bindings")
async def add_binding(request: Request, name: str) -> Response:
    services, _user, form, actor = await _change(request)
    ops = {op: form.flag(op) for op in ("read", "write", "delete", "multipart")}
    values: dict[str, Any] = {"resource_path": form.text("resource_path"), "allowed_ops": ops}
    if form.text("prefix"):
        values["prefix"] = form.text("prefix")
    await services.registry.add_binding(name, build(BindingCreate, values), actor)
    return _done(_bucket_path(name), "Binding added")


@router.post("/buckets/{name}/bindings/remove")
async def remove_binding(request: Request, name: str) -> Response:
    services, _user, form, actor = await _change(request)
    await services.registry.remove_binding(name, _uuid(form, "binding_id"), actor)
    return _done(_bucket_path(name), "Binding removed")


@router.post("/buckets/{name}/validate")
async def validate(request: Request, name: str) -> Response:
    services, _user, form, actor = await _change(request)
    # Through the same service as the API: the result is kept on the bucket (every replica
    # sees it) and may activate a pending registration.
    report = await services.selfservice.validate(name, actor, write_probe=form.flag("write_probe"))
    _recent(request).remember(selfservice.ValidationResult.of(report))
    return _done(_bucket_path(name), "Validation passed" if report.ok else "Validation failed")


@router.post("/buckets/{name}/credentials")
async def rotate(request: Request, name: str) -> Response:
    """Rotate a bucket's credentials. Nothing typed here is ever rendered back."""
    services, _user, form, actor = await _change(request)
    registry = services.registry
    keys = {
        field: form.text(field)
        for field in ("access_key_id", "secret_access_key", "service_account_key_json")
    }
    if selfservice.supports_key_rotation(registry) and any(keys.values()):
        payload = {k: v for k, v in keys.items() if v is not None}
        await selfservice.put_credentials(services.selfservice, name, payload, actor)
        return _done(_bucket_path(name), "Credentials rotated")
    secret_ref = form.text("secret_ref")
    if secret_ref is None:
        raise InvalidInput("secret_ref: the new secret reference is required")
    patch = build(
        BucketUpdate, {"secret_ref": secret_ref, "secret_version": form.text("secret_version")}
    )
    await registry.update_bucket(name, patch, actor, if_match=None)
    return _done(_bucket_path(name), "Credentials rotated")


@router.post("/health/check")
async def check_all(request: Request) -> Response:
    services, _user, _form, _actor = await _change(request)
    names = await active_bucket_names(services.registry)
    result = await check_buckets(services.registry, services.probe, names)
    recent = _recent(request)
    for report in result.reports:
        recent.remember(selfservice.ValidationResult.of(report))
    failed = len(result.failures)
    return _done("/console/health", f"Checked {len(result.reports)} bucket(s), {failed} failing")


@router.post("/pending/{name}/approve")
async def approve(request: Request, name: str) -> Response:
    services, _user, _form, actor = await _change(request)
    if not selfservice.supports_pending(services.registry):
        raise InvalidInput("self-service registration is not enabled on this registry")
    await selfservice.approve(services.selfservice, name, actor)
    return _done("/console/pending", f"{name} approved")


@router.post("/pending/{name}/reject")
async def reject(request: Request, name: str) -> Response:
    services, _user, _form, actor = await _change(request)
    if not selfservice.supports_pending(services.registry):
        raise InvalidInput("self-service registration is not enabled on this registry")
    await selfservice.reject(services.selfservice, name, actor)
    return _done("/console/pending", f"{name} rejected")
