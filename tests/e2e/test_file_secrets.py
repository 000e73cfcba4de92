"""`file://` secrets through the admin API and the data path: only under the secrets directory
(Kubernetes Secrets mount mode), refused alike however a reference leaves it, never read."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from app.registry.records import secret_fingerprint
from app.secrets.file import OUTSIDE_ROOT
from app.secrets.store import FILE_SECRETS_DISABLED
from tests.e2e.conftest import ALL_OPS, PROJECT, STATIC_KEY_ID, STATIC_SECRET, Flow, boto

CREDS = {"access_key_id": STATIC_KEY_ID, "secret_access_key": STATIC_SECRET}


def bucket(gateway_url: str, secret_ref: str, name: str = "file-abc") -> dict[str, object]:
    return {
        "name": name,
        "provider": "minio",
        "endpoint": gateway_url,
        "auth_mode": "static",
        "secret_ref": secret_ref,
        "data_upload_allowed": True,
    }


def mount(root: Path, name: str, payload: object) -> Path:
    """A file as the kubelet projects a Secret's key: through ``..data`` symlinks."""
    stamped = root / "..2026_12_01_10_00_00.1"
    stamped.mkdir(exist_ok=True)
    (stamped / name).write_text(json.dumps(payload))
    if not (root / "..data").exists():
        (root / "..data").symlink_to(stamped.name)
    (root / name).symlink_to(f"..data/{name}")
    return root / name


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "mounted-secrets"
    path.mkdir()
    return path


async def test_without_a_secrets_dir_file_refs_are_400_and_nothing_changes(
    make_flow, moto, gateway, tmp_path: Path
) -> None:
    flow: Flow = await make_flow()
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps(CREDS))

    created = await flow.call(
        "POST", "/admin/buckets", json=bucket(gateway.url, f"file://{key_file}"), headers=flow.admin
    )
    assert created.status_code == 400, created.text
    assert FILE_SECRETS_DISABLED in created.json()["message"]
    missing = await flow.call("GET", "/admin/buckets/file-abc", headers=flow.admin)
    assert missing.status_code == 404

    aws = {**bucket(gateway.url, "aws-sm://gen3/file-abc"), "name": "aws-abc"}
    assert (
        await flow.call("POST", "/admin/buckets", json=aws, headers=flow.admin)
    ).status_code == 201
    patched = await flow.call(
        "PATCH",
        "/admin/buckets/aws-abc",
        json={"secret_ref": f"file://{key_file}"},
        headers={**flow.admin, "If-Match": '"1"'},
    )
    assert patched.status_code == 400, patched.text
    unchanged = await flow.call("GET", "/admin/buckets/aws-abc", headers=flow.admin)
    assert unchanged.json()["version"] == 1


async def test_every_way_out_of_the_directory_is_the_same_400(
    make_flow, moto, gateway, tmp_path: Path, root: Path
) -> None:
    flow: Flow = await make_flow(file_secrets_dir=str(root))
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(CREDS))
    (root / "link-out.json").symlink_to(outside)
    (root / "dir-out").symlink_to(tmp_path)
    (root / "loop").symlink_to("loop")

    refs = [
        f"file://{outside}",  # exists
        f"file://{tmp_path}/absent.json",  # does not
        "file:///etc/passwd",
        "file:///proc/self/environ",
        f"file://{root}/link-out.json",
        f"file://{root}/dir-out/outside.json",
        f"file://{root}/loop",
        f"file://{root}",
    ]
    answers = []
    for ref in refs:
        answer = await flow.call(
            "POST", "/admin/buckets", json=bucket(gateway.url, ref), headers=flow.admin
        )
        assert answer.status_code == 400, (ref, answer.text)
        answers.append(answer.json())
    assert all(a == answers[0] for a in answers), answers
    assert OUTSIDE_ROOT in answers[0]["message"]
    dotdot = await flow.call(
        "POST",
        "/admin/buckets",
        json=bucket(gateway.url, f"file://{root}/../outside.json"),
        headers=flow.admin,
    )
    assert dotdot.status_code == 400 and "'..'" in dotdot.json()["message"]
    listed = await flow.call("GET", "/admin/buckets", headers=flow.admin)
    assert listed.json() == []


async def test_a_mounted_secret_signs_and_a_later_swap_to_outside_is_never_read(
    make_flow, moto, gateway, tmp_path: Path, root: Path
) -> None:
    flow: Flow = await make_flow(file_secrets_dir=str(root), secret_cache_ttl=0)
    boto(moto, "s3").create_bucket(Bucket="file-abc")
    key_file = mount(root, "file-abc.json", CREDS)
    await flow.register(bucket(gateway.url, f"file://{key_file}"), None, ALL_OPS)
    flow.arborist.grant("submitter", "writer", PROJECT)
    flow.arborist.grant("submitter", "reader", PROJECT)

    signed = await flow.presign("submitter", "file-abc", "a/b.txt", "write")
    assert signed.status_code == 200, signed.text
    assert httpx.put(signed.json()["url"], content=b"hello").status_code == 200

    # Someone with write access to the mount points the registered name elsewhere: the keys
    # there would work, so a success would prove they were read.
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(CREDS))
    key_file.unlink()
    key_file.symlink_to(outside)
    refused = await flow.presign("submitter", "file-abc", "a/b.txt", "read")
    assert refused.status_code == 503, refused.text
    assert "sha256:" in refused.json()["message"] and str(root) not in refused.text

    report = await flow.call("POST", "/admin/buckets/file-abc/validate", headers=flow.admin)
    assert report.json()["checks"]["secret_accessible"]["status"] == "fail"
    assert "not usable" in report.json()["checks"]["secret_accessible"]["reason"]


async def test_validate_says_only_not_usable_for_any_broken_file(
    make_flow, moto, gateway, root: Path
) -> None:
    flow: Flow = await make_flow(file_secrets_dir=str(root))
    (root / "truncated.json").write_text('{"access_key_id": "')
    (root / "strings-only.json").write_text(json.dumps({"hidden-key": 7, "other-hidden": None}))
    (root / "a-directory").mkdir()
    reasons = set()
    for index, name in enumerate(
        ["absent.json", "truncated.json", "strings-only.json", "a-directory"]
    ):
        ref = f"file://{root}/{name}"
        await flow.register(bucket(gateway.url, ref, name=f"broken-{index}"), None, ALL_OPS)
        report = await flow.call(
            "POST", f"/admin/buckets/broken-{index}/validate", headers=flow.admin
        )
        check = report.json()["checks"]["secret_accessible"]
        assert check["status"] == "fail", check
        # The answer names the reference by its fingerprint only, never the path.
        assert ref not in report.text
        reasons.add(check["reason"].replace(str(secret_fingerprint(ref)), "<ref>"))
    assert len(reasons) == 1, reasons
    (reason,) = reasons
    assert "not usable" in reason
    assert "hidden-key" not in reason and "other-hidden" not in reason and "Error" not in reason
