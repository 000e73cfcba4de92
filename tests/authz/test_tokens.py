"""The user-token verifier against the Fence stub's served JWKS: scopes, audience, the kid rules."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from app.authz.tokens import HttpJwks, TokenVerifier, parse_scopes, require_scopes
from app.errors import DependencyUnavailable, Unauthenticated
from tests.support.fence import FenceIssuer

FORGER = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def fence(issuer: FenceIssuer) -> Iterator[FenceIssuer]:
    issuer.jwks_status = 200
    yield issuer
    issuer.jwks_status = 200


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def jwks_for(fence: FenceIssuer, http: httpx.AsyncClient, **kwargs: float) -> HttpJwks:
    return HttpJwks(fence.user_api + "/.well-known/jwks", http, ttl=600, **kwargs)


def verifier(fence: FenceIssuer, http: httpx.AsyncClient, **kwargs: object) -> TokenVerifier:
    return TokenVerifier(jwks_for(fence, http), issuer=fence.user_api, **kwargs)  # type: ignore[arg-type]


def test_scope_claim_as_list_or_space_separated_string() -> None:
    assert parse_scopes(["openid", "data", 3]) == {"openid", "data"}
    assert parse_scopes("openid  data") == {"openid", "data"}
    assert parse_scopes(None) == frozenset()
    assert parse_scopes({"openid": True}) == frozenset()


async def test_missing_scopes_are_named_in_the_401(fence, http) -> None:
    tokens = verifier(fence, http)
    token = fence.token("alice", scopes=["openid", "user"])
    identity = await tokens.verify(token, scopes=["openid"])
    assert identity.scopes == {"openid", "user"}
    with pytest.raises(Unauthenticated, match="'data'") as caught:
        await tokens.verify(token, scopes=["openid", "data"])
    assert caught.value.status_code == 401
    # The scope check applies to the cached identity too, and on its own.
    with pytest.raises(Unauthenticated, match="'data'"):
        require_scopes(identity, ["data"])
    no_scope = fence.token("alice", scopes=None)
    with pytest.raises(Unauthenticated, match="'openid', 'data'"):
        await tokens.verify(no_scope, scopes=["openid", "data"])
    spaced = fence.token("alice", scopes="openid data")
    assert (await tokens.verify(spaced, scopes=["openid", "data"])).username == "alice"


async def test_audience_is_checked_only_when_configured(fence, http) -> None:
    listed = fence.token("alice", aud=["openid", "user", "bucket-registry"])
    other = fence.token("alice", aud=["openid", "user"])
    empty = fence.token("alice", aud=[])
    assert (await verifier(fence, http).verify(other)).username == "alice"
    strict = verifier(fence, http, audience="bucket-registry")
    assert (await strict.verify(listed)).username == "alice"
    with pytest.raises(Unauthenticated, match="aud"):
        await strict.verify(other)
    with pytest.raises(Unauthenticated, match="aud"):
        await strict.verify(empty)


async def test_forged_kid_during_a_fence_outage_is_401_and_valid_tokens_keep_passing(
    fence, http
) -> None:
    tokens = verifier(fence, http)
    assert (await tokens.verify(fence.token("alice"))).username == "alice"
    fetches = fence.jwks_fetches
    fence.jwks_status = 503
    for attempt in range(5):
        forged = fence.token("mallory", key=FORGER, kid=f"forged-{attempt}")
        with pytest.raises(Unauthenticated, match="unknown key") as caught:
            await tokens.verify(forged)
        assert caught.value.status_code == 401
    # One refetch was tried (and failed); the rest were rate-limited, and none dropped the set.
    assert fence.jwks_fetches == fetches + 1
    for user in ("alice", "bob"):
        assert (await tokens.verify(fence.token(user))).username == user


async def test_a_forged_kid_cannot_evict_the_key_set_even_when_it_expired(fence, http) -> None:
    """Past its TTL the set is served stale during an outage; a forged kid must not end that."""
    jwks = HttpJwks(fence.user_api + "/.well-known/jwks", http, ttl=0.2)
    tokens = TokenVerifier(jwks, issuer=fence.user_api)
    await tokens.verify(fence.token("alice"))
    fence.jwks_status = 503
    await asyncio.sleep(0.25)  # past the TTL, inside the grace period (another TTL)
    with pytest.raises(Unauthenticated):
        await tokens.verify(fence.token("mallory", key=FORGER, kid="forged"))
    assert (await tokens.verify(fence.token("bob"))).username == "bob"


async def test_no_key_set_at_all_is_503(fence, http) -> None:
    fence.jwks_status = 503
    with pytest.raises(DependencyUnavailable):
        await verifier(fence, http).verify(fence.token("alice"))


async def test_unknown_kids_are_remembered_and_refetches_rate_limited(fence, http) -> None:
    jwks = jwks_for(fence, http, min_refresh_interval=0)
    tokens = TokenVerifier(jwks, issuer=fence.user_api)
    await tokens.verify(fence.token("alice"))
    before = fence.jwks_fetches
    forged = fence.token("mallory", key=FORGER, kid="forged-a")
    for _ in range(3):
        with pytest.raises(Unauthenticated):
            await tokens.verify(forged)
    assert fence.jwks_fetches == before + 1  # negative-cached after the first refetch
    with pytest.raises(Unauthenticated):
        await tokens.verify(fence.token("mallory", key=FORGER, kid="forged-b"))
    assert fence.jwks_fetches == before + 2
    with pytest.raises(Unauthenticated):
        await tokens.verify(fence.token("mallory", key=FORGER, kid="x" * 1000))
    assert fence.jwks_fetches == before + 2  # absurd kids are not even looked for

    limited = TokenVerifier(jwks_for(fence, http, min_refresh_interval=60), issuer=fence.user_api)
    await limited.verify(fence.token("alice"))
    before = fence.jwks_fetches
    for attempt in range(10):
        with pytest.raises(Unauthenticated):
            await limited.verify(fence.token("mallory", key=FORGER, kid=f"burst-{attempt}"))
    assert fence.jwks_fetches == before + 1


async def test_key_rotation_is_picked_up(fence, http) -> None:
    tokens = verifier(fence, http)
    await tokens.verify(fence.token("alice"))
    old_kid, old_key = fence.kid, fence.key
    try:
        fence.rotate()
        assert (await tokens.verify(fence.token("bob"))).username == "bob"
    finally:
        fence.published.pop(fence.kid)
        fence.kid, fence.key = old_kid, old_key


def _hand_signed(fence: FenceIssuer, header: dict[str, object]) -> str:
    """A token with a header PyJWT would refuse to write, signed by Fence's real key."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    claims = {"iss": fence.user_api, "exp": 4_000_000_000, "pur": "access", "scope": ["openid"]}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = fence.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64(signature)}"


