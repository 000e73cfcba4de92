"""POST /credentials for gcp buckets end to end: the app mints the service account's token
(from its key, or through IAM under workload identity), exchanges it at the Google API stub's
token exchange (RFC 8693, as Google's STS speaks it) for a downscoped one, and every byte moves
with that token through the stub's Cloud Storage JSON and XML APIs, which apply the token's
Credential Access Boundary (its CEL conditions evaluated by cel-python)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ALL_OPS, PROJECT, Flow, boto, rendered_logs
from tests.support.gcp_iam import ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE_GRANT, GoogleApiStub
from tests.support.gcp_iam import service_account_key_json as key_file
from tests.support.gcs_boundary import CREATE, DELETE, GET, LIST

SA_EMAIL = "registry-vendor@gen3-data.iam.gserviceaccount.com"
POD_EMAIL = "registry-pod@gen3-platform.iam.gserviceaccount.com"
BUCKET = "gen3-gcs-vended"
OTHER = "gen3-gcs-other"
TOKEN_FIELDS = {"access_token", "expiration", "bucket", "prefix", "provider"}


@pytest.fixture
def google() -> Iterator[GoogleApiStub]:
    stub = GoogleApiStub().start()
    yield stub
    stub.stop()


def gcs_settings(google: GoogleApiStub) -> dict[str, str]:
    return {
        "gcs_endpoint": google.url,
        "gcp_iam_credentials_endpoint": google.url,
        "gcp_sts_endpoint": google.url + "/v1/token",
        "gcp_oauth_token_endpoint": google.url + "/token",
    }


async def static_flow(
    make_flow: Any,
    moto: Any,
    google: GoogleApiStub,
    settings: dict[str, str] | None = None,
    **extra: Any,
) -> Flow:
    key = google.add_account(SA_EMAIL)
    for name in (BUCKET, OTHER):
        google.add_bucket(name, readers=set()).admins.add(SA_EMAIL)
    boto(moto, "secretsmanager").create_secret(
        Name="registry/gcs/vendor-key",
        SecretString=json.dumps(
            {"service_account_key_json": key_file(SA_EMAIL, key, token_uri=google.url + "/token")}
        ),
    )
    flow: Flow = await make_flow(**{**gcs_settings(google), **(settings or {})})
    body = {
        "name": BUCKET,
        "provider": "gcp",
        "auth_mode": "static",
        "secret_ref": "aws-sm://registry/gcs/vendor-key",
        "data_upload_allowed": True,
        "credential_vending": True,
        **extra,
    }
    await flow.register(body, "incoming/", ALL_OPS)
    return flow


async def vend(flow: Flow, user: str, **body: Any) -> httpx.Response:
    return await flow.call("POST", "/credentials", json=body, headers=flow.user(user))


class Gcs:
    """Cloud Storage as gsutil, gcloud storage or rclone would call it with the token."""

    def __init__(self, google: GoogleApiStub, token: str) -> None:
        self.url = google.url
        self.headers = {"Authorization": f"Bearer {token}"}

    def upload(self, bucket: str, name: str, data: bytes) -> int:
        return httpx.post(
            f"{self.url}/upload/storage/v1/b/{bucket}/o",
            params={"uploadType": "media", "name": name},
            content=data,
            headers=self.headers,
        ).status_code

    def read(self, bucket: str, name: str) -> httpx.Response:
        quoted = httpx.URL(f"{self.url}/storage/v1/b/{bucket}/o/").join(name.replace("/", "%2F"))
        return httpx.get(quoted, params={"alt": "media"}, headers=self.headers)

    def xml(self, method: str, bucket: str, name: str, data: bytes | None = None) -> httpx.Response:
        return httpx.request(
            method, f"{self.url}/{bucket}/{name}", content=data, headers=self.headers
        )

    def listing(self, bucket: str, prefix: str | None) -> httpx.Response:
        params = {"prefix": prefix} if prefix is not None else {}
        return httpx.get(f"{self.url}/storage/v1/b/{bucket}/o", params=params, headers=self.headers)

    def delete(self, bucket: str, name: str) -> int:
        url = f"{self.url}/storage/v1/b/{bucket}/o/{name.replace('/', '%2F')}"
        return httpx.delete(url, headers=self.headers).status_code


async def test_a_downscoped_token_works_inside_its_prefix_and_nowhere_else(
    make_flow, moto, google: GoogleApiStub, all_logs
) -> None:
    flow = await static_flow(make_flow, moto, google)
    flow.arborist.grant("alice", "writer", PROJECT)
    flow.arborist.grant("alice", "reader", PROJECT)
    google.buckets[BUCKET].data["incoming/bob/theirs"] = b"bob's"

    answer = await vend(
        flow, "alice", bucket=BUCKET, prefix="incoming/alice/", ops=["read", "write", "list"]
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert set(body) == TOKEN_FIELDS
    assert (body["bucket"], body["prefix"], body["provider"]) == (BUCKET, "incoming/alice/", "gcp")
    lifetime = (datetime.fromisoformat(body["expiration"]) - datetime.now(UTC)).total_seconds()
    assert 3500 <= lifetime <= 3600

    # The exchange was RFC 8693 as Google's STS takes it, narrowing the account's own token.
    exchange = google.exchanges[-1]
    assert exchange.account == SA_EMAIL
    assert exchange.form["grant_type"] == TOKEN_EXCHANGE_GRANT
    assert exchange.form["subject_token_type"] == ACCESS_TOKEN_TYPE
    assert exchange.form["requested_token_type"] == ACCESS_TOKEN_TYPE
    assert exchange.options is not None
    rules = exchange.options["accessBoundary"]["accessBoundaryRules"]
    assert [rule["availablePermissions"] for rule in rules] == [
        ["inRole:roles/storage.objectViewer"],
        ["inRole:roles/storage.objectCreator"],
        ["inRole:roles/storage.legacyBucketReader"],
    ]
    assert {rule["availableResource"] for rule in rules} == {
        f"//storage.googleapis.com/projects/_/buckets/{BUCKET}"
    }
    assert rules[0]["availabilityCondition"]["expression"] == (
        f"resource.name.startsWith('projects/_/buckets/{BUCKET}/objects/incoming/alice/')"
    )
    assert rules[2]["availabilityCondition"]["expression"] == (
        "api.getAttribute('storage.googleapis.com/objectListPrefix', '')"
        ".startsWith('incoming/alice/')"
    )

    gcs = Gcs(google, body["access_token"])
    # Inside: write (JSON and XML APIs), read back, list.
    assert gcs.upload(BUCKET, "incoming/alice/a.txt", b"alice's") == 200
    assert gcs.xml("PUT", BUCKET, "incoming/alice/b.txt", b"more").status_code == 200
    assert gcs.read(BUCKET, "incoming/alice/a.txt").content == b"alice's"
    assert gcs.xml("GET", BUCKET, "incoming/alice/b.txt").content == b"more"
    listed = gcs.listing(BUCKET, "incoming/alice/")
    assert listed.status_code == 200, listed.text
    assert [item["name"] for item in listed.json()["items"]] == [
        "incoming/alice/a.txt",
        "incoming/alice/b.txt",
    ]
    assert google.boundary_denials == []

    # Outside: another user's prefix, a sibling sharing the name's start, the parent, the whole
    # bucket's listing, another bucket; and delete, which was not asked for.
    assert gcs.read(BUCKET, "incoming/bob/theirs").status_code == 403
    assert gcs.xml("GET", BUCKET, "incoming/bob/theirs").status_code == 403
    assert gcs.upload(BUCKET, "incoming/alice-evil/x", b"!") == 403
    assert gcs.upload(BUCKET, "incoming/x", b"!") == 403
    assert gcs.listing(BUCKET, "incoming/").status_code == 403
    assert gcs.listing(BUCKET, None).status_code == 403
    assert gcs.upload(OTHER, "incoming/alice/a.txt", b"!") == 403
    assert gcs.delete(BUCKET, "incoming/alice/a.txt") == 403
    assert gcs.xml("DELETE", BUCKET, "incoming/alice/b.txt").status_code == 403
    refused = {(q.permission, q.bucket, q.object_name) for q in google.boundary_denials}
    assert (GET, BUCKET, "incoming/bob/theirs") in refused
    assert (CREATE, BUCKET, "incoming/alice-evil/x") in refused
    assert (DELETE, BUCKET, "incoming/alice/a.txt") in refused
    assert (LIST, BUCKET, None) in refused
    # The account itself could have done each of these: the boundary refused them.
    assert sorted(google.buckets[BUCKET].data) == [
        "incoming/alice/a.txt",
        "incoming/alice/b.txt",
        "incoming/bob/theirs",
    ]
    assert (
        OTHER not in {q.bucket for q in google.boundary_denials} or not google.buckets[OTHER].data
    )

    # The decision log names alice, the account and the expiry, never the token.
    decisions = [r for r in all_logs.records if r.name == "bucket_registry.decisions"]
    vended = [r for r in decisions if r.getMessage() == "credentials vended"]
    assert len(vended) == 1
    assert (vended[0].user, vended[0].provider, vended[0].service_account) == (
        "alice",
        "gcp",
        SA_EMAIL,
    )
    logged = rendered_logs(all_logs)
    assert body["access_token"] not in logged
    assert all(token not in logged for token in google.storage_tokens)
    metrics = (await flow.call("GET", "/metrics")).text
    assert body["access_token"] not in metrics
    assert 'dependency="gcp_sts"' in metrics


async def pod_identity_flow(
    make_flow: Any, google: GoogleApiStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Flow:
    """The app running as the pod's own account, which IAM lets act as SA_EMAIL, the account
    that administers BUCKET."""
    pod_key = google.add_account(POD_EMAIL, impersonable=False)
    google.pod_accounts.add(POD_EMAIL)
    adc = tmp_path / "pod-identity.json"
    adc.write_text(key_file(POD_EMAIL, pod_key, token_uri=google.url + "/token"))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
    google.add_account(SA_EMAIL)
    google.add_bucket(BUCKET, readers=set()).admins.add(SA_EMAIL)
    flow: Flow = await make_flow(**gcs_settings(google))
    return flow


async def test_workload_identity_vends_the_duration_asked_and_delete_with_write(
    make_flow, google: GoogleApiStub, tmp_path, monkeypatch
) -> None:
    flow = await pod_identity_flow(make_flow, google, tmp_path, monkeypatch)
    body = {
        "name": BUCKET,
        "provider": "gcp",
        "auth_mode": "workload_identity",
        "service_account": SA_EMAIL,
        "data_upload_allowed": True,
        "credential_vending": True,
    }
    await flow.register(body, "incoming/", ALL_OPS)
    flow.arborist.grant("erin", "writer", PROJECT)
    flow.arborist.grant("erin", "reader", PROJECT)

    only_delete = await vend(flow, "erin", bucket=BUCKET, prefix="incoming/", ops=["delete"])
    assert only_delete.status_code == 400
    assert "delete is vended only with write" in only_delete.json()["message"]
    assert google.exchanges == []

    answer = await vend(
        flow, "erin", bucket=BUCKET, prefix="incoming/", ops=["write", "delete"], duration=1800
    )
    assert answer.status_code == 200, answer.text
    # IAM was asked for a token of the bucket's account living the duration; the downscoped
    # one lives no longer.
    assert google.token_requests[-1]["lifetime"] == "1800s"
    lifetime = (
        datetime.fromisoformat(answer.json()["expiration"]) - datetime.now(UTC)
    ).total_seconds()
    assert 1700 <= lifetime <= 1800
    gcs = Gcs(google, answer.json()["access_token"])
    assert gcs.upload(BUCKET, "incoming/new", b"data") == 200
    assert gcs.read(BUCKET, "incoming/new").status_code == 403  # write and delete only
    assert gcs.delete(BUCKET, "incoming/new") == 204
    assert gcs.upload(BUCKET, "elsewhere/new", b"data") == 403
    assert google.buckets[BUCKET].data == {}

    # The token ends when the stub's clock passes its expiry.
    google.clock_offset = 1801
    assert gcs.upload(BUCKET, "incoming/late", b"data") == 401


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"prefix": "incoming/it's/"}, 'must not contain "\'"'),
        ({"prefix": "incoming/a\\b/"}, "must not contain '\\\\'"),
        ({"prefix": 'incoming/"q"/'}, "must not contain '\"'"),
        ({"prefix": "incoming/\u202egnp.exe/"}, "control, format or separator"),
        ({"duration": 1800}, "live 3600 s"),
    ],
)
async def test_bad_gcs_requests_are_400_and_reach_no_token_exchange(
    make_flow, moto, google: GoogleApiStub, body: dict[str, Any], message: str
) -> None:
    flow = await static_flow(make_flow, moto, google)
    flow.arborist.grant("alice", "reader", PROJECT)
    request = {"bucket": BUCKET, "prefix": "incoming/alice/", "ops": ["read"], **body}
    answer = await vend(flow, "alice", **request)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["message"]
    assert google.exchanges == []


async def test_token_exchange_refusals_and_outages_are_503_without_secrets(
    make_flow, moto, google: GoogleApiStub
) -> None:
    flow = await static_flow(make_flow, moto, google)
    flow.arborist.grant("alice", "reader", PROJECT)
    request = {"bucket": BUCKET, "prefix": "incoming/", "ops": ["read"]}

    google.exchange_fault = 400
    refused = await vend(flow, "alice", **request)
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"] == "credential_vending_refused"
    assert "invalid_grant" in refused.json()["message"]
    google.exchange_fault = 503
    down = await vend(flow, "alice", **request)
    assert down.status_code == 503
    assert down.json()["error"] == "dependency_unavailable"
    for answer in (refused, down):
        assert "PRIVATE KEY" not in answer.text
        assert all(token not in answer.text for token in google.storage_tokens)
    assert (await vend(flow, "alice", **request)).status_code == 200


async def test_a_buckets_own_token_exchange_endpoint_is_used_and_guarded(
    make_flow, moto, google: GoogleApiStub
) -> None:
    # The registry's own token exchange is unreachable: only the bucket's can answer.
    unreachable = {"gcp_sts_endpoint": "http://127.0.0.1:9/v1/token"}
    flow = await static_flow(make_flow, moto, google, unreachable, sts_endpoint=google.url)
    flow.arborist.grant("alice", "reader", PROJECT)
    answer = await vend(flow, "alice", bucket=BUCKET, prefix="incoming/", ops=["read"])
    assert answer.status_code == 200, answer.text
    assert len(google.exchanges) == 1

    # A bucket's endpoint passes the destination policy at registration.
    metadata = await flow.call(
        "PATCH",
        f"/admin/buckets/{BUCKET}",
        json={"sts_endpoint": "http://169.254.169.254"},
        headers=flow.admin,
    )
    assert metadata.status_code == 400
    assert "sts_endpoint" in metadata.json()["message"]


PROBE_PREFIX = ".bucket-registry-probe/"


async def validate(flow: Flow, write_probe: bool) -> httpx.Response:
    return await flow.call(
        "POST",
        f"/admin/buckets/{BUCKET}/validate?write_probe={str(write_probe).lower()}",
        headers=flow.admin,
    )


def tokens_of(google: GoogleApiStub) -> list[str]:
    """Every token the stub issued: the accounts' own and the downscoped ones."""
    return [*google.storage_tokens, *google.downscoped]


