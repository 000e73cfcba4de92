"""Arborist's ``/auth/mapping`` (uc-cdis/arborist ``handleAuthMappingGET``/``POST``): the stub
answers gen3authz's own client as Arborist does, and the authorizers read which paths hold an
action from it, strictly."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from gen3authz.client.arborist.async_client import ArboristClient

from app.authz.arborist import ArboristAuthorizer, DecisionCache, LocalPolicyAuthorizer
from app.authz.policy import PolicyDocument
from app.authz.principals import Principal
from app.errors import DependencyUnavailable
from tests.support.fence import FenceIssuer

PROJECT = "/programs/DEV/projects/ABC"
REGISTER = {"service": "bucket-registry", "method": "bucket_register"}
READ = {"service": "fence", "method": "read-storage"}


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def test_the_stub_answers_gen3authz_auth_mapping(arborist, issuer: FenceIssuer) -> None:
    arborist.grant("carol", "bucket_register", PROJECT)
    arborist.grant("carol", "reader", PROJECT)
    arborist.grant_anonymous("reader", "/open")
    arborist.grant_all_users("reader", "/everyone")
    client = ArboristClient(arborist_base_url=arborist.url)
    by_token = await client.auth_mapping(jwt=issuer.token("carol"))
    assert by_token == {
        PROJECT: [REGISTER, READ],
        "/open": [READ],
        "/everyone": [READ],
    }
    assert await client.auth_mapping(username="CAROL") == by_token
    assert await client.auth_mapping() == {"/open": [READ]}
    sent = arborist.mapping_requests
    assert sent[0]["token"].startswith("bearer ") and not sent[0]["body"]
    assert json.loads(sent[1]["body"]) == {"username": "CAROL"} and sent[1]["token"] is None
    assert (sent[2]["token"], sent[2]["body"]) == (None, b"")


async def test_the_stub_refuses_as_arborist_does(arborist, issuer: FenceIssuer) -> None:
    url = arborist.url + "/auth/mapping"
    async with httpx.AsyncClient() as http:
        bad = await http.post(url, headers={"Authorization": "bearer not-a-jwt"})
        assert bad.status_code == 401
        assert "jwt decode failed" in bad.json()["error"]["message"]
        both = await http.post(url, json={"username": "a", "clientID": "b"})
        assert both.status_code == 400
        arborist.grant_client("jupyter", "reader", "/programs")
        client = await http.post(url, json={"clientID": "jupyter"})
        assert client.json() == {"/programs": [READ]}
        # A user's token naming a client: the user's mapping (Arborist ignores the client).
        arborist.grant("dora", "bucket_register", PROJECT)
        token = issuer.token("dora", client_id="jupyter")
        answer = await http.post(url, headers={"Authorization": f"bearer {token}"})
        assert answer.json() == {PROJECT: [REGISTER]}


async def test_granted_resources_filters_by_action_and_wildcards(
    arborist, issuer: FenceIssuer, http
) -> None:
    arborist.grant("carol", "bucket_register", PROJECT)
    arborist.grant("carol", "reader", "/programs/DEV/projects/XYZ")
    arborist.grant("carol", "everything", "/programs/WILD")
    authz = ArboristAuthorizer(arborist.url, http, timeout=1.0, decisions=DecisionCache(30, 100))
    token = issuer.token("carol")
    principal = Principal.of_token(token)
    paths = await authz.granted_resources(principal, "bucket-registry", "bucket_register")
    assert paths == (PROJECT, "/programs/WILD")
    assert arborist.mapping_requests[-1]["token"] == f"bearer {token}"
    # Cached like a decision.
    again = await authz.granted_resources(principal, "bucket-registry", "bucket_register")
    assert again == paths and len(arborist.mapping_requests) == 1
    by_name = await authz.granted_resources(Principal.of_user("carol"), "fence", "read-storage")
    assert by_name == ("/programs/DEV/projects/XYZ", "/programs/WILD")
    assert await authz.granted_resources(Principal.anonymous(), "fence", "read-storage") == ()


@pytest.mark.parametrize(
    "answer",
    [
        (200, {"/p": "bucket_register"}),
        (200, {"/p": [{"service": "bucket-registry"}]}),
        (200, ["/p"]),
        (200, "Healthy"),
        (401, {"error": {"message": "could not fetch keys", "code": 401}}),
        (500, {"error": {"message": "mapping query failed", "code": 500}}),
    ],
)
async def test_anything_but_a_mapping_is_503_and_not_cached(
    arborist, issuer: FenceIssuer, http, answer
) -> None:
    authz = ArboristAuthorizer(arborist.url, http, timeout=1.0, decisions=DecisionCache(30, 100))
    principal = Principal.of_token(issuer.token("carol"))
    arborist.answer_with = answer
    with pytest.raises(DependencyUnavailable):
        await authz.granted_resources(principal, "bucket-registry", "bucket_register")
    arborist.answer_with = None
    arborist.grant("carol", "bucket_register", PROJECT)
    paths = await authz.granted_resources(principal, "bucket-registry", "bucket_register")
    assert paths == (PROJECT,)


async def test_arborist_down_is_503(arborist, issuer: FenceIssuer, http) -> None:
    authz = ArboristAuthorizer(arborist.url, http, timeout=1.0, decisions=DecisionCache(0, 100))
    arborist.stop()
    with pytest.raises(DependencyUnavailable):
        await authz.granted_resources(Principal.of_user("carol"), "fence", "read-storage")


async def test_the_local_policy_answers_the_same_mapping() -> None:
    document = PolicyDocument(
        {
            "authz": {
                "roles": [
                    {"id": "registrant", "permissions": [{"id": "r", "action": REGISTER}]},
                    {"id": "reader", "permissions": [{"id": "x", "action": READ}]},
                ],
                "policies": [
                    {"id": "abc", "role_ids": ["registrant"], "resource_paths": [PROJECT]},
                    {"id": "open", "role_ids": ["reader"], "resource_paths": ["/open"]},
                ],
                "anonymous_policies": ["open"],
            },
            "users": {"carol": {"policies": ["abc"]}},
        }
    )
    local = LocalPolicyAuthorizer(document)
    carol = Principal.of_user("Carol")
    assert await local.granted_resources(carol, "bucket-registry", "bucket_register") == (PROJECT,)
    assert await local.granted_resources(carol, "fence", "read-storage") == ("/open",)
    assert await local.granted_resources(Principal.anonymous(), "bucket-registry", "x") == ()
