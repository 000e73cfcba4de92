"""Secret values never appear in a response body or header, a log line, a metric, an audit
row or any database column — across every flow, including failures. The one exemption is the
body of a ``POST /credentials`` answer, which carries the temporary keys it vends to the
caller, and nowhere else."""

from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from tests.e2e.conftest import ALL_OPS, PROJECT, Flow, boto, rendered_logs
from tests.support.net import BackgroundHTTPServer

CANARY_KEY_ID = "AKIACANARYKEYID00001"
CANARY_SECRET = "CANARY-secret-access-key-7f3a9c"
CANARY_TOKEN = "CANARY-session-token-51be0d"
CANARY_SDK_TEXT = "CANARY-sdk-error-text-e41c"


class _EchoingStore(BaseHTTPRequestHandler):
    """A store whose errors quote request details back, as some S3-compatible stores do."""

    def log_message(self, *_args: Any) -> None:
        pass

    def _fail(self) -> None:
        body = (
            "<Error><Code>InternalError</Code>"
            f"<Message>{CANARY_SDK_TEXT} {self.path}</Message></Error>"
        ).encode()
        self.send_response(500)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _fail


async def test_no_secret_value_escapes_any_flow(make_flow, moto, gateway, pg_url, all_logs) -> None:
    gateway.add_key(CANARY_KEY_ID, CANARY_SECRET)
    boto(moto, "s3").create_bucket(Bucket="minio-canary")
    boto(moto, "secretsmanager").create_secret(
        Name="gen3/bucket-registry/canary",
        SecretString=json.dumps(
            {
                "access_key_id": CANARY_KEY_ID,
                "secret_access_key": CANARY_SECRET,
                "session_token": CANARY_TOKEN,
            }
        ),
    )
    echoing = BackgroundHTTPServer(_EchoingStore).start()
    flow: Flow = await make_flow(secret_cache_ttl=0.5)
    try:
        bucket = {
            "name": "minio-canary",
            "provider": "minio",
            "endpoint": gateway.url,
            "auth_mode": "static",
            "secret_ref": "aws-sm://gen3/bucket-registry/canary",
            "data_upload_allowed": True,
            "credential_vending": True,
        }
        await flow.register(bucket, "incoming/", ALL_OPS)
        broken = {**bucket, "name": "echoing-store", "endpoint": echoing.url}
        await flow.register(broken, None, ALL_OPS)
        flow.arborist.grant("submitter", "writer", PROJECT)
        flow.arborist.grant("submitter", "reader", PROJECT)
        user = flow.user("submitter")

        # Every data-path flow, successful and failing.
        for op in ("write", "read", "delete"):
            await flow.presign("submitter", "minio-canary", "incoming/a", op)
        target = {"bucket": "minio-canary", "key": "incoming/big"}
        init = await flow.call("POST", "/multipart/init", json=target, headers=user)
        upload_id = init.json()["upload_id"]
        part = await flow.call(
            "POST",
            "/multipart/presign",
            json={**target, "upload_id": upload_id, "part_number": 1},
            headers=user,
        )
        async with httpx.AsyncClient() as http:
            uploaded = await http.put(part.json()["url"], content=os.urandom(1024))
        await flow.call(
            "POST",
            "/multipart/complete",
            json={
                **target,
                "upload_id": upload_id,
                "parts": [{"part_number": 1, "etag": uploaded.headers["etag"]}],
            },
            headers=user,
        )
        await flow.call(
            "POST", "/multipart/abort", json={**target, "upload_id": "nope"}, headers=user
        )
        failing = await flow.call(
            "POST",
            "/multipart/init",
            json={"bucket": "echoing-store", "key": "incoming/x"},
            headers=user,
        )
        assert failing.status_code == 503
        vended = await flow.call(
            "POST",
            "/credentials",
            json={"bucket": "minio-canary", "prefix": "incoming/", "ops": ["read", "write"]},
            headers=user,
        )
        assert vended.status_code == 200, vended.text
        vended_secrets = (vended.json()["secret_access_key"], vended.json()["session_token"])
        refused = await flow.call(
            "POST",
            "/credentials",
            json={"bucket": "echoing-store", "prefix": "incoming/", "ops": ["read"]},
            headers=user,
        )
        # Its "STS" is the echoing store, whose error quotes the request back.
        assert refused.status_code == 503, refused.text
        await flow.call("GET", "/resolve/minio-canary", headers=user)
        await flow.call(
            "POST", "/admin/buckets/minio-canary/validate?write_probe=true", headers=flow.admin
        )
        await flow.call("POST", "/admin/buckets/echoing-store/validate", headers=flow.admin)
        await flow.call(
            "PATCH",
            "/admin/buckets/minio-canary",
            json={"labels": {"rotated": "yes"}},
            headers=flow.admin,
        )
        await flow.call("GET", "/admin/buckets", headers=flow.admin)
        await flow.call("GET", "/admin/buckets/minio-canary", headers=flow.admin)
        await flow.call("GET", "/admin/audit", headers=flow.admin)
        # A caller pasting a secret into a request: refused, and not echoed back.
        await flow.call(
            "POST",
            "/admin/buckets",
            json={**bucket, "name": "pasted", "secret_access_key": CANARY_SECRET},
            headers=flow.admin,
        )
        await flow.call(
            "PATCH",
            "/admin/buckets/minio-canary",
            json={"secret_ref": CANARY_SECRET},
            headers=flow.admin,
        )
        metrics = await flow.call("GET", "/metrics")
        assert metrics.status_code == 200

        engine = create_async_engine(pg_url)
        try:
            async with engine.connect() as connection:
                tables = ("bucket", "bucket_prefix", "bucket_policy_binding", "bucket_audit")
                database = json.dumps(
                    {
                        table: [
                            list(map(str, row))
                            for row in (
                                await connection.execute(sa.text(f"SELECT * FROM {table}"))
                            ).all()
                        ]
                        for table in tables
                    }
                )
        finally:
            await engine.dispose()
    finally:
        echoing.stop()

    places = {
        "responses": "\n".join(r.text + json.dumps(dict(r.headers)) for r in flow.responses),
        "logs": rendered_logs(all_logs),
        "metrics": metrics.text,
        "database": database,
    }
    for place, text in places.items():
        for secret in (CANARY_SECRET, CANARY_SDK_TEXT):
            assert secret not in text, f"{secret} leaked into {place}"
    # A presigned URL must carry the session token (that is how SigV4 works with temporary
    # credentials), so it reaches the caller inside URLs — and nowhere else.
    for place in ("logs", "metrics", "database"):
        assert CANARY_TOKEN not in places[place], f"the session token leaked into {place}"
    without_urls = "\n".join(r.text for r in flow.responses if '"url"' not in r.text)
    assert CANARY_TOKEN not in without_urls
    assert CANARY_KEY_ID in places["responses"]  # the key id is not a secret
    # The vended keys: in the body of the answer that vended them, and in nothing else.
    others = "\n".join(
        r.text + json.dumps(dict(r.headers)) for r in flow.responses if r is not vended
    )
    elsewhere = {**places, "responses": others, "its headers": json.dumps(dict(vended.headers))}
    for secret in vended_secrets:
        assert secret in vended.text
        for place, text in elsewhere.items():
            assert secret not in text, f"a vended secret leaked into {place}"


