"""ArboristAuthorizer against the Arborist stub over HTTP: principals, authorize_all, strict
answers, and what decisions are cached under."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from app.authz.arborist import ArboristAuthorizer, DecisionCache, LocalPolicyAuthorizer
from app.authz.policy import PolicyDocument
from app.authz.principals import Principal
from app.authz.tokens import HttpJwks, TokenVerifier
from app.errors import DependencyUnavailable
from tests.support.arborist import ArboristStub
from tests.support.fence import FenceIssuer

PROJECT = "/programs/DEV/projects/ABC"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def authorizer(
    arborist: ArboristStub, http: httpx.AsyncClient, ttl: float = 30
) -> ArboristAuthorizer:
    return ArboristAuthorizer(arborist.url, http, timeout=1.0, decisions=DecisionCache(ttl, 1000))


async def identity(issuer: FenceIssuer, http: httpx.AsyncClient, user: str, **kwargs):  # type: ignore[no-untyped-def]
    verifier = TokenVerifier(
        HttpJwks(issuer.user_api + "/.well-known/jwks", http, ttl=60), issuer=issuer.user_api
    )
    return await verifier.verify(issuer.token(user, **kwargs))


async def test_token_username_and_anonymous_principals(arborist, issuer, http) -> None:
    arborist.grant("carol", "reader", PROJECT)
    arborist.grant_anonymous("reader", "/open")
    authz = authorizer(arborist, http, ttl=0)
    carol = await identity(issuer, http, "carol")
    assert await authz.authorize(carol, "fence", "read-storage", PROJECT)
    assert await authz.authorize(carol.principal, "fence", "read-storage", PROJECT)
    assert await authz.authorize(Principal.of_user("CAROL"), "fence", "read-storage", PROJECT)
    assert not await authz.authorize(Principal.of_user("dave"), "fence", "read-storage", PROJECT)
    assert not await authz.authorize(Principal.anonymous(), "fence", "read-storage", PROJECT)
    assert await authz.authorize(Principal.anonymous(), "fence", "read-storage", "/open/x")
    sent = [request.get("user") for request in arborist.requests]
    assert sent[0] == {"token": carol.token}
    assert sent[2] == {"user_id": "CAROL"}
    assert "user" not in arborist.requests[4]


async def test_authorize_all_asks_once_and_needs_every_pair(arborist, issuer, http) -> None:
    arborist.grant("carol", "reader", PROJECT)
    arborist.grant("carol", "writer", PROJECT + "/incoming")
    authz = authorizer(arborist, http, ttl=0)
    carol = Principal.of_user("carol")
    both = ["read-storage", "write-storage"]
    assert await authz.authorize_all(carol, "fence", both, [PROJECT + "/incoming"])
    assert len(arborist.requests) == 1
    assert len(arborist.requests[0]["requests"]) == 2
    assert not await authz.authorize_all(carol, "fence", both, [PROJECT, PROJECT + "/incoming"])
    assert len(arborist.requests[1]["requests"]) == 4
    with pytest.raises(ValueError):
        await authz.authorize_all(carol, "fence", [], [PROJECT])


async def test_decisions_are_cached_per_principal_never_under_a_token(
    arborist, issuer, http
) -> None:
    arborist.grant("carol", "reader", PROJECT)
    authz = authorizer(arborist, http, ttl=30)
    carol = await identity(issuer, http, "carol")
    for who in (carol, carol.principal, Principal.of_user("carol"), Principal.of_user("Carol")):
        assert await authz.authorize(who, "fence", "read-storage", PROJECT)
    # One question for the token (twice), one for the user name (in either case).
    assert arborist.call_count == 2
    keys = [key[0] for key in authz.decisions.cache._entries]
    assert sorted(keys) == sorted([f"token:{carol.token_hash}", "user:carol"])
    assert all(carol.token not in str(key) for key in authz.decisions.cache._entries)
    assert carol.token not in repr(carol.principal)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (401, {"error": {"message": "error decoding token: no keys", "code": 401}}),
        (400, {"error": {"message": "could not authorize user: pq: ltree syntax error"}}),
        (403, {"error": {"message": "unauthorized", "code": 403}}),
        (500, {"error": {"message": "db down", "code": 500}}),
        (200, {"auth": "false"}),
        (200, {"auth": 1}),
        (200, {}),
        (200, ["auth", True]),
        (201, {"auth": True}),
    ],
)
async def test_anything_but_a_boolean_answer_is_503_and_not_cached(
    arborist, issuer, http, caplog, status, body
) -> None:
    carol = await identity(issuer, http, "carol")
    authz = authorizer(arborist, http, ttl=30)
    arborist.answer_with = (status, body)
    caplog.set_level(logging.WARNING, logger="app.authz.arborist")
    for _ in range(2):
        with pytest.raises(DependencyUnavailable):
            await authz.authorize(carol, "fence", "read-storage", PROJECT)
    assert arborist.call_count == 2
    assert "arborist gave no decision" in caplog.text
    assert all(carol.token not in repr(record.__dict__) for record in caplog.records)


@pytest.mark.parametrize("status", [200, 401, 502])
async def test_a_non_json_or_non_object_answer_is_503(arborist, http, status) -> None:
    authz = authorizer(arborist, http, ttl=0)
    user = Principal.of_user("x")
    arborist.answer_raw = (status, b"<html>bad gateway</html>")
    with pytest.raises(DependencyUnavailable):
        await authz.authorize(user, "fence", "read-storage", PROJECT)
    arborist.answer_raw = None
    arborist.answer_with = (200, "plain text")  # JSON, but not an object
    with pytest.raises(DependencyUnavailable):
        await authz.authorize(user, "fence", "read-storage", PROJECT)


async def test_arborists_message_is_logged_without_the_token(
    arborist, issuer, http, caplog
) -> None:
    carol = await identity(issuer, http, "carol")
    arborist.answer_with = (
        401,
        {"error": {"message": f"error decoding token {carol.token}: bad", "code": 401}},
    )
    caplog.set_level(logging.WARNING, logger="app.authz.arborist")
    with pytest.raises(DependencyUnavailable):
        await authorizer(arborist, http).authorize(carol, "fence", "read-storage", PROJECT)
    logged = [record for record in caplog.records if record.msg == "arborist gave no decision"]
    assert logged and logged[0].arborist_message == "error decoding token [token]: bad"
    assert logged[0].status == 401


async def test_local_policy_authorizer_takes_principals(issuer, http) -> None:
    document = PolicyDocument(
        {
            "authz": {
                "roles": [
                    {
                        "id": "r",
                        "permissions": [
                            {"id": "r", "action": {"service": "fence", "method": "read-storage"}}
                        ],
                    }
                ],
                "policies": [
                    {"id": "p", "role_ids": ["r"], "resource_paths": [PROJECT]},
                    {"id": "open", "role_ids": ["r"], "resource_paths": ["/open"]},
                ],
                "anonymous_policies": ["open"],
            },
            "users": {"Carol": {"policies": ["p"]}},
        }
    )
    local = LocalPolicyAuthorizer(document)
    carol = await identity(issuer, http, "carol")
    assert await local.authorize(carol, "fence", "read-storage", PROJECT)
    assert await local.authorize(Principal.of_user("CAROL"), "fence", "read-storage", PROJECT)
    assert not await local.authorize(Principal.anonymous(), "fence", "read-storage", PROJECT)
    assert await local.authorize(Principal.anonymous(), "fence", "read-storage", "/open/a")
    assert await local.authorize_all(carol, "fence", ["read-storage"], [PROJECT, "/open/b"])
    assert not await local.authorize_all(
        carol, "fence", ["read-storage", "write-storage"], [PROJECT]
    )
    # A bare token principal names nobody the local file knows.
    assert not await local.authorize(
        Principal.of_token(carol.token), "fence", "read-storage", PROJECT
    )
