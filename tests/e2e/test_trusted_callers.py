"""Fence as a trusted caller: its own ServiceAccount token, acting for a principal, authorized on
the record's authz the way Fence authorizes — through real HTTP, with bytes through every URL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from app.config import Settings
from app.container import trusting
from tests.e2e.conftest import (
    ALL_OPS,
    STATIC_KEY_ID,
    STATIC_SECRET,
    Flow,
    boto,
    put_static_secret,
    send,
)
from tests.e2e.test_data_path import MIB
from tests.support.fence import ServiceAccountIssuer
from tests.support.tls import local_authority

FENCE_SA = "system:serviceaccount:default:fence"
PROJECT_Y = "/programs/X/projects/Y"
PROJECT_Z = "/programs/X/projects/Z"
BUCKET = "commons-data"
UPLOADS = "commons-uploads"


@pytest.fixture(scope="module")
def cluster() -> Iterator[ServiceAccountIssuer]:
    issuer = ServiceAccountIssuer().start()
    yield issuer
    issuer.server.stop()


def s3_bucket(gateway_url: str, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "provider": "minio",
        "endpoint": gateway_url,
        "auth_mode": "static",
        "secret_ref": "aws-sm://gen3/bucket-registry/commons",
        **extra,
    }


async def bind(flow: Flow, bucket: str, path: str, ops: dict[str, bool]) -> None:
    answer = await flow.call(
        "POST",
        f"/admin/buckets/{bucket}/bindings",
        json={"resource_path": path, "allowed_ops": ops},
        headers=flow.admin,
    )
    assert answer.status_code == 201, answer.text


@pytest.fixture
async def fence_flow(make_flow, moto, gateway, cluster) -> Flow:
    flow: Flow = await make_flow(
        service_token_issuer=cluster.issuer,
        service_token_jwks_url=cluster.issuer + "/openid/v1/jwks",
        trusted_callers=FENCE_SA,
        authz_cache_ttl=30,
    )
    s3 = boto(moto, "s3")
    for name in (BUCKET, UPLOADS):
        s3.create_bucket(Bucket=name)
    put_static_secret(moto, "gen3/bucket-registry/commons", STATIC_KEY_ID, STATIC_SECRET)
    for body in (
        s3_bucket(gateway.url, BUCKET),
        s3_bucket(gateway.url, UPLOADS, data_upload_allowed=True, is_default_upload=True),
    ):
        created = await flow.call("POST", "/admin/buckets", json=body, headers=flow.admin)
        assert created.status_code == 201, created.text
    # As the importer binds: the data bucket may serve any record under /programs; the upload
    # bucket serves uploads for any record (Fence let any record point into it).
    await bind(flow, BUCKET, "/programs", {"read": True, "delete": True})
    await bind(flow, UPLOADS, "/", ALL_OPS)
    return flow


class Fence:
    """Plays Fence: its own token, plus the principal and the record's authz in each body."""

    def __init__(self, flow: Flow, cluster: ServiceAccountIssuer) -> None:
        self.flow = flow
        self.headers = {"Authorization": f"Bearer {cluster.token()}"}

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        return await self.flow.call("POST", path, json=body, headers=self.headers)

    async def presign(
        self,
        on_behalf_of: dict[str, Any],
        authz: list[str],
        bucket: str,
        key: str,
        op: str,
        **extra: Any,
    ) -> Any:
        body = {
            "bucket": bucket,
            "key": key,
            "op": op,
            "on_behalf_of": on_behalf_of,
            "authz": authz,
        }
        return await self.post("/presign", {**body, **extra})


@pytest.fixture
def fence(fence_flow: Flow, cluster: ServiceAccountIssuer) -> Fence:
    return Fence(fence_flow, cluster)


def user_token(flow: Flow, name: str) -> dict[str, str]:
    return {"token": flow.issuer.token(name)}


