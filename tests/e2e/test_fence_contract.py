"""The rest of Fence's contract, played by Fence with its ServiceAccount token through real HTTP:
public records and buckets (unsigned URLs), attribution in signed GETs, batches for several
principals, server-side deletes, the bucket list, each refusal's status and message, and a
fence-config.yaml imported, then served."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from app.migration.commands import ImportRequest, run_import
from tests.e2e import test_trusted_callers as trusted
from tests.e2e.conftest import Flow, boto
from tests.e2e.test_data_path import MIB, send
from tests.e2e.test_trusted_callers import (
    BUCKET,
    FENCE_SA,
    PROJECT_Y,
    PROJECT_Z,
    UPLOADS,
    Fence,
    bind,
    s3_bucket,
    user_token,
)
from tests.migration.conftest import FIXTURE as FENCE_CONFIG

# Fence's fixtures: its cluster's issuer, the app with a data and an upload bucket, and Fence.
cluster = trusted.cluster
fence_flow = trusted.fence_flow
fence = trusted.fence

PUBLIC_PROJECT = "/programs/OPEN/projects/REFS"
# Straight at moto, which serves reads without a signature, as a public-read bucket does.
OPEN_BUCKET = "commons-open"
PUBLIC_BUCKET = "commons-public"
AUDIT = {"user_id": "42", "username": "alice@example.org", "client_id": "fence-client_1"}


@pytest.fixture
async def open_flow(fence_flow: Flow, moto) -> Flow:
    """Adds two buckets served unsigned by moto: one private (its records may still be public
    through the anonymous policies), one public."""
    flow = fence_flow
    s3 = boto(moto, "s3")
    for name, public in ((OPEN_BUCKET, False), (PUBLIC_BUCKET, True)):
        s3.create_bucket(Bucket=name)
        s3.put_object(
            Bucket=name, Key="guid-p/ref genome.fa", Body=name.encode(), ACL="public-read"
        )
        body = s3_bucket(moto.url, name, public=public)
        created = await flow.call("POST", "/admin/buckets", json=body, headers=flow.admin)
        assert created.status_code == 201, created.text
        await bind(flow, name, "/programs", {"read": True})
    return flow


def canonical(moto: Any, bucket: str) -> str:
    return f"{moto.url}/{bucket}/guid-p/ref%20genome.fa"


# -- public records and public buckets ----------------------------------------------------------


async def test_anonymous_principal_on_a_public_record_gets_an_unsigned_url(
    fence: Fence, open_flow: Flow, moto
) -> None:
    flow = open_flow
    flow.arborist.grant_anonymous("reader", PUBLIC_PROJECT)
    anonymous = {"anonymous": True}

    answer = await fence.presign(
        anonymous, [PUBLIC_PROJECT], OPEN_BUCKET, "guid-p/ref genome.fa", "read", unsigned=True
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body == {
        "url": canonical(moto, OPEN_BUCKET),
        "method": "GET",
        "expires_at": None,
        "headers": {},
    }
    got = await send(body)
    assert got.status_code == 200 and got.content == OPEN_BUCKET.encode()

    # A signed-in user reading the same public record (Fence's no_force_sign) gets it too: a
    # user holds the anonymous policies as well.
    alice = await fence.presign(
        user_token(flow, "alice"),
        [PUBLIC_PROJECT],
        OPEN_BUCKET,
        "guid-p/ref genome.fa",
        "read",
        unsigned=True,
    )
    assert alice.status_code == 200, alice.text
    assert alice.json()["url"] == canonical(moto, OPEN_BUCKET)

    # Without unsigned, the anonymous principal gets a signed URL for the public record.
    signed = await fence.presign(
        anonymous, [PUBLIC_PROJECT], OPEN_BUCKET, "guid-p/ref genome.fa", "read"
    )
    assert signed.status_code == 200, signed.text
    assert "X-Amz-Signature" in signed.json()["url"] and signed.json()["expires_at"]


async def test_unsigned_needs_every_path_public_or_a_public_bucket(
    fence: Fence, open_flow: Flow, moto
) -> None:
    flow = open_flow
    flow.arborist.grant_anonymous("reader", PUBLIC_PROJECT)
    flow.arborist.grant("alice", "reader", PROJECT_Y)
    alice = user_token(flow, "alice")
    key = "guid-p/ref genome.fa"

    # alice may read the record, but it is not public: no unsigned URL from a private bucket.
    private = await fence.presign(alice, [PROJECT_Y], OPEN_BUCKET, key, "read", unsigned=True)
    assert private.status_code == 403
    assert private.json()["error"] == "unsigned_not_allowed"
    assert "not public" in private.json()["message"]
    # One public path is not enough: every path of the record must be public.
    flow.arborist.grant("alice", "reader", PUBLIC_PROJECT)
    mixed = await fence.presign(
        alice, [PUBLIC_PROJECT, PROJECT_Y], OPEN_BUCKET, key, "read", unsigned=True
    )
    assert mixed.status_code == 403 and mixed.json()["error"] == "unsigned_not_allowed"
    # The anonymous principal on a record that is not public is refused before any URL.
    nobody = await fence.presign(
        {"anonymous": True}, [PROJECT_Y], OPEN_BUCKET, key, "read", unsigned=True
    )
    assert nobody.status_code == 403 and nobody.json()["error"] == "forbidden"
    assert "read-storage not granted on every resource" in nobody.json()["message"]

    # A public bucket serves any record alice may read unsigned, public or not.
    public = await fence.presign(alice, [PROJECT_Y], PUBLIC_BUCKET, key, "read", unsigned=True)
    assert public.status_code == 200, public.text
    assert public.json()["url"] == canonical(moto, PUBLIC_BUCKET)
    got = await send(public.json())
    assert got.status_code == 200 and got.content == PUBLIC_BUCKET.encode()
    # ... after the same authorization: the record's authz must still be granted.
    bob = await fence.presign(
        user_token(flow, "bob"), [PROJECT_Y], PUBLIC_BUCKET, key, "read", unsigned=True
    )
    assert bob.status_code == 403 and bob.json()["error"] == "forbidden"
    # An anonymous principal on a public bucket still needs a record Arborist calls public.
    anonymous = await fence.presign(
        {"anonymous": True}, [PUBLIC_PROJECT], PUBLIC_BUCKET, key, "read", unsigned=True
    )
    assert anonymous.status_code == 200, anonymous.text
    assert anonymous.json()["expires_at"] is None

    # Unsigned is for reads only.
    write = await fence.presign(alice, [PROJECT_Y], UPLOADS, "guid-p/x", "write", unsigned=True)
    assert write.status_code == 400 and "read only" in write.json()["message"]


# -- attribution --------------------------------------------------------------------------------


async def test_audit_params_from_fence_are_signed_into_gets_only(
    fence: Fence, fence_flow: Flow, moto, gateway
) -> None:
    flow = fence_flow
    flow.arborist.grant("alice", "reader", PROJECT_Y)
    flow.arborist.grant("submitter", "uploader", "/data_file")
    data = os.urandom(2048)
    boto(moto, "s3").put_object(Bucket=BUCKET, Key="guid-a/reads.bam", Body=data)
    alice = user_token(flow, "alice")

    signed = await fence.presign(
        alice, [PROJECT_Y], BUCKET, "guid-a/reads.bam", "read", audit=AUDIT
    )
    assert signed.status_code == 200, signed.text
    url = signed.json()["url"]
    query = parse_qs(urlsplit(url).query)
    assert {name: query[name] for name in AUDIT} == {k: [v] for k, v in AUDIT.items()}
    accepted = len(gateway.seen)
    got = await send(signed.json())
    assert got.status_code == 200 and got.content == data
    # The gateway checked the signature over the audit parameters and let the GET through.
    assert len(gateway.seen) == accepted + 1
    tampered = url.replace("user_id=42", "user_id=43")
    assert (await send({"method": "GET", "url": tampered})).status_code == 403

    # Only what was sent: a partial audit signs just those parameters.
    partial = await fence.presign(
        alice, [PROJECT_Y], BUCKET, "guid-a/reads.bam", "read", audit={"username": "alice"}
    )
    partial_query = parse_qs(urlsplit(partial.json()["url"]).query)
    assert partial_query["username"] == ["alice"] and "user_id" not in partial_query
    assert (await send(partial.json())).content == data

    # Never on uploads: a single PUT and a part's URL carry none of them, and both work.
    submitter = user_token(flow, "submitter")
    target = {
        "bucket": UPLOADS,
        "key": "guid-a/upload.cram",
        "on_behalf_of": submitter,
        "authz": ["/data_file"],
        "method": "file_upload",
        "audit": AUDIT,
    }
    put = await fence.post("/presign", {**target, "op": "write"})
    assert put.status_code == 200, put.text
    assert not set(AUDIT) & set(parse_qs(urlsplit(put.json()["url"]).query))
    assert (await send(put.json(), b"single")).status_code == 200
    init = await fence.post("/multipart/init", target)
    assert init.status_code == 200, init.text
    part = await fence.post(
        "/multipart/presign", {**target, "upload_id": init.json()["upload_id"], "part_number": 1}
    )
    assert part.status_code == 200, part.text
    assert not set(AUDIT) & set(parse_qs(urlsplit(part.json()["url"]).query))
    chunk = os.urandom(5 * MIB)
    sent = await send({**part.json(), "method": "PUT"}, chunk)
    assert sent.status_code == 200
    done = await fence.post(
        "/multipart/complete",
        {
            **target,
            "upload_id": init.json()["upload_id"],
            "parts": [{"part_number": 1, "etag": sent.headers["etag"]}],
        },
    )
    assert done.status_code == 200, done.text
    stored = boto(moto, "s3").get_object(Bucket=UPLOADS, Key="guid-a/upload.cram")
    assert stored["Body"].read() == chunk

    # A value that would change the URL's meaning is refused, and nothing is signed.
    for bad in ({"user_id": "1&username=root"}, {"username": "a=b"}, {"username": ""}):
        refused = await fence.presign(
            alice, [PROJECT_Y], BUCKET, "guid-a/reads.bam", "read", audit=bad
        )
        assert refused.status_code == 400, (bad, refused.text)
        assert "audit" in refused.json()["message"] or "username" in refused.json()["message"]

    # A user's own token may not attribute anything, on any route.
    for path, body in (
        ("/presign", {"bucket": BUCKET, "key": "guid-a/reads.bam", "op": "read"}),
        ("/multipart/init", {"bucket": UPLOADS, "key": "guid-a/x"}),
        ("/objects/delete", {"bucket": BUCKET, "key": "guid-a/reads.bam"}),
    ):
        answer = await flow.call(
            "POST", path, json={**body, "audit": AUDIT}, headers=flow.user("alice")
        )
        assert answer.status_code == 403, (path, answer.text)
        assert "trusted callers only" in answer.json()["message"]


# -- batch --------------------------------------------------------------------------------------


async def test_batch_for_two_principals_asks_arborist_once_per_question(
    fence: Fence, fence_flow: Flow, moto
) -> None:
    flow = fence_flow
    s3 = boto(moto, "s3")
    s3.put_object(Bucket=BUCKET, Key="guid-b/1", Body=b"one")
    s3.put_object(Bucket=BUCKET, Key="guid-b/2", Body=b"two")
    s3.put_object(Bucket=BUCKET, Key="guid-b/z", Body=b"zed")
    flow.arborist.grant("alice", "reader", PROJECT_Y)
    flow.arborist.grant("bob", "reader", PROJECT_Z)
    alice = user_token(flow, "alice")
    bob = {"username": "bob"}

    def item(who: dict[str, Any], authz: list[str], key: str, **extra: Any) -> dict[str, Any]:
        return {
            "bucket": BUCKET,
            "key": key,
            "op": "read",
            "on_behalf_of": who,
            "authz": authz,
            **extra,
        }

    requests = [
        item(alice, [PROJECT_Y], "guid-b/1"),  # 0: alice on Y
        item(alice, [PROJECT_Y], "guid-b/2", audit=AUDIT),  # 1: the same question
        item(bob, [PROJECT_Y], "guid-b/1"),  # 2: bob on Y: another principal, denied
        item(bob, [PROJECT_Z], "guid-b/z"),  # 3: bob on Z
        item(alice, [PROJECT_Z], "guid-b/z"),  # 4: alice on Z: denied
        item(bob, [PROJECT_Z], "guid-b/z", expires_in=60),  # 5: bob on Z again
        item(alice, [PROJECT_Y], "guid-b/1", bucket="no-such-bucket"),  # 6
        item(alice, [PROJECT_Y], "guid-b/1", method="write-storage"),  # 7
        {**item(alice, [PROJECT_Y], "guid-b/1"), "authz": None},  # 8
        item({"token": "not-a-jwt"}, [PROJECT_Y], "guid-b/1"),  # 9
        item(alice, ["/other/Q"], "guid-b/1"),  # 10: no binding covers it
        item(alice, [PROJECT_Y], "guid-b/1", unsigned=True),  # 11: not public
        item(alice, [PROJECT_Y], "guid-b/1", op="fly"),  # 12
    ]
    flow.arborist.requests.clear()
    answer = await fence.post("/presign/batch", {"requests": requests})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert len(results) == len(requests)
    statuses = [result.get("status") for result in results]
    assert statuses == [None, None, 403, None, 403, None, 404, 400, 400, 401, 403, 403, 400]
    codes = [result["error"]["code"] if "error" in result else None for result in results]
    assert codes[6:] == [
        "bucket_not_found",
        "invalid_request",
        "invalid_request",
        "on_behalf_of_invalid",
        "forbidden",
        "unsigned_not_allowed",
        "invalid_request",
    ]
    for index, text in (
        (2, "read-storage not granted on every resource"),
        (4, "read-storage not granted on every resource"),
        (7, "cannot authorize read"),
        (8, "authz: required"),
        (9, "on_behalf_of.token"),
        (10, "no binding covers"),
        (11, "not public"),
        (12, "op"),
    ):
        assert text in results[index]["error"]["message"], (index, results[index])

    # The bytes behind each URL, and the audit parameters on the one that asked for them.
    for index, expected in ((0, b"one"), (1, b"two"), (3, b"zed"), (5, b"zed")):
        got = await send(results[index])
        assert got.status_code == 200 and got.content == expected, index
    assert parse_qs(urlsplit(results[1]["url"]).query)["client_id"] == [AUDIT["client_id"]]
    assert "client_id" not in results[0]["url"]

    # One Arborist pass per distinct (principal, methods, authz): alice/Y, bob/Y, bob/Z,
    # alice/Z, and the anonymous policies for the unsigned item's record.
    assert flow.arborist.call_count == 5
    asked = sorted(
        (
            (request.get("user") or {}).get("user_id", "token" if request.get("user") else "-"),
            tuple(r["resource"] for r in request["requests"]),
        )
        for request in flow.arborist.requests
    )
    assert asked == sorted(
        [
            ("token", (PROJECT_Y,)),
            ("bob", (PROJECT_Y,)),
            ("bob", (PROJECT_Z,)),
            ("token", (PROJECT_Z,)),
            ("-", (PROJECT_Y,)),
        ]
    )


async def test_batch_refusals(fence: Fence, fence_flow: Flow, cluster) -> None:
    flow = fence_flow
    flow.arborist.grant("alice", "reader", PROJECT_Y)
    item = {
        "bucket": BUCKET,
        "key": "guid-b/1",
        "op": "read",
        "on_behalf_of": user_token(flow, "alice"),
        "authz": [PROJECT_Y],
    }
    stranger = {"Authorization": f"Bearer {cluster.token('default', 'jupyter')}"}
    foreign_audience = {"Authorization": f"Bearer {cluster.token(audience='somebody-else')}"}
    cases: list[tuple[dict[str, str], dict[str, Any], int, str]] = [
        ({}, {"requests": [item]}, 401, "access token is required"),
        ({"Authorization": "Bearer nonsense"}, {"requests": [item]}, 401, ""),
        (foreign_audience, {"requests": [item]}, 401, ""),
        (stranger, {"requests": [item]}, 403, "not a trusted caller"),
        (fence.headers, {"requests": []}, 400, "requests"),
        (fence.headers, {"requests": [item] * 101}, 400, "requests"),
        (fence.headers, {"requests": [item], "extra": 1}, 400, "extra"),
        (fence.headers, {}, 400, "requests"),
    ]
    for headers, body, status, message in cases:
        answer = await flow.call("POST", "/presign/batch", json=body, headers=headers)
        assert answer.status_code == status, (headers, body, answer.text)
        assert answer.json()["message"], answer.text
        assert message in answer.json()["message"], (body, answer.text)

    # A user's own batch may not speak for anybody: each such item fails alone.
    own = await flow.call(
        "POST",
        "/presign/batch",
        json={"requests": [item, {k: v for k, v in item.items() if k in ("bucket", "key", "op")}]},
        headers=flow.user("alice"),
    )
    assert own.status_code == 200, own.text
    first, second = own.json()["results"]
    assert first["status"] == 403 and "trusted callers only" in first["error"]["message"]
    # Direct mode: alice's own grant is checked on the binding's path (/programs), which she
    # does not hold.
    assert second["status"] == 403 and second["error"]["code"] == "forbidden"


# -- server-side delete -------------------------------------------------------------------------


async def test_fence_deletes_a_key_and_a_prefix_for_a_user(
    fence: Fence, fence_flow: Flow, moto, all_logs
) -> None:
    flow = fence_flow
    s3 = boto(moto, "s3")
    for key in ("guid-d/file.bam", "guid-e/a", "guid-e/b/c", "guid-f/keep"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"bytes")
    flow.arborist.grant("alice", "writer", PROJECT_Y)  # write-storage and delete
    flow.arborist.grant("bob", "reader", PROJECT_Y)
    alice = user_token(flow, "alice")

    def body(who: dict[str, Any], **target: Any) -> dict[str, Any]:
        return {"bucket": BUCKET, "on_behalf_of": who, "authz": [PROJECT_Y], **target}

    one = await fence.post("/objects/delete", body(alice, key="guid-d/file.bam"))
    assert one.status_code == 200 and one.json() == {"deleted": 1}, one.text
    assert (await fence.post("/objects/delete", body(alice, key="guid-d/file.bam"))).json() == {
        "deleted": 0
    }
    run = await fence.post("/objects/delete", body(alice, prefix="guid-e/"))
    assert run.status_code == 200 and run.json() == {"deleted": 2}, run.text
    left = [item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert left == ["guid-f/keep"]
    # The deletion names the principal and who relayed it on the access log.
    deleted = [
        record.__dict__
        for record in all_logs.records
        if record.__dict__.get("action") == "delete_object"
    ]
    assert [entry["key"] for entry in deleted] == ["guid-d/file.bam", "guid-e/a", "guid-e/b/c"]
    assert all(entry["user"] == f"alice (via {FENCE_SA})" for entry in deleted)

    # Refusals: status and message, and nothing is deleted.
    cases: list[tuple[dict[str, Any], int, str]] = [
        (body({"username": "bob"}, key="guid-f/keep"), 403, "delete not granted"),
        (body(alice, key="guid-f/keep", method="read-storage"), 400, "cannot authorize delete"),
        (body(alice, key="guid-f/keep", method="delete"), 200, ""),
        ({**body(alice, key="guid-f/x"), "authz": ["/other/Q"]}, 403, "no binding covers"),
        ({"bucket": BUCKET, "key": "guid-f/keep", "authz": [PROJECT_Y]}, 400, "on_behalf_of"),
        ({"bucket": BUCKET, "key": "guid-f/keep", "on_behalf_of": alice}, 400, "authz"),
        (body(alice, key="guid-f/keep", prefix="guid-f/"), 400, "exactly one"),
        (body(alice), 400, "exactly one"),
        (body(alice, prefix="guid-f"), 400, "prefix"),
        (body({"token": "not-a-jwt"}, key="guid-f/keep"), 401, "on_behalf_of.token"),
        ({**body(alice, key="guid-f/keep"), "bucket": "no-such"}, 404, "no-such"),
        (
            {**body(alice, key="guid-f/keep"), "bucket": UPLOADS, "authz": ["/data_file"]},
            403,
            "delete not granted",
        ),
    ]
    s3.put_object(Bucket=BUCKET, Key="guid-f/keep", Body=b"bytes")
    for request, status, message in cases:
        if status == 200:
            continue
        answer = await fence.post("/objects/delete", request)
        assert answer.status_code == status, (request, answer.text)
        assert message in answer.json()["message"], (request, answer.text)
    assert s3.head_object(Bucket=BUCKET, Key="guid-f/keep")
    # Asking for delete explicitly is what the default asks.
    explicit = await fence.post("/objects/delete", cases[2][0])
    assert explicit.status_code == 200 and explicit.json() == {"deleted": 1}, explicit.text


# -- the bucket list ----------------------------------------------------------------------------


async def test_fence_lists_buckets_with_its_service_token(
    fence: Fence, fence_flow: Flow, gateway, cluster
) -> None:
    flow = fence_flow
    answer = await flow.call("GET", "/fence/buckets", headers=fence.headers)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "S3_BUCKETS": {
            BUCKET: {"endpoint_url": gateway.url},
            UPLOADS: {"endpoint_url": gateway.url},
        },
        "GS_BUCKETS": {},
    }
    stranger = {"Authorization": f"Bearer {cluster.token('default', 'jupyter')}"}
    expired = {"Authorization": f"Bearer {cluster.token(lifetime=-60)}"}
    for headers, status in (({}, 401), (stranger, 403), (expired, 401)):
        refused = await flow.call("GET", "/fence/buckets", headers=headers)
        assert refused.status_code == status, refused.text
        assert refused.json()["message"]


# -- multipart refusals -------------------------------------------------------------------------


async def test_multipart_refusals_say_why(fence: Fence, fence_flow: Flow) -> None:
    flow = fence_flow
    flow.arborist.grant("submitter", "uploader", "/data_file")
    flow.arborist.grant("reader", "reader", "/data_file")
    who = user_token(flow, "submitter")
    base = {"bucket": UPLOADS, "key": "guid-m/x", "authz": ["/data_file"]}
    part = {"upload_id": "u-1", "part_number": 1}
    done = {"upload_id": "u-1", "parts": [{"part_number": 1, "etag": '"e"'}]}
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        ("/multipart/init", {**base, "on_behalf_of": who}, 403, "write-storage not granted"),
        (
            "/multipart/init",
            {**base, "on_behalf_of": who, "method": "read-storage"},
            400,
            "cannot authorize multipart",
        ),
        ("/multipart/init", {"bucket": UPLOADS, "key": "k", "on_behalf_of": who}, 400, "authz"),
        (
            "/multipart/init",
            {**base, "on_behalf_of": who, "method": "file_upload", "bucket": BUCKET},
            403,
            "does not accept uploads",
        ),
        (
            "/multipart/presign",
            {**base, **part, "on_behalf_of": {"username": "reader"}, "method": "file_upload"},
            403,
            "file_upload not granted",
        ),
        ("/multipart/presign", {**base, **part}, 400, "on_behalf_of"),
        (
            "/multipart/complete",
            {**base, **done, "on_behalf_of": {"token": "x"}, "method": "file_upload"},
            401,
            "on_behalf_of.token",
        ),
        (
            "/multipart/abort",
            {**base, "upload_id": "u-1", "on_behalf_of": who, "authz": ["/data_file/"]},
            400,
            "authz",
        ),
    ]
    for path, body, status, message in cases:
        answer = await fence.post(path, body)
        assert answer.status_code == status, (path, body, answer.text)
        assert message in answer.json()["message"], (path, body, answer.text)

    # The principal's token is checked as a user's own: Fence's token is not a user's, and a
    # user token without the data scopes speaks for nobody. Both are the principal's failure.
    for token, message in (
        (fence.headers["Authorization"].removeprefix("Bearer "), "not a service token"),
        (flow.issuer.token("submitter", scopes=["openid"]), "scope"),
    ):
        answer = await fence.post(
            "/multipart/init", {**base, "on_behalf_of": {"token": token}, "method": "file_upload"}
        )
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"] == "on_behalf_of_invalid"
        assert message in answer.json()["message"], answer.text


# -- an imported fence-config -------------------------------------------------------------------


def imported_config(gateway_url: str) -> str:
    """The migration tests' fence-config.yaml, its two main buckets moved behind the gateway
    and the buckets on hosts this test cannot reach left out."""
    config = yaml.safe_load(FENCE_CONFIG.read_text())
    for name in ("commons-data", "commons-uploads"):
        config["S3_BUCKETS"][name]["endpoint_url"] = gateway_url
    for name in ("onprem-archive", "minio-scratch"):
        del config["S3_BUCKETS"][name]
    config["ALLOWED_DATA_UPLOAD_BUCKETS"] = ["commons-uploads"]
    return yaml.safe_dump(config)


async def test_an_imported_bucket_serves_fences_records_under_any_program(
    flow_settings, make_flow, moto, gateway, cluster, tmp_path
) -> None:
    keys = yaml.safe_load(FENCE_CONFIG.read_text())["AWS_CREDENTIALS"]
    for name in ("CRED1", "CRED2"):
        gateway.add_key(keys[name]["aws_access_key_id"], keys[name]["aws_secret_access_key"])
    path = tmp_path / "fence-config.yaml"
    path.write_text(imported_config(gateway.url))
    out: list[str] = []
    code = await run_import(
        flow_settings(),
        ImportRequest(path, write_secrets=True),
        out=out.append,
        err=out.append,
    )
    assert code == 0, "\n".join(out)

    flow: Flow = await make_flow(
        service_token_issuer=cluster.issuer,
        service_token_jwks_url=cluster.issuer + "/openid/v1/jwks",
        trusted_callers=FENCE_SA,
    )
    fence = Fence(flow, cluster)
    s3 = boto(moto, "s3")
    for name in ("commons-data", "commons-uploads"):
        s3.create_bucket(Bucket=name)
    s3.put_object(Bucket="commons-data", Key="guid-i/a.bam", Body=b"program A")
    s3.put_object(Bucket="commons-data", Key="guid-i/b.bam", Body=b"program B")
    flow.arborist.grant("alice", "reader", "/programs/A/projects/P")
    flow.arborist.grant("bob", "reader", "/programs/B")
    flow.arborist.grant("submitter", "uploader", "/data_file")

    # The root binding serves any program's record; Arborist decides on the record's authz.
    for who, authz, key, data in (
        ("alice", "/programs/A/projects/P", "guid-i/a.bam", b"program A"),
        ("bob", "/programs/B/projects/Q", "guid-i/b.bam", b"program B"),
    ):
        signed = await fence.presign(user_token(flow, who), [authz], "commons-data", key, "read")
        assert signed.status_code == 200, signed.text
        assert (await send(signed.json())).content == data
    denied = await fence.presign(
        user_token(flow, "alice"),
        ["/programs/B/projects/Q"],
        "commons-data",
        "guid-i/b.bam",
        "read",
    )
    assert denied.status_code == 403
    # A user calling directly is checked on the bound path, "/", which Arborist holds no
    # grant on: imported buckets serve direct users only once an admin binds narrower paths.
    direct = await flow.presign("alice", "commons-data", "guid-i/a.bam", "read")
    assert direct.status_code == 403

    # Uploads: only ALLOWED_DATA_UPLOAD_BUCKETS take them, and the default is DATA_UPLOAD_BUCKET.
    default = await flow.call("GET", "/resolve?purpose=upload", headers=flow.user("submitter"))
    assert default.status_code == 200 and default.json()["name"] == "commons-uploads"
    submitter = user_token(flow, "submitter")
    put = await fence.presign(
        submitter, ["/data_file"], "commons-uploads", "guid-i/new", "write", method="file_upload"
    )
    assert put.status_code == 200, put.text
    assert (await send(put.json(), b"new upload")).status_code == 200
    assert s3.get_object(Bucket="commons-uploads", Key="guid-i/new")["Body"].read() == (
        b"new upload"
    )
    closed = await fence.presign(
        submitter, ["/data_file"], "commons-data", "guid-i/new", "write", method="file_upload"
    )
    assert closed.status_code == 403 and "does not accept uploads" in closed.json()["message"]

    # cred '*': a public record gets Fence's unsigned URL, nothing signed.
    flow.arborist.grant_anonymous("reader", "/programs/OPEN")
    public = await fence.presign(
        {"anonymous": True}, ["/programs/OPEN"], "commons-public-refs", "ref/hg38.fa", "read"
    )
    assert public.status_code == 200, public.text
    assert public.json()["url"] == (
        "https://commons-public-refs.s3.us-east-1.amazonaws.com/ref/hg38.fa"
    )

    listed = await flow.call("GET", "/fence/buckets", headers=fence.headers)
    assert listed.status_code == 200
    assert set(listed.json()["S3_BUCKETS"]) == {
        "commons-data",
        "commons-uploads",
        "commons-role-data",
        "commons-public-refs",
        "commons-requester-pays",
    }
    assert listed.json()["S3_BUCKETS"]["commons-data"] == {
        "region": "us-east-1",
        "endpoint_url": gateway.url,
    }