async def test_keys_put_through_the_api_never_escape(
    make_flow, moto, gateway, pg_url, all_logs
) -> None:
    rejected_secret = "CANARY-rejected-secret-0b71"
    gateway.add_key(CANARY_KEY_ID, CANARY_SECRET)
    boto(moto, "s3").create_bucket(Bucket="abc-keys")
    flow: Flow = await make_flow()
    flow.arborist.grant("owner", "bucket_register", PROJECT)
    flow.arborist.grant("submitter", "writer", PROJECT)
    owner = flow.user("owner")
    body = {
        "name": "abc-keys",
        "provider": "minio",
        "endpoint": gateway.url,
        "auth_mode": "static",
        "project_resource": PROJECT,
        "data_upload_allowed": True,
    }
    created = await flow.call("POST", "/admin/buckets", json=body, headers=owner)
    assert created.status_code == 201
    url = "/admin/buckets/abc-keys/credentials"
    for keys, status in (
        ({"access_key_id": CANARY_KEY_ID, "secret_access_key": rejected_secret}, 400),
        ({"access_key_id": CANARY_KEY_ID, "secret_access_key": CANARY_SECRET}, 200),
        # Misfiled or malformed bodies are refused without echoing what was sent.
        ({"access_key_id": CANARY_KEY_ID, "secret_key": CANARY_SECRET}, 400),
        ({"service_account_key_json": CANARY_SECRET}, 400),
        ({"access_key_id": CANARY_SECRET + " x", "secret_access_key": CANARY_SECRET}, 400),
    ):
        answer = await flow.call("PUT", url, json=keys, headers=owner)
        assert answer.status_code == status, answer.text
    binding = {"resource_path": PROJECT, "allowed_ops": ALL_OPS}
    await flow.call("POST", "/admin/buckets/abc-keys/bindings", json=binding, headers=owner)
    signed = await flow.presign("submitter", "abc-keys", "k/1", "write")
    assert signed.status_code == 200
    await flow.call("POST", "/admin/buckets/abc-keys/validate", headers=owner)
    await flow.call("GET", "/admin/buckets/abc-keys", headers=owner)
    await flow.call("GET", "/admin/buckets/abc-keys/audit", headers=owner)
    await flow.call("GET", "/admin/audit", headers=flow.admin)
    metrics = await flow.call("GET", "/metrics")

    engine = create_async_engine(pg_url)
    try:
        async with engine.connect() as connection:
            database = json.dumps(
                {
                    table: [
                        list(map(str, row))
                        for row in (await connection.execute(sa.text(f"SELECT * FROM {table}")))
                    ]
                    for table in ("bucket", "bucket_audit")
                }
            )
    finally:
        await engine.dispose()
    places = {
        "responses": "\n".join(r.text + json.dumps(dict(r.headers)) for r in flow.responses),
        "logs": rendered_logs(all_logs),
        "metrics": metrics.text,
        "database": database,
    }
    for place, text in places.items():
        for secret in (CANARY_SECRET, rejected_secret):
            assert secret not in text, f"{secret} leaked into {place}"