async def test_validate_proves_cloud_storage_enforces_the_boundary(
    make_flow, moto, google: GoogleApiStub, all_logs
) -> None:
    flow = await static_flow(make_flow, moto, google)
    for write_probe in (False, True):
        report = await validate(flow, write_probe)
        assert report.status_code == 200, report.text
        check = report.json()["checks"]["scope_enforced"]
        assert check["status"] == "pass", report.text
        assert ("listing and write" in check["reason"]) is write_probe
        # The token was narrowed to the probe's prefix: list only, or list, read and write.
        rules = google.exchanges[-1].options["accessBoundary"]["accessBoundaryRules"]
        assert len(rules) == (3 if write_probe else 1)
        assert all(
            f"{PROBE_PREFIX}scope-" in r["availabilityCondition"]["expression"] for r in rules
        )
    # Cloud Storage refused the token what the account itself may do: list the whole bucket,
    # write outside the prefix.
    refused = {(q.permission, q.object_name or "") for q in google.boundary_denials}
    assert (LIST, "") in refused
    assert any(p == CREATE and name.startswith(PROBE_PREFIX + "outside-") for p, name in refused)
    # What the probe wrote inside was read back, then removed as the bucket's own account
    # (the boundary holds no delete); nothing was written outside.
    assert not [name for name in google.buckets[BUCKET].data if name.startswith(PROBE_PREFIX)]
    assert any(
        method == "DELETE" and f"/o/{PROBE_PREFIX}scope-" in path
        for method, path, _ in google.requests
    )

    # No token in the answer, the stored validation or the logs.
    stored = (await flow.call("GET", f"/admin/buckets/{BUCKET}", headers=flow.admin)).json()
    assert stored["validation"]["checks"]["scope_enforced"]["status"] == "pass"
    shown = report.text + json.dumps(stored["validation"]) + rendered_logs(all_logs)
    assert google.downscoped and all(token not in shown for token in tokens_of(google))