async def test_a_record_of_a_project_downloads_from_a_bucket_bound_higher_up(
    fence: Fence, fence_flow: Flow, moto
) -> None:
    flow = fence_flow
    boto(moto, "s3").put_object(Bucket=BUCKET, Key="guid-1/reads.bam", Body=b"project Y data")
    flow.arborist.grant("alice", "reader", PROJECT_Y)

    signed = await fence.presign(
        user_token(flow, "alice"), [PROJECT_Y], BUCKET, "guid-1/reads.bam", "read"
    )
    assert signed.status_code == 200, signed.text
    assert (await send(signed.json())).content == b"project Y data"

    other = await fence.presign(user_token(flow, "alice"), [PROJECT_Z], BUCKET, "guid-2/x", "read")
    assert other.status_code == 403
    assert "read-storage not granted on every resource" in other.json()["message"]
    # Every path of the record must be granted, not just one.
    both = await fence.presign(
        user_token(flow, "alice"), [PROJECT_Y, PROJECT_Z], BUCKET, "k", "read"
    )
    assert both.status_code == 403


async def test_a_passport_user_name_and_the_decision_cache_per_principal(
    fence: Fence, fence_flow: Flow, moto
) -> None:
    flow = fence_flow
    boto(moto, "s3").put_object(Bucket=BUCKET, Key="guid-3/a", Body=b"for bob")
    flow.arborist.grant("bob", "reader", PROJECT_Y)

    bob = await fence.presign({"username": "bob"}, [PROJECT_Y], BUCKET, "guid-3/a", "read")
    assert bob.status_code == 200, bob.text
    assert (await send(bob.json())).content == b"for bob"
    # The same service token, the same record, another principal: Arborist is asked again.
    calls = flow.arborist.call_count
    carol = await fence.presign({"username": "carol"}, [PROJECT_Y], BUCKET, "guid-3/a", "read")
    assert carol.status_code == 403
    assert flow.arborist.call_count == calls + 1
    again = await fence.presign({"username": "BOB"}, [PROJECT_Y], BUCKET, "guid-3/a", "read")
    assert again.status_code == 200
    assert flow.arborist.call_count == calls + 1  # bob's decision, cached under bob


async def test_a_file_upload_holder_uploads_single_and_multipart(
    fence: Fence, fence_flow: Flow
) -> None:
    flow = fence_flow
    flow.arborist.grant("submitter", "uploader", "/data_file")
    who = user_token(flow, "submitter")
    default = await flow.call("GET", "/resolve?purpose=upload", headers=flow.user("submitter"))
    assert default.status_code == 200 and default.json()["name"] == UPLOADS

    put = await fence.presign(
        who, ["/data_file"], UPLOADS, "guid-9/sample.cram", "write", method="file_upload"
    )
    assert put.status_code == 200, put.text
    assert (await send(put.json(), b"uploaded")).status_code == 200

    target = {
        "bucket": UPLOADS,
        "key": "guid-10/big.cram",
        "on_behalf_of": who,
        "authz": ["/data_file"],
        "method": "file_upload",
    }
    init = await fence.post("/multipart/init", target)
    assert init.status_code == 200, init.text
    upload_id = init.json()["upload_id"]
    chunks = [os.urandom(5 * MIB), os.urandom(1024)]
    parts = []
    for number, chunk in enumerate(chunks, start=1):
        signed = await fence.post(
            "/multipart/presign", {**target, "upload_id": upload_id, "part_number": number}
        )
        assert signed.status_code == 200, signed.text
        sent = await send({**signed.json(), "method": "PUT"}, chunk)
        assert sent.status_code == 200
        parts.append({"part_number": number, "etag": sent.headers["etag"]})
    done = await fence.post(
        "/multipart/complete", {**target, "upload_id": upload_id, "parts": parts}
    )
    assert done.status_code == 200, done.text

    # The bytes read back (the reader holds read-storage on /data_file's records).
    flow.arborist.grant("submitter", "reader", "/data_file")
    for key, expected in (
        ("guid-9/sample.cram", b"uploaded"),
        ("guid-10/big.cram", b"".join(chunks)),
    ):
        read = await fence.presign(who, ["/data_file"], UPLOADS, key, "read")
        assert read.status_code == 200, read.text
        assert (await send(read.json())).content == expected

    # write-storage alone is not what this user holds.
    plain = await fence.presign(who, ["/data_file"], UPLOADS, "guid-11/x", "write")
    assert plain.status_code == 403


