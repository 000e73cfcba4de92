"""Presign, multipart, resolve and validate end to end: bytes move through the signed URLs."""

from __future__ import annotations

import asyncio
import hashlib
import os
from urllib.parse import parse_qs, urlsplit

from tests.e2e.conftest import (
    ALL_OPS,
    ALL_SECRETS,
    PINNED_KEY_ID,
    PINNED_SECRET,
    PROJECT,
    ROLE_ARN,
    ROTATED_KEY_ID,
    ROTATED_SECRET,
    STATIC_KEY_ID,
    STATIC_SECRET,
    Flow,
    boto,
    minio_bucket,
    put_static_secret,
    rendered_logs,
    send,
)

MIB = 1024 * 1024


def role_bucket(name: str = "gen3-abc-role") -> dict[str, object]:
    return {
        "name": name,
        "provider": "aws",
        "region": "us-east-1",
        "auth_mode": "role",
        "role_arn": ROLE_ARN,
        "external_id": "gen3-commons-7",
        "owner_project": "ABC",
        "data_upload_allowed": True,
        "is_default_upload": True,
    }


def key_id_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["X-Amz-Credential"][0].split("/")[0]


async def test_static_bucket_write_then_read_through_signed_urls(
    static_flow: Flow, all_logs
) -> None:
    flow = static_flow
    data = os.urandom(4096)
    write = await flow.presign("submitter", "minio-abc", "incoming/sample 1.bam", "write")
    assert write.status_code == 200, write.text
    signed = write.json()
    assert signed["method"] == "PUT" and signed["expires_at"]
    assert key_id_of(signed["url"]) == STATIC_KEY_ID
    assert (await send(signed, data)).status_code == 200

    read = await flow.presign("reader-only", "minio-abc", "incoming/sample 1.bam", "read")
    assert read.status_code == 200
    got = await send(read.json())
    assert got.status_code == 200 and got.content == data

    delete = await flow.presign("submitter", "minio-abc", "incoming/sample 1.bam", "delete")
    assert delete.json()["method"] == "DELETE"
    assert (await send(delete.json())).status_code == 204
    assert (
        await send(
            (await flow.presign("submitter", "minio-abc", "incoming/sample 1.bam", "read")).json()
        )
    ).status_code == 404

    # The gateway checked every signature; the service logged every decision without secrets.
    assert flow.gateway.seen_access_keys == {STATIC_KEY_ID}
    logs = rendered_logs(all_logs)
    assert "access decision" in logs and "submitter" in logs
    for secret in ALL_SECRETS:
        assert secret not in logs
        assert all(secret not in r.text and secret not in str(r.headers) for r in flow.responses)


async def test_denials_missing_and_bad_input(static_flow: Flow, all_logs) -> None:
    flow = static_flow
    # A reader cannot write, a user with no grant cannot read, and a key outside the
    # prefix has no binding.
    denied = await flow.presign("reader-only", "minio-abc", "incoming/x", "write")
    assert denied.status_code == 403 and denied.json()["error"] == "forbidden"
    assert (await flow.presign("stranger", "minio-abc", "incoming/x", "read")).status_code == 403
    outside = await flow.presign("submitter", "minio-abc", "elsewhere/x", "read")
    assert outside.status_code == 403 and "no binding" in outside.json()["message"]
    assert (
        await flow.presign("submitter", "no-such-bucket", "incoming/x", "read")
    ).status_code == 404
    for bad_key in (
        "",
        "/incoming/x",
        "incoming/../etc",
        "incoming/./x",
        "incoming/\x00x",
        "a" * 1025,
    ):
        response = await flow.presign("submitter", "minio-abc", bad_key, "read")
        assert response.status_code == 400, bad_key
    assert (await flow.presign("submitter", "minio-abc", "incoming/x", "fly")).status_code == 400
    assert (
        await flow.presign("submitter", "minio-abc", "incoming/x", "read", expires_in=0)
    ).status_code == 400
    anonymous = await flow.call(
        "POST", "/presign", json={"bucket": "minio-abc", "key": "incoming/x", "op": "read"}
    )
    assert anonymous.status_code == 401

    records = [r for r in all_logs.records if "decision" in r.__dict__]
    reasons = {(r.__dict__["user"], r.__dict__["decision"]) for r in records}
    assert ("reader-only", "denied") in reasons and ("stranger", "denied") in reasons


