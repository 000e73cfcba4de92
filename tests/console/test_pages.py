"""The console over HTTP: sign-in by cookie, the admin check, CSRF, headers, and the pages'
use of the registry (no browser; tests/console/test_browser.py drives Chromium)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from app.main import create_app
from tests.support.arborist import ArboristStub
from tests.support.fence import FenceIssuer

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