async def test_validate_fails_a_store_that_ignores_access_boundaries(
    make_flow, moto, google: GoogleApiStub
) -> None:
    flow = await static_flow(make_flow, moto, google)
    google.enforce_boundaries = False

    listing_only = (await validate(flow, False)).json()
    assert listing_only["checks"]["scope_enforced"]["status"] == "fail"
    assert listing_only["ok"] is False
    report = (await validate(flow, True)).json()
    check = report["checks"]["scope_enforced"]
    assert check["status"] == "fail"
    assert "a listing of the whole bucket (answered 200)" in check["reason"]
    assert f"a write of {PROBE_PREFIX}outside-" in check["reason"]
    assert "does not enforce access boundaries; turn credential_vending off" in check["reason"]
    assert "left behind" not in check["reason"]
    # The stray write the store accepted, and the one inside, were removed.
    assert not [name for name in google.buckets[BUCKET].data if name.startswith(PROBE_PREFIX)]
    stored = (await flow.call("GET", f"/admin/buckets/{BUCKET}", headers=flow.admin)).json()
    assert stored["validation"]["ok"] is False
    assert stored["validation"]["checks"]["scope_enforced"]["status"] == "fail"


async def test_validate_under_workload_identity_probes_with_a_short_token(
    make_flow, google: GoogleApiStub, tmp_path, monkeypatch
) -> None:
    flow = await pod_identity_flow(make_flow, google, tmp_path, monkeypatch)
    body = {
        "name": BUCKET,
        "provider": "gcp",
        "auth_mode": "workload_identity",
        "service_account": SA_EMAIL,
        "credential_vending": True,
    }
    await flow.register(body, "incoming/", ALL_OPS)

    check = (await validate(flow, True)).json()["checks"]["scope_enforced"]
    assert check["status"] == "pass", check
    # The probe's source token lived the shortest duration; the cleanup token could write.
    lifetimes = [request["lifetime"] for request in google.token_requests]
    assert "900s" in lifetimes
    assert any(
        request["scope"] == ["https://www.googleapis.com/auth/devstorage.read_write"]
        for request in google.token_requests
    )
    assert not [name for name in google.buckets[BUCKET].data if name.startswith(PROBE_PREFIX)]