async def test_expires_in_is_clamped_to_the_maximum(make_flow, moto, gateway) -> None:
    flow: Flow = await make_flow(max_presigned_url_ttl=600)
    boto(moto, "s3").create_bucket(Bucket="minio-abc")
    put_static_secret(moto, "gen3/bucket-registry/minio-abc", STATIC_KEY_ID, STATIC_SECRET)
    await flow.register(minio_bucket(gateway.url), None, {"read": True})
    flow.arborist.grant("submitter", "reader", PROJECT)
    signed = (await flow.presign("submitter", "minio-abc", "a/b", "read", expires_in=86400)).json()
    assert parse_qs(urlsplit(signed["url"]).query)["X-Amz-Expires"] == ["600"]
    default = (await flow.presign("submitter", "minio-abc", "a/b", "read")).json()
    assert parse_qs(urlsplit(default["url"]).query)["X-Amz-Expires"] == ["600"]


async def test_suspend_denies_every_path_and_resume_restores(static_flow: Flow) -> None:
    flow = static_flow
    assert (await flow.presign("submitter", "minio-abc", "incoming/a", "write")).status_code == 200
    init = await flow.call(
        "POST",
        "/multipart/init",
        json={"bucket": "minio-abc", "key": "incoming/big"},
        headers=flow.user("submitter"),
    )
    upload_id = init.json()["upload_id"]
    assert (
        await flow.call("DELETE", "/admin/buckets/minio-abc", headers=flow.admin)
    ).status_code == 200

    suspended = await flow.presign("submitter", "minio-abc", "incoming/a", "write")
    assert suspended.status_code == 403 and suspended.json()["error"] == "bucket_suspended"
    part = {"bucket": "minio-abc", "key": "incoming/big", "upload_id": upload_id, "part_number": 1}
    assert (
        await flow.call("POST", "/multipart/presign", json=part, headers=flow.user("submitter"))
    ).status_code == 403
    complete = {
        **{k: part[k] for k in ("bucket", "key", "upload_id")},
        "parts": [{"part_number": 1, "etag": "x"}],
    }
    assert (
        await flow.call(
            "POST", "/multipart/complete", json=complete, headers=flow.user("submitter")
        )
    ).status_code == 403
    assert (
        await flow.call(
            "POST",
            "/multipart/init",
            json={"bucket": "minio-abc", "key": "incoming/c"},
            headers=flow.user("submitter"),
        )
    ).status_code == 403

    assert (
        await flow.call("POST", "/admin/buckets/minio-abc/resume", headers=flow.admin)
    ).status_code == 200
    resumed = await flow.presign("submitter", "minio-abc", "incoming/a", "write")
    assert resumed.status_code == 200
    assert (await send(resumed.json(), b"back")).status_code == 200