@pytest.mark.parametrize("kid", [7, ["a"], {"k": 1}], ids=["int", "list", "object"])
async def test_malformed_kid_headers_are_401(fence, http, kid) -> None:
    token = _hand_signed(fence, {"alg": "RS256", "typ": "JWT", "kid": kid})
    with pytest.raises(Unauthenticated) as caught:
        await verifier(fence, http).verify(token)
    assert caught.value.status_code == 401


async def test_a_missing_kid_is_accepted_only_from_a_one_key_set(fence, http) -> None:
    token = _hand_signed(fence, {"alg": "RS256", "typ": "JWT"})
    published = dict(fence.published)
    try:
        fence.published = {fence.kid: fence.key}
        assert (await verifier(fence, http).verify(token)).username is None
        fence.published = {**published, "spare": FORGER}
        with pytest.raises(Unauthenticated, match="unknown key"):
            await verifier(fence, http).verify(token)
    finally:
        fence.published = published


@pytest.mark.parametrize(
    "claims",
    [{"context": "x"}, {"context": {"user": "x"}}, {"context": {"user": {"name": 5}}}, {"azp": 3}],
)
async def test_odd_claim_shapes_are_not_500s(fence, http, claims) -> None:
    identity = await verifier(fence, http).verify(fence.token("alice", **claims))
    assert identity.username in (None, "alice")
    assert identity.client_id is None
