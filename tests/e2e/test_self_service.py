"""Project self-service through the admin routes (docs/self-service.md): a project member with
``bucket_register`` registers role and static buckets of their project, which stay pending
until a validation passes, can never borrow the registry's powers, sees only their project's
buckets, and rotates keys through the API."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from moto.sts.models import sts_backends

from app.registry.records import secret_fingerprint
from tests.e2e.conftest import (
    ALL_OPS,
    PROJECT,
    ROLE_ARN,
    ROTATED_KEY_ID,
    ROTATED_SECRET,
    STATIC_KEY_ID,
    STATIC_SECRET,
    Flow,
    boto,
    put_static_secret,
    rendered_logs,
)
from tests.e2e.test_data_path import key_id_of, send
from tests.secrets.stubs import KubernetesStub

OTHER_PROJECT = "/programs/DEV/projects/XYZ"
SUBMITTER_ALL = ("reader", "writer")


def role_body(name: str = "abc-role", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "provider": "aws",
        "region": "us-east-1",
        "auth_mode": "role",
        "role_arn": ROLE_ARN,
        "project_resource": PROJECT,
        "data_upload_allowed": True,
        **extra,
    }


def static_body(endpoint: str, name: str = "abc-static", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "provider": "minio",
        "endpoint": endpoint,
        "auth_mode": "static",
        "project_resource": PROJECT,
        "data_upload_allowed": True,
        **extra,
    }


async def setup(make_flow: Any, **settings: Any) -> Flow:
    flow: Flow = await make_flow(**settings)
    flow.arborist.grant("owner", "bucket_register", PROJECT)
    for role in SUBMITTER_ALL:
        flow.arborist.grant("submitter", role, PROJECT)
    return flow


async def register(flow: Flow, body: dict[str, Any], user: str = "owner") -> dict[str, Any]:
    created = await flow.call("POST", "/admin/buckets", json=body, headers=flow.user(user))
    assert created.status_code == 201, created.text
    return created.json()


async def record(flow: Flow, name: str, user: str = "owner") -> dict[str, Any]:
    answer = await flow.call("GET", f"/admin/buckets/{name}", headers=flow.user(user))
    assert answer.status_code == 200, answer.text
    return answer.json()


async def bind(flow: Flow, name: str, path: str = PROJECT, user: str = "owner") -> Any:
    return await flow.call(
        "POST",
        f"/admin/buckets/{name}/bindings",
        json={"resource_path": path, "allowed_ops": ALL_OPS},
        headers=flow.user(user),
    )


async def actions(flow: Flow, name: str) -> list[str]:
    trail = await flow.call("GET", f"/admin/buckets/{name}/audit", headers=flow.admin)
    return [row["action"] for row in reversed(trail.json())]


async def test_a_registrant_registers_a_role_bucket_that_validates_and_signs_for_its_project(
    make_flow, moto, gateway
) -> None:
    flow = await setup(make_flow)
    boto(moto, "s3").create_bucket(Bucket="abc-role")

    created = await register(flow, role_body())
    assert created["status"] == "active"  # validated at registration

    shown = await record(flow, "abc-role")
    assert shown["project_resource"] == PROJECT
    assert shown["owner_project"] == "ABC"
    assert shown["external_id"].startswith("gen3-bucket-registry-")
    assert shown["is_default_upload"] is False
    assert shown["validation"]["ok"] is True
    assert shown["validation"]["checks"]["role_assumable"]["status"] == "pass"
    assert shown["validation"]["checks"]["presign_test"]["status"] == "pass"
    # The registry assumed the role with the external ID it generated.
    assumed = sts_backends["123456789012"]["aws"].assumed_roles
    assert {role.external_id for role in assumed} == {shown["external_id"]}

    # Paths below the project are the registrant's to bind too.
    assert (await bind(flow, "abc-role", PROJECT + "/raw")).status_code == 201
    assert (await bind(flow, "abc-role")).status_code == 201
    write = await flow.presign("submitter", "abc-role", "k/one", "write")
    assert write.status_code == 200, write.text
    assert (await send(write.json(), b"bytes")).status_code == 200
    read = await flow.presign("submitter", "abc-role", "k/one", "read")
    assert (await send(read.json())).content == b"bytes"

    # /resolve keeps working with the project's name.
    resolved = await flow.call("GET", "/resolve/abc-role", headers=flow.user("submitter"))
    assert resolved.json()["owner_project"] == "ABC"
    assert await actions(flow, "abc-role") == ["register", "validate", "bind", "bind"]

    # A second role bucket gets an external ID of its own.
    boto(moto, "s3").create_bucket(Bucket="abc-role-2")
    await register(flow, role_body("abc-role-2"))
    assert (await record(flow, "abc-role-2"))["external_id"] != shown["external_id"]


async def test_a_static_bucket_is_pending_until_keys_put_through_the_api_validate(
    make_flow, moto, gateway
) -> None:
    flow = await setup(make_flow)
    boto(moto, "s3").create_bucket(Bucket="abc-static")

    created = await register(flow, static_body(gateway.url))
    assert created["status"] == "pending"
    shown = await record(flow, "abc-static")
    assert shown["secret_ref"] is False
    assert shown["validation"]["ok"] is False
    assert "no keys yet" in shown["validation"]["checks"]["secret_accessible"]["reason"]
    assert (await bind(flow, "abc-static")).status_code == 201

    refused = await flow.presign("submitter", "abc-static", "k/one", "read")
    assert refused.status_code == 403
    assert refused.json()["error"] == "bucket_suspended"
    assert "pending" in refused.json()["message"]

    # Keys the store does not accept change nothing.
    url = "/admin/buckets/abc-static/credentials"
    bad = await flow.call(
        "PUT",
        url,
        json={"access_key_id": "AKIAUNKNOWNKEY000001", "secret_access_key": "wrong"},
        headers=flow.user("owner"),
    )
    assert bad.status_code == 400, bad.text
    assert "nothing was changed" in bad.json()["message"]
    after_bad = await record(flow, "abc-static")
    assert (after_bad["status"], after_bad["secret_ref"], after_bad["version"]) == (
        "pending",
        False,
        shown["version"] + 1,  # the binding
    )

    good = await flow.call(
        "PUT",
        url,
        json={"access_key_id": STATIC_KEY_ID, "secret_access_key": STATIC_SECRET},
        headers=flow.user("owner"),
    )
    assert good.status_code == 200, good.text
    assert good.json()["status"] == "active"
    assert STATIC_SECRET not in good.text
    shown = await record(flow, "abc-static")
    assert shown["status"] == "active" and shown["secret_ref"] is True
    assert shown["secret_version"] == good.json()["secret_version"]

    write = await flow.presign("submitter", "abc-static", "k/one", "write")
    assert key_id_of(write.json()["url"]) == STATIC_KEY_ID
    assert (await send(write.json(), b"static")).status_code == 200

    # The keys sit in the registry's own secret, current only after validation.
    secrets = boto(moto, "secretsmanager")
    name = "bucket-registry/self-service/projects/programs/DEV/projects/ABC/abc-static"
    stages = secrets.describe_secret(SecretId=name)["VersionIdsToStages"]
    assert stages[shown["secret_version"]] == ["AWSCURRENT"]
    assert not any("AWSPENDING" in labels for labels in stages.values())

    # Rotation: the new keys sign at once, the old version stays until a prune.
    gateway.reset()
    gateway.add_key(ROTATED_KEY_ID, ROTATED_SECRET)
    rotated = await flow.call(
        "PUT",
        url,
        json={"access_key_id": ROTATED_KEY_ID, "secret_access_key": ROTATED_SECRET},
        headers=flow.user("owner"),
    )
    assert rotated.status_code == 200, rotated.text
    read = await flow.presign("submitter", "abc-static", "k/one", "read")
    assert key_id_of(read.json()["url"]) == ROTATED_KEY_ID
    assert (await send(read.json())).content == b"static"
    stages = secrets.describe_secret(SecretId=name)["VersionIdsToStages"]
    assert stages[shown["secret_version"]] == ["AWSPREVIOUS"]
    pruned = await flow.call("POST", f"{url}/prune", headers=flow.user("owner"))
    assert pruned.json() == {"ok": True, "versions_removed": 1}
    stages = secrets.describe_secret(SecretId=name)["VersionIdsToStages"]
    assert not any("AWSPREVIOUS" in labels for labels in stages.values())

    # Write-only: there is no way to read keys back.
    for method in ("GET", "POST", "PATCH"):
        answer = await flow.call(method, url, headers=flow.user("owner"))
        assert answer.status_code == 405
    assert await actions(flow, "abc-static") == ["register", "bind", "rotate", "rotate", "prune"]
    trail = await flow.call("GET", "/admin/buckets/abc-static/audit", headers=flow.admin)
    assert STATIC_SECRET not in trail.text and ROTATED_SECRET not in trail.text


@pytest.mark.parametrize(
    ("change", "status", "words"),
    [
        ({"project_resource": OTHER_PROJECT}, 403, "bucket_register on /programs/DEV/projects/XYZ"),
        ({"project_resource": None}, 400, "project_resource: required"),
        ({"auth_mode": "workload_identity", "role_arn": None}, 403, "registry's own identity"),
        ({"secret_ref": "aws-sm://someone/elses"}, 403, "cannot name a secret"),
        ({"secret_version": "x" * 32}, 403, "secret_version"),
        ({"external_id": "trusted-for-xyz"}, 403, "generated by the registry"),
        ({"is_default_upload": True}, 403, "default upload"),
        ({"owner_project": "XYZ"}, 403, "belongs to project 'ABC'"),
        ({"status": "active"}, 400, "starts pending"),
        ({"endpoint": "http://169.254.169.254"}, 400, "endpoint"),
    ],
)
async def test_a_registrant_cannot_borrow_powers_at_registration(
    make_flow, moto, change, status, words
) -> None:
    flow = await setup(make_flow)
    flow.arborist.grant("other", "bucket_register", OTHER_PROJECT)
    answer = await flow.call(
        "POST", "/admin/buckets", json=role_body(**change), headers=flow.user("owner")
    )
    assert answer.status_code == status, answer.text
    assert words in answer.json()["message"]
    assert (await flow.call("GET", "/admin/buckets", headers=flow.admin)).json() == []


async def test_a_registrant_cannot_borrow_powers_afterwards(make_flow, moto, gateway) -> None:
    flow = await setup(make_flow)
    boto(moto, "s3").create_bucket(Bucket="abc-role")
    await register(flow, role_body())
    owner = flow.user("owner")
    version = (await record(flow, "abc-role"))["version"]
    for patch, words in (
        ({"secret_ref": "aws-sm://someone/elses"}, "cannot name a secret"),
        ({"external_id": "trusted-for-xyz"}, "generated by the registry"),
        ({"external_id": None}, "generated by the registry"),
        ({"secret_version": "v2"}, "set by the registry"),
        ({"auth_mode": "workload_identity", "role_arn": None}, "registry's own identity"),
        ({"is_default_upload": True}, "default upload"),
        ({"project_resource": OTHER_PROJECT}, "another project"),
        ({"owner_project": "XYZ"}, "owner_project"),
    ):
        answer = await flow.call("PATCH", "/admin/buckets/abc-role", json=patch, headers=owner)
        assert answer.status_code == 403, (patch, answer.text)
        assert words in answer.json()["message"]
    for path in (OTHER_PROJECT, "/programs/DEV", "/", "/programs/DEV/projects/ABCD"):
        answer = await bind(flow, "abc-role", path)
        assert answer.status_code == 403, (path, answer.text)
    for route in ("resume", "approve", "reject"):
        answer = await flow.call("POST", f"/admin/buckets/abc-role/{route}", headers=owner)
        assert answer.status_code == 403
        assert "bucket_admin" in answer.json()["message"]
    keys = {"access_key_id": STATIC_KEY_ID, "secret_access_key": STATIC_SECRET}
    answer = await flow.call("PUT", "/admin/buckets/abc-role/credentials", json=keys, headers=owner)
    assert answer.status_code == 400 and "external-id" in answer.json()["message"]
    assert (await record(flow, "abc-role"))["version"] == version

    # Changing the role sends the bucket back through validation; so does the endpoint.
    moved = await flow.call(
        "PATCH",
        "/admin/buckets/abc-role",
        json={"role_arn": "arn:aws:iam::123456789012:role/gen3-abc-other"},
        headers=owner,
    )
    assert moved.status_code == 200, moved.text
    assert (await record(flow, "abc-role"))["status"] == "pending"
    assert (await flow.presign("submitter", "abc-role", "k", "read")).status_code == 403
    validated = await flow.call("POST", "/admin/buckets/abc-role/validate", headers=owner)
    assert validated.json()["ok"] is True and validated.json()["status"] == "active"
    # Labels are not credentials: no new validation needed.
    labelled = await flow.call(
        "PATCH", "/admin/buckets/abc-role", json={"labels": {"team": "abc"}}, headers=owner
    )
    assert labelled.status_code == 200
    assert (await record(flow, "abc-role"))["status"] == "active"
    # Suspending their own bucket is theirs to do; lifting it is an admin's.
    assert (await flow.call("DELETE", "/admin/buckets/abc-role", headers=owner)).status_code == 200
    assert (await record(flow, "abc-role"))["status"] == "suspended"


async def test_registrants_see_only_their_projects_buckets(make_flow, moto, gateway) -> None:
    flow = await setup(make_flow)
    flow.arborist.grant("other", "bucket_register", OTHER_PROJECT)
    boto(moto, "s3").create_bucket(Bucket="abc-role")
    boto(moto, "s3").create_bucket(Bucket="xyz-role")
    await register(flow, role_body())
    await register(flow, role_body("xyz-role", project_resource=OTHER_PROJECT), user="other")
    admin_only = {
        "name": "commons-data",
        "provider": "aws",
        "region": "us-east-1",
        "auth_mode": "workload_identity",
    }
    assert (
        await flow.call("POST", "/admin/buckets", json=admin_only, headers=flow.admin)
    ).status_code == 201

    everything = await flow.call("GET", "/admin/buckets", headers=flow.admin)
    assert [b["name"] for b in everything.json()] == ["abc-role", "commons-data", "xyz-role"]
    for user, mine, theirs in (
        ("owner", "abc-role", "xyz-role"),
        ("other", "xyz-role", "abc-role"),
    ):
        headers = flow.user(user)
        listed = await flow.call("GET", "/admin/buckets", headers=headers)
        assert [b["name"] for b in listed.json()] == [mine]
        for bucket in (theirs, "commons-data"):
            for method, path in (
                ("GET", f"/admin/buckets/{bucket}"),
                ("GET", f"/admin/buckets/{bucket}/audit"),
                ("GET", f"/admin/buckets/{bucket}/bindings"),
                ("PATCH", f"/admin/buckets/{bucket}"),
                ("DELETE", f"/admin/buckets/{bucket}"),
                ("POST", f"/admin/buckets/{bucket}/validate"),
                ("PUT", f"/admin/buckets/{bucket}/credentials"),
            ):
                body = (
                    {"labels": {}}
                    if method == "PATCH"
                    else {"access_key_id": "AKIAX0000000000000", "secret_access_key": "x"}
                )
                answer = await flow.call(method, path, json=body, headers=headers)
                assert answer.status_code == 404, (user, method, path, answer.text)
                assert answer.json()["message"] == f"bucket {bucket!r} is not registered"
        audit = await flow.call("GET", "/admin/audit", headers=headers)
        assert {row["bucket_name"] for row in audit.json()} == {mine}

    # Someone holding neither power is refused everything, as before.
    nobody = await flow.call("GET", "/admin/buckets", headers=flow.user("submitter"))
    assert nobody.status_code == 403
    # A grant on a parent path covers the projects below it.
    flow.arborist.grant("program-owner", "bucket_register", "/programs/DEV")
    listed = await flow.call("GET", "/admin/buckets", headers=flow.user("program-owner"))
    assert [b["name"] for b in listed.json()] == ["abc-role", "xyz-role"]


async def test_admin_approval_mode_approve_and_reject(make_flow, moto, gateway) -> None:
    flow = await setup(make_flow, self_service_approval="admin")
    for name in ("abc-one", "abc-two"):
        boto(moto, "s3").create_bucket(Bucket=name)
        created = await register(flow, role_body(name))
        assert created["status"] == "pending"  # validated, but an admin must approve
        assert (await bind(flow, name)).status_code == 201
        assert (await record(flow, name))["validation"]["ok"] is True
        assert (await flow.presign("submitter", name, "k", "read")).status_code == 403

    approved = await flow.call("POST", "/admin/buckets/abc-one/approve", headers=flow.admin)
    assert approved.json() == {"ok": True, "status": "active"}
    assert (await flow.presign("submitter", "abc-one", "k", "read")).status_code == 200
    again = await flow.call("POST", "/admin/buckets/abc-one/approve", headers=flow.admin)
    assert again.status_code == 409

    rejected = await flow.call("POST", "/admin/buckets/abc-two/reject", headers=flow.admin)
    assert rejected.json() == {"ok": True, "status": "rejected"}
    assert (await flow.presign("submitter", "abc-two", "k", "read")).status_code == 403
    # The name stays taken, and the registrant cannot revive the bucket.
    taken = await flow.call(
        "POST", "/admin/buckets", json=role_body("abc-two"), headers=flow.user("owner")
    )
    assert taken.status_code == 409
    patched = await flow.call(
        "PATCH",
        "/admin/buckets/abc-two",
        json={"labels": {"x": "y"}},
        headers=flow.user("owner"),
    )
    assert patched.status_code == 409
    revalidated = await flow.call(
        "POST", "/admin/buckets/abc-two/validate", headers=flow.user("owner")
    )
    assert revalidated.json()["status"] == "rejected"

    # Approving needs a passing validation.
    boto(moto, "s3").create_bucket(Bucket="abc-three")
    await register(flow, role_body("abc-three"))
    boto(moto, "s3").delete_bucket(Bucket="abc-three")
    failed = await flow.call("POST", "/admin/buckets/abc-three/validate", headers=flow.admin)
    assert failed.json()["ok"] is False
    refused = await flow.call("POST", "/admin/buckets/abc-three/approve", headers=flow.admin)
    assert refused.status_code == 409 and "not passed validation" in refused.json()["message"]

    assert await actions(flow, "abc-one") == ["register", "bind", "approve"]
    assert await actions(flow, "abc-two") == ["register", "bind", "reject"]


async def test_registrant_keys_need_an_admin_again_in_admin_mode(make_flow, moto, gateway) -> None:
    flow = await setup(make_flow, self_service_approval="admin")
    boto(moto, "s3").create_bucket(Bucket="abc-static")
    await register(flow, static_body(gateway.url))
    keys = {"access_key_id": STATIC_KEY_ID, "secret_access_key": STATIC_SECRET}
    url = "/admin/buckets/abc-static/credentials"
    put = await flow.call("PUT", url, json=keys, headers=flow.user("owner"))
    assert put.json()["status"] == "pending"
    await flow.call("POST", "/admin/buckets/abc-static/approve", headers=flow.admin)
    assert (await record(flow, "abc-static"))["status"] == "active"
    # An admin's rotation keeps the bucket serving; a registrant's needs approval again.
    assert (await flow.call("PUT", url, json=keys, headers=flow.admin)).json()["status"] == "active"
    put = await flow.call("PUT", url, json=keys, headers=flow.user("owner"))
    assert put.json()["status"] == "pending"


async def test_external_id_rotates_in_two_phases(make_flow, moto, gateway) -> None:
    flow = await setup(make_flow)
    boto(moto, "s3").create_bucket(Bucket="abc-role")
    await register(flow, role_body())
    await bind(flow, "abc-role")
    first = (await record(flow, "abc-role"))["external_id"]

    issued = await flow.call(
        "POST", "/admin/buckets/abc-role/external-id", headers=flow.user("owner")
    )
    assert issued.status_code == 200, issued.text
    second = issued.json()["pending_external_id"]
    assert second != first and second.startswith("gen3-bucket-registry-")
    shown = await record(flow, "abc-role")
    assert (shown["external_id"], shown["pending_external_id"]) == (first, second)
    # Until a validation passes with the new ID, the old one is used.
    assert (await flow.presign("submitter", "abc-role", "k", "read")).status_code == 200
    used = {role.external_id for role in sts_backends["123456789012"]["aws"].assumed_roles}
    assert used == {first}

    validated = await flow.call(
        "POST", "/admin/buckets/abc-role/validate", headers=flow.user("owner")
    )
    assert validated.json()["ok"] is True
    shown = await record(flow, "abc-role")
    assert (shown["external_id"], shown["pending_external_id"]) == (second, None)
    flow.services.storage.sts.session_cache.clear()
    assert (await flow.presign("submitter", "abc-role", "k", "read")).status_code == 200
    assert second in {
        role.external_id for role in sts_backends["123456789012"]["aws"].assumed_roles
    }
    assert (await actions(flow, "abc-role"))[-2:] == ["rotate", "rotate"]


async def test_operators_list_approve_and_reject_from_the_command_line(
    make_flow, moto, gateway, pg_url, monkeypatch
) -> None:
    import asyncio
    import json

    from typer.testing import CliRunner

    from app.cli import cli

    flow = await setup(make_flow, self_service_approval="admin")
    for name in ("abc-one", "abc-two"):
        boto(moto, "s3").create_bucket(Bucket=name)
        await register(flow, role_body(name))
    monkeypatch.setenv("BUCKET_REGISTRY_DATABASE_URL", pg_url)
    monkeypatch.setenv("BUCKET_REGISTRY_SELF_SERVICE_APPROVAL", "admin")

    async def run(*args: str) -> Any:
        return await asyncio.to_thread(
            CliRunner().invoke, cli, list(args), prog_name="bucket-registry"
        )

    listed = await run("pending", "--json")
    assert listed.exit_code == 0, listed.output
    assert [(row["name"], row["validated"]) for row in json.loads(listed.output)] == [
        ("abc-one", True),
        ("abc-two", True),
    ]
    approved = await run("approve", "abc-one")
    assert approved.exit_code == 0 and "abc-one: active" in approved.output
    assert (await run("approve", "abc-one")).exit_code == 1
    assert (await run("reject", "abc-two")).exit_code == 0
    assert (await record(flow, "abc-one", "admin"))["status"] == "active"
    assert (await record(flow, "abc-two", "admin"))["status"] == "rejected"
    trail = await flow.call("GET", "/admin/buckets/abc-one/audit", headers=flow.admin)
    assert trail.json()[0]["action"] == "approve"
    assert trail.json()[0]["actor"].startswith("cli")
    assert "0 pending" in (await run("pending")).output


async def test_keys_never_follow_a_registrants_new_endpoint(make_flow, moto, gateway) -> None:
    flow = await setup(make_flow)
    boto(moto, "s3").create_bucket(Bucket="minio-abc")
    put_static_secret(moto, "gen3/bucket-registry/minio-abc", STATIC_KEY_ID, STATIC_SECRET)
    admins = {
        "name": "minio-abc",
        "provider": "minio",
        "endpoint": gateway.url,
        "auth_mode": "static",
        "secret_ref": "aws-sm://gen3/bucket-registry/minio-abc",
        "project_resource": PROJECT,
    }
    created = await flow.call("POST", "/admin/buckets", json=admins, headers=flow.admin)
    assert created.json()["status"] == "active"
    moved = await flow.call(
        "PATCH",
        "/admin/buckets/minio-abc",
        json={"endpoint": "http://127.0.0.1:9"},
        headers=flow.user("owner"),
    )
    assert moved.status_code == 200, moved.text
    shown = await record(flow, "minio-abc")
    assert (shown["status"], shown["secret_ref"]) == ("pending", False)
    validated = await flow.call("POST", "/admin/buckets/minio-abc/validate", headers=flow.admin)
    assert validated.json()["ok"] is False
    assert "no keys yet" in validated.json()["checks"]["secret_accessible"]["reason"]


async def test_the_console_lists_pending_registrations_and_an_admin_rejects_one(
    make_flow, moto, gateway
) -> None:
    flow = await setup(make_flow)
    boto(moto, "s3").create_bucket(Bucket="abc-static")
    assert (await register(flow, static_body(gateway.url)))["status"] == "pending"
    csrf = "console-csrf-value"
    cookies = {"access_token": flow.issuer.token("admin"), "csrftoken": csrf}

    async def console(method: str, path: str) -> Any:
        flow.http.cookies.clear()
        headers = {"x-csrf-token": csrf} if method == "POST" else {}
        return await flow.http.request(method, path, cookies=cookies, headers=headers)

    page = await console("GET", "/console/pending")
    assert page.status_code == 200 and "abc-static" in page.text
    shown = await console("GET", "/console/buckets/abc-static")
    # The validation the registration ran is kept on the bucket and shown with each check.
    assert "secret_accessible" in shown.text and "no keys yet" in shown.text
    # Approval needs a passing validation; this bucket has no keys yet.
    assert (await console("POST", "/console/pending/abc-static/approve")).status_code == 409
    rejected = await console("POST", "/console/pending/abc-static/reject")
    assert rejected.status_code in (200, 303), rejected.text
    assert (await record(flow, "abc-static", user="admin"))["status"] == "rejected"
    audit = await flow.call("GET", "/admin/buckets/abc-static/audit", headers=flow.admin)
    assert "reject" in [row["action"] for row in audit.json()]
    # A registrant sees their project's registrations in the console; approving is an admin's.
    cookies["access_token"] = flow.issuer.token("owner")
    page = await console("GET", "/console/pending")
    assert page.status_code == 200 and "abc-static" not in page.text  # rejected, not pending
    assert (await console("POST", "/console/pending/abc-static/approve")).status_code == 403


async def test_a_write_probe_runs_with_the_pending_external_id(make_flow, moto, gateway) -> None:
    flow = await setup(make_flow)
    boto(moto, "s3").create_bucket(Bucket="abc-role")
    await register(flow, role_body())
    issued = await flow.call(
        "POST", "/admin/buckets/abc-role/external-id", headers=flow.user("owner")
    )
    candidate = issued.json()["pending_external_id"]
    gateway.seen.clear()

    validated = await flow.call(
        "POST", "/admin/buckets/abc-role/validate?write_probe=true", headers=flow.user("owner")
    )
    assert validated.status_code == 200, validated.text
    assert validated.json()["checks"]["write_probe"]["status"] == "pass", validated.text
    # The probe object was written, read and removed with a session assumed with the new ID.
    assumed = sts_backends["123456789012"]["aws"].assumed_roles
    candidate_keys = {role.access_key_id for role in assumed if role.external_id == candidate}
    assert candidate_keys
    written = {seen.method for seen in gateway.seen if seen.access_key_id in candidate_keys}
    assert {"PUT", "GET", "DELETE"} <= written
    assert (await record(flow, "abc-role"))["external_id"] == candidate


SECRETS_NAMESPACE = "gen3-bucket-secrets"


@pytest.fixture
def kubernetes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The Kubernetes API stub and a kubeconfig for it (the registry runs outside a cluster)."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    stub = KubernetesStub().start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "stub", "cluster": {"server": stub.url}}],
                "users": [{"name": "sa", "user": {"token": stub.token}}],
                "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "sa"}}],
                "current-context": "stub",
            }
        )
    )
    stub.kubeconfig = kubeconfig
    yield stub
    stub.stop()


async def test_keys_rotate_through_kubernetes_secret_objects_on_every_replica(
    make_flow, moto, gateway, kubernetes, all_logs
) -> None:
    settings = {
        "self_service_secrets": f"k8s://{SECRETS_NAMESPACE}/self-service",
        "kubeconfig": kubernetes.kubeconfig,
        # Long TTLs: only the change notification can explain what the second replica sees.
        "bucket_cache_ttl": 600,
        "secret_cache_ttl": 600,
    }
    flow = await setup(make_flow, **settings)
    replica = await make_flow(**settings)
    boto(moto, "s3").create_bucket(Bucket="abc-static")
    await register(flow, static_body(gateway.url))
    assert (await bind(flow, "abc-static")).status_code == 201
    url = "/admin/buckets/abc-static/credentials"
    owner = flow.user("owner")

    async def secret_ref() -> str | None:
        return (await flow.services.registry.get_bucket("abc-static")).secret_ref

    async def key_on(which: Any) -> str:
        body = {"bucket": "abc-static", "key": "k/one", "op": "read"}
        signed = await which.call("POST", "/presign", json=body, headers=flow.user("submitter"))
        assert signed.status_code == 200, signed.text
        return key_id_of(signed.json()["url"])

    first = await flow.call(
        "PUT",
        url,
        json={"access_key_id": STATIC_KEY_ID, "secret_access_key": STATIC_SECRET},
        headers=owner,
    )
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "active"
    first_ref = await secret_ref()
    assert first_ref is not None
    assert first_ref.startswith(f"k8s://{SECRETS_NAMESPACE}/self-service-abc-static-")
    assert kubernetes.names(SECRETS_NAMESPACE) == [first_ref.rsplit("/", 1)[-1]]
    assert await key_on(flow) == STATIC_KEY_ID
    assert await key_on(replica) == STATIC_KEY_ID

    # Keys the store refuses change nothing: same reference, same version, no object left.
    version = (await record(flow, "abc-static"))["version"]
    bad = await flow.call(
        "PUT",
        url,
        json={"access_key_id": "AKIAUNKNOWNKEY000001", "secret_access_key": "no"},
        headers=owner,
    )
    assert bad.status_code == 400 and "nothing was changed" in bad.json()["message"]
    assert await secret_ref() == first_ref
    assert (await record(flow, "abc-static"))["version"] == version
    assert kubernetes.names(SECRETS_NAMESPACE) == [first_ref.rsplit("/", 1)[-1]]
    assert await key_on(replica) == STATIC_KEY_ID

    rotated = await flow.call(
        "PUT",
        url,
        json={"access_key_id": ROTATED_KEY_ID, "secret_access_key": ROTATED_SECRET},
        headers=owner,
    )
    assert rotated.status_code == 200, rotated.text
    second_ref = await secret_ref()
    assert second_ref is not None and second_ref != first_ref
    # The previous object is kept for rollback until a prune.
    assert sorted(kubernetes.names(SECRETS_NAMESPACE)) == sorted(
        ref.rsplit("/", 1)[-1] for ref in (first_ref, second_ref)
    )
    assert await key_on(flow) == ROTATED_KEY_ID
    deadline = time.monotonic() + 1.0
    while await key_on(replica) != ROTATED_KEY_ID:
        assert time.monotonic() < deadline, "the second replica kept signing with the old key"
        await asyncio.sleep(0.05)
    # The old key no longer signs anything: the store refusing it changes nothing either.
    gateway.keyring.pop(STATIC_KEY_ID)
    read = await flow.presign("submitter", "abc-static", "k/one", "read")
    assert (await send(read.json())).status_code in (200, 404)

    pruned = await flow.call("POST", f"{url}/prune", headers=owner)
    assert pruned.json() == {"ok": True, "versions_removed": 1}
    assert kubernetes.names(SECRETS_NAMESPACE) == [second_ref.rsplit("/", 1)[-1]]
    assert await actions(flow, "abc-static") == ["register", "bind", "rotate", "rotate", "prune"]
    trail = await flow.call("GET", "/admin/buckets/abc-static/audit", headers=flow.admin)
    # No key in an answer, the trail or a log line (even at DEBUG, even base64 as sent).
    seen = "\n".join(
        [trail.text, rendered_logs(all_logs), *(r.text for r in flow.responses + replica.responses)]
    )
    for secret in (STATIC_SECRET, ROTATED_SECRET):
        assert secret not in seen
        assert base64.b64encode(secret.encode()).decode() not in seen


async def test_an_admin_removes_a_rejected_bucket_for_good(make_flow, moto, gateway) -> None:
    flow = await setup(make_flow, self_service_approval="admin", bucket_cache_ttl=600)
    replica = await make_flow(self_service_approval="admin", bucket_cache_ttl=600)
    boto(moto, "s3").create_bucket(Bucket="abc-static")
    await register(flow, static_body(gateway.url))
    owner = flow.user("owner")
    added = await flow.call(
        "POST", "/admin/buckets/abc-static/prefixes", json={"prefix": "raw/"}, headers=owner
    )
    assert added.status_code == 201
    assert (await bind(flow, "abc-static")).status_code == 201
    keys = {"access_key_id": STATIC_KEY_ID, "secret_access_key": STATIC_SECRET}
    put = await flow.call("PUT", "/admin/buckets/abc-static/credentials", json=keys, headers=owner)
    assert put.json()["status"] == "pending"  # an admin must approve
    secret_name = "bucket-registry/self-service/projects/programs/DEV/projects/ABC/abc-static"
    secrets = boto(moto, "secretsmanager")
    assert secrets.describe_secret(SecretId=secret_name)["Name"] == secret_name
    url = "/admin/buckets/abc-static/purge"

    # Only an admin removes, and only a bucket that serves nothing and is meant not to.
    refused = await flow.call("POST", url, headers=owner)
    assert refused.status_code == 403 and "bucket_admin" in refused.json()["message"]
    early = await flow.call("POST", url, headers=flow.admin)
    assert early.status_code == 409 and "only rejected or suspended" in early.json()["message"]
    assert (await flow.call("POST", "/admin/buckets/abc-static/reject", headers=flow.admin)).json()[
        "status"
    ] == "rejected"
    # The other replica has the rejected bucket cached.
    assert (await replica.presign("submitter", "abc-static", "raw/k", "read")).status_code == 403
    assert (await flow.call("POST", url, headers=owner)).status_code == 403

    removed = await flow.call("POST", url, headers=flow.admin)
    assert removed.status_code == 200, removed.text
    assert removed.json() == {"ok": True, "name": "abc-static", "secrets_removed": True}
    assert (
        await flow.call("GET", "/admin/buckets/abc-static", headers=flow.admin)
    ).status_code == (404)
    with pytest.raises(secrets.exceptions.ResourceNotFoundException):
        secrets.describe_secret(SecretId=secret_name)
    # Every replica forgets it at once: unknown, no longer "rejected".
    deadline = time.monotonic() + 1.0
    while (await replica.presign("submitter", "abc-static", "raw/k", "read")).status_code != 404:
        assert time.monotonic() < deadline, "the other replica still knows the bucket"
        await asyncio.sleep(0.05)
    # The trail stays, ending with what was removed (no secret in it).
    trail = await flow.call("GET", "/admin/audit", headers=flow.admin)
    rows = [row for row in trail.json() if row["bucket_name"] == "abc-static"]
    assert [row["action"] for row in reversed(rows)] == [
        "register",
        "add_prefix",
        "bind",
        "rotate",
        "reject",
        "remove",
    ]
    gone = rows[0]["diff"]["before"]
    assert gone["status"] == "rejected" and gone["prefixes"] == ["raw/"]
    assert gone["bindings"][0]["resource_path"] == PROJECT
    assert STATIC_SECRET not in trail.text and secret_name not in trail.text

    # The name is free again.
    again = await register(flow, static_body(gateway.url))
    assert again["status"] == "pending"
    assert (await flow.call("POST", url, headers=flow.admin)).status_code == 409
    assert (
        await flow.call("POST", "/admin/buckets/unknown-bucket/purge", headers=flow.admin)
    ).status_code == 404


async def test_operators_remove_a_suspended_bucket_from_the_command_line(
    make_flow, moto, gateway, pg_url, monkeypatch
) -> None:
    from typer.testing import CliRunner

    from app.cli import cli

    flow = await setup(make_flow)
    for name in ("abc-one", "abc-two"):
        boto(moto, "s3").create_bucket(Bucket=name)
        await register(flow, role_body(name))
    await flow.call("DELETE", "/admin/buckets/abc-one", headers=flow.admin)
    monkeypatch.setenv("BUCKET_REGISTRY_DATABASE_URL", pg_url)

    async def run(*args: str) -> Any:
        return await asyncio.to_thread(
            CliRunner().invoke, cli, list(args), prog_name="bucket-registry"
        )

    active = await run("purge", "abc-two", "--yes")
    assert active.exit_code == 1 and "only rejected or suspended" in active.output
    unconfirmed = await run("purge", "abc-one")
    assert unconfirmed.exit_code != 0
    assert (await record(flow, "abc-one", "admin"))["status"] == "suspended"
    purged = await run("purge", "abc-one", "--yes")
    assert purged.exit_code == 0 and "abc-one: removed" in purged.output, purged.output
    assert (await flow.call("GET", "/admin/buckets/abc-one", headers=flow.admin)).status_code == 404
    trail = await flow.call("GET", "/admin/audit", headers=flow.admin)
    latest = next(row for row in trail.json() if row["bucket_name"] == "abc-one")
    assert (latest["action"], latest["actor"][:3]) == ("remove", "cli")


async def test_a_validation_answer_never_names_where_the_secret_lives(
    make_flow, moto, gateway
) -> None:
    # An admin registered the project's bucket with a secret of its own choosing; the
    # project's registrant may validate it, and must learn that the secret is missing, not
    # where it was looked for.
    flow = await setup(make_flow)
    boto(moto, "s3").create_bucket(Bucket="abc-admin-static")
    where = "aws-sm://gen3/admin-only/abc-admin-static-keys"
    body = {**static_body(gateway.url, "abc-admin-static"), "secret_ref": where}
    created = await flow.call("POST", "/admin/buckets", json=body, headers=flow.admin)
    assert created.status_code == 201, created.text
    for who in (flow.user("owner"), flow.admin):
        answer = await flow.call("POST", "/admin/buckets/abc-admin-static/validate", headers=who)
        assert answer.status_code == 200, answer.text
        assert answer.json()["checks"]["secret_accessible"]["status"] == "fail"
        assert where not in answer.text
        assert secret_fingerprint(where) in answer.json()["checks"]["secret_accessible"]["reason"]


async def test_a_purge_during_a_secrets_outage_is_a_503_that_removes_nothing(
    make_flow, moto, gateway, kubernetes
) -> None:
    settings = {
        "self_service_secrets": f"k8s://{SECRETS_NAMESPACE}/self-service",
        "kubeconfig": kubernetes.kubeconfig,
    }
    flow = await setup(make_flow, **settings)
    boto(moto, "s3").create_bucket(Bucket="abc-static")
    await register(flow, static_body(gateway.url))
    assert (await bind(flow, "abc-static")).status_code == 201
    keys = {"access_key_id": STATIC_KEY_ID, "secret_access_key": STATIC_SECRET}
    put = await flow.call(
        "PUT", "/admin/buckets/abc-static/credentials", json=keys, headers=flow.user("owner")
    )
    assert put.status_code == 200, put.text
    suspended = await flow.call("DELETE", "/admin/buckets/abc-static", headers=flow.admin)
    assert suspended.status_code == 200, suspended.text
    objects = kubernetes.names(SECRETS_NAMESPACE)
    assert len(objects) == 1

    kubernetes.fail_with = 503
    refused = await flow.call("POST", "/admin/buckets/abc-static/purge", headers=flow.admin)
    assert refused.status_code == 503, refused.text
    assert STATIC_SECRET not in refused.text and objects[0] not in refused.text
    kubernetes.fail_with = None
    # Nothing went: the bucket, its bindings and its keys are all still there.
    assert (await record(flow, "abc-static", "admin"))["status"] == "suspended"
    bindings = await flow.call("GET", "/admin/buckets/abc-static/bindings", headers=flow.admin)
    assert len(bindings.json()) == 1
    assert kubernetes.names(SECRETS_NAMESPACE) == objects

    removed = await flow.call("POST", "/admin/buckets/abc-static/purge", headers=flow.admin)
    assert removed.status_code == 200 and removed.json()["secrets_removed"] is True
    assert kubernetes.names(SECRETS_NAMESPACE) == []
