"""A bucket whose secret is broken: data-path callers learn that, and a fingerprint, never the
reference itself (an ARN, a Vault path, a Secret's name, a file path); admins get the detail."""

from __future__ import annotations

import re

import pytest

from tests.e2e.conftest import ALL_OPS, PROJECT, Flow, boto

REFS = [
    "arn:aws:secretsmanager:us-east-1:123456789012:secret:gen3/hidden-arn-name-Ab12Cd",
    "aws-sm://gen3/hidden-aws-name",
    "vault://kv/gen3/hidden-vault-path",
    "k8s://hidden-namespace/hidden-k8s-secret",
    "gcp-sm://projects/hidden-project/secrets/hidden-gcp-secret",
    "file:///etc/hidden-dir/hidden-file.json",
]


def pieces(ref: str) -> list[str]:
    generic = {"aws-sm", "vault", "k8s", "gcp-sm", "file", "secrets", "secret", "projects"}
    found = [p for p in re.split(r"[:/#@?=]+", ref) if len(p) >= 4 and p not in generic]
    return [ref, *found]


@pytest.mark.parametrize("ref", REFS)
async def test_data_path_errors_never_name_the_secret(make_flow, moto, gateway, ref) -> None:
    flow: Flow = await make_flow(
        vault_addr="http://127.0.0.1:1",
        gcp_secret_manager_endpoint="http://127.0.0.1:1",
        kubernetes_token_path="/nonexistent/token",
        # file:// refs exist only under a secrets directory; this one holds no such file.
        file_secrets_dir="/etc/hidden-dir",
    )
    boto(moto, "s3").create_bucket(Bucket="broken-secret")
    body = {
        "name": "broken-secret",
        "provider": "minio",
        "endpoint": gateway.url,
        "auth_mode": "static",
        "secret_ref": ref,
        "owner_project": "ABC",
        "data_upload_allowed": True,
    }
    await flow.register(body, None, ALL_OPS)
    flow.arborist.grant("submitter", "reader", PROJECT)
    flow.arborist.grant("submitter", "writer", PROJECT)
    user = flow.user("submitter")
    target = {"bucket": "broken-secret", "key": "a/b"}
    answers = [
        await flow.presign("submitter", "broken-secret", "a/b", "read"),
        await flow.call("POST", "/multipart/init", json=target, headers=user),
        await flow.call(
            "POST",
            "/multipart/presign",
            json={**target, "upload_id": "u1", "part_number": 1},
            headers=user,
        ),
        await flow.call(
            "POST",
            "/multipart/complete",
            json={**target, "upload_id": "u1", "parts": [{"part_number": 1, "etag": "e"}]},
            headers=user,
        ),
        await flow.call(
            "POST", "/multipart/abort", json={**target, "upload_id": "u1"}, headers=user
        ),
    ]
    for answer in answers:
        assert answer.status_code in (400, 503), answer.text
        text = answer.text + str(dict(answer.headers))
        for piece in pieces(ref):
            assert piece not in text, (piece, answer.text)
        assert "sha256:" in answer.json()["message"], answer.text

    # The admin's validate keeps the detail.
    report = await flow.call("POST", "/admin/buckets/broken-secret/validate", headers=flow.admin)
    assert report.json()["checks"]["secret_accessible"]["status"] == "fail"
