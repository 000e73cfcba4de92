"""gcp buckets through the app (presign + validate), and the `validate --all` drift check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from sqlalchemy.ext.asyncio import create_async_engine

from tests.e2e.conftest import (
    ALL_OPS,
    PROJECT,
    STATIC_KEY_ID,
    STATIC_SECRET,
    Flow,
    boto,
    put_static_secret,
    rendered_logs,
)
from tests.support.gcp_iam import GoogleApiStub, new_rsa_key, service_account_key_json
from tests.support.gcs_v4 import check_v4

SA_EMAIL = "registry-signer@gen3-data.iam.gserviceaccount.com"


@pytest.fixture
def google() -> Iterator[GoogleApiStub]:
    stub = GoogleApiStub().start()
    yield stub
    stub.stop()


async def test_gcp_bucket_with_a_key_in_a_secret(make_flow, moto, google) -> None:
    key = google.add_account(SA_EMAIL)
    google.add_bucket("gen3-gcs-abc", readers={SA_EMAIL})
    secret = service_account_key_json(SA_EMAIL, key, token_uri=google.url + "/token")
    boto(moto, "secretsmanager").create_secret(
        Name="gen3/bucket-registry/gcs-abc",
        SecretString=json.dumps({"service_account_key_json": secret}),
    )
    flow: Flow = await make_flow(
        gcs_endpoint=google.url, gcp_oauth_token_endpoint=google.url + "/token"
    )
    await flow.register(
        {
            "name": "gen3-gcs-abc",
            "provider": "gcp",
            "auth_mode": "static",
            "secret_ref": "aws-sm://gen3/bucket-registry/gcs-abc",
            "data_upload_allowed": True,
            "billing_projects": ["lab-billing-01"],
        },
        None,
        ALL_OPS,
    )
    flow.arborist.grant("submitter", "reader", PROJECT)

    signed = await flow.presign("submitter", "gen3-gcs-abc", "data/r1.cram", "read")
    assert signed.status_code == 200, signed.text
    url = urlsplit(signed.json()["url"])
    query = parse_qs(url.query)
    assert url.netloc == "storage.googleapis.com" and url.path == "/gen3-gcs-abc/data/r1.cram"
    assert query["X-Goog-Algorithm"] == ["GOOG4-RSA-SHA256"]
    assert query["X-Goog-Credential"][0].startswith(SA_EMAIL + "/")

    billed = await flow.presign(
        "submitter", "gen3-gcs-abc", "data/r1.cram", "read", user_project="lab-billing-01"
    )
    assert parse_qs(urlsplit(billed.json()["url"]).query)["userProject"] == ["lab-billing-01"]
    flow.arborist.grant("submitter", "writer", PROJECT)
    resumable = await flow.presign(
        "submitter", "gen3-gcs-abc", "data/big.cram", "write", resumable=True
    )
    assert resumable.status_code == 200, resumable.text
    assert resumable.json()["method"] == "POST"
    assert resumable.json()["headers"] == {"x-goog-resumable": "start"}
    signed_headers = parse_qs(urlsplit(resumable.json()["url"]).query)["X-Goog-SignedHeaders"]
    assert "x-goog-resumable" in signed_headers[0]
    not_for_reads = await flow.presign(
        "submitter", "gen3-gcs-abc", "data/big.cram", "read", resumable=True
    )
    assert not_for_reads.status_code == 400

    report = (
        await flow.call("POST", "/admin/buckets/gen3-gcs-abc/validate", headers=flow.admin)
    ).json()
    assert report["ok"] is True, report
    assert report["checks"]["bucket_listable"]["status"] == "pass"
    assert report["checks"]["presign_test"]["status"] == "pass"
    assert "PRIVATE KEY" not in json.dumps(report) and "PRIVATE KEY" not in signed.text

    multipart = await flow.call(
        "POST",
        "/multipart/init",
        json={"bucket": "gen3-gcs-abc", "key": "data/x"},
        headers=flow.user("submitter"),
    )
    assert multipart.status_code in (400, 403)


async def test_a_gcp_key_rotates_through_the_api_and_never_escapes(
    make_flow, moto, google, pg_url, all_logs
) -> None:
    old_key = google.add_account(SA_EMAIL)
    google.add_bucket("abc-gcs", readers={SA_EMAIL})
    token_uri = google.url + "/token"
    flow: Flow = await make_flow(
        gcs_endpoint=google.url, gcp_oauth_token_endpoint=google.url + "/token"
    )
    flow.arborist.grant("owner", "bucket_register", PROJECT)
    flow.arborist.grant("submitter", "reader", PROJECT)
    owner = flow.user("owner")
    body = {
        "name": "abc-gcs",
        "provider": "gcp",
        "auth_mode": "static",
        "project_resource": PROJECT,
    }
    created = await flow.call("POST", "/admin/buckets", json=body, headers=owner)
    assert created.status_code == 201 and created.json()["status"] == "pending", created.text
    binding = {"resource_path": PROJECT, "allowed_ops": ALL_OPS}
    await flow.call("POST", "/admin/buckets/abc-gcs/bindings", json=binding, headers=owner)
    url = "/admin/buckets/abc-gcs/credentials"

    async def put_key(key_json: str) -> Any:
        return await flow.call(
            "PUT", url, json={"service_account_key_json": key_json}, headers=owner
        )

    async def signed_read() -> dict[str, Any]:
        signed = await flow.presign("submitter", "abc-gcs", "data/r1.cram", "read")
        assert signed.status_code == 200, signed.text
        return signed.json()

    old_json = service_account_key_json(SA_EMAIL, old_key, token_uri=token_uri)
    first = await put_key(old_json)
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "active"
    signed = await signed_read()
    assert google.accepts_signed_url(signed["method"], signed["url"], signed.get("headers")) == (
        SA_EMAIL
    )

    # The account gets a second key; the registry is given it, then the first is retired.
    new_key = google.add_key(SA_EMAIL)
    new_json = service_account_key_json(SA_EMAIL, new_key, token_uri=token_uri)
    rotated = await put_key(new_json)
    assert rotated.status_code == 200, rotated.text
    google.delete_key(old_key)
    signed = await signed_read()
    assert google.accepts_signed_url(signed["method"], signed["url"], signed.get("headers")) == (
        SA_EMAIL
    )
    with pytest.raises(InvalidSignature):  # the old key signs nothing any more
        check_v4(signed["method"], signed["url"], signed.get("headers") or {}, old_key.public_key())
    before = (await flow.call("GET", "/admin/buckets/abc-gcs", headers=owner)).json()

    # Bad keys change nothing: not JSON, not a key, a key Google does not know, a retired key.
    unknown = service_account_key_json(SA_EMAIL, new_rsa_key(), token_uri=token_uri)
    no_pem = json.dumps({**json.loads(unknown), "private_key": "-----BEGIN PRIVATE KEY-----x"})
    for bad, words in (
        ("{not json", "is not JSON"),
        (json.dumps({"type": "authorized_user", "client_email": SA_EMAIL}), "not service_account"),
        (no_pem, "not an unencrypted PEM private key"),
        (unknown, "nothing was changed"),
        (old_json, "nothing was changed"),
    ):
        refused = await put_key(bad)
        assert refused.status_code == 400, refused.text
        assert words in refused.json()["message"]
        after = (await flow.call("GET", "/admin/buckets/abc-gcs", headers=owner)).json()
        assert (after["version"], after["secret_version"], after["status"]) == (
            before["version"],
            before["secret_version"],
            "active",
        )
        signed = await signed_read()
        check_v4(signed["method"], signed["url"], signed.get("headers") or {}, new_key.public_key())

    trail = await flow.call("GET", "/admin/buckets/abc-gcs/audit", headers=flow.admin)
    assert [row["action"] for row in trail.json()][:2] == ["rotate", "rotate"]
    await flow.call("POST", "/admin/buckets/abc-gcs/validate", headers=owner)
    metrics = await flow.call("GET", "/metrics")
    engine = create_async_engine(pg_url)
    try:
        async with engine.connect() as connection:
            database = json.dumps(
                [
                    list(map(str, row))
                    for table in ("bucket", "bucket_audit")
                    for row in await connection.execute(sa.text(f"SELECT * FROM {table}"))
                ]
            )
    finally:
        await engine.dispose()
    places = {
        "responses": "\n".join(r.text + json.dumps(dict(r.headers)) for r in flow.responses),
        "logs": rendered_logs(all_logs),
        "metrics": metrics.text,
        "database": database,
    }
    pem_lines = {
        line
        for key_json in (old_json, new_json, unknown)
        for line in json.loads(key_json)["private_key"].splitlines()[1:3]
    }
    for place, text in places.items():
        assert "PRIVATE KEY" not in text, f"a private key leaked into {place}"
        for line in pem_lines:
            assert line not in text, f"a private key leaked into {place}"


POD_EMAIL = "registry-pod@gen3-platform.iam.gserviceaccount.com"


async def test_gcp_bucket_under_workload_identity_signs_through_iam(
    make_flow, google, tmp_path, monkeypatch
) -> None:
    # The pod's own identity: application default credentials whose tokens may call IAM.
    pod_key = google.add_account(POD_EMAIL, impersonable=False)
    google.pod_accounts.add(POD_EMAIL)
    adc = tmp_path / "pod-identity.json"
    adc.write_text(service_account_key_json(POD_EMAIL, pod_key, token_uri=google.url + "/token"))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
    signer_key = google.add_account(SA_EMAIL)
    google.add_bucket("gen3-gcs-wi", readers={SA_EMAIL})

    flow: Flow = await make_flow(
        gcs_endpoint=google.url,
        gcp_oauth_token_endpoint=google.url + "/token",
        gcp_iam_credentials_endpoint=google.url,
    )
    missing = await flow.call(
        "POST",
        "/admin/buckets",
        json={"name": "gen3-gcs-wi", "provider": "gcp", "auth_mode": "workload_identity"},
        headers=flow.admin,
    )
    assert missing.status_code == 400 and "service_account" in missing.json()["message"]
    body = {
        "name": "gen3-gcs-wi",
        "provider": "gcp",
        "auth_mode": "workload_identity",
        "service_account": SA_EMAIL,
    }
    await flow.register(body, None, ALL_OPS)
    flow.arborist.grant("submitter", "reader", PROJECT)

    signed = await flow.presign("submitter", "gen3-gcs-wi", "data/r2.cram", "read")
    assert signed.status_code == 200, signed.text
    query = parse_qs(urlsplit(signed.json()["url"]).query)
    assert query["X-Goog-Credential"][0].startswith(SA_EMAIL + "/")
    # IAM signed exactly the string-to-sign; the signature in the URL is the signer's.
    signature = bytes.fromhex(query["X-Goog-Signature"][0])
    signer_key.public_key().verify(
        signature, google.signed[-1], padding.PKCS1v15(), hashes.SHA256()
    )
    assert b"GOOG4-RSA-SHA256" in google.signed[-1]

    report = (
        await flow.call("POST", "/admin/buckets/gen3-gcs-wi/validate", headers=flow.admin)
    ).json()
    assert report["ok"] is True, report
    assert report["checks"]["secret_accessible"]["status"] == "skipped"

    google.impersonable.discard(SA_EMAIL)  # the pod may no longer sign as the account
    flow.services.storage.invalidate_bucket(flow.services.directory.buckets.peek("gen3-gcs-wi").id)
    denied = await flow.presign("submitter", "gen3-gcs-wi", "data/r3.cram", "read")
    assert denied.status_code == 503
    assert "PRIVATE KEY" not in denied.text


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_validate_all_reports_a_broken_bucket_and_exits_non_zero(
    make_flow, moto, gateway, pg_url, issuer, arborist
) -> None:
    flow: Flow = await make_flow()
    s3 = boto(moto, "s3")
    for name in ("minio-good", "minio-broken"):
        s3.create_bucket(Bucket=name)
    put_static_secret(moto, "gen3/bucket-registry/minio-good", STATIC_KEY_ID, STATIC_SECRET)
    for name in ("minio-good", "minio-broken"):
        body = {
            "name": name,
            "provider": "minio",
            "endpoint": gateway.url,
            "auth_mode": "static",
            "secret_ref": f"aws-sm://gen3/bucket-registry/{name}",
        }
        await flow.register(body, None, ALL_OPS)
    # A suspended bucket is not part of the nightly check.
    await flow.register(
        {
            "name": "minio-suspended",
            "provider": "minio",
            "endpoint": gateway.url,
            "auth_mode": "static",
            "secret_ref": "aws-sm://gen3/bucket-registry/missing",
        },
        None,
        ALL_OPS,
    )
    await flow.call("DELETE", "/admin/buckets/minio-suspended", headers=flow.admin)

    env = {
        **os.environ,
        "BUCKET_REGISTRY_DATABASE_URL": pg_url,
        "BUCKET_REGISTRY_ENDPOINT_ALLOWLIST": "127.0.0.1",
        "BUCKET_REGISTRY_ARBORIST_URL": arborist.url,
        "BUCKET_REGISTRY_USER_API": issuer.user_api,
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": moto.url,
    }
    drift = run_cli(["validate", "--all", "--json"], env)
    assert drift.returncode == 1, drift.stderr
    report = json.loads(drift.stdout)
    assert report["checked"] == 2 and report["failed"] == 1
    broken = next(b for b in report["buckets"] if not b["ok"])
    assert broken["bucket"] == "minio-broken"
    assert broken["checks"]["secret_accessible"]["status"] == "fail"
    assert STATIC_SECRET not in drift.stdout + drift.stderr

    table = run_cli(["validate", "--all"], env)
    assert table.returncode == 1
    assert "minio-broken" in table.stdout and "secret_accessible" in table.stdout
    assert "minio-good" not in table.stdout

    good = run_cli(["validate", "minio-good"], env)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "0 failing" in good.stdout
    assert run_cli(["validate"], env).returncode == 2
    unknown = run_cli(["validate", "no-such-bucket"], env)
    assert unknown.returncode == 1 and "not registered" in unknown.stdout

    # Read-only until asked: then each result is the bucket's last validation, marked as the
    # drift check's, with the secret's location reduced to its fingerprint.
    async def kept(name: str) -> Any:
        answer = await flow.call("GET", f"/admin/buckets/{name}", headers=flow.admin)
        return answer.json()["validation"]

    assert await kept("minio-broken") is None
    recorded = run_cli(["validate", "--all", "--record"], env)
    assert recorded.returncode == 1, recorded.stderr
    broken_kept, good_kept = await kept("minio-broken"), await kept("minio-good")
    assert broken_kept["source"] == good_kept["source"] == "drift"
    assert broken_kept["ok"] is False and good_kept["ok"] is True
    assert broken_kept["checks"]["secret_accessible"]["status"] == "fail"
    assert "gen3/bucket-registry/minio-broken" not in json.dumps(broken_kept)
    assert await kept("minio-suspended") is None
