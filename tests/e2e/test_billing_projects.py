"""`user_project` on gcp buckets only from the bucket's `billing_projects` (or the configured
default): the registry's account signs the URL, and may be allowed to bill far more projects
than a caller should choose from."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.e2e.conftest import ALL_OPS, PROJECT, Flow, boto
from tests.support.gcp_iam import GoogleApiStub, service_account_key_json

SA_EMAIL = "registry-signer@gen3-data.iam.gserviceaccount.com"
DEFAULT_PROJECT = "gen3-default-billing"


@pytest.fixture
def google() -> Iterator[GoogleApiStub]:
    stub = GoogleApiStub().start()
    yield stub
    stub.stop()


def gcs_bucket(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "provider": "gcp",
        "auth_mode": "static",
        "secret_ref": "aws-sm://gen3/bucket-registry/gcs-billing",
        **extra,
    }


async def start(make_flow, moto, google, **settings: Any) -> Flow:  # type: ignore[no-untyped-def]
    key = google.add_account(SA_EMAIL)
    secret = service_account_key_json(SA_EMAIL, key, token_uri=google.url + "/token")
    boto(moto, "secretsmanager").create_secret(
        Name="gen3/bucket-registry/gcs-billing",
        SecretString=json.dumps({"service_account_key_json": secret}),
    )
    flow: Flow = await make_flow(
        gcs_endpoint=google.url, gcp_oauth_token_endpoint=google.url + "/token", **settings
    )
    flow.arborist.grant("submitter", "reader", PROJECT)
    return flow


async def patch(flow: Flow, name: str, body: dict[str, Any]) -> Any:
    current = await flow.call("GET", f"/admin/buckets/{name}", headers=flow.admin)
    headers = {**flow.admin, "If-Match": current.headers["etag"]}
    return await flow.call("PATCH", f"/admin/buckets/{name}", json=body, headers=headers)


def billed(response: Any) -> list[str] | None:
    assert response.status_code == 200, response.text
    return parse_qs(urlsplit(response.json()["url"]).query).get("userProject")


async def test_user_project_only_from_the_allow_list_or_the_default(
    make_flow, moto, google
) -> None:
    flow = await start(make_flow, moto, google, gcp_billing_project=DEFAULT_PROJECT)
    body = gcs_bucket(
        "gcs-paid", requester_pays=True, billing_projects=["lab-billing-01", "lab-billing-02"]
    )
    await flow.register(body, None, ALL_OPS)
    presign = flow.presign

    assert billed(await presign("submitter", "gcs-paid", "k", "read")) == [DEFAULT_PROJECT]
    for project in ("lab-billing-01", "lab-billing-02", DEFAULT_PROJECT):
        answer = await presign("submitter", "gcs-paid", "k", "read", user_project=project)
        assert billed(answer) == [project]

    refused = await presign("submitter", "gcs-paid", "k", "read", user_project="someone-elses-1")
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"] == "billing_project_not_allowed"
    message = refused.json()["message"]
    assert "someone-elses-1" in message and "lab-billing-01" in message

    # The same rule inside a batch: only that item fails.
    items = [
        {"bucket": "gcs-paid", "key": "k", "op": "read", "user_project": "lab-billing-01"},
        {"bucket": "gcs-paid", "key": "k", "op": "read", "user_project": "someone-elses-1"},
    ]
    batch = await flow.call(
        "POST", "/presign/batch", json={"requests": items}, headers=flow.user("submitter")
    )
    results = batch.json()["results"]
    assert "url" in results[0] and results[1]["status"] == 403
    assert results[1]["error"]["code"] == "billing_project_not_allowed"

    # Malformed ids never get as far as the list.
    bad = await presign("submitter", "gcs-paid", "k", "read", user_project="Not_A_Project")
    assert bad.status_code == 400


async def test_an_empty_list_allows_only_the_default_and_without_one_nothing(
    make_flow, moto, google
) -> None:
    flow = await start(make_flow, moto, google)  # no GCP_BILLING_PROJECT
    await flow.register(gcs_bucket("gcs-plain"), None, ALL_OPS)
    refused = await flow.presign("submitter", "gcs-plain", "k", "read", user_project="lab-proj-01")
    assert refused.status_code == 403
    assert "no project may be named" in refused.json()["message"]
    assert billed(await flow.presign("submitter", "gcs-plain", "k", "read")) is None

    # An admin adds the project: allowed at once.
    patched = await patch(flow, "gcs-plain", {"billing_projects": ["lab-proj-01"]})
    assert patched.status_code == 200, patched.text
    answer = await flow.presign("submitter", "gcs-plain", "k", "read", user_project="lab-proj-01")
    assert billed(answer) == ["lab-proj-01"]


async def test_billing_projects_are_validated_stored_and_shown(make_flow, moto, google) -> None:
    flow = await start(make_flow, moto, google)
    create = "/admin/buckets"
    problems = [
        (gcs_bucket("gcs-a", billing_projects="lab-proj-01"), "billing_projects"),
        (gcs_bucket("gcs-a", billing_projects=["UPPER-case-1"]), "billing_projects"),
        (gcs_bucket("gcs-a", billing_projects=["short"]), "billing_projects"),
        (gcs_bucket("gcs-a", billing_projects=["ends-with-dash-"]), "billing_projects"),
        (gcs_bucket("gcs-a", billing_projects=[f"lab-proj-{i:03}" for i in range(33)]), "32"),
        (gcs_bucket("gcs-a", billing_projects=[None]), "billing_projects"),
        (
            {
                "name": "aws-a",
                "provider": "aws",
                "auth_mode": "workload_identity",
                "billing_projects": ["lab-proj-01"],
            },
            "gcp",
        ),
    ]
    for body, said in problems:
        answer = await flow.call("POST", create, json=body, headers=flow.admin)
        assert answer.status_code == 400, (body, answer.text)
        assert said in answer.json()["message"], answer.text
    assert (await flow.call("GET", create, headers=flow.admin)).json() == []

    projects = [f"lab-proj-{i:03}" for i in range(32)]
    body = gcs_bucket("gcs-a", billing_projects=[*projects, projects[0]])
    created = await flow.call("POST", create, json=body, headers=flow.admin)
    assert created.status_code == 201, created.text
    shown = await flow.call("GET", "/admin/buckets/gcs-a", headers=flow.admin)
    assert shown.json()["billing_projects"] == projects  # duplicates dropped, order kept
    resolved = await flow.call("GET", "/resolve/gcs-a", headers=flow.user("submitter"))
    assert resolved.json()["billing_projects"] == projects

    cleared = await patch(flow, "gcs-a", {"billing_projects": None})
    assert cleared.status_code == 400
    emptied = await patch(flow, "gcs-a", {"billing_projects": []})
    assert emptied.status_code == 200, emptied.text
    shown = await flow.call("GET", "/admin/buckets/gcs-a", headers=flow.admin)
    assert shown.json()["billing_projects"] == [] and shown.json()["version"] == 2
