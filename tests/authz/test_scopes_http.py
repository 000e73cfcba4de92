"""Scopes, audience and forged key ids through the real app over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from app.main import create_app

FORGER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PRESIGN = {"bucket": "some-bucket", "key": "k/a", "op": "read"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_presign_without_the_data_scope_is_401_before_arborist(
    client, issuer, arborist
) -> None:
    response = await client.post(
        "/presign", json=PRESIGN, headers=bearer(issuer.token("alice", scopes=["openid", "user"]))
    )
    assert response.status_code == 401
    assert "'data'" in response.json()["message"]
    no_openid = await client.post(
        "/presign", json=PRESIGN, headers=bearer(issuer.token("alice", scopes=["data"]))
    )
    assert no_openid.status_code == 401 and "'openid'" in no_openid.json()["message"]
    assert arborist.call_count == 0
    # With the scopes (a list, or one space-separated string) the request gets past the check.
    for scopes in (["openid", "data"], "openid data"):
        ok = await client.post(
            "/presign", json=PRESIGN, headers=bearer(issuer.token("alice", scopes=scopes))
        )
        assert ok.status_code == 404, ok.text  # no such bucket: past authentication


async def test_admin_without_the_openid_scope_is_401_before_arborist(
    client, issuer, arborist
) -> None:
    response = await client.get(
        "/admin/buckets", headers=bearer(issuer.token("admin", scopes=["user", "data"]))
    )
    assert response.status_code == 401
    assert "'openid'" in response.json()["message"]
    assert arborist.call_count == 0
    # Admin routes do not need 'data'.
    admin = await client.get(
        "/admin/buckets", headers=bearer(issuer.token("admin", scopes=["openid"]))
    )
    assert admin.status_code == 200


@pytest.fixture
async def strict_client(make_settings, database_url) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        database_url,
        token_audience="bucket-registry",
        data_scopes="openid,data,storage",
        admin_scopes="openid,admin",
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://registry") as http:
            yield http


async def test_configured_scopes_and_audience(strict_client, issuer) -> None:
    aud = ["openid", "user", "bucket-registry"]
    admin = await strict_client.get(
        "/admin/buckets", headers=bearer(issuer.token("admin", aud=aud, scopes=["openid", "admin"]))
    )
    assert admin.status_code == 200
    wrong_aud = await strict_client.get(
        "/admin/buckets", headers=bearer(issuer.token("admin", scopes=["openid", "admin"]))
    )
    assert wrong_aud.status_code == 401 and "aud" in wrong_aud.json()["message"]
    missing = await strict_client.post(
        "/presign", json=PRESIGN, headers=bearer(issuer.token("alice", aud=aud))
    )
    assert missing.status_code == 401 and "'storage'" in missing.json()["message"]


async def test_forged_kid_while_fence_jwks_is_down_is_401_not_503(client, issuer, arborist) -> None:
    admin = bearer(issuer.token("admin"))
    assert (await client.get("/admin/buckets", headers=admin)).status_code == 200
    issuer.jwks_status = 503
    try:
        for attempt in range(3):
            forged = issuer.token("admin", key=FORGER, kid=f"forged-{attempt}")
            response = await client.get("/admin/buckets", headers=bearer(forged))
            assert response.status_code == 401, response.text
        # Tokens signed by Fence's real key keep passing: the cached key set survived.
        for user in ("admin", "admin"):
            fresh = bearer(issuer.token(user))
            assert (await client.get("/admin/buckets", headers=fresh)).status_code == 200
    finally:
        issuer.jwks_status = 200