async def test_multipart_upload_of_three_parts(static_flow: Flow) -> None:
    flow = static_flow
    user = flow.user("submitter")
    target = {"bucket": "minio-abc", "key": "incoming/genome.cram"}
    init = await flow.call("POST", "/multipart/init", json=target, headers=user)
    assert init.status_code == 200, init.text
    upload_id = init.json()["upload_id"]
    parts_data = [os.urandom(5 * MIB), os.urandom(5 * MIB), os.urandom(1 * MIB)]
    parts = []
    for number, chunk in enumerate(parts_data, start=1):
        signed = await flow.call(
            "POST",
            "/multipart/presign",
            json={**target, "upload_id": upload_id, "part_number": number},
            headers=user,
        )
        assert signed.status_code == 200, signed.text
        assert key_id_of(signed.json()["url"]) == STATIC_KEY_ID
        uploaded = await send({**signed.json(), "method": "PUT"}, chunk)
        assert uploaded.status_code == 200, uploaded.text
        parts.append({"part_number": number, "etag": uploaded.headers["etag"]})
    # Parts may be listed in any order; the service sorts them.
    done = await flow.call(
        "POST",
        "/multipart/complete",
        json={**target, "upload_id": upload_id, "parts": parts[::-1]},
        headers=user,
    )
    assert done.status_code == 200, done.text
    read = (await flow.presign("submitter", "minio-abc", "incoming/genome.cram", "read")).json()
    got = await send(read)
    assert hashlib.sha256(got.content).digest() == hashlib.sha256(b"".join(parts_data)).digest()

    second = await flow.call("POST", "/multipart/init", json=target, headers=user)
    abort = await flow.call(
        "POST",
        "/multipart/abort",
        json={**target, "upload_id": second.json()["upload_id"]},
        headers=user,
    )
    assert abort.status_code == 200
    bad_part = await flow.call(
        "POST",
        "/multipart/presign",
        json={**target, "upload_id": upload_id, "part_number": 10001},
        headers=user,
    )
    assert bad_part.status_code == 400
    bad_key = await flow.call(
        "POST",
        "/multipart/presign",
        json={**target, "key": "/incoming/genome.cram", "upload_id": upload_id, "part_number": 1},
        headers=user,
    )
    assert bad_key.status_code == 400 and "key must not start" in bad_key.json()["message"]


async def test_multipart_needs_the_multipart_op(make_flow, moto, gateway) -> None:
    flow: Flow = await make_flow()
    boto(moto, "s3").create_bucket(Bucket="minio-abc")
    put_static_secret(moto, "gen3/bucket-registry/minio-abc", STATIC_KEY_ID, STATIC_SECRET)
    await flow.register(minio_bucket(gateway.url), None, {"read": True, "write": True})
    flow.arborist.grant("submitter", "writer", PROJECT)
    init = await flow.call(
        "POST",
        "/multipart/init",
        json={"bucket": "minio-abc", "key": "x/y"},
        headers=flow.user("submitter"),
    )
    assert init.status_code == 403


async def test_role_bucket_uses_sts_session_with_external_id(make_flow, moto, gateway) -> None:
    from moto.sts.models import sts_backends

    flow: Flow = await make_flow()
    boto(moto, "s3").create_bucket(Bucket="gen3-abc-role")
    await flow.register(role_bucket(), None, ALL_OPS)
    flow.arborist.grant("submitter", "writer", PROJECT)
    flow.arborist.grant("submitter", "reader", PROJECT)

    write = (await flow.presign("submitter", "gen3-abc-role", "data/r1.fastq", "write")).json()
    session_key = key_id_of(write["url"])
    assert session_key.startswith("ASIA")  # an STS session key, not a static one
    assert "X-Amz-Security-Token" in write["url"]
    assert (await send(write, b"ACGT" * 1000)).status_code == 200
    read = (await flow.presign("submitter", "gen3-abc-role", "data/r1.fastq", "read")).json()
    assert (await send(read)).content == b"ACGT" * 1000
    assert key_id_of(read["url"]) == session_key  # the session is reused

    assumed = [
        role
        for role in sts_backends["123456789012"]["aws"].assumed_roles
        if role.access_key_id == session_key
    ]
    assert assumed and assumed[0].role_arn == ROLE_ARN
    assert assumed[0].session_name.startswith("bucket-registry")
    assert flow.services.storage.sts.assume_count == 1

    resolved = await flow.call(
        "GET", "/resolve?purpose=upload&owner_project=ABC", headers=flow.user("anyone")
    )
    assert resolved.status_code == 200 and resolved.json()["name"] == "gen3-abc-role"