async def test_a_probe_that_cannot_clean_up_says_what_it_left_behind(
    make_flow, moto, google: GoogleApiStub
) -> None:
    flow = await static_flow(make_flow, moto, google)
    # The account may create objects (so its tokens may write) but not delete them.
    state = google.buckets[BUCKET]
    state.admins.discard(SA_EMAIL)
    state.creators.add(SA_EMAIL)

    check = (await validate(flow, True)).json()["checks"]["scope_enforced"]
    assert check["status"] == "pass"
    assert f"{PROBE_PREFIX}scope-" in check["reason"] and "left behind" in check["reason"]
    assert "delete it by hand" in check["reason"]
    left = [name for name in google.buckets[BUCKET].data if name.startswith(PROBE_PREFIX)]
    assert len(left) == 1 and left[0] in check["reason"]


@pytest.mark.parametrize(
    ("fault", "said"),
    [
        ("exchange", "no token vended: Google's STS is unavailable (HTTP 503)"),
        ("storage", "Cloud Storage did not answer: listing .bucket-registry-probe/scope-"),
    ],
)
async def test_an_outage_fails_the_probe_without_tokens_or_secret_references(
    make_flow, moto, google: GoogleApiStub, all_logs, fault: str, said: str
) -> None:
    flow = await static_flow(make_flow, moto, google)
    if fault == "exchange":
        google.exchange_fault = 503
    else:
        google.storage_fault = 503

    report = await validate(flow, True)
    assert report.status_code == 200, report.text
    check = report.json()["checks"]["scope_enforced"]
    assert check["status"] == "fail"
    assert said in check["reason"]
    assert "vendor-key" not in check["reason"]
    stored = (await flow.call("GET", f"/admin/buckets/{BUCKET}", headers=flow.admin)).json()
    shown = report.text + json.dumps(stored["validation"]) + rendered_logs(all_logs)
    assert all(token not in shown for token in tokens_of(google))
    assert "PRIVATE KEY" not in shown
    assert not [name for name in google.buckets[BUCKET].data if name.startswith(PROBE_PREFIX)]