async def test_fences_legacy_uploader_rule(fence: Fence, fence_flow: Flow) -> None:
    who = user_token(fence_flow, "submitter")
    ok = await fence.presign(who, [], UPLOADS, "guid-12/blank", "write", legacy="uploader")
    assert ok.status_code == 200, ok.text
    assert (await send(ok.json(), b"blank record")).status_code == 200
    # The data bucket has no binding covering /data_file for writes.
    refused = await fence.presign(who, [], BUCKET, "guid-12/blank", "write", legacy="uploader")
    assert refused.status_code == 403


async def test_refusals_say_why(fence: Fence, fence_flow: Flow, cluster) -> None:
    flow = fence_flow
    flow.arborist.grant("alice", "reader", PROJECT_Y)
    alice = user_token(flow, "alice")
    base = {"bucket": BUCKET, "key": "guid-1/k", "op": "read"}

    cases: list[tuple[dict[str, Any], int, str]] = [
        ({**base, "authz": [PROJECT_Y]}, 400, "on_behalf_of: required"),
        ({**base, "on_behalf_of": alice}, 400, "authz: required"),
        ({**base, "on_behalf_of": alice, "authz": []}, 400, "needs legacy"),
        (
            {**base, "on_behalf_of": alice, "authz": [PROJECT_Y], "legacy": "acl"},
            400,
            "only with an empty",
        ),
        ({**base, "on_behalf_of": alice, "authz": ["/programs/X/"]}, 400, "authz:"),
        (
            {**base, "on_behalf_of": alice, "authz": [PROJECT_Y], "method": "write-storage"},
            400,
            "cannot authorize read",
        ),
        (
            {**base, "on_behalf_of": {"username": "a", "anonymous": True}, "authz": [PROJECT_Y]},
            400,
            "exactly one",
        ),
        (
            {**base, "on_behalf_of": {"token": "not-a-jwt"}, "authz": [PROJECT_Y]},
            401,
            "on_behalf_of.token",
        ),
        (
            {
                **base,
                "bucket": UPLOADS,
                "key": "k",
                "op": "delete",
                "on_behalf_of": alice,
                "authz": [PROJECT_Y],
            },
            403,
            "delete not granted",
        ),
        (
            {**base, "key": "k", "op": "write", "on_behalf_of": alice, "authz": [PROJECT_Y]},
            403,
            "does not accept uploads",
        ),
        ({**base, "on_behalf_of": alice, "authz": ["/other/Q"]}, 403, "no binding covers"),
    ]
    for body, status, message in cases:
        answer = await fence.post("/presign", body)
        assert answer.status_code == status, (body, answer.text)
        assert message in answer.json()["message"], (body, answer.text)
    invalid = await fence.post("/presign", cases[7][0])
    assert invalid.json()["error"] == "on_behalf_of_invalid"
    expired = {"token": flow.issuer.token("alice", lifetime=-10)}
    assert (await fence.presign(expired, [PROJECT_Y], BUCKET, "k", "read")).json()["error"] == (
        "on_behalf_of_invalid"
    )

    # A user token may not speak for others.
    for extra in (
        {"authz": [PROJECT_Y]},
        {"audit": {"user_id": "1"}},
        {"on_behalf_of": {"anonymous": True}},
    ):
        answer = await flow.call(
            "POST", "/presign", json={**base, **extra}, headers=flow.user("alice")
        )
        assert answer.status_code == 403 and "trusted callers only" in answer.json()["message"]

    # A service token whose subject is not trusted.
    stranger = {"Authorization": f"Bearer {cluster.token('default', 'jupyter')}"}
    body = {**base, "on_behalf_of": alice, "authz": [PROJECT_Y]}
    answer = await flow.call("POST", "/presign", json=body, headers=stranger)
    assert answer.status_code == 403 and "not a trusted caller" in answer.json()["message"]


