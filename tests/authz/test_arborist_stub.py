"""The Arborist stub answers as Arborist's own ``/auth/request`` handler does (read from
uc-cdis/arborist ``arborist/auth.go`` and ``token.go``): each behaviour checked over HTTP."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.arborist import ArboristStub
from tests.support.fence import FenceIssuer

READ = {"service": "fence", "method": "read-storage"}
PROJECT = "/programs/DEV/projects/ABC"


def ask(
    arborist: ArboristStub,
    user: dict[str, Any] | None,
    *resources: str,
    action: dict[str, str] = READ,
) -> httpx.Response:
    body: dict[str, Any] = {
        "requests": [{"resource": resource, "action": action} for resource in resources]
    }
    if user is not None:
        body["user"] = user
    return httpx.post(arborist.url + "/auth/request", json=body, timeout=5)


def test_a_client_token_needs_the_clients_own_grant(arborist, issuer: FenceIssuer) -> None:
    arborist.grant("alice", "reader", PROJECT)
    token = issuer.token("alice", client_id="jupyter")
    assert ask(arborist, {"token": token}, PROJECT).json() == {"auth": False}
    arborist.grant_client("jupyter", "reader", "/programs")
    assert ask(arborist, {"token": token}, PROJECT).json() == {"auth": True}
    # The client's grant alone is not enough either: the user must hold it too.
    assert ask(arborist, {"token": token}, "/programs/OTHER").json() == {"auth": False}


def test_a_client_credentials_token_is_judged_on_the_client_alone(arborist, issuer) -> None:
    token = issuer.token(None, client_id="etl-bot")
    assert ask(arborist, {"token": token}, PROJECT).json() == {"auth": False}
    arborist.grant_client("etl-bot", "reader", PROJECT)
    assert ask(arborist, {"token": token}, PROJECT).json() == {"auth": True}


@pytest.mark.parametrize(
    "scopes", [["user", "data"], None, "openid data"], ids=["no-openid", "absent", "string"]
)
def test_a_token_without_the_openid_scope_list_is_401(arborist, issuer, scopes) -> None:
    arborist.grant("alice", "reader", PROJECT)
    response = ask(arborist, {"token": issuer.token("alice", scopes=scopes)}, PROJECT)
    assert response.status_code == 401
    assert "scope" in response.json()["error"]["message"]


def test_a_request_may_name_the_scopes_it_requires(arborist, issuer) -> None:
    arborist.grant("alice", "reader", PROJECT)
    token = issuer.token("alice", scopes=["openid", "user"])
    assert ask(arborist, {"token": token, "scope": ["user"]}, PROJECT).json() == {"auth": True}
    assert ask(arborist, {"token": token, "scope": ["data"]}, PROJECT).status_code == 401


def test_user_names_match_case_insensitively(arborist, issuer) -> None:
    arborist.grant("Alice@Example.org", "reader", PROJECT)
    for name in ("alice@example.org", "ALICE@EXAMPLE.ORG"):
        assert ask(arborist, {"token": issuer.token(name)}, PROJECT).json() == {"auth": True}
        assert ask(arborist, {"user_id": name}, PROJECT).json() == {"auth": True}


@pytest.mark.parametrize("path", ["/programs/a b", "/programs/", "/programs//DEV", "/"])
def test_paths_arborist_cannot_store_are_400(arborist, issuer, path) -> None:
    arborist.grant("alice", "reader", "/programs")
    response = ask(arborist, {"token": issuer.token("alice")}, path)
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "ltree syntax error" in message or "missing resource" in message


def test_an_over_long_label_is_400(arborist) -> None:
    response = ask(arborist, {"user_id": "alice"}, "/programs/" + "a" * 256)
    assert response.status_code == 400
    assert "too long" in response.json()["error"]["message"]


def test_a_path_without_a_leading_slash_is_a_tag_and_never_granted(arborist, issuer) -> None:
    arborist.grant("alice", "everything", "/programs")
    response = ask(arborist, {"token": issuer.token("alice")}, "programs/DEV")
    assert response.status_code == 200
    assert response.json() == {"auth": False}


def test_a_token_with_neither_user_nor_client_is_400(arborist, issuer) -> None:
    response = ask(arborist, {"token": issuer.token(None)}, PROJECT)
    assert response.status_code == 400
    assert "missing both username and policies" in response.json()["error"]["message"]
    no_context = issuer.token(None, context=None)
    assert ask(arborist, {"token": no_context}, PROJECT).status_code == 401


def test_no_token_means_the_anonymous_policies(arborist, issuer) -> None:
    assert ask(arborist, None, "/open/data").json() == {"auth": False}
    arborist.grant_anonymous("reader", "/open")
    assert ask(arborist, None, "/open/data").json() == {"auth": True}
    assert ask(arborist, None, PROJECT).json() == {"auth": False}
    # Anonymous grants hold for users too, with or without a token.
    assert ask(arborist, {"user_id": "nobody"}, "/open/data").json() == {"auth": True}
    assert ask(arborist, {"token": issuer.token("bob")}, "/open/data").json() == {"auth": True}
    # An empty user object is not anonymous: Arborist wants a token or a user_id in it.
    assert ask(arborist, {}, "/open/data").status_code == 400


def test_all_users_policies_hold_for_users_but_not_anonymous(arborist) -> None:
    arborist.grant_all_users("reader", "/shared")
    assert ask(arborist, {"user_id": "zoe"}, "/shared/x").json() == {"auth": True}
    assert ask(arborist, None, "/shared/x").json() == {"auth": False}


def test_a_username_request_needs_no_token(arborist) -> None:
    arborist.grant("carol", "reader", PROJECT)
    assert ask(arborist, {"user_id": "carol"}, PROJECT).json() == {"auth": True}
    assert ask(arborist, {"user_id": "dave"}, PROJECT).json() == {"auth": False}


def test_every_request_must_hold_and_the_first_denial_answers(arborist) -> None:
    arborist.grant("carol", "reader", PROJECT)
    assert ask(arborist, {"user_id": "carol"}, PROJECT, PROJECT + "/x").json() == {"auth": True}
    assert ask(arborist, {"user_id": "carol"}, PROJECT, "/other").json() == {"auth": False}
    # After a denial Arborist stops looking, so a malformed later request does not matter...
    assert ask(arborist, {"user_id": "carol"}, "/other", "/bad path").json() == {"auth": False}
    # ...but before one it does.
    assert ask(arborist, {"user_id": "carol"}, PROJECT, "/bad path").status_code == 400


def test_an_unreadable_token_and_broken_keys_are_401(arborist, issuer) -> None:
    arborist.grant("alice", "reader", PROJECT)
    assert ask(arborist, {"token": "not-a-jwt"}, PROJECT).status_code == 401
    arborist.jwks_broken = True
    response = ask(arborist, {"token": issuer.token("alice")}, PROJECT)
    assert response.status_code == 401
    assert "error decoding token" in response.json()["error"]["message"]
    # A user_id request involves no token, so Arborist's keys do not matter to it.
    assert ask(arborist, {"user_id": "alice"}, PROJECT).json() == {"auth": True}


def test_malformed_bodies_are_400(arborist) -> None:
    assert ask(arborist, {"user_id": "a", "extra": 1}, PROJECT).status_code == 400
    response = httpx.post(arborist.url + "/auth/request", json={"user": {"user_id": "a"}})
    assert response.status_code == 400
    assert "missing resources" in response.json()["error"]["message"]
    response = httpx.post(
        arborist.url + "/auth/request",
        json={"user": {"user_id": "a"}, "requests": [{"resource": PROJECT}]},
    )
    assert response.status_code == 400
