"""The console over HTTP: sign-in by cookie, the admin check, CSRF, headers, and the pages'
use of the registry (no browser; tests/console/test_browser.py drives Chromium)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from app.main import create_app
from tests.support.arborist import ArboristStub
from tests.support.fence import FenceIssuer
from tests.support.moto import MotoServer

CSRF = "test-csrf-token-0123456789"
SECRET_REF = "aws-sm://bucket-registry/static/very-private-path"


@pytest.fixture
async def http(make_settings, pg_url: str) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    app = create_app(make_settings(pg_url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://registry") as client:
            yield client


def signed_in(issuer: FenceIssuer, user: str = "admin") -> dict[str, str]:
    return {"access_token": issuer.token(user), "csrftoken": CSRF}


async def post(
    http: httpx.AsyncClient,
    path: str,
    cookies: dict[str, str],
    data: dict[str, str],
    **headers: str,
) -> httpx.Response:
    sent = {"x-csrf-token": CSRF, **headers}
    http.cookies.clear()
    return await http.post(path, data=data, cookies=cookies, headers=sent)


async def get(http: httpx.AsyncClient, path: str, cookies: dict[str, str]) -> httpx.Response:
    http.cookies.clear()
    return await http.get(path, cookies=cookies)


async def register(http: httpx.AsyncClient, cookies: dict[str, str], name: str) -> None:
    answer = await post(
        http,
        "/console/buckets",
        cookies,
        {
            "name": name,
            "provider": "aws",
            "region": "us-east-1",
            "auth_mode": "static",
            "secret_ref": SECRET_REF,
            "owner_project": "ABC",
            "labels": "team:genomics",
        },
    )
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"].startswith(f"/console/buckets/{name}?")


async def test_without_a_cookie_the_browser_goes_to_fence_login_and_back(
    http: httpx.AsyncClient, issuer: FenceIssuer
) -> None:
    answer = await http.get("/console/buckets?status=active")
    assert answer.status_code == 303
    target = urlsplit(answer.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == f"{issuer.user_api}/login"
    assert parse_qs(target.query) == {"redirect": ["/console/buckets?status=active"]}


@pytest.mark.parametrize(
    "next_",
    [
        "https://evil.example/console",
        "//evil.example/console",
        "/console/../admin/buckets",
        "/console\\@evil.example",
        "/consolex",
        "/admin/buckets",
        "/console/\r\nSet-Cookie: x=1",
        "javascript:alert(1)",
    ],
)
async def test_the_return_address_stays_inside_the_console(
    http: httpx.AsyncClient, next_: str
) -> None:
    answer = await http.get("/console/login", params={"next": next_})
    assert answer.status_code == 303
    query = parse_qs(urlsplit(answer.headers["location"]).query)
    assert query == {"redirect": ["/console/buckets"]}


async def test_a_console_path_is_kept_as_the_return_address(http: httpx.AsyncClient) -> None:
    answer = await http.get("/console/login", params={"next": "/console/audit?actor=bob"})
    query = parse_qs(urlsplit(answer.headers["location"]).query)
    assert query == {"redirect": ["/console/audit?actor=bob"]}


async def test_an_expired_or_foreign_cookie_means_signing_in_again(
    http: httpx.AsyncClient, issuer: FenceIssuer
) -> None:
    for token in (issuer.token("admin", lifetime=-60), "not-a-jwt"):
        answer = await get(http, "/console/buckets", {"access_token": token})
        assert answer.status_code == 303
        assert "/login?redirect=" in answer.headers["location"]


async def test_the_json_api_never_accepts_the_cookie(
    http: httpx.AsyncClient, issuer: FenceIssuer
) -> None:
    cookies = signed_in(issuer)
    answer = await get(http, "/admin/buckets", cookies)
    assert answer.status_code == 401
    created = await http.post(
        "/admin/buckets",
        json={"name": "via-cookie", "provider": "aws", "auth_mode": "workload_identity"},
        cookies=cookies,
        headers={"x-csrf-token": CSRF},
    )
    assert created.status_code == 401
    listed = await get(http, "/console/buckets", cookies)
    assert "via-cookie" not in listed.text


async def test_a_user_without_bucket_admin_is_refused(
    http: httpx.AsyncClient, issuer: FenceIssuer
) -> None:
    cookies = signed_in(issuer, "bob")
    page = await get(http, "/console/buckets", cookies)
    assert page.status_code == 403
    assert "bucket_admin" in page.text
    assert page.headers["content-type"].startswith("text/html")
    created = await post(
        http,
        "/console/buckets",
        cookies,
        {"name": "bobs", "provider": "aws", "auth_mode": "workload_identity"},
    )
    assert created.status_code == 403
    admin = signed_in(issuer)
    assert "bobs" not in (await get(http, "/console/buckets", admin)).text


async def test_a_state_change_without_the_csrf_header_is_refused(
    http: httpx.AsyncClient, issuer: FenceIssuer
) -> None:
    cookies = signed_in(issuer)
    await register(http, cookies, "csrf-target")
    # A cross-site form post: the browser sends the cookies but cannot add the header.
    for headers in ({"x-csrf-token": ""}, {"x-csrf-token": "guessed"}):
        http.cookies.clear()
        answer = await http.post(
            "/console/buckets/csrf-target/suspend",
            data={},
            cookies=cookies,
            headers={**headers, "origin": "https://evil.example"},
        )
        assert answer.status_code == 403, answer.text
        assert "CSRF" in answer.text
    page = await get(http, "/console/buckets/csrf-target", cookies)
    assert "Suspend</button>" in page.text  # still active


async def test_register_bind_suspend_and_find_it_all_in_the_audit(
    http: httpx.AsyncClient, issuer: FenceIssuer
) -> None:
    cookies = signed_in(issuer)
    await register(http, cookies, "console-one")
    base = "/console/buckets/console-one"
    assert (await post(http, f"{base}/prefixes", cookies, {"prefix": "raw/"})).status_code == 303
    bound = await post(
        http,
        f"{base}/bindings",
        cookies,
        {"resource_path": "/programs/DEV/projects/ABC", "prefix": "raw/", "read": "on"},
    )
    assert bound.status_code == 303, bound.text
    assert (await post(http, f"{base}/suspend", cookies, {})).status_code == 303
    page = await get(http, base, cookies)
    assert page.status_code == 200
    assert "/programs/DEV/projects/ABC" in page.text
    assert "suspended" in page.text
    assert SECRET_REF not in page.text
    audit = await get(http, "/console/audit?bucket=console-one", cookies)
    for action in ("create", "add_prefix", "bind", "suspend"):
        assert f'<td class="action">{action}</td>' in audit.text, action
    assert SECRET_REF not in audit.text
    by_actor = await get(http, "/console/audit?actor=nobody", cookies)
    assert "No audit entries." in by_actor.text


async def test_edit_keeps_the_version_check(http: httpx.AsyncClient, issuer: FenceIssuer) -> None:
    cookies = signed_in(issuer)
    await register(http, cookies, "edited")
    form = {"version": "1", "provider": "aws", "auth_mode": "static", "region": "eu-west-1"}
    saved = await post(http, "/console/buckets/edited/edit", cookies, form)
    assert saved.status_code == 303, saved.text
    stale = await post(http, "/console/buckets/edited/edit", cookies, {**form, "region": "x"})
    assert stale.status_code == 412
    page = await get(http, "/console/buckets/edited", cookies)
    assert "eu-west-1" in page.text
    assert "team:genomics" not in page.text  # the form sent no labels: cleared, as edited


async def test_bad_input_is_a_400_page_and_changes_nothing(
    http: httpx.AsyncClient, issuer: FenceIssuer
) -> None:
    cookies = signed_in(issuer)
    typed_secret = "AKIA-typed-into-the-wrong-field-SECRET"
    answer = await post(
        http,
        "/console/buckets",
        cookies,
        {"name": "bad", "provider": typed_secret, "auth_mode": "static"},
    )
    assert answer.status_code == 400
    assert answer.headers["content-type"].startswith("text/html")
    assert "provider" in answer.text
    assert typed_secret not in answer.text
    labels = await post(
        http,
        "/console/buckets",
        cookies,
        {"name": "bad", "provider": "aws", "auth_mode": "static", "labels": "no separator"},
    )
    assert labels.status_code == 400
    listing = await get(http, "/console/buckets", cookies)
    assert "No bucket matches." in listing.text
    bad_query = await get(http, "/console/buckets?limit=100000", cookies)
    assert bad_query.status_code == 400
    unknown = await get(http, "/console/buckets/nope", cookies)
    assert unknown.status_code == 404


async def test_rotating_credentials_never_shows_the_reference(
    http: httpx.AsyncClient, issuer: FenceIssuer
) -> None:
    cookies = signed_in(issuer)
    await register(http, cookies, "rotated")
    new_ref = "aws-sm://bucket-registry/static/rotated-private-path"
    answer = await post(
        http, "/console/buckets/rotated/credentials", cookies, {"secret_ref": new_ref}
    )
    assert answer.status_code == 303, answer.text
    page = await get(http, "/console/buckets/rotated", cookies)
    assert new_ref not in page.text and SECRET_REF not in page.text
    assert "sha256:" in page.text


async def test_every_console_answer_has_a_strict_csp(
    http: httpx.AsyncClient, issuer: FenceIssuer
) -> None:
    cookies = signed_in(issuer)
    answers = [
        await http.get("/console/buckets"),
        await get(http, "/console/buckets", cookies),
        await get(http, "/console/buckets/missing", cookies),
        await http.get("/console/static/console.js"),
        await http.get("/console/static/console.css"),
        await get(http, "/console/health", cookies),
        await get(http, "/console/pending", cookies),
    ]
    for answer in answers:
        csp = answer.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
    page = answers[1].text
    assert '<script src="/console/static/console.js"' in page
    assert "style=" not in page and "onclick" not in page


async def test_the_csrf_cookie_is_set_samesite_when_nothing_in_front_set_it(
    http: httpx.AsyncClient,
) -> None:
    answer = await http.get("/console/static/console.css")
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("csrftoken=")
    assert "samesite=strict" in cookie.lower()
    assert "httponly" not in cookie.lower()


async def test_the_console_stays_out_of_the_openapi_document(http: httpx.AsyncClient) -> None:
    spec = (await http.get("/openapi.json")).json()
    assert not [path for path in spec["paths"] if path.startswith("/console")]


async def test_arborist_down_is_a_503_page(
    http: httpx.AsyncClient, issuer: FenceIssuer, arborist: ArboristStub
) -> None:
    arborist.stop()
    answer = await get(http, "/console/buckets", signed_in(issuer))
    assert answer.status_code == 503
    assert answer.headers["content-type"].startswith("text/html")


# ----- project registrants ------------------------------------------------------------------

PROJECT = "/programs/DEV/projects/ABC"
OTHER_PROJECT = "/programs/DEV/projects/XYZ"
ROLE_ARN = "arn:aws:iam::123456789012:role/console-registrant"


@pytest.fixture
def carol(issuer: FenceIssuer, arborist: ArboristStub) -> dict[str, str]:
    """A registrant of project ABC (``bucket_register`` there), not a bucket admin."""
    arborist.grant("carol", "bucket_register", PROJECT)
    return signed_in(issuer, "carol")


async def admin_registers(
    http: httpx.AsyncClient, issuer: FenceIssuer, name: str, project: str
) -> None:
    answer = await post(
        http,
        "/console/buckets",
        signed_in(issuer),
        {
            "name": name,
            "provider": "aws",
            "region": "us-east-1",
            "auth_mode": "role",
            "role_arn": ROLE_ARN,
            "project_resource": project,
        },
    )
    assert answer.status_code == 303, answer.text


async def registrant_registers(http: httpx.AsyncClient, cookies: dict[str, str], name: str) -> None:
    answer = await post(
        http,
        "/console/buckets",
        cookies,
        {
            "name": name,
            "provider": "aws",
            "region": "us-east-1",
            "auth_mode": "role",
            "role_arn": ROLE_ARN,
            "project_resource": PROJECT,
        },
    )
    assert answer.status_code == 303, answer.text


async def audit_rows(http: httpx.AsyncClient, issuer: FenceIssuer) -> str:
    return (await get(http, "/console/audit", signed_in(issuer))).text


async def test_a_registrant_sees_only_their_projects_buckets(
    http: httpx.AsyncClient, issuer: FenceIssuer, carol: dict[str, str]
) -> None:
    await admin_registers(http, issuer, "abc-mine", PROJECT)
    await admin_registers(http, issuer, "abc-below", PROJECT + "/raw")
    await admin_registers(http, issuer, "xyz-theirs", OTHER_PROJECT)
    await register(http, signed_in(issuer), "no-project")

    listing = await get(http, "/console/buckets", carol)
    assert listing.status_code == 200
    assert "abc-mine" in listing.text and "abc-below" in listing.text
    assert "xyz-theirs" not in listing.text and "no-project" not in listing.text
    assert f"registrant of {PROJECT}" in listing.text

    assert (await get(http, "/console/buckets/abc-mine", carol)).status_code == 200
    # Another project's bucket and an unknown name answer alike: nothing about it leaks.
    theirs = await get(http, "/console/buckets/xyz-theirs", carol)
    unknown = await get(http, "/console/buckets/never-registered", carol)
    assert theirs.status_code == unknown.status_code == 403
    assert theirs.text.replace("xyz-theirs", "X") == unknown.text.replace("never-registered", "X")
    assert (await get(http, "/console/buckets/xyz-theirs/edit", carol)).status_code == 403

    audit = await get(http, "/console/audit", carol)
    assert "abc-mine" in audit.text and "xyz-theirs" not in audit.text
    assert (await get(http, "/console/audit?bucket=xyz-theirs", carol)).status_code == 403
    assert (await get(http, "/console/audit?bucket=abc-mine", carol)).status_code == 200
    health = await get(http, "/console/health", carol)
    assert health.status_code == 200 and "xyz-theirs" not in health.text
    assert "Validate every active bucket now" not in health.text


async def test_a_registrant_registers_for_their_project_only(
    http: httpx.AsyncClient, issuer: FenceIssuer, carol: dict[str, str]
) -> None:
    form = await get(http, "/console/buckets/new", carol)
    assert form.status_code == 200
    assert f'<option value="{PROJECT}">' in form.text
    assert OTHER_PROJECT not in form.text
    for admin_only in (
        'name="secret_ref"',
        'name="external_id"',
        'name="service_account"',
        'name="is_default_upload"',
        'name="owner_project"',
        'value="workload_identity"',
    ):
        assert admin_only not in form.text, admin_only

    await registrant_registers(http, carol, "carol-role")
    page = await get(http, "/console/buckets/carol-role", carol)
    assert '<span class="status pending">pending</span>' in page.text
    assert "gen3-bucket-registry-" in page.text  # the registry's own external ID
    assert "Resume</button>" not in page.text
    assert "/pending/carol-role/approve" not in page.text
    pending = await get(http, "/console/pending", carol)
    assert "carol-role" in pending.text and "Approve</button>" not in pending.text
    trail = await get(http, "/console/audit?bucket=carol-role", carol)
    assert '<td class="action">register</td>' in trail.text

    elsewhere = await post(
        http,
        "/console/buckets",
        carol,
        {
            "name": "carol-xyz",
            "provider": "aws",
            "auth_mode": "role",
            "role_arn": ROLE_ARN,
            "project_resource": OTHER_PROJECT,
        },
    )
    assert elsewhere.status_code == 403, elsewhere.text
    assert "carol-xyz" not in await audit_rows(http, issuer)


async def test_a_registrant_edits_binds_and_suspends_their_bucket(
    http: httpx.AsyncClient, issuer: FenceIssuer, carol: dict[str, str]
) -> None:
    await registrant_registers(http, carol, "carol-edit")
    page = await get(http, "/console/buckets/carol-edit", carol)
    external_id = page.text.split("gen3-bucket-registry-", 1)[1][:32]
    form = {
        "version": "2",
        "provider": "aws",
        "auth_mode": "role",
        "role_arn": ROLE_ARN,
        "region": "eu-west-1",
        "labels": "team:abc",
    }
    version = page.text.split("<dt>Version</dt><dd>", 1)[1].split(" ", 1)[0]
    saved = await post(
        http, "/console/buckets/carol-edit/edit", carol, {**form, "version": version}
    )
    assert saved.status_code == 303, saved.text
    bound = await post(
        http,
        "/console/buckets/carol-edit/bindings",
        carol,
        {"resource_path": PROJECT + "/raw", "read": "on"},
    )
    assert bound.status_code == 303, bound.text
    assert (await post(http, "/console/buckets/carol-edit/suspend", carol, {})).status_code == 303
    page = await get(http, "/console/buckets/carol-edit", carol)
    assert "eu-west-1" in page.text and "team:abc" in page.text
    assert f"gen3-bucket-registry-{external_id}" in page.text  # the edit kept the registry's ID
    assert PROJECT + "/raw" in page.text
    assert '<span class="status suspended">suspended</span>' in page.text
    assert "only a bucket admin can resume it" in page.text
    trail = await get(http, "/console/audit?bucket=carol-edit", carol)
    for action in ("register", "update", "bind", "suspend"):
        assert f'<td class="action">{action}</td>' in trail.text, action


@pytest.mark.parametrize(
    ("path", "data", "says"),
    [
        # Admin-only fields and powers, posted anyway on a registration of their own project.
        ("/console/buckets", {"auth_mode": "workload_identity"}, "workload_identity"),
        ("/console/buckets", {"auth_mode": "static", "secret_ref": SECRET_REF}, "secret_ref"),
        ("/console/buckets", {"external_id": "chosen-by-me"}, "external_id"),
        ("/console/buckets", {"is_default_upload": "on"}, "is_default_upload"),
        ("/console/buckets", {"owner_project": "XYZ"}, "owner_project"),
        ("/console/buckets", {"project_resource": OTHER_PROJECT}, OTHER_PROJECT),
        # On their own bucket.
        ("/console/buckets/carol-own/edit", {"is_default_upload": "on"}, "is_default_upload"),
        ("/console/buckets/carol-own/edit", {"external_id": "chosen-by-me"}, "external_id"),
        (
            "/console/buckets/carol-own/edit",
            {"project_resource": OTHER_PROJECT},
            "project_resource",
        ),
        ("/console/buckets/carol-own/credentials", {"secret_ref": SECRET_REF}, "secret_ref"),
        (
            "/console/buckets/carol-own/bindings",
            {"resource_path": OTHER_PROJECT, "read": "on"},
            "resource_path",
        ),
        ("/console/pending/carol-own/approve", {}, "bucket_admin"),
        ("/console/pending/carol-own/reject", {}, "bucket_admin"),
        ("/console/buckets/carol-own/resume", {}, "bucket_admin"),
        ("/console/health/check", {}, "bucket_admin"),
        # Anything on another project's bucket.
        ("/console/buckets/xyz-theirs/suspend", {}, "xyz-theirs"),
        ("/console/buckets/xyz-theirs/validate", {}, "xyz-theirs"),
        ("/console/buckets/xyz-theirs/bindings", {"resource_path": PROJECT}, "xyz-theirs"),
        ("/console/buckets/xyz-theirs/prefixes", {"prefix": "raw/"}, "xyz-theirs"),
        (
            "/console/buckets/xyz-theirs/credentials",
            {"access_key_id": "A", "secret_access_key": "B"},
            "xyz-theirs",
        ),
        ("/console/buckets/xyz-theirs/edit", {"region": "eu-west-1"}, "xyz-theirs"),
    ],
)
async def test_what_a_registrant_may_not_do_is_a_403_and_changes_nothing(
    http: httpx.AsyncClient,
    issuer: FenceIssuer,
    carol: dict[str, str],
    path: str,
    data: dict[str, str],
    says: str,
) -> None:
    await admin_registers(http, issuer, "xyz-theirs", OTHER_PROJECT)
    await registrant_registers(http, carol, "carol-own")
    before = await audit_rows(http, issuer)
    form = {
        "name": "carol-new",
        "provider": "aws",
        "auth_mode": "role",
        "role_arn": ROLE_ARN,
        "project_resource": PROJECT,
        "version": "1",
        **data,
    }
    answer = await post(http, path, carol, form)
    assert answer.status_code == 403, answer.text
    assert answer.headers["content-type"].startswith("text/html")
    assert says in answer.text
    assert SECRET_REF not in answer.text
    assert await audit_rows(http, issuer) == before


async def test_a_user_with_neither_permission_gets_a_clear_403_page(
    http: httpx.AsyncClient, issuer: FenceIssuer, arborist: ArboristStub
) -> None:
    arborist.grant("dave", "reader", PROJECT)  # may read data, may not manage buckets
    for path in ("/console/buckets", "/console/buckets/new", "/console/health", "/console/audit"):
        page = await get(http, path, signed_in(issuer, "dave"))
        assert page.status_code == 403, path
        assert "bucket_register on a project" in page.text
        assert "Signed in as" not in page.text


# ----- health from the stored validations -------------------------------------------------


@contextlib.asynccontextmanager
async def app_on(settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A whole app (its own container, caches and memory) on ``settings``' database."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://registry") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


@pytest.fixture
def store_settings(make_settings, pg_url: str, moto: MotoServer, monkeypatch):  # type: ignore[no-untyped-def]
    # Secrets Manager is moto, which holds none of these buckets' secrets: validations fail
    # at secret_accessible, quickly and for real.
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto.url)
    return make_settings(pg_url, secrets_backend="aws_sm")


def section(page: str, heading_id: str) -> str:
    start = page.index(f'id="{heading_id}"')
    end = page.find("</section>", start)
    return page[start:end]


async def test_the_health_page_reads_the_stored_validations_after_a_restart(
    store_settings: Any, issuer: FenceIssuer
) -> None:
    admin = signed_in(issuer)
    async with app_on(store_settings) as first:
        await register(first, admin, "fails-validate")
        await register(first, admin, "never-checked")
        await register(first, admin, "checked-long-ago")
        checked = await post(first, "/console/buckets/fails-validate/validate", admin, {})
        assert checked.headers["location"].endswith("done=Validation+failed")
        long_ago = (datetime.now(UTC) - timedelta(days=3)).isoformat()
        await first.app.state.services.registry.store_validation(  # type: ignore[attr-defined]
            "checked-long-ago", {"at": long_ago, "ok": True, "checks": {}}
        )

    # A new app on the same database: nothing of the first one's memory survives.
    async with app_on(store_settings) as second:
        page = (await get(second, "/console/health", admin)).text
        failing = section(page, "h-failing")
        assert "fails-validate" in failing and "secret_accessible" in failing
        assert "never-checked" not in failing
        stale = section(page, "h-stale")
        assert "never-checked" in stale and "never" in stale
        assert "checked-long-ago" in stale and long_ago[:10] in stale
        assert "fails-validate" not in stale
        assert "1 failing their last validation; 2 active not validated in 48 hours" in page
        bucket = (await get(second, "/console/buckets/fails-validate", admin)).text
        assert "Failed at" in section(bucket, "h-validation")
        assert SECRET_REF not in page + bucket
        # Nor in the column: the reason keeps the reference's fingerprint only.
        registry = second.app.state.services.registry  # type: ignore[attr-defined]
        kept = json.dumps((await registry.get_bucket("fails-validate")).validation)
        assert SECRET_REF not in kept and "secret sha256:" in kept

        # The drift check keeps its results too, marked as the drift check's.
        ran = await post(second, "/console/health/check", admin, {})
        assert ran.headers["location"].endswith("Checked+3+bucket%28s%29%2C+3+failing")

    async with app_on(store_settings) as third:
        page = (await get(third, "/console/health", admin)).text
        failing = section(page, "h-failing")
        for name in ("fails-validate", "never-checked", "checked-long-ago"):
            assert name in failing, name
        assert failing.count("<td>drift check</td>") == 3
        assert "Every active bucket was validated in the last 48 hours." in page


async def test_a_registrant_sees_the_health_of_their_projects_buckets_only(
    store_settings: Any, issuer: FenceIssuer, arborist: ArboristStub
) -> None:
    arborist.grant("carol", "bucket_register", PROJECT)
    async with app_on(store_settings) as http:
        await admin_registers(http, issuer, "xyz-failing", OTHER_PROJECT)
        await admin_registers(http, issuer, "abc-failing", PROJECT)
        for name in ("xyz-failing", "abc-failing"):
            await post(http, f"/console/buckets/{name}/validate", signed_in(issuer), {})
        page = (await get(http, "/console/health", signed_in(issuer, "carol"))).text
        assert "abc-failing" in section(page, "h-failing")
        assert "xyz-failing" not in page
        assert "bucket(s) registered" not in page  # the registry's size is not theirs to see
