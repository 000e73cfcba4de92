"""Fence-shaped surfaces end to end: upload rules, unsigned URLs, attribution, batches,
server-side deletes and the bucket list, through the app, moto and the SigV4 gateway."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from app.errors import InvalidInput
from app.registry.records import Op
from tests.e2e.conftest import (
    ALL_OPS,
    ALL_SECRETS,
    PROJECT,
    ROLE_ARN,
    STATIC_KEY_ID,
    STATIC_SECRET,
    STATIC_SECRET_REF,
    Flow,
    boto,
    minio_bucket,
    put_static_secret,
    rendered_logs,
    send,
)

SECRET_REF = STATIC_SECRET_REF


@pytest.fixture
def flow(static_flow: Flow) -> Flow:
    return static_flow


def assert_no_secret(flow: Flow, caplog: pytest.LogCaptureFixture | None = None) -> None:
    logs = rendered_logs(caplog) if caplog is not None else ""
    for secret in ALL_SECRETS:
        assert secret not in logs
        for response in flow.responses:
            assert secret not in response.text and secret not in str(response.headers)
    for response in flow.responses:
        # Nor where the secrets live, nor which role is assumed.
        if response.request.url.path.startswith("/admin"):
            continue
        assert SECRET_REF not in response.text and ROLE_ARN not in response.text


# -- uploads -----------------------------------------------------------------------------------


async def test_a_bucket_that_takes_no_uploads_refuses_write_and_multipart(
    flow: Flow, moto, gateway
) -> None:
    boto(moto, "s3").create_bucket(Bucket="minio-closed")
    await flow.register(
        minio_bucket(gateway.url, "minio-closed", data_upload_allowed=False), None, ALL_OPS
    )
    write = await flow.presign("submitter", "minio-closed", "k/x", "write")
    assert write.status_code == 403
    assert write.json()["message"] == "bucket 'minio-closed' does not accept uploads"
    init = await flow.call(
        "POST",
        "/multipart/init",
        json={"bucket": "minio-closed", "key": "k/x"},
        headers=flow.user("submitter"),
    )
    assert init.status_code == 403 and "does not accept uploads" in init.json()["message"]
    part = await flow.call(
        "POST",
        "/multipart/presign",
        json={"bucket": "minio-closed", "key": "k/x", "upload_id": "u1", "part_number": 1},
        headers=flow.user("submitter"),
    )
    assert part.status_code == 403
    # Reads and deletes are not uploads.
    assert (await flow.presign("submitter", "minio-closed", "k/x", "read")).status_code == 200
    assert (await flow.presign("submitter", "minio-closed", "k/x", "delete")).status_code == 200
    # Turning the switch on is all it takes.
    patched = await flow.call(
        "PATCH",
        "/admin/buckets/minio-closed",
        json={"data_upload_allowed": True},
        headers=flow.admin,
    )
    assert patched.status_code == 200, patched.text
    assert (await flow.presign("submitter", "minio-closed", "k/x", "write")).status_code == 200


async def test_commons_wide_default_upload_bucket_resolves_without_owner_project(
    make_flow,
) -> None:
    flow: Flow = await make_flow()
    body = {
        "name": "gen3-commons-uploads",
        "provider": "aws",
        "region": "us-east-1",
        "auth_mode": "role",
        "role_arn": ROLE_ARN,
        "data_upload_allowed": True,
        "is_default_upload": True,
    }
    await flow.register(body, None, ALL_OPS)
    resolved = await flow.call("GET", "/resolve?purpose=upload", headers=flow.user("anyone"))
    assert resolved.status_code == 200, resolved.text
    answer = resolved.json()
    assert answer["name"] == "gen3-commons-uploads" and answer["owner_project"] is None
    assert answer["is_default_upload"] and answer["data_upload_allowed"]
    assert answer["public"] is False
    # A project without a default of its own falls back to the commons-wide one.
    other = await flow.call(
        "GET", "/resolve?purpose=upload&owner_project=XYZ", headers=flow.user("anyone")
    )
    assert other.status_code == 200 and other.json()["name"] == "gen3-commons-uploads"
    assert_no_secret(flow)


# -- unsigned URLs -----------------------------------------------------------------------------


async def test_unsigned_read_of_a_public_bucket_moves_bytes(flow: Flow, moto) -> None:
    # Straight at moto, which serves anonymous reads like a public-read bucket.
    s3 = boto(moto, "s3")
    s3.create_bucket(Bucket="minio-public")
    data = os.urandom(2048)
    s3.put_object(Bucket="minio-public", Key="refs/genome 1.fa", Body=data, ACL="public-read")
    await flow.register(minio_bucket(moto.url, "minio-public", public=True), None, ALL_OPS)

    answer = await flow.presign(
        "reader-only", "minio-public", "refs/genome 1.fa", "read", unsigned=True
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body == {
        "url": f"{moto.url}/minio-public/refs/genome%201.fa",
        "method": "GET",
        "expires_at": None,
        "headers": {},
    }
    got = await send(body)
    assert got.status_code == 200 and got.content == data
    # The same authorization as a signed URL: no grant, no URL.
    assert (
        await flow.presign("stranger", "minio-public", "refs/genome 1.fa", "read", unsigned=True)
    ).status_code == 403


async def test_unsigned_refused_for_private_buckets_and_for_anything_but_read(
    flow: Flow,
) -> None:
    private = await flow.presign("submitter", "minio-abc", "incoming/x", "read", unsigned=True)
    assert private.status_code == 403
    assert "not public" in private.json()["message"]
    write = await flow.presign("submitter", "minio-abc", "incoming/x", "write", unsigned=True)
    assert write.status_code == 400 and "read only" in write.json()["message"]


async def test_public_bucket_without_credentials_always_answers_unsigned(make_flow) -> None:
    flow: Flow = await make_flow()
    flow.arborist.grant("reader", "reader", PROJECT)
    # As imported from cred '*': no region, no keys, no role.
    await flow.register(
        {
            "name": "commons-public",
            "provider": "aws",
            "auth_mode": "workload_identity",
            "public": True,
        },
        None,
        {"read": True},
    )
    await flow.register(
        {
            "name": "commons-public-west",
            "provider": "aws",
            "region": "us-west-2",
            "auth_mode": "workload_identity",
            "public": True,
        },
        None,
        {"read": True},
    )
    await flow.register(
        {
            "name": "gen3-gcs-public",
            "provider": "gcp",
            "auth_mode": "static",
            "secret_ref": "aws-sm://gen3/bucket-registry/gcs-none",
            "public": True,
        },
        None,
        {"read": True},
    )
    signed = await flow.presign("reader", "commons-public", "a b/c+d.txt", "read")
    assert signed.status_code == 200, signed.text
    # Fence's global form: right for any region, so no us-east-1 guess is signed into it.
    assert signed.json()["url"] == "https://commons-public.s3.amazonaws.com/a%20b/c%2Bd.txt"
    assert signed.json()["expires_at"] is None
    west = await flow.presign("reader", "commons-public-west", "k/x", "read", unsigned=True)
    assert west.json()["url"] == "https://commons-public-west.s3.us-west-2.amazonaws.com/k/x"
    gcs = await flow.presign("reader", "gen3-gcs-public", "k/x y", "read", unsigned=True)
    assert gcs.status_code == 200, gcs.text
    # No secret was read for it: the reference points nowhere.
    assert gcs.json()["url"] == "https://storage.googleapis.com/gen3-gcs-public/k/x%20y"


# -- attribution -------------------------------------------------------------------------------


async def test_audit_params_are_signed_into_s3_gets_and_pass_the_gateway(flow: Flow) -> None:
    data = os.urandom(1024)
    put = await flow.presign("submitter", "minio-abc", "incoming/attributed", "write")
    assert (await send(put.json(), data)).status_code == 200

    record = await flow.services.directory.get("minio-abc")
    storage = flow.services.storage
    audit = {"user_id": "42", "username": "alice@example.org", "client_id": "fence-client_1"}
    signed = await storage.presign(record, "incoming/attributed", Op.READ, 60, audit=audit)
    query = parse_qs(urlsplit(signed.url).query)
    assert {name: query[name] for name in audit} == {k: [v] for k, v in audit.items()}
    got = await send({"method": signed.method, "url": signed.url})
    assert got.status_code == 200 and got.content == data
    # The parameters are signed: changing one breaks the signature.
    tampered = signed.url.replace("username=alice", "username=mallory")
    assert (await send({"method": "GET", "url": tampered})).status_code == 403

    # Never on uploads.
    upload = await storage.presign(record, "incoming/attributed", Op.WRITE, 60, audit=audit)
    assert "user_id" not in upload.url and "username" not in upload.url
    # Direct calls sign no identity: the URL is the one without audit.
    plain = await storage.presign(record, "incoming/attributed", Op.READ, 60)
    assert "user_id" not in plain.url

    for bad in (
        {"user_id": "1&username=root"},
        {"username": "a=b"},
        {"username": "with space"},
        {"username": "x" * 257},
        {"username": ""},
        {"username": "tab\there"},
        {"role": "admin"},
    ):
        with pytest.raises(InvalidInput):
            await storage.presign(record, "incoming/attributed", Op.READ, 60, audit=bad)


# -- batch -------------------------------------------------------------------------------------


async def batch(flow: Flow, user: str, requests: list[dict[str, Any]]) -> httpx.Response:
    return await flow.call(
        "POST", "/presign/batch", json={"requests": requests}, headers=flow.user(user)
    )


async def test_batch_answers_each_item_in_order(flow: Flow, all_logs) -> None:
    data = os.urandom(4096)
    put = await flow.presign("submitter", "minio-abc", "incoming/b1", "write")
    assert (await send(put.json(), data)).status_code == 200
    flow.arborist.requests.clear()

    answer = await batch(
        flow,
        "reader-only",
        [
            {"bucket": "minio-abc", "key": "incoming/b1", "op": "read"},
            {"bucket": "minio-abc", "key": "incoming/b2", "op": "read", "expires_in": 60},
            {"bucket": "minio-abc", "key": "incoming/b1", "op": "write"},
            {"bucket": "minio-abc", "key": "elsewhere/b1", "op": "read"},
            {"bucket": "no-such-bucket", "key": "incoming/b1", "op": "read"},
            {"bucket": "minio-abc", "key": "incoming/../etc", "op": "read"},
            {"bucket": "minio-abc", "key": "incoming/b1", "op": "fly"},
            {"bucket": "minio-abc", "key": "incoming/b1", "op": "read", "unsigned": True},
        ],
    )
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert len(results) == 8
    assert [r.get("status") for r in results] == [None, None, 403, 403, 404, 400, 400, 403]
    assert results[0]["method"] == "GET" and results[0]["expires_at"]
    assert results[4]["error"] == {
        "code": "bucket_not_found",
        "message": results[4]["error"]["message"],
    }
    assert results[6]["error"]["code"] == "invalid_request"
    assert "op" in results[6]["error"]["message"]
    got = await send(results[0])
    assert got.status_code == 200 and got.content == data
    # One Arborist question per distinct (user, method, resource): read and write on PROJECT.
    assert flow.arborist.call_count == 2
    # Every item's decision is on the access log, not only the last one.
    decisions = [
        (r.__dict__.get("key"), r.__dict__.get("decision"))
        for r in all_logs.records
        if r.getMessage() == "access decision" and r.__dict__.get("user") == "reader-only"
    ]
    assert decisions[-8:] == [
        ("incoming/b1", "allowed"),
        ("incoming/b2", "allowed"),
        ("incoming/b1", "denied"),
        ("elsewhere/b1", "denied"),
        ("incoming/b1", "denied"),
        ("incoming/../etc", "denied"),
        # The unsigned one: granted by the bindings, then refused for a private bucket.
        ("incoming/b1", "allowed"),
        ("incoming/b1", "denied"),
    ]
    assert_no_secret(flow, all_logs)


async def test_batch_size_limits(flow: Flow) -> None:
    item = {"bucket": "minio-abc", "key": "incoming/x", "op": "read"}
    assert (await batch(flow, "reader-only", [])).status_code == 400
    too_many = await batch(flow, "reader-only", [item] * 101)
    assert too_many.status_code == 400 and "requests" in too_many.json()["message"]
    full = await batch(flow, "reader-only", [item] * 100)
    assert full.status_code == 200 and len(full.json()["results"]) == 100
    unauthenticated = await flow.call("POST", "/presign/batch", json={"requests": [item]})
    assert unauthenticated.status_code == 401


async def test_batch_with_arborist_down_is_503_per_item(make_flow, moto, gateway) -> None:
    flow: Flow = await make_flow(authz_cache_ttl=0)
    boto(moto, "s3").create_bucket(Bucket="minio-abc")
    put_static_secret(moto, "gen3/bucket-registry/minio-abc", STATIC_KEY_ID, STATIC_SECRET)
    await flow.register(minio_bucket(gateway.url), None, ALL_OPS)
    flow.arborist.stop()
    try:
        answer = await batch(
            flow,
            "submitter",
            [
                {"bucket": "minio-abc", "key": "k/a", "op": "read"},
                {"bucket": "minio-abc", "key": "k/b", "op": "write"},
                {"bucket": "no-such-bucket", "key": "k/a", "op": "read"},
            ],
        )
    finally:
        flow.arborist.start()
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert [r["status"] for r in results] == [503, 503, 404]
    assert results[0]["error"]["code"] == "dependency_unavailable"


# -- server-side delete ------------------------------------------------------------------------


async def delete(flow: Flow, user: str, **body: Any) -> httpx.Response:
    return await flow.call(
        "POST", "/objects/delete", json={"bucket": "minio-abc", **body}, headers=flow.user(user)
    )


async def test_delete_a_key_and_a_prefix(flow: Flow, moto, all_logs) -> None:
    for key in ("incoming/one", "incoming/run/a", "incoming/run/b", "incoming/run/c/d"):
        put = await flow.presign("submitter", "minio-abc", key, "write")
        assert (await send(put.json(), b"bytes")).status_code == 200
    s3 = boto(moto, "s3")

    one = await delete(flow, "submitter", key="incoming/one")
    assert one.status_code == 200 and one.json() == {"deleted": 1}
    gone = await flow.presign("submitter", "minio-abc", "incoming/one", "read")
    assert (await send(gone.json())).status_code == 404
    assert (await delete(flow, "submitter", key="incoming/one")).json() == {"deleted": 0}

    run = await delete(flow, "submitter", prefix="incoming/run/")
    assert run.status_code == 200 and run.json() == {"deleted": 3}
    assert s3.list_objects_v2(Bucket="minio-abc").get("KeyCount") == 0
    assert (await delete(flow, "submitter", prefix="incoming/run/")).json() == {"deleted": 0}

    logs = rendered_logs(all_logs)
    for key in ("incoming/one", "incoming/run/a", "incoming/run/b", "incoming/run/c/d"):
        assert f"'key': '{key}'" in logs
    assert "'action': 'delete_object'" in logs
    assert_no_secret(flow, all_logs)


async def test_delete_refusals(flow: Flow, moto, gateway) -> None:
    s3 = boto(moto, "s3")
    s3.put_object(Bucket="minio-abc", Key="incoming/keep", Body=b"x")
    cases = [
        ("reader-only", {"key": "incoming/keep"}, 403),
        ("stranger", {"prefix": "incoming/"}, 403),
        ("submitter", {"key": "elsewhere/keep"}, 403),
        ("submitter", {"prefix": "incoming"}, 400),
        ("submitter", {"prefix": "incoming/../"}, 400),
        ("submitter", {"key": "incoming/keep", "prefix": "incoming/"}, 400),
        ("submitter", {}, 400),
        ("submitter", {"key": "incoming/keep", "extra": 1}, 400),
    ]
    for user, body, status in cases:
        answer = await delete(flow, user, **body)
        assert answer.status_code == status, (body, answer.text)
        assert answer.json()["message"]
    missing = await flow.call(
        "POST",
        "/objects/delete",
        json={"bucket": "no-such-bucket", "key": "incoming/keep"},
        headers=flow.user("submitter"),
    )
    assert missing.status_code == 404
    assert s3.head_object(Bucket="minio-abc", Key="incoming/keep")

    await flow.register(
        {
            "name": "gen3-gcs-abc",
            "provider": "gcp",
            "auth_mode": "static",
            "secret_ref": "aws-sm://gen3/bucket-registry/gcs-abc",
        },
        None,
        ALL_OPS,
    )
    gcs = await flow.call(
        "POST",
        "/objects/delete",
        json={"bucket": "gen3-gcs-abc", "key": "k/x"},
        headers=flow.user("submitter"),
    )
    assert gcs.status_code == 400 and "gcp" in gcs.json()["message"]

    flow.arborist.stop()
    try:
        down = await delete(flow, "submitter", key="incoming/keep")
    finally:
        flow.arborist.start()
    assert down.status_code == 503
    assert s3.head_object(Bucket="minio-abc", Key="incoming/keep")


async def test_prefix_over_a_thousand_objects_deletes_nothing(flow: Flow, moto) -> None:
    s3 = boto(moto, "s3")
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(
            pool.map(
                lambda i: s3.put_object(Bucket="minio-abc", Key=f"incoming/many/{i:04}", Body=b""),
                range(1001),
            )
        )
    refused = await delete(flow, "submitter", prefix="incoming/many/")
    assert refused.status_code == 400 and "more than 1000" in refused.json()["message"]
    assert s3.list_objects_v2(Bucket="minio-abc", Prefix="incoming/many/")["IsTruncated"]
    s3.delete_object(Bucket="minio-abc", Key="incoming/many/1000")
    exact = await delete(flow, "submitter", prefix="incoming/many/")
    assert exact.status_code == 200 and exact.json() == {"deleted": 1000}


# -- bucket list -------------------------------------------------------------------------------


async def test_fence_buckets_shape_has_no_credentials(flow: Flow, gateway, all_logs) -> None:
    await flow.register(
        {
            "name": "gen3-abc-role",
            "provider": "aws",
            "region": "us-west-2",
            "auth_mode": "role",
            "role_arn": ROLE_ARN,
            "external_id": "gen3-commons-7",
            "requester_pays": True,
        },
        None,
        ALL_OPS,
    )
    await flow.register(
        {
            "name": "gen3-gcs-abc",
            "provider": "gcp",
            "region": "us-central1",
            "auth_mode": "static",
            "secret_ref": "aws-sm://gen3/bucket-registry/gcs-abc",
        },
        None,
        ALL_OPS,
    )
    await flow.register(minio_bucket(gateway.url, "minio-suspended"), None, ALL_OPS)
    suspended = await flow.call("DELETE", "/admin/buckets/minio-suspended", headers=flow.admin)
    assert suspended.status_code == 200, suspended.text

    answer = await flow.call("GET", "/fence/buckets", headers=flow.user("anyone"))
    assert answer.status_code == 200
    assert answer.json() == {
        "S3_BUCKETS": {
            "gen3-abc-role": {"region": "us-west-2", "requester_pays": True},
            "minio-abc": {"endpoint_url": gateway.url},
        },
        "GS_BUCKETS": {"gen3-gcs-abc": {"region": "us-central1"}},
    }
    assert "gen3-commons-7" not in answer.text
    assert (await flow.call("GET", "/fence/buckets")).status_code == 401
    assert_no_secret(flow, all_logs)
