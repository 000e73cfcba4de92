"""Service tokens from a second issuer (shaped like Kubernetes projected ServiceAccount tokens)
and the Authenticator that routes a bearer token to the right verifier."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Iterator

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from fastapi import FastAPI

from app.api.deps import TrustedOrUserCallerDep
from app.authz.callers import Authenticator, ServiceCaller, ServiceTokenVerifier
from app.authz.tokens import HttpJwks, Identity, TokenVerifier
from app.config import Settings
from app.db import migrate
from app.errors import AccessDenied, Unauthenticated
from app.main import create_app
from tests.support.database import run_in_thread
from tests.support.fence import FenceIssuer, ServiceAccountIssuer

FENCE_SA = "system:serviceaccount:default:fence"


@pytest.fixture(scope="module", params=["RS256", "ES256"])
def cluster(request: pytest.FixtureRequest) -> Iterator[ServiceAccountIssuer]:
    issuer = ServiceAccountIssuer(request.param).start()
    yield issuer
    issuer.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def authenticator(
    issuer: FenceIssuer, cluster: ServiceAccountIssuer, http: httpx.AsyncClient
) -> Authenticator:
    users = TokenVerifier(
        HttpJwks(issuer.user_api + "/.well-known/jwks", http, ttl=60), issuer=issuer.user_api
    )
    services = ServiceTokenVerifier(
        HttpJwks(cluster.jwks_url, http, ttl=60, dependency="cluster"),
        issuer=cluster.issuer,
        audience="bucket-registry",
        trusted=[FENCE_SA],
    )
    return Authenticator(users, services)


async def test_a_trusted_service_token_is_a_service_caller(issuer, cluster, http) -> None:
    auth = authenticator(issuer, cluster, http)
    caller = await auth.authenticate(cluster.token("default", "fence"))
    assert isinstance(caller, ServiceCaller) and not isinstance(caller, Identity)
    assert caller.subject == FENCE_SA
    assert caller.service_account == ("default", "fence")
    assert caller.actor == FENCE_SA
    assert not hasattr(caller, "token")
    # Service tokens carry no scopes; requiring user scopes does not apply to them.
    again = await auth.authenticate(cluster.token(), scopes=["openid", "data"])
    assert isinstance(again, ServiceCaller)


async def test_an_untrusted_subject_is_403(issuer, cluster, http) -> None:
    auth = authenticator(issuer, cluster, http)
    with pytest.raises(AccessDenied, match="not a trusted caller") as caught:
        await auth.authenticate(cluster.token("default", "jupyter"))
    assert caught.value.status_code == 403


@pytest.mark.parametrize(
    "make",
    [
        lambda c: c.token(audience=["kubernetes.default.svc"]),
        lambda c: c.token(audience=[]),
        lambda c: c.token(lifetime=-10),
        lambda c: c.token(sub=None),
        lambda c: c.token(key=ServiceAccountIssuer(c.algorithm).key),
        lambda c: c.token(kid="not-published"),
        lambda c: c.token(nbf=4_000_000_000),
    ],
    ids=["wrong-aud", "no-aud", "expired", "no-sub", "wrong-key", "unknown-kid", "not-yet"],
)
async def test_bad_service_tokens_are_401(issuer, cluster, http, make) -> None:
    auth = authenticator(issuer, cluster, http)
    with pytest.raises(Unauthenticated) as caught:
        await auth.authenticate(make(cluster))
    assert caught.value.status_code == 401


def _hs256(claims: dict[str, object], secret: bytes, kid: str) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = {"alg": "HS256", "typ": "JWT", "kid": kid}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


async def test_algorithm_confusion_is_refused(issuer, cluster, http) -> None:
    public_pem = cluster.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = {"iss": cluster.issuer, "sub": FENCE_SA, "aud": ["bucket-registry"], "exp": 4e9}
    # An HMAC keyed with the published public key, the classic confusion attack.
    forged = _hs256(claims, public_pem, cluster.kid)
    other = "ES256" if cluster.algorithm == "RS256" else "RS256"
    wrong_family = jwt.encode(
        claims, ServiceAccountIssuer(other).key, algorithm=other, headers={"kid": cluster.kid}
    )
    auth = authenticator(issuer, cluster, http)
    for token in (forged, wrong_family):
        with pytest.raises(Unauthenticated):
            await auth.authenticate(token)


async def test_routing_by_issuer(issuer, cluster, http) -> None:
    auth = authenticator(issuer, cluster, http)
    user = await auth.authenticate(issuer.token("alice"))
    assert isinstance(user, Identity) and user.username == "alice"
    with pytest.raises(Unauthenticated, match="not a service token"):
        await auth.authenticate(cluster.token(), allow_service=False)
    with pytest.raises(Unauthenticated, match="not issued by this commons"):
        await auth.authenticate(issuer.token("alice", iss="https://elsewhere.example/user"))
    with pytest.raises(Unauthenticated, match="not a valid JWT"):
        await auth.authenticate("not-a-jwt")
    # A service token claiming Fence as issuer is checked against Fence's keys, and fails.
    with pytest.raises(Unauthenticated):
        await auth.authenticate(cluster.token(iss=issuer.user_api))
    without_services = Authenticator(auth.users)
    with pytest.raises(Unauthenticated):
        await without_services.authenticate(cluster.token())


async def test_verified_service_tokens_are_cached(issuer, cluster, http) -> None:
    auth = authenticator(issuer, cluster, http)
    token = cluster.token()
    first = await auth.authenticate(token)
    fetches = cluster.jwks_fetches
    cluster.jwks_status = 503
    try:
        for _ in range(50):
            assert await auth.authenticate(token) is first
    finally:
        cluster.jwks_status = 200
    assert cluster.jwks_fetches == fetches
    assert auth.services is not None and len(auth.services.cache) == 1


def test_service_token_settings_go_together(issuer) -> None:
    with pytest.raises(ValueError, match="together"):
        Settings(service_token_issuer="https://k8s.example")
    with pytest.raises(ValueError, match="differ"):
        Settings(
            user_api=issuer.user_api,
            service_token_issuer=issuer.user_api,
            service_token_jwks_url=issuer.user_api + "/.well-known/jwks",
        )
    settings = Settings(
        service_token_issuer="https://k8s.example",
        service_token_jwks_url="https://k8s.example/openid/v1/jwks",
        trusted_callers="system:serviceaccount:default:fence, system:serviceaccount:x:y",
    )
    assert settings.trusted_callers == [FENCE_SA, "system:serviceaccount:x:y"]
    assert settings.service_token_audience == "bucket-registry"


@pytest.fixture
async def trusted_app(make_settings, cluster, tmp_path) -> AsyncIterator[httpx.AsyncClient]:
    """The app configured for service tokens, plus one probe route on the new dependency."""
    settings = make_settings(
        f"sqlite+aiosqlite:///{tmp_path / 'registry.db'}",
        service_token_issuer=cluster.issuer,
        service_token_jwks_url=cluster.jwks_url,
        trusted_callers=FENCE_SA,
    )

    run_in_thread(migrate, settings.database_url)
    app: FastAPI = create_app(settings)

    @app.get("/probe/caller")
    async def probe(caller: TrustedOrUserCallerDep) -> dict[str, str]:
        who = caller.caller
        return {"kind": type(who).__name__, "actor": who.actor}

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://registry") as client:
            yield client


async def test_the_trusted_caller_dependency_over_http(trusted_app, issuer, cluster) -> None:
    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    fence = await trusted_app.get("/probe/caller", headers=bearer(cluster.token()))
    assert fence.json() == {"kind": "ServiceCaller", "actor": FENCE_SA}
    user = await trusted_app.get("/probe/caller", headers=bearer(issuer.token("alice")))
    assert user.json() == {"kind": "Identity", "actor": "alice"}
    stranger = await trusted_app.get(
        "/probe/caller", headers=bearer(cluster.token("default", "jupyter"))
    )
    assert stranger.status_code == 403 and "not a trusted caller" in stranger.text
    bad = await trusted_app.get("/probe/caller", headers=bearer(cluster.token(lifetime=-5)))
    assert bad.status_code == 401
    no_data = await trusted_app.get(
        "/probe/caller", headers=bearer(issuer.token("alice", scopes=["openid"]))
    )
    assert no_data.status_code == 401 and "'data'" in no_data.text
    # On the data path a trusted caller must say whom it acts for.
    presign = await trusted_app.post(
        "/presign",
        json={"bucket": "b", "key": "k", "op": "read"},
        headers=bearer(cluster.token()),
    )
    assert presign.status_code == 400 and "on_behalf_of: required" in presign.text
