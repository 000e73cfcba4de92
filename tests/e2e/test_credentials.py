"""POST /credentials end to end: real tokens, the Arborist stub, moto's STS behind the gateway,
and every byte moved with the vended keys through the gateway, which enforces the session
policy (moto does not) with the evaluator of tests/support/iam_policy.py."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from app.config import Settings
from tests.e2e.conftest import (
    ALL_OPS,
    PROJECT,
    ROLE_ARN,
    STATIC_KEY_ID,
    STATIC_SECRET,
    Flow,
    boto,
    put_static_secret,
    send,
)
from tests.e2e.test_trusted_callers import FENCE_SA, cluster  # noqa: F401 - a fixture
from tests.support.fence import ServiceAccountIssuer
from tests.support.s3_gateway import S3Gateway

ROLE_BUCKET = "commons-vended"
STATIC_BUCKET = "minio-vended"
PLAIN_BUCKET = "commons-plain"


def role_bucket(gateway: S3Gateway, **extra: Any) -> dict[str, Any]:
    return {
        "name": ROLE_BUCKET,
        "provider": "aws",
        "region": "us-east-1",
        "auth_mode": "role",
        "role_arn": ROLE_ARN,
        "external_id": "ext-vended-1",
        "data_upload_allowed": True,
        "credential_vending": True,
        "sts_endpoint": gateway.url,
        **extra,
    }


def s3_with(gateway: S3Gateway, answer: dict[str, Any]) -> Any:
    """An SDK client using the vended keys, as aws cli, s5cmd or rclone would."""
    return boto3.client(
        "s3",
        endpoint_url=gateway.url,
        region_name=answer["region"],
        aws_access_key_id=answer["access_key_id"],
        aws_secret_access_key=answer["secret_access_key"],
        aws_session_token=answer["session_token"],
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def denied(call: Any) -> str:
    with pytest.raises(ClientError) as raised:
        call()
    return str(raised.value.response["Error"]["Code"])


@pytest.fixture
async def vend_flow(make_flow, moto, gateway) -> Flow:
    flow: Flow = await make_flow()
    s3 = boto(moto, "s3")
    for name in (ROLE_BUCKET, STATIC_BUCKET, PLAIN_BUCKET):
        s3.create_bucket(Bucket=name)
    await flow.register(role_bucket(gateway), "incoming/", ALL_OPS)
    put_static_secret(moto, "gen3/bucket-registry/minio", STATIC_KEY_ID, STATIC_SECRET)
    static = {
        "name": STATIC_BUCKET,
        "provider": "minio",
        "endpoint": gateway.url,
        "auth_mode": "static",
        "secret_ref": "aws-sm://gen3/bucket-registry/minio",
        "data_upload_allowed": True,
        "credential_vending": True,
    }
    await flow.register(static, "incoming/", ALL_OPS)
    plain = {**static, "name": PLAIN_BUCKET, "credential_vending": False}
    await flow.register(plain, "incoming/", ALL_OPS)
    return flow


async def vend(flow: Flow, user: str, **body: Any) -> Any:
    return await flow.call("POST", "/credentials", json=body, headers=flow.user(user))


async def test_a_vended_credential_works_inside_its_prefix_and_nowhere_else(
    vend_flow: Flow, gateway: S3Gateway, moto, all_logs
) -> None:
    flow = vend_flow
    flow.arborist.grant("alice", "writer", PROJECT)
    flow.arborist.grant("alice", "reader", PROJECT)
    boto(moto, "s3").put_object(Bucket=ROLE_BUCKET, Key="incoming/bob/theirs", Body=b"bob's")

    answer = await vend(
        flow, "alice", bucket=ROLE_BUCKET, prefix="incoming/alice/", ops=["read", "write", "list"]
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert set(body) == {
        "access_key_id",
        "secret_access_key",
        "session_token",
        "expiration",
        "region",
        "endpoint",
        "bucket",
        "prefix",
    }
    assert (body["bucket"], body["prefix"], body["region"], body["endpoint"]) == (
        ROLE_BUCKET,
        "incoming/alice/",
        "us-east-1",
        None,
    )
    s3 = s3_with(gateway, body)

    # Inside: write, read back, list, and a multipart upload (aws s3 cp of a large file).
    s3.put_object(Bucket=ROLE_BUCKET, Key="incoming/alice/a.txt", Body=b"alice's")
    read = s3.get_object(Bucket=ROLE_BUCKET, Key="incoming/alice/a.txt")["Body"].read()
    assert read == b"alice's"
    listed = s3.list_objects_v2(Bucket=ROLE_BUCKET, Prefix="incoming/alice/")
    assert [item["Key"] for item in listed["Contents"]] == ["incoming/alice/a.txt"]
    upload = s3.create_multipart_upload(Bucket=ROLE_BUCKET, Key="incoming/alice/big")
    part = s3.upload_part(
        Bucket=ROLE_BUCKET,
        Key="incoming/alice/big",
        UploadId=upload["UploadId"],
        PartNumber=1,
        Body=b"x" * 1024,
    )
    s3.complete_multipart_upload(
        Bucket=ROLE_BUCKET,
        Key="incoming/alice/big",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    assert gateway.policy_denials == []

    # Outside: another user's prefix, a sibling sharing the name's start, the parent, the
    # bucket's root listing, another bucket; and delete, which was not asked for.
    assert denied(lambda: s3.get_object(Bucket=ROLE_BUCKET, Key="incoming/bob/theirs")) == (
        "AccessDenied"
    )
    assert denied(
        lambda: s3.put_object(Bucket=ROLE_BUCKET, Key="incoming/alice-evil/x", Body=b"!")
    ) == ("AccessDenied")
    assert denied(lambda: s3.put_object(Bucket=ROLE_BUCKET, Key="incoming/x", Body=b"!")) == (
        "AccessDenied"
    )
    assert denied(lambda: s3.list_objects_v2(Bucket=ROLE_BUCKET, Prefix="incoming/")) == (
        "AccessDenied"
    )
    assert denied(lambda: s3.list_objects_v2(Bucket=ROLE_BUCKET)) == "AccessDenied"
    assert denied(lambda: s3.get_object(Bucket=STATIC_BUCKET, Key="incoming/alice/a.txt")) == (
        "AccessDenied"
    )
    assert denied(lambda: s3.delete_object(Bucket=ROLE_BUCKET, Key="incoming/alice/a.txt")) == (
        "AccessDenied"
    )
    refused = {(d.action, d.resource) for d in gateway.policy_denials}
    assert ("s3:DeleteObject", f"arn:aws:s3:::{ROLE_BUCKET}/incoming/alice/a.txt") in refused
    assert ("s3:PutObject", f"arn:aws:s3:::{ROLE_BUCKET}/incoming/alice-evil/x") in refused
    # Nothing written outside the prefix reached the store.
    keys = boto(moto, "s3").list_objects_v2(Bucket=ROLE_BUCKET)["Contents"]
    assert sorted(item["Key"] for item in keys) == [
        "incoming/alice/a.txt",
        "incoming/alice/big",
        "incoming/bob/theirs",
    ]

    # The session names the user: SourceIdentity and tags were asked of STS, and every request
    # the store saw with these keys carries that identity.
    call = gateway.sts_calls[-1]
    request_id = answer.headers["x-request-id"]
    assert call.params["RoleArn"] == ROLE_ARN
    assert call.params["ExternalId"] == "ext-vended-1"
    assert call.source_identity == "alice"
    assert call.params["RoleSessionName"] == f"{request_id}-alice"
    assert call.tags["gen3-user"] == "alice"
    assert call.tags["gen3-request-id"] == request_id
    assert call.tags["gen3-bucket"] == ROLE_BUCKET
    with_keys = [seen for seen in gateway.seen if seen.access_key_id == body["access_key_id"]]
    assert with_keys and {seen.source_identity for seen in with_keys} == {"alice"}

    # The decision log: one line per op decision and one for the session, all naming alice
    # and the request, none holding the secret parts.
    decisions = [r for r in all_logs.records if r.name == "bucket_registry.decisions"]
    asked = [r for r in decisions if getattr(r, "action", None) == "credentials"]
    vended = [r for r in asked if r.getMessage() == "credentials vended"]
    assert {r.op for r in asked if hasattr(r, "op")} == {"read", "write", "multipart"}
    assert all(r.user == "alice" and r.bucket == ROLE_BUCKET for r in asked)
    assert len(vended) == 1
    assert vended[0].access_key_id == body["access_key_id"]
    assert vended[0].source_identity == "alice"
    assert vended[0].ops == ["read", "write", "list"]
    logged = "\n".join(f"{r.getMessage()} {r.__dict__!r}" for r in all_logs.records)
    assert body["secret_access_key"] not in logged
    assert body["session_token"] not in logged


async def test_a_static_bucket_vends_through_its_stores_own_sts(
    vend_flow: Flow, gateway: S3Gateway
) -> None:
    flow = vend_flow
    flow.arborist.grant("bob", "writer", PROJECT)
    flow.arborist.grant("bob", "reader", PROJECT)

    answer = await vend(flow, "bob", bucket=STATIC_BUCKET, prefix="incoming/", ops=["write"])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["endpoint"] == gateway.url
    call = gateway.sts_calls[-1]
    # MinIO's AssumeRole is signed with the bucket's own keys, at the bucket's endpoint.
    assert call.signed_by == STATIC_KEY_ID
    assert call.source_identity == "bob"

    s3 = s3_with(gateway, body)
    s3.put_object(Bucket=STATIC_BUCKET, Key="incoming/new", Body=b"data")
    # Write only: no read back, no listing, nothing outside.
    assert denied(lambda: s3.get_object(Bucket=STATIC_BUCKET, Key="incoming/new")) == (
        "AccessDenied"
    )
    assert denied(lambda: s3.list_objects_v2(Bucket=STATIC_BUCKET, Prefix="incoming/")) == (
        "AccessDenied"
    )
    assert denied(lambda: s3.put_object(Bucket=STATIC_BUCKET, Key="other/x", Body=b"!")) == (
        "AccessDenied"
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"prefix": "incoming/alice"}, "end with '/'"),
        ({"prefix": "incoming/*/"}, "must not contain '*'"),
        ({"prefix": "incoming/a?/"}, "must not contain '?'"),
        ({"prefix": "incoming/${aws:username}/"}, "must not contain '${'"),
        ({"prefix": "/incoming/"}, "must not start with '/'"),
        ({"prefix": "incoming/../"}, "'..' path segment"),
        ({"ops": []}, "ops"),
        ({"ops": ["multipart"]}, "ops"),
        ({"duration": 60}, "at least 900 seconds"),
        # The prefix appears twice (objects and the listing condition): over STS's size.
        (
            {"prefix": "incoming/" + "p" * 990 + "/", "ops": ["read", "list"]},
            "STS takes at most 2048",
        ),
        ({"extra": 1}, "extra"),
    ],
)
async def test_bad_requests_are_400_and_reach_no_sts(
    vend_flow: Flow, gateway: S3Gateway, body: dict[str, Any], message: str
) -> None:
    flow = vend_flow
    flow.arborist.grant("alice", "writer", PROJECT)
    flow.arborist.grant("alice", "reader", PROJECT)
    request = {"bucket": ROLE_BUCKET, "prefix": "incoming/alice/", "ops": ["read"], **body}
    answer = await vend(flow, "alice", **request)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["message"]
    assert gateway.sts_calls == []


async def test_refusals_name_their_reason_and_reach_no_sts(
    vend_flow: Flow, gateway: S3Gateway
) -> None:
    flow = vend_flow
    flow.arborist.grant("reader", "reader", PROJECT)

    # Read granted, write not: the whole request is refused.
    mixed = await vend(
        flow, "reader", bucket=ROLE_BUCKET, prefix="incoming/r/", ops=["read", "write"]
    )
    assert mixed.status_code == 403, mixed.text
    # No binding covers the prefix (the binding is on incoming/), nor the whole bucket.
    for prefix in ("other/", ""):
        outside = await vend(flow, "reader", bucket=ROLE_BUCKET, prefix=prefix, ops=["read"])
        assert outside.status_code == 403, outside.text
        assert "no binding" in outside.json()["message"]
    # A bucket that does not vend.
    plain = await vend(flow, "reader", bucket=PLAIN_BUCKET, prefix="incoming/", ops=["read"])
    assert plain.status_code == 400
    assert plain.json()["error"] == "credential_vending_off"
    assert "use /presign" in plain.json()["message"]
    missing = await vend(flow, "reader", bucket="no-such-bucket", prefix="", ops=["read"])
    assert missing.status_code == 404
    assert gateway.sts_calls == []
    # Not without a token.
    anonymous = await flow.call(
        "POST", "/credentials", json={"bucket": ROLE_BUCKET, "prefix": "", "ops": ["read"]}
    )
    assert anonymous.status_code == 401


async def test_a_whole_bucket_credential_needs_a_whole_bucket_binding(
    vend_flow: Flow, gateway: S3Gateway, moto
) -> None:
    flow = vend_flow
    bound = await flow.call(
        "POST",
        f"/admin/buckets/{STATIC_BUCKET}/bindings",
        json={"resource_path": "/programs/DEV", "allowed_ops": {"read": True}},
        headers=flow.admin,
    )
    assert bound.status_code == 201, bound.text
    flow.arborist.grant("dana", "reader", "/programs/DEV")
    boto(moto, "s3").put_object(Bucket=STATIC_BUCKET, Key="anywhere/f", Body=b"f")

    answer = await vend(flow, "dana", bucket=STATIC_BUCKET, prefix="", ops=["read", "list"])
    assert answer.status_code == 200, answer.text
    s3 = s3_with(gateway, answer.json())
    assert s3.get_object(Bucket=STATIC_BUCKET, Key="anywhere/f")["Body"].read() == b"f"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=STATIC_BUCKET)["Contents"]] == [
        "anywhere/f"
    ]
    assert denied(lambda: s3.put_object(Bucket=STATIC_BUCKET, Key="anywhere/g", Body=b"")) == (
        "AccessDenied"
    )


def _lifetime(answer: Any) -> float:
    expiration = datetime.fromisoformat(answer.json()["expiration"])
    return (expiration - datetime.now(UTC)).total_seconds()


async def test_durations_are_bounded_by_the_bucket_and_the_registry(
    make_flow, moto, gateway: S3Gateway
) -> None:
    flow: Flow = await make_flow(max_credential_ttl=7200, default_credential_ttl=1800)
    boto(moto, "s3").create_bucket(Bucket=ROLE_BUCKET)
    await flow.register(role_bucket(gateway), "incoming/", {"read": True})
    flow.arborist.grant("alice", "reader", PROJECT)
    request = {"bucket": ROLE_BUCKET, "prefix": "incoming/", "ops": ["read"]}

    default = await vend(flow, "alice", **request)
    assert default.status_code == 200, default.text
    asked = [call.params["DurationSeconds"] for call in gateway.sts_calls]
    longer = await vend(flow, "alice", **request, duration=40_000)
    exact = await vend(flow, "alice", **request, duration=1000)
    patched = await flow.call(
        "PATCH",
        f"/admin/buckets/{ROLE_BUCKET}",
        json={"max_credential_ttl": 900},
        headers=flow.admin,
    )
    assert patched.status_code == 200, patched.text
    capped = await vend(flow, "alice", **request, duration=3600)
    asked = [call.params["DurationSeconds"] for call in gateway.sts_calls]
    assert asked == ["1800", "7200", "1000", "900"]
    for answer, seconds in ((default, 1800), (longer, 7200), (exact, 1000), (capped, 900)):
        assert answer.status_code == 200, answer.text
        assert seconds - 30 <= _lifetime(answer) <= seconds


async def test_a_trusted_caller_vends_for_the_user_it_names(
    make_flow,
    moto,
    gateway: S3Gateway,
    cluster: ServiceAccountIssuer,  # noqa: F811
) -> None:
    flow: Flow = await make_flow(
        service_token_issuer=cluster.issuer,
        service_token_jwks_url=cluster.issuer + "/openid/v1/jwks",
        trusted_callers=FENCE_SA,
    )
    boto(moto, "s3").create_bucket(Bucket=ROLE_BUCKET)
    await flow.register(role_bucket(gateway), "incoming/", {"read": True})
    flow.arborist.grant("erin", "reader", PROJECT)
    fence = {"Authorization": f"Bearer {cluster.token()}"}
    body = {"bucket": ROLE_BUCKET, "prefix": "incoming/", "ops": ["read"], "authz": [PROJECT]}

    for_erin = await flow.call(
        "POST", "/credentials", json={**body, "on_behalf_of": {"username": "erin"}}, headers=fence
    )
    assert for_erin.status_code == 200, for_erin.text
    call = gateway.sts_calls[-1]
    assert call.source_identity == "erin"
    assert call.tags["gen3-via"] == FENCE_SA
    for_frank = await flow.call(
        "POST", "/credentials", json={**body, "on_behalf_of": {"username": "frank"}}, headers=fence
    )
    assert for_frank.status_code == 403
    # A user may not name someone else.
    forged = await flow.call(
        "POST",
        "/credentials",
        json={**body, "on_behalf_of": {"username": "erin"}},
        headers=flow.user("frank"),
    )
    assert forged.status_code == 403
    assert "trusted callers only" in forged.json()["message"]


async def test_validate_proves_the_store_enforces_the_scope(
    vend_flow: Flow, gateway: S3Gateway, moto
) -> None:
    flow = vend_flow
    for write_probe in ("false", "true"):
        report = await flow.call(
            "POST",
            f"/admin/buckets/{ROLE_BUCKET}/validate?write_probe={write_probe}",
            headers=flow.admin,
        )
        assert report.status_code == 200, report.text
        check = report.json()["checks"]["scope_enforced"]
        assert check["status"] == "pass", report.text
    assert gateway.sts_calls[-1].source_identity == "bucket-registry-probe"
    denials = {(d.action, d.resource) for d in gateway.policy_denials}
    assert ("s3:ListBucket", f"arn:aws:s3:::{ROLE_BUCKET}") in denials
    assert any(action == "s3:PutObject" and "outside-" in res for action, res in denials)
    # Buckets that do not vend are not probed for it.
    plain = await flow.call("POST", f"/admin/buckets/{PLAIN_BUCKET}/validate", headers=flow.admin)
    assert "scope_enforced" not in plain.json()["checks"]


async def test_validate_fails_a_store_that_ignores_session_policies(
    make_flow, moto, gateway: S3Gateway
) -> None:
    # moto's own S3 and STS, without the gateway: sessions are issued and never enforced.
    flow: Flow = await make_flow()
    boto(moto, "s3").create_bucket(Bucket="lax-store")
    put_static_secret(moto, "gen3/bucket-registry/lax", STATIC_KEY_ID, STATIC_SECRET)
    body = {
        "name": "lax-store",
        "provider": "minio",
        "endpoint": moto.url,
        "auth_mode": "static",
        "secret_ref": "aws-sm://gen3/bucket-registry/lax",
        "credential_vending": True,
    }
    await flow.register(body, None, {"read": True})
    report = await flow.call(
        "POST", "/admin/buckets/lax-store/validate?write_probe=true", headers=flow.admin
    )
    check = report.json()["checks"]["scope_enforced"]
    assert check["status"] == "fail"
    assert "does not enforce session policies" in check["reason"]
    assert report.json()["ok"] is False
    # Nothing the probe wrote stays behind.
    assert boto(moto, "s3").list_objects_v2(Bucket="lax-store").get("KeyCount") == 0


async def test_vends_share_one_sts_client_and_its_connection(
    vend_flow: Flow, gateway: S3Gateway
) -> None:
    flow = vend_flow
    flow.arborist.grant("alice", "reader", PROJECT)
    flow.arborist.grant("bob", "reader", PROJECT)
    pool = flow.services.sts_clients
    before = pool.created

    for user in ("alice", "bob", "alice", "bob", "alice"):
        answer = await vend(flow, user, bucket=ROLE_BUCKET, prefix="incoming/", ops=["read"])
        assert answer.status_code == 200, answer.text
    # Five sessions, each for its caller, asked over one client and one kept-alive connection.
    assert len(gateway.sts_calls) == 5
    assert len({call.access_key_id for call in gateway.sts_calls}) == 5
    assert pool.created - before == 1
    assert len(gateway.sts_connections) == 1

    # A static bucket signs AssumeRole with its own keys: a client of its own, reused too.
    for _ in range(3):
        answer = await vend(flow, "bob", bucket=STATIC_BUCKET, prefix="incoming/", ops=["read"])
        assert answer.status_code == 200, answer.text
    assert pool.created - before == 2
    assert len(gateway.sts_connections) == 2
    assert {call.signed_by for call in gateway.sts_calls[-3:]} == {STATIC_KEY_ID}

    # Shutdown closes them.
    await flow.services.aclose()
    assert len(pool) == 0


async def test_presigned_urls_of_a_vending_role_bucket_name_the_user_and_the_request(
    make_flow, moto, gateway: S3Gateway
) -> None:
    # The registry's own STS is the gateway here, so the signing session's AssumeRole is seen.
    flow: Flow = await make_flow(sts_endpoint_url=gateway.url)
    s3 = boto(moto, "s3")
    for name in (ROLE_BUCKET, PLAIN_BUCKET):
        s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=ROLE_BUCKET, Key="incoming/r1.cram", Body=b"reads")
    s3.put_object(Bucket=PLAIN_BUCKET, Key="incoming/r1.cram", Body=b"plain")
    await flow.register(role_bucket(gateway), "incoming/", ALL_OPS)
    plain = {**role_bucket(gateway), "name": PLAIN_BUCKET, "credential_vending": False}
    plain["role_arn"] = ROLE_ARN.replace("gen3-abc-data", "gen3-abc-plain")
    await flow.register(plain, "incoming/", ALL_OPS)
    flow.arborist.grant("alice", "reader", PROJECT)
    flow.arborist.grant("alice", "writer", PROJECT)

    signed = await flow.call(
        "POST",
        "/presign",
        json={"bucket": ROLE_BUCKET, "key": "incoming/r1.cram", "op": "read"},
        headers={**flow.user("alice"), "X-Request-ID": "req-0042-download"},
    )
    assert signed.status_code == 200, signed.text
    query = dict(parse_qsl(urlsplit(signed.json()["url"]).query))
    assert query["username"] == "alice"
    assert query["request_id"] == "req-0042-download" == signed.headers["x-request-id"]
    # The gateway verified the signature over those parameters and served the object; the
    # session that signed carries the registry's SourceIdentity, not the user's.
    fetched = await send(signed.json())
    assert fetched.status_code == 200 and fetched.content == b"reads"
    signing = [call for call in gateway.sts_calls if call.params["RoleArn"] == ROLE_ARN]
    assert len(signing) == 1
    assert signing[0].source_identity == "bucket-registry"
    assert signing[0].params["RoleSessionName"] == f"bucket-registry-{ROLE_BUCKET}"
    assert gateway.seen[-1].source_identity == "bucket-registry"
    assert gateway.seen[-1].access_key_id == query["X-Amz-Credential"].split("/")[0]

    # Uploads carry no audit parameters (Fence's contract signs them into GETs only).
    upload = await flow.presign("alice", ROLE_BUCKET, "incoming/new", "write")
    assert "username=" not in upload.json()["url"]
    assert "request_id=" not in upload.json()["url"]

    # A role bucket without vending: no SourceIdentity asked (its trust policy need not allow
    # it), and its URLs are as before.
    other = await flow.presign("alice", PLAIN_BUCKET, "incoming/r1.cram", "read")
    assert other.status_code == 200, other.text
    assert "username=" not in other.json()["url"]
    plain_calls = [call for call in gateway.sts_calls if call.params["RoleArn"] != ROLE_ARN]
    assert len(plain_calls) == 1 and plain_calls[0].source_identity is None
    assert (await send(other.json())).content == b"plain"


async def test_the_registrys_source_identity_is_a_setting(
    make_flow, moto, gateway: S3Gateway
) -> None:
    flow: Flow = await make_flow(sts_endpoint_url=gateway.url, source_identity="gen3-registry")
    boto(moto, "s3").create_bucket(Bucket=ROLE_BUCKET)
    await flow.register(role_bucket(gateway), "incoming/", {"read": True})
    flow.arborist.grant("alice", "reader", PROJECT)
    signed = await flow.presign("alice", ROLE_BUCKET, "incoming/x", "read")
    assert signed.status_code == 200, signed.text
    assert gateway.sts_calls[-1].source_identity == "gen3-registry"
    with pytest.raises(ValueError, match="source_identity"):
        Settings(source_identity="has spaces")
