"""The admin API over HTTP on PostgreSQL and SQLite, with real tokens and the Arborist stub."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.arborist import ArboristStub
from tests.support.fence import FenceIssuer

AWS_ROLE = {
    "name": "gen3-abc-data",
    "provider": "aws",
    "region": "us-east-1",
    "auth_mode": "role",
    "role_arn": "arn:aws:iam::123456789012:role/gen3-abc",
    "external_id": "gen3-external",
    "owner_project": "ABC",
    "labels": {"team": "genomics", "tier": "hot"},
    "data_upload_allowed": True,
}
MINIO_STATIC = {
    "name": "minio-archive",
    "provider": "minio",
    "endpoint": "https://minio.example.org",
    "auth_mode": "static",
    "secret_ref": "aws-sm://gen3/bucket-registry/minio-archive",
    "owner_project": "XYZ",
}


async def create(
    client: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any]
) -> httpx.Response:
    return await client.post("/admin/buckets", json=body, headers=headers)


async def test_create_get_and_list_shape(client, admin_headers) -> None:
    response = await create(client, admin_headers, AWS_ROLE)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["ok"] is True and body["name"] == "gen3-abc-data"
    assert response.headers["etag"] == '"1"'

    got = await client.get("/admin/buckets/gen3-abc-data", headers=admin_headers)
    assert got.status_code == 200
    assert got.headers["etag"] == '"1"'
    bucket = got.json()
    assert bucket["id"] == body["id"]
    assert bucket["provider"] == "aws" and bucket["auth_mode"] == "role"
    assert bucket["labels"] == {"team": "genomics", "tier": "hot"}
    assert bucket["status"] == "active" and bucket["version"] == 1
    assert bucket["secret_ref"] is False
    assert bucket["created_at"].endswith(("Z", "+00:00"))

    await create(client, admin_headers, MINIO_STATIC)
    listing = await client.get("/admin/buckets", headers=admin_headers)
    assert [b["name"] for b in listing.json()] == ["gen3-abc-data", "minio-archive"]
    minio = listing.json()[1]
    # Only whether a reference is set, never the reference itself.
    assert minio["secret_ref"] is True
    assert "gen3/bucket-registry/minio-archive" not in listing.text


async def test_list_filters_and_link_pagination(client, admin_headers) -> None:
    for i in range(7):
        body = dict(AWS_ROLE, name=f"bucket-{i:02d}", owner_project="P1" if i % 2 else "P2")
        body["labels"] = {"tier": "hot" if i < 3 else "cold"}
        assert (await create(client, admin_headers, body)).status_code == 201
    await create(client, admin_headers, MINIO_STATIC)
    await client.delete("/admin/buckets/bucket-00", headers=admin_headers)

    names: list[str] = []
    url: str | None = "/admin/buckets?limit=3"
    pages = 0
    while url:
        response = await client.get(url, headers=admin_headers)
        assert response.status_code == 200
        names += [b["name"] for b in response.json()]
        link = response.headers.get("link")
        url = re.match(r'<([^>]+)>; rel="next"', link).group(1) if link else None
        pages += 1
    assert names == sorted(names) and len(names) == 8 and pages == 3

    async def names_for(query: str) -> list[str]:
        response = await client.get("/admin/buckets?" + query, headers=admin_headers)
        assert response.status_code == 200, response.text
        return [b["name"] for b in response.json()]

    assert await names_for("provider=minio") == ["minio-archive"]
    assert await names_for("status=suspended") == ["bucket-00"]
    assert await names_for("owner_project=P1") == ["bucket-01", "bucket-03", "bucket-05"]
    assert await names_for("label=tier:hot") == ["bucket-00", "bucket-01", "bucket-02"]
    assert await names_for("label=tier:cold&owner_project=P2") == ["bucket-04", "bucket-06"]


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=5000",
        "status=gone",
        "provider=azure",
        "label=novalue",
        'label=a"b:c',
        "cursor=%%%",
    ],
)
async def test_list_rejects_bad_queries(client, admin_headers, query) -> None:
    response = await client.get("/admin/buckets?" + query, headers=admin_headers)
    assert response.status_code == 400
    assert response.json()["ok"] is False and response.json()["message"]


async def test_create_duplicate_is_409(client, admin_headers) -> None:
    assert (await create(client, admin_headers, AWS_ROLE)).status_code == 201
    again = await create(client, admin_headers, AWS_ROLE)
    assert again.status_code == 409
    assert again.json()["error"] == "conflict"


async def test_concurrent_creates_of_one_name_one_wins(client, admin_headers) -> None:
    responses = await asyncio.gather(*(create(client, admin_headers, AWS_ROLE) for _ in range(2)))
    assert sorted(r.status_code for r in responses) == [201, 409]
    audit = await client.get("/admin/audit", headers=admin_headers)
    assert [row["action"] for row in audit.json()] == ["create"]


BAD_BODIES = [
    ({"provider": "azure"}, "provider"),
    ({"auth_mode": "magic"}, "auth_mode"),
    ({"role_arn": None}, "role_arn"),
    ({"role_arn": "not-an-arn"}, "role_arn"),
    ({"name": "Upper_Case"}, "name"),
    ({"name": "ab"}, "name"),
    ({"name": "192.168.1.1"}, "name"),
    ({"name": "xn--bucket"}, "name"),
    ({"endpoint": "https://s3.example.org"}, "endpoint"),
    ({"labels": {"k": 1}}, "labels"),
    ({"labels": {"bad key!": "v"}}, "labels"),
    ({"labels": {"k": "v" * 300}}, "labels"),
    ({"is_default_upload": True, "data_upload_allowed": False}, "is_default_upload"),
    ({"unknown_field": "x"}, "unknown_field"),
    ({"auth_mode": "static", "role_arn": None, "external_id": None}, "secret_ref"),
    ({"auth_mode": "workload_identity"}, "role_arn"),
]


@pytest.mark.parametrize(("change", "field"), BAD_BODIES)
async def test_create_rejects_invalid_bodies(client, admin_headers, change, field) -> None:
    body = {**AWS_ROLE, **change}
    response = await create(client, admin_headers, body)
    assert response.status_code == 400, response.text
    assert field in response.json()["message"] or field in json.dumps(
        response.json().get("details")
    )
    listing = await client.get("/admin/buckets", headers=admin_headers)
    assert listing.json() == []


async def test_create_rejects_non_json_and_non_object(client, admin_headers) -> None:
    raw = await client.post(
        "/admin/buckets",
        content=b"{not json",
        headers={**admin_headers, "content-type": "application/json"},
    )
    assert raw.status_code == 400
    array = await client.post("/admin/buckets", json=[1, 2], headers=admin_headers)
    assert array.status_code == 400


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://169.254.169.254",
        "http://[fd00:ec2::254]",
        "http://metadata.google.internal",
        "http://[::ffff:169.254.169.254]",
        "http://127.0.0.1:9000",
        "http://localhost:9000",
        "http://10.1.2.3",
        "http://minio.minio.svc.cluster.local",
        "ftp://minio.example.org",
        "https://user:pass@minio.example.org",
        "https://minio.example.org/?x=1",
        "https://minio.example.org/#frag",
        "https://minio.example.org/some/path",
    ],
)
async def test_endpoint_ssrf_guards(client, admin_headers, endpoint) -> None:
    body = {**MINIO_STATIC, "endpoint": endpoint}
    response = await create(client, admin_headers, body)
    assert response.status_code == 400, response.text
    assert "endpoint" in response.json()["message"]
    assert "pass" not in response.text


async def test_endpoint_allowlist_admits_private_but_never_metadata(
    make_settings, database_url, admin_headers
) -> None:
    from app.main import create_app

    settings = make_settings(
        database_url,
        endpoint_allowlist="127.0.0.1, 10.0.0.0/8, minio.internal:9000, 169.254.0.0/16",
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://r") as http:
            for i, endpoint in enumerate(
                ("http://127.0.0.1:9000", "http://10.20.30.40", "http://minio.internal:9000/")
            ):
                body = {**MINIO_STATIC, "name": f"allowed-{i}", "endpoint": endpoint}
                response = await create(http, admin_headers, body)
                assert response.status_code == 201, (endpoint, response.text)
            stored = await http.get("/admin/buckets/allowed-2", headers=admin_headers)
            assert stored.json()["endpoint"] == "http://minio.internal:9000"
            for i, endpoint in enumerate(
                ("http://minio.internal:9001", "http://169.254.169.254", "http://192.168.0.1")
            ):
                body = {**MINIO_STATIC, "name": f"refused-{i}", "endpoint": endpoint}
                response = await create(http, admin_headers, body)
                assert response.status_code == 400, (endpoint, response.text)


@pytest.mark.parametrize(
    "field",
    ["provider", "auth_mode", "labels", "data_upload_allowed", "is_default_upload"],
)
async def test_patch_cannot_null_a_required_field(client, admin_headers, field) -> None:
    await create(client, admin_headers, AWS_ROLE)
    answer = await client.patch(
        "/admin/buckets/gen3-abc-data", json={field: None}, headers=admin_headers
    )
    assert answer.status_code == 400, answer.text
    assert f"{field} cannot be null" in answer.json()["message"]
    assert (await client.get("/admin/buckets/gen3-abc-data", headers=admin_headers)).json()[
        "version"
    ] == 1


async def test_patch_if_match_and_etag(client, admin_headers) -> None:
    await create(client, admin_headers, AWS_ROLE)
    ok = await client.patch(
        "/admin/buckets/gen3-abc-data",
        json={"region": "us-west-2", "labels": {"tier": "cold"}},
        headers={**admin_headers, "If-Match": '"1"'},
    )
    assert ok.status_code == 200 and ok.json() == {"ok": True}
    assert ok.headers["etag"] == '"2"'
    stale = await client.patch(
        "/admin/buckets/gen3-abc-data",
        json={"region": "eu-west-1"},
        headers={**admin_headers, "If-Match": '"1"'},
    )
    assert stale.status_code == 412
    assert stale.json()["error"] == "version_mismatch"
    bucket = (await client.get("/admin/buckets/gen3-abc-data", headers=admin_headers)).json()
    assert (
        bucket["region"] == "us-west-2"
        and bucket["labels"] == {"tier": "cold"}
        and bucket["version"] == 2
    )

    # null clears an optional field; cross-field rules apply to the merged result.
    cleared = await client.patch(
        "/admin/buckets/gen3-abc-data", json={"external_id": None}, headers=admin_headers
    )
    assert cleared.status_code == 200
    broken = await client.patch(
        "/admin/buckets/gen3-abc-data",
        json={"auth_mode": "static", "role_arn": None},
        headers=admin_headers,
    )
    assert broken.status_code == 400 and "secret_ref" in broken.json()["message"]
    bad_tag = await client.patch(
        "/admin/buckets/gen3-abc-data",
        json={"region": "eu-west-1"},
        headers={**admin_headers, "If-Match": "abc"},
    )
    assert bad_tag.status_code == 400
    not_patchable = await client.patch(
        "/admin/buckets/gen3-abc-data", json={"name": "other"}, headers=admin_headers
    )
    assert not_patchable.status_code == 400
    missing = await client.patch(
        "/admin/buckets/nope-bucket", json={"region": "eu-west-1"}, headers=admin_headers
    )
    assert missing.status_code == 404
    assert (await client.get("/admin/buckets/gen3-abc-data", headers=admin_headers)).json()[
        "version"
    ] == 3


async def test_concurrent_patches_one_success_per_version(client, admin_headers) -> None:
    await create(client, admin_headers, AWS_ROLE)

    async def patch(i: int) -> httpx.Response:
        return await client.patch(
            "/admin/buckets/gen3-abc-data",
            json={"labels": {"writer": str(i)}},
            headers={**admin_headers, "If-Match": '"1"'},
        )

    responses = await asyncio.gather(*(patch(i) for i in range(20)))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) == 1 and codes.count(412) == 19, codes
    winner = next(i for i, r in enumerate(responses) if r.status_code == 200)
    bucket = (await client.get("/admin/buckets/gen3-abc-data", headers=admin_headers)).json()
    assert bucket["labels"] == {"writer": str(winner)} and bucket["version"] == 2
    audit = (await client.get("/admin/buckets/gen3-abc-data/audit", headers=admin_headers)).json()
    assert [row["action"] for row in audit] == ["update", "create"]


async def test_suspend_resume_and_audit(client, admin_headers) -> None:
    await create(client, admin_headers, AWS_ROLE)
    suspended = await client.delete("/admin/buckets/gen3-abc-data", headers=admin_headers)
    assert suspended.status_code == 200 and suspended.json() == {"ok": True, "status": "suspended"}
    assert (await client.get("/admin/buckets/gen3-abc-data", headers=admin_headers)).json()[
        "status"
    ] == "suspended"
    resumed = await client.post("/admin/buckets/gen3-abc-data/resume", headers=admin_headers)
    assert resumed.json() == {"ok": True, "status": "active"}
    assert (
        await client.delete("/admin/buckets/unknown-bucket", headers=admin_headers)
    ).status_code == 404
    assert (
        await client.post("/admin/buckets/unknown-bucket/resume", headers=admin_headers)
    ).status_code == 404

    audit = (await client.get("/admin/buckets/gen3-abc-data/audit", headers=admin_headers)).json()
    assert [row["action"] for row in audit] == ["resume", "suspend", "create"]
    assert audit[1]["diff"] == {"before": {"status": "active"}, "after": {"status": "suspended"}}
    assert all(row["actor"] == "admin" for row in audit)
    assert all(row["request_id"] for row in audit)


async def test_prefixes_and_bindings_crud(client, admin_headers) -> None:
    await create(client, admin_headers, AWS_ROLE)
    base = "/admin/buckets/gen3-abc-data"
    added = await client.post(
        f"{base}/prefixes", json={"prefix": "incoming/"}, headers=admin_headers
    )
    assert added.status_code == 201
    prefix_id = added.json()["prefix_id"]
    assert (
        await client.post(f"{base}/prefixes", json={"prefix": "incoming/"}, headers=admin_headers)
    ).status_code == 409
    for bad in ("", "/abs/", "no-slash", "a/../b/", "a/./b/", "x\x00y/"):
        response = await client.post(
            f"{base}/prefixes", json={"prefix": bad}, headers=admin_headers
        )
        assert response.status_code == 400, bad
    listed = (await client.get(f"{base}/prefixes", headers=admin_headers)).json()
    assert [p["prefix"] for p in listed] == ["incoming/"]

    ops = {"read": True, "write": True, "delete": False, "multipart": True}
    bound = await client.post(
        f"{base}/bindings",
        json={
            "prefix": "incoming/",
            "resource_path": "/programs/DEV/projects/ABC",
            "allowed_ops": ops,
        },
        headers=admin_headers,
    )
    assert bound.status_code == 201, bound.text
    whole = await client.post(
        f"{base}/bindings",
        json={"resource_path": "/programs/DEV", "allowed_ops": {"read": True}},
        headers=admin_headers,
    )
    assert whole.status_code == 201
    for bad in (
        {"prefix": "other/", "resource_path": "/programs/DEV", "allowed_ops": {"read": True}},
        {"resource_path": "programs/DEV", "allowed_ops": {"read": True}},
        {"resource_path": "/programs//DEV", "allowed_ops": {"read": True}},
        {"resource_path": "/programs/DEV", "allowed_ops": {"fly": True}},
        {"resource_path": "/programs/DEV", "allowed_ops": {"read": "yes"}},
        {"resource_path": "/programs/DEV", "allowed_ops": {"read": False}},
    ):
        response = await client.post(f"{base}/bindings", json=bad, headers=admin_headers)
        assert response.status_code == 400, (bad, response.text)

    bindings = (await client.get(f"{base}/bindings", headers=admin_headers)).json()
    assert [(b["prefix"], b["resource_path"]) for b in bindings] == [
        ("incoming/", "/programs/DEV/projects/ABC"),
        (None, "/programs/DEV"),
    ]
    assert bindings[0]["allowed_ops"] == ops

    unbound = await client.delete(
        f"{base}/bindings/{whole.json()['binding_id']}", headers=admin_headers
    )
    assert unbound.status_code == 200
    assert (
        await client.delete(f"{base}/bindings/{whole.json()['binding_id']}", headers=admin_headers)
    ).status_code == 404
    assert (
        await client.delete(f"{base}/bindings/not-a-uuid", headers=admin_headers)
    ).status_code == 400

    # Removing a prefix removes its bindings too.
    removed = await client.delete(f"{base}/prefixes/{prefix_id}", headers=admin_headers)
    assert removed.status_code == 200
    assert (await client.get(f"{base}/bindings", headers=admin_headers)).json() == []
    assert (await client.get(f"{base}/prefixes", headers=admin_headers)).json() == []

    audit = (await client.get(f"{base}/audit", headers=admin_headers)).json()
    assert [row["action"] for row in audit] == [
        "remove_prefix",
        "unbind",
        "bind",
        "bind",
        "add_prefix",
        "create",
    ]
    assert (
        audit[0]["diff"]["before"]["bindings"][0]["resource_path"] == "/programs/DEV/projects/ABC"
    )
    # Every change moved the bucket's version (its ETag).
    assert (await client.get(base, headers=admin_headers)).json()["version"] == 6


async def test_global_audit_filters_and_pagination(client, admin_headers, issuer, arborist) -> None:
    arborist.make_admin("carol")
    carol = {"Authorization": f"Bearer {issuer.token('carol')}"}
    await create(client, admin_headers, AWS_ROLE)
    await create(client, carol, MINIO_STATIC)
    await client.delete("/admin/buckets/minio-archive", headers=carol)

    everything = (await client.get("/admin/audit", headers=admin_headers)).json()
    assert [(r["actor"], r["action"]) for r in everything] == [
        ("carol", "suspend"),
        ("carol", "create"),
        ("admin", "create"),
    ]
    by_carol = (await client.get("/admin/audit?actor=carol", headers=admin_headers)).json()
    assert len(by_carol) == 2
    first = await client.get("/admin/audit?limit=2", headers=admin_headers)
    link = first.headers["link"]
    second = await client.get(re.match(r"<([^>]+)>", link).group(1), headers=admin_headers)
    assert [r["id"] for r in first.json()] + [r["id"] for r in second.json()] == [
        r["id"] for r in everything
    ]
    future = (
        await client.get("/admin/audit?since=2999-01-01T00:00:00Z", headers=admin_headers)
    ).json()
    assert future == []
    assert (
        await client.get("/admin/audit?since=yesterday", headers=admin_headers)
    ).status_code == 400
    assert (
        await client.get("/admin/buckets/nope-bucket/audit", headers=admin_headers)
    ).status_code == 404


async def test_default_upload_bucket_unique_per_project(client, admin_headers) -> None:
    first = dict(AWS_ROLE, is_default_upload=True)
    assert (await create(client, admin_headers, first)).status_code == 201
    second = dict(AWS_ROLE, name="gen3-abc-second", is_default_upload=True)
    conflict = await create(client, admin_headers, second)
    assert conflict.status_code == 409 and "default upload" in conflict.json()["message"]
    other_project = dict(second, owner_project="OTHER")
    assert (await create(client, admin_headers, other_project)).status_code == 201
    global_default = dict(second, name="gen3-global", owner_project=None)
    assert (await create(client, admin_headers, global_default)).status_code == 201
    another_global = dict(global_default, name="gen3-global-two")
    assert (await create(client, admin_headers, another_global)).status_code == 409


# ----- authentication and authorization ---------------------------------------------------


ADMIN_ROUTES = [
    ("GET", "/admin/buckets"),
    ("GET", "/admin/buckets/gen3-abc-data"),
    ("POST", "/admin/buckets"),
    ("PATCH", "/admin/buckets/gen3-abc-data"),
    ("DELETE", "/admin/buckets/gen3-abc-data"),
    ("POST", "/admin/buckets/gen3-abc-data/resume"),
    ("GET", "/admin/buckets/gen3-abc-data/prefixes"),
    ("POST", "/admin/buckets/gen3-abc-data/prefixes"),
    ("GET", "/admin/buckets/gen3-abc-data/bindings"),
    ("POST", "/admin/buckets/gen3-abc-data/bindings"),
    ("GET", "/admin/buckets/gen3-abc-data/audit"),
    ("GET", "/admin/audit"),
]


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
async def test_every_admin_route_needs_a_token_and_bucket_admin(
    client, issuer: FenceIssuer, arborist: ArboristStub, method, path
) -> None:
    anonymous = await client.request(method, path, json={})
    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "unauthenticated"
    assert anonymous.headers["www-authenticate"] == "Bearer"

    arborist.grant("dave", "reader", "/services/bucket-registry")
    denied = await client.request(
        method, path, json={}, headers={"Authorization": f"Bearer {issuer.token('dave')}"}
    )
    assert denied.status_code == 403
    assert denied.json() == {
        "ok": False,
        "error": "forbidden",
        "message": "bucket_admin on /services/bucket-registry is required for this endpoint",
    }


async def test_arborist_request_wire_format(client, admin_headers, arborist: ArboristStub) -> None:
    await client.get("/admin/buckets", headers=admin_headers)
    request = arborist.requests[-1]
    assert request["user"] == {"token": admin_headers["Authorization"].split()[1]}
    assert request["requests"] == [
        {
            "resource": "/services/bucket-registry",
            "action": {"service": "bucket-registry", "method": "bucket_admin"},
        }
    ]


async def test_grant_on_parent_and_wildcards(client, issuer, arborist) -> None:
    arborist.grant("erin", "bucket_admin", "/services")
    # Arborist has no resource at "/" (its ltree form is empty), so wildcards go on a top level.
    arborist.grant("frank", "everything", "/services")
    for user in ("erin", "frank"):
        response = await client.get(
            "/admin/buckets", headers={"Authorization": f"Bearer {issuer.token(user)}"}
        )
        assert response.status_code == 200, user
    arborist.grant("gina", "bucket_admin", "/services/bucket-registry-other")
    response = await client.get(
        "/admin/buckets", headers={"Authorization": f"Bearer {issuer.token('gina')}"}
    )
    assert response.status_code == 403


@pytest.mark.parametrize(
    "make_token",
    [
        lambda issuer: issuer.token("admin", lifetime=-5),
        lambda issuer: issuer.token("admin", iss="https://other-commons.org/user"),
        lambda issuer: issuer.token("admin", pur="refresh"),
        lambda issuer: issuer.token(
            "admin",
            key=__import__(
                "cryptography.hazmat.primitives.asymmetric.rsa", fromlist=["rsa"]
            ).generate_private_key(public_exponent=65537, key_size=2048),
        ),
        lambda issuer: issuer.token("admin", kid="unknown-kid"),
        lambda issuer: issuer.token("admin")[:-4] + "AAAA",
        lambda issuer: "not-a-jwt",
        lambda issuer: __import__("jwt").encode(
            {"iss": issuer.user_api, "pur": "access", "exp": 9999999999}, "k", algorithm="HS256"
        ),
        lambda issuer: __import__("jwt").encode(
            {"iss": issuer.user_api, "pur": "access", "exp": 9999999999}, None, algorithm="none"
        ),
    ],
    ids=[
        "expired",
        "foreign-issuer",
        "refresh-token",
        "wrong-key",
        "unknown-kid",
        "bad-signature",
        "garbage",
        "hs256",
        "unsigned",
    ],
)
async def test_bad_tokens_are_401(client, issuer, make_token) -> None:
    response = await client.get(
        "/admin/buckets", headers={"Authorization": f"Bearer {make_token(issuer)}"}
    )
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "unauthenticated"


async def test_rotated_signing_key_is_picked_up(client, issuer: FenceIssuer, admin_headers) -> None:
    assert (await client.get("/admin/buckets", headers=admin_headers)).status_code == 200
    old_kid = issuer.kid
    issuer.rotate()
    try:
        token = issuer.token("admin")
        response = await client.get("/admin/buckets", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200
    finally:
        issuer.kid = old_kid
        issuer.key = issuer.published[old_kid]


async def test_arborist_down_slow_or_erroring_is_503_never_allow(
    client, admin_headers, arborist: ArboristStub
) -> None:
    arborist.fail_with = 500
    response = await client.post("/admin/buckets", json=AWS_ROLE, headers=admin_headers)
    assert response.status_code == 503 and response.json()["error"] == "dependency_unavailable"
    arborist.fail_with = None

    arborist.delay = 1.5  # past the 1 s timeout configured for tests
    response = await client.post("/admin/buckets", json=AWS_ROLE, headers=admin_headers)
    assert response.status_code == 503
    arborist.delay = 0

    arborist.stop()
    response = await client.post("/admin/buckets", json=AWS_ROLE, headers=admin_headers)
    assert response.status_code == 503
    arborist.start()

    # Nothing was created while Arborist could not say yes; recovery needs no restart.
    listing = await client.get("/admin/buckets", headers=admin_headers)
    assert listing.status_code == 200 and listing.json() == []


async def test_audit_rows_never_hold_secret_values(client, admin_headers, database_url) -> None:
    leaked = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    attempt = await create(client, admin_headers, {**MINIO_STATIC, "secret_access_key": leaked})
    assert attempt.status_code == 400
    assert leaked not in attempt.text
    assert (await create(client, admin_headers, MINIO_STATIC)).status_code == 201
    bad_version = await client.patch(
        "/admin/buckets/minio-archive", json={"secret_version": "v2"}, headers=admin_headers
    )
    assert bad_version.status_code == 400 and "VersionId" in bad_version.json()["message"]
    rotated = await client.patch(
        "/admin/buckets/minio-archive",
        json={
            "secret_ref": "aws-sm://gen3/bucket-registry/minio-archive-v2",
            "secret_version": "3f1c9a2e-8d4b-4c7a-9e2f-1a2b3c4d5e6f",
        },
        headers=admin_headers,
    )
    assert rotated.status_code == 200, rotated.text
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            dump = ""
            for table in ("bucket", "bucket_audit"):
                rows = (await connection.execute(sa.text(f"SELECT * FROM {table}"))).all()
                dump += json.dumps([list(map(str, row)) for row in rows])
    finally:
        await engine.dispose()
    assert leaked not in dump
    audit = (await client.get("/admin/buckets/minio-archive/audit", headers=admin_headers)).json()
    change = audit[0]["diff"]
    # The trail shows that the reference changed, not where it points.
    assert change["before"]["secret_ref"].startswith("sha256:")
    assert change["before"]["secret_ref"] != change["after"]["secret_ref"]
    assert "minio-archive-v2" not in json.dumps(audit)


async def test_status_endpoints_need_no_token(client) -> None:
    assert (await client.get("/_status")).json()["ok"] is True
    ready = await client.get("/_status/ready")
    assert ready.status_code == 200 and ready.json()["database"] == "ok"
    assert (await client.get("/_version")).json()["version"]
    echoed = await client.get("/_status", headers={"X-Request-ID": "trace-123"})
    assert echoed.headers["x-request-id"] == "trace-123"
    generated = await client.get("/_status", headers={"X-Request-ID": "bad id with spaces"})
    assert generated.headers["x-request-id"] != "bad id with spaces"


async def test_unknown_route_and_method_use_error_shape(client, admin_headers) -> None:
    missing = await client.get("/nope", headers=admin_headers)
    assert missing.status_code == 404 and missing.json()["ok"] is False
    wrong = await client.put("/admin/buckets", headers=admin_headers)
    assert wrong.status_code == 405 and wrong.json()["error"] == "method_not_allowed"