async def test_legacy_rules_can_be_turned_off(make_flow, moto, gateway, cluster) -> None:
    flow: Flow = await make_flow(
        service_token_issuer=cluster.issuer,
        service_token_jwks_url=cluster.issuer + "/openid/v1/jwks",
        trusted_callers=FENCE_SA,
        legacy_authz_enabled=False,
    )
    fence = Fence(flow, cluster)
    body = {
        "bucket": UPLOADS,
        "key": "k",
        "op": "write",
        "authz": [],
        "legacy": "uploader",
        "on_behalf_of": user_token(flow, "submitter"),
    }
    answer = await fence.post("/presign", body)
    assert answer.status_code == 403 and "legacy authorization is turned off" in answer.text


async def test_an_issuer_behind_a_cluster_ca_is_trusted_through_the_ca_file(
    make_flow, moto, gateway, tmp_path
) -> None:
    # As the API server publishes its keys in the cluster: HTTPS with a certificate the public
    # roots do not know, trusted through BUCKET_REGISTRY_SERVICE_TOKEN_CA_FILE.
    authority = local_authority(tmp_path)
    cluster = ServiceAccountIssuer(tls=authority.server_context).start()
    try:
        assert cluster.issuer.startswith("https://")
        s3 = boto(moto, "s3")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="guid-1/reads.bam", Body=b"behind the cluster CA")
        put_static_secret(moto, "gen3/bucket-registry/commons", STATIC_KEY_ID, STATIC_SECRET)
        options = {
            "service_token_issuer": cluster.issuer,
            "service_token_jwks_url": cluster.issuer + "/openid/v1/jwks",
            "trusted_callers": FENCE_SA,
        }

        untrusting: Flow = await make_flow(**options)
        created = await untrusting.call(
            "POST", "/admin/buckets", json=s3_bucket(gateway.url, BUCKET), headers=untrusting.admin
        )
        assert created.status_code == 201, created.text
        await bind(untrusting, BUCKET, "/programs", {"read": True})
        untrusting.arborist.grant("alice", "reader", PROJECT_Y)
        body = {
            "bucket": BUCKET,
            "key": "guid-1/reads.bam",
            "op": "read",
            "on_behalf_of": user_token(untrusting, "alice"),
            "authz": [PROJECT_Y],
        }
        # Without the CA the keys cannot be fetched: an outage of the issuer, not a bad token.
        refused = await Fence(untrusting, cluster).post("/presign", body)
        assert refused.status_code == 503, refused.text
        assert cluster.jwks_fetches == 0

        trusting: Flow = await make_flow(**options, service_token_ca_file=authority.ca_file)
        signed = await Fence(trusting, cluster).post("/presign", body)
        assert signed.status_code == 200, signed.text
        assert (await send(signed.json())).content == b"behind the cluster CA"
        assert cluster.jwks_fetches == 1
    finally:
        cluster.server.stop()


def test_a_ca_file_needs_a_jwks_url_and_must_be_a_pem_bundle(tmp_path) -> None:
    with pytest.raises(ValueError, match="service_token_ca_file needs service_token_jwks_url"):
        Settings(service_token_ca_file=tmp_path / "ca.crt")
    not_pem = tmp_path / "ca.crt"
    not_pem.write_text("not a certificate")
    with pytest.raises(ValueError, match="is not a readable PEM bundle"):
        trusting(not_pem)