async def test_rotation_after_ttl_and_pinned_version_at_once(make_flow, moto, gateway) -> None:
    flow: Flow = await make_flow(secret_cache_ttl=1.0)
    boto(moto, "s3").create_bucket(Bucket="minio-abc")
    put_static_secret(moto, "gen3/bucket-registry/minio-abc", STATIC_KEY_ID, STATIC_SECRET)
    await flow.register(minio_bucket(gateway.url), None, ALL_OPS)
    flow.arborist.grant("submitter", "reader", PROJECT)

    async def key_in_use() -> str:
        response = await flow.presign("submitter", "minio-abc", "k/v", "read")
        assert response.status_code == 200, response.text
        return key_id_of(response.json()["url"])

    assert await key_in_use() == STATIC_KEY_ID
    put_static_secret(moto, "gen3/bucket-registry/minio-abc", ROTATED_KEY_ID, ROTATED_SECRET)
    assert await key_in_use() == STATIC_KEY_ID  # not before the TTL
    await asyncio.sleep(1.2)  # one TTL (jitter only shortens it), not two
    assert await key_in_use() == ROTATED_KEY_ID  # after it, without a restart

    pinned_version = put_static_secret(
        moto, "gen3/bucket-registry/minio-abc", PINNED_KEY_ID, PINNED_SECRET
    )
    put_static_secret(moto, "gen3/bucket-registry/minio-abc", ROTATED_KEY_ID, ROTATED_SECRET)
    patched = await flow.call(
        "PATCH",
        "/admin/buckets/minio-abc",
        json={"secret_version": pinned_version},
        headers=flow.admin,
    )
    assert patched.status_code == 200, patched.text
    assert await key_in_use() == PINNED_KEY_ID  # at once
    signed = (await flow.presign("submitter", "minio-abc", "k/v", "read")).json()
    assert (
        await send(signed)
    ).status_code == 404  # the gateway accepted the pinned key's signature


async def test_resolve_shapes_and_errors(static_flow: Flow) -> None:
    flow = static_flow
    user = flow.user("anyone-with-a-token")
    resolved = await flow.call("GET", "/resolve/minio-abc", headers=user)
    assert resolved.status_code == 200
    body = resolved.json()
    assert body["provider"] == "minio" and body["status"] == "active"
    assert body["bindings"] == [
        {"prefix": "incoming/", "resource_path": PROJECT, "allowed_ops": ALL_OPS}
    ]
    assert "secret" not in resolved.text
    assert (await flow.call("GET", "/resolve/minio-abc")).status_code == 401
    assert (await flow.call("GET", "/resolve/nope-bucket", headers=user)).status_code == 404
    no_default = await flow.call("GET", "/resolve?purpose=upload&owner_project=ZZZ", headers=user)
    assert no_default.status_code == 404
    assert (await flow.call("GET", "/resolve?purpose=download", headers=user)).status_code == 400
    assert (await flow.call("GET", "/resolve", headers=user)).status_code == 400


async def test_suspended_default_upload_bucket_is_not_resolved(make_flow, moto) -> None:
    flow: Flow = await make_flow()
    await flow.register(role_bucket(), None, ALL_OPS)
    user = flow.user("anyone")
    assert (
        await flow.call("GET", "/resolve?purpose=upload&owner_project=ABC", headers=user)
    ).status_code == 200
    await flow.call("DELETE", "/admin/buckets/gen3-abc-role", headers=flow.admin)
    refused = await flow.call("GET", "/resolve?purpose=upload&owner_project=ABC", headers=user)
    assert refused.status_code == 403 and refused.json()["error"] == "bucket_suspended"


async def test_validate_reports_each_check(static_flow: Flow, moto) -> None:
    flow = static_flow
    report = await flow.call(
        "POST", "/admin/buckets/minio-abc/validate?write_probe=true", headers=flow.admin
    )
    assert report.status_code == 200, report.text
    body = report.json()
    assert body["ok"] is True, body
    assert {name: check["status"] for name, check in body["checks"].items()} == {
        "secret_accessible": "pass",
        "role_assumable": "skipped",
        "bucket_listable": "pass",
        "presign_test": "pass",
        "write_probe": "pass",
    }
    # Nothing changed in the registry.
    assert (await flow.call("GET", "/admin/buckets/minio-abc", headers=flow.admin)).json()[
        "version"
    ] == 3

    # Keys the store does not know: the store rejects the signature and validate says so.
    flow.gateway.keyring.pop(STATIC_KEY_ID)
    broken = (
        await flow.call("POST", "/admin/buckets/minio-abc/validate", headers=flow.admin)
    ).json()
    assert broken["ok"] is False
    assert broken["checks"]["presign_test"]["status"] == "fail"
    assert "403" in broken["checks"]["presign_test"]["reason"]
    assert broken["errors"]
    assert STATIC_SECRET not in str(broken)
    assert (
        await flow.call("POST", "/admin/buckets/nope-bucket/validate", headers=flow.admin)
    ).status_code == 404
    assert (
        await flow.call("POST", "/admin/buckets/minio-abc/validate", headers=flow.user("submitter"))
    ).status_code == 403


