"""Vault KV v2 backend against a stub speaking Vault's KV v2 and Kubernetes-auth formats."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.errors import SecretNotFound, SecretUnavailable
from app.secrets.base import SecretRef, parse_secret_ref
from app.secrets.vault import VaultResolver
from tests.secrets.conftest import FakeClock
from tests.secrets.stubs import VaultStub

V1 = {"access_key_id": "AKIAVAULT1", "secret_access_key": "vault-secret-one"}
V2 = {"access_key_id": "AKIAVAULT2", "secret_access_key": "vault-secret-two"}
REF = "vault://secret/gen3/buckets/data-a"


def ref(raw: str = REF) -> SecretRef:
    return parse_secret_ref(raw, "aws_sm")


@pytest.fixture
def jwt_file(tmp_path: Path, vault_stub: VaultStub) -> Path:
    path = tmp_path / "token"
    path.write_text(vault_stub.jwt + "\n")
    return path


@pytest.fixture
async def resolver(
    vault_stub: VaultStub, jwt_file: Path, clock: FakeClock
) -> AsyncIterator[VaultResolver]:
    backend = VaultResolver(addr=vault_stub.url, jwt_path=jwt_file, clock=clock)
    yield backend
    await backend.aclose()


async def test_reads_latest_and_pinned_versions(vault_stub: VaultStub, resolver: VaultResolver):
    vault_stub.put("secret/gen3/buckets/data-a", V1)
    vault_stub.put("secret/gen3/buckets/data-a", V2)

    latest = await resolver.get(ref(), None)
    pinned = await resolver.get(ref(), "1")

    assert (latest, latest.version) == (V2, "2")
    assert (pinned, pinned.version) == (V1, "1")


async def test_logs_in_once_and_reuses_the_token(vault_stub: VaultStub, resolver: VaultResolver):
    vault_stub.put("secret/gen3/buckets/data-a", V1)

    results = await asyncio.gather(*(resolver.get(ref(), None) for _ in range(10)))

    assert all(result == V1 for result in results)
    assert vault_stub.calls["login"] == 1
    assert len(set(vault_stub.read_tokens)) == 1
    assert vault_stub.read_tokens[0] in vault_stub.tokens


async def test_renews_before_the_lease_ends(
    vault_stub: VaultStub, resolver: VaultResolver, clock: FakeClock
):
    vault_stub.lease_duration = 300
    vault_stub.put("secret/gen3/buckets/data-a", V1)
    await resolver.get(ref(), None)

    clock.advance(150)  # half the lease: nothing to do yet
    await resolver.get(ref(), None)
    assert vault_stub.calls["renew"] == 0

    clock.advance(60)  # past two thirds of the lease, still before its end
    await resolver.get(ref(), None)
    assert vault_stub.calls["renew"] == 1
    assert vault_stub.calls["login"] == 1
    assert len(set(vault_stub.read_tokens)) == 1


async def test_logs_in_again_when_renewal_is_refused(
    vault_stub: VaultStub, resolver: VaultResolver, clock: FakeClock
):
    vault_stub.lease_duration = 300
    vault_stub.put("secret/gen3/buckets/data-a", V1)
    await resolver.get(ref(), None)

    vault_stub.refuse_renewal = True
    clock.advance(250)
    assert await resolver.get(ref(), None) == V1
    assert vault_stub.calls["renew"] == 1
    assert vault_stub.calls["login"] == 2


async def test_logs_in_again_when_the_lease_cannot_be_extended(
    vault_stub: VaultStub, resolver: VaultResolver, clock: FakeClock
):
    vault_stub.lease_duration = 300
    vault_stub.put("secret/gen3/buckets/data-a", V1)
    await resolver.get(ref(), None)

    vault_stub.lease_duration = 52  # renewal hits the max TTL: ~50 s were left anyway
    clock.advance(250)
    await resolver.get(ref(), None)
    assert (vault_stub.calls["renew"], vault_stub.calls["login"]) == (1, 1)

    clock.advance(40)  # due again: a renewal cannot help, so log in
    await resolver.get(ref(), None)
    assert (vault_stub.calls["renew"], vault_stub.calls["login"]) == (1, 2)


async def test_logs_in_again_after_a_403(vault_stub: VaultStub, resolver: VaultResolver):
    vault_stub.put("secret/gen3/buckets/data-a", V1)
    await resolver.get(ref(), None)

    vault_stub.revoke_all()
    assert await resolver.get(ref(), None) == V1
    assert vault_stub.calls["login"] == 2
    assert vault_stub.read_tokens[-2] != vault_stub.read_tokens[-1]


async def test_a_static_token_never_logs_in(vault_stub: VaultStub):
    vault_stub.put("secret/gen3/buckets/data-a", V1)
    backend = VaultResolver(addr=vault_stub.url, token=vault_stub.root_token)
    denied = VaultResolver(addr=vault_stub.url, token="hvs.not-a-valid-token")
    try:
        assert await backend.get(ref(), None) == V1
        with pytest.raises(SecretNotFound, match="HTTP 403"):
            await denied.get(ref(), None)
        assert vault_stub.calls["login"] == 0
    finally:
        await backend.aclose()
        await denied.aclose()


async def test_missing_and_deleted_versions_are_not_found(
    vault_stub: VaultStub, resolver: VaultResolver
):
    vault_stub.put("secret/gen3/buckets/data-a", V1)
    vault_stub.put("secret/gen3/buckets/data-a", None)  # version 2, soft-deleted

    with pytest.raises(SecretNotFound, match="HTTP 404"):
        await resolver.get(ref("vault://secret/gen3/nothing-here"), None)
    with pytest.raises(SecretNotFound):
        await resolver.get(ref(), None)
    with pytest.raises(SecretNotFound):
        await resolver.get(ref(), "7")
    assert await resolver.get(ref(), "1") == V1


async def test_non_string_values_are_refused_by_key_name(
    vault_stub: VaultStub, resolver: VaultResolver
):
    vault_stub.put("secret/gen3/buckets/data-a", {"nested": {"secret": "vault-nested-secret"}})
    with pytest.raises(SecretNotFound, match=r"\['nested'\]") as caught:
        await resolver.get(ref(), None)
    assert "vault-nested-secret" not in str(caught.value)


async def test_a_sealed_or_unreachable_vault_is_unavailable(
    vault_stub: VaultStub, resolver: VaultResolver
):
    vault_stub.put("secret/gen3/buckets/data-a", V1)
    vault_stub.fail_with = 503
    with pytest.raises(SecretUnavailable, match="HTTP 503"):
        await resolver.get(ref(), None)

    vault_stub.fail_with = None
    await resolver.get(ref(), None)
    vault_stub.stop()
    with pytest.raises(SecretUnavailable, match="unreachable"):
        await resolver.get(ref(), None)


async def test_a_rejected_login_is_unavailable(vault_stub: VaultStub, tmp_path: Path):
    bad_jwt = tmp_path / "token"
    bad_jwt.write_text("not-the-right-jwt")
    missing = VaultResolver(addr=vault_stub.url, jwt_path=tmp_path / "absent")
    rejected = VaultResolver(addr=vault_stub.url, jwt_path=bad_jwt)
    try:
        with pytest.raises(SecretUnavailable, match="login refused"):
            await rejected.get(ref(), None)
        with pytest.raises(SecretUnavailable, match="service-account token"):
            await missing.get(ref(), None)
    finally:
        await rejected.aclose()
        await missing.aclose()


async def test_tokens_and_values_stay_out_of_logs(
    vault_stub: VaultStub, resolver: VaultResolver, caplog: pytest.LogCaptureFixture
):
    vault_stub.put("secret/gen3/buckets/data-a", V1)
    with caplog.at_level(logging.DEBUG):
        await resolver.get(ref(), None)
        vault_stub.revoke_all()
        await resolver.get(ref(), None)
    assert vault_stub.calls["login"] == 2
    issued = [token for token in vault_stub.read_tokens if token]
    for secret in [*issued, vault_stub.jwt, "vault-secret-one"]:
        assert secret not in caplog.text
    assert "hvs." not in repr(resolver._lease)