async def test_validate_reports_a_missing_secret(make_flow, moto, gateway) -> None:
    flow: Flow = await make_flow()
    boto(moto, "s3").create_bucket(Bucket="minio-abc")
    await flow.register(minio_bucket(gateway.url), None, ALL_OPS)
    report = (
        await flow.call("POST", "/admin/buckets/minio-abc/validate", headers=flow.admin)
    ).json()
    assert report["ok"] is False
    assert report["checks"]["secret_accessible"]["status"] == "fail"
    assert report["checks"]["presign_test"]["status"] == "skipped"


async def test_warm_presigns_cost_no_database_secret_sts_or_arborist_call(
    make_flow, moto, gateway
) -> None:
    flow: Flow = await make_flow(authz_cache_ttl=30)
    boto(moto, "s3").create_bucket(Bucket="minio-abc")
    boto(moto, "s3").create_bucket(Bucket="gen3-abc-role")
    put_static_secret(moto, "gen3/bucket-registry/minio-abc", STATIC_KEY_ID, STATIC_SECRET)
    await flow.register(minio_bucket(gateway.url), None, ALL_OPS)
    await flow.register(role_bucket(), None, ALL_OPS)
    flow.arborist.grant("submitter", "reader", PROJECT)
    services = flow.services
    headers = flow.user("submitter")

    async def presign(bucket: str) -> None:
        response = await flow.http.post(
            "/presign", json={"bucket": bucket, "key": "k/v", "op": "read"}, headers=headers
        )
        assert response.status_code == 200

    for bucket in ("minio-abc", "gen3-abc-role"):
        await presign(bucket)  # warm-up
    before = (
        services.db.query_count,
        services.secrets.fetch_count,
        services.storage.sts.assume_count,
        flow.arborist.call_count,
    )
    for i in range(1000):
        await presign("minio-abc" if i % 2 else "gen3-abc-role")
    after = (
        services.db.query_count,
        services.secrets.fetch_count,
        services.storage.sts.assume_count,
        flow.arborist.call_count,
    )
    assert [b - a for a, b in zip(before, after, strict=True)] == [0, 0, 0, 0]


async def test_requester_pays_s3_bucket_signs_the_payer_header(make_flow, moto, gateway) -> None:
    flow: Flow = await make_flow()
    boto(moto, "s3").create_bucket(Bucket="minio-abc")
    put_static_secret(moto, "gen3/bucket-registry/minio-abc", STATIC_KEY_ID, STATIC_SECRET)
    await flow.register({**minio_bucket(gateway.url), "requester_pays": True}, None, ALL_OPS)
    flow.arborist.grant("submitter", "writer", PROJECT)
    flow.arborist.grant("submitter", "reader", PROJECT)
    write = (await flow.presign("submitter", "minio-abc", "paid/x", "write")).json()
    assert parse_qs(urlsplit(write["url"]).query)["x-amz-request-payer"] == ["requester"]
    assert (await send(write, b"paid")).status_code == 200  # the gateway checked the signature
    read = (await flow.presign("submitter", "minio-abc", "paid/x", "read")).json()
    assert (await send(read)).content == b"paid"
    # gcp-only options are refused for S3 buckets.
    billed = await flow.presign("submitter", "minio-abc", "paid/x", "read", user_project="lab-01x")
    assert billed.status_code == 400
    resumable = await flow.presign("submitter", "minio-abc", "paid/x", "write", resumable=True)
    assert resumable.status_code == 400
