"""GCP Secret Manager backend against a stub speaking ``versions/{v}:access``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.errors import SecretNotFound, SecretUnavailable
from app.secrets.base import SecretRef, parse_secret_ref
from app.secrets.gcp_sm import GcpSecretManagerResolver, GoogleDefaultTokenProvider, crc32c
from tests.secrets.stubs import GcpSecretManagerStub
from tests.support.net import BackgroundHTTPServer

SA_KEY = json.dumps({"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----X"})
V1 = {"service_account_key_json": SA_KEY}
V2 = {"service_account_key_json": SA_KEY.replace("X", "Y")}
REF = "gcp-sm://projects/gen3-prod/secrets/bucket-sa"


class Tokens:
    """Hands out ``tokens`` in order; each forced refresh moves to the next one."""

    def __init__(self, *tokens: str) -> None:
        self.tokens = list(tokens)
        self.index = 0
        self.requests: list[bool] = []

    async def token(self, *, force_refresh: bool = False) -> str:
        self.requests.append(force_refresh)
        if force_refresh:
            self.index += 1
        return self.tokens[min(self.index, len(self.tokens) - 1)]


def ref(raw: str = REF) -> SecretRef:
    return parse_secret_ref(raw, "aws_sm")


@pytest.fixture
async def resolver(gcp_stub: GcpSecretManagerStub) -> AsyncIterator[GcpSecretManagerResolver]:
    backend = GcpSecretManagerResolver(
        endpoint=gcp_stub.url, token_provider=Tokens("ya29.valid-access-token")
    )
    yield backend
    await backend.aclose()


def test_crc32c_matches_the_castagnoli_check_value():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0


async def test_reads_latest_and_pinned_versions(
    gcp_stub: GcpSecretManagerStub, resolver: GcpSecretManagerResolver
):
    gcp_stub.add_version("gen3-prod", "bucket-sa", json.dumps(V1).encode())
    gcp_stub.add_version("gen3-prod", "bucket-sa", json.dumps(V2).encode())

    latest = await resolver.get(ref(), None)
    pinned = await resolver.get(ref(), "1")

    assert (latest, latest.version) == (V2, "2")
    assert (pinned, pinned.version) == (V1, "1")
    assert json.loads(latest["service_account_key_json"])["type"] == "service_account"


async def test_a_rejected_token_is_refreshed_once(gcp_stub: GcpSecretManagerStub):
    gcp_stub.add_version("gen3-prod", "bucket-sa", json.dumps(V1).encode())
    tokens = Tokens("ya29.revoked", "ya29.valid-access-token")
    backend = GcpSecretManagerResolver(endpoint=gcp_stub.url, token_provider=tokens)
    never = GcpSecretManagerResolver(endpoint=gcp_stub.url, token_provider=Tokens("ya29.bad"))
    try:
        assert await backend.get(ref(), None) == V1
        assert tokens.requests == [False, True]
        with pytest.raises(SecretUnavailable, match="HTTP 401"):
            await never.get(ref(), None)
    finally:
        await backend.aclose()
        await never.aclose()


async def test_missing_and_forbidden_secrets_are_not_found(
    gcp_stub: GcpSecretManagerStub, resolver: GcpSecretManagerResolver
):
    gcp_stub.add_version("gen3-prod", "bucket-sa", json.dumps(V1).encode())
    gcp_stub.forbidden_projects.add("someone-else")

    with pytest.raises(SecretNotFound, match="HTTP 404"):
        await resolver.get(ref("gcp-sm://projects/gen3-prod/secrets/absent"), None)
    with pytest.raises(SecretNotFound, match="HTTP 404"):
        await resolver.get(ref(), "9")
    with pytest.raises(SecretNotFound, match="HTTP 403"):
        await resolver.get(ref("gcp-sm://projects/someone-else/secrets/bucket-sa"), None)


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_throttling_and_server_errors_are_unavailable(
    gcp_stub: GcpSecretManagerStub, resolver: GcpSecretManagerResolver, status: int
):
    gcp_stub.add_version("gen3-prod", "bucket-sa", json.dumps(V1).encode())
    gcp_stub.fail_with = status
    with pytest.raises(SecretUnavailable, match=f"HTTP {status}"):
        await resolver.get(ref(), None)


async def test_a_corrupted_payload_fails_its_checksum(
    gcp_stub: GcpSecretManagerStub, resolver: GcpSecretManagerResolver
):
    gcp_stub.add_version("gen3-prod", "bucket-sa", json.dumps(V1).encode())
    gcp_stub.corrupt_checksum = True
    with pytest.raises(SecretUnavailable, match="checksum") as caught:
        await resolver.get(ref(), None)
    assert "PRIVATE KEY" not in str(caught.value)


async def test_a_payload_that_is_not_json_is_refused_without_quoting_it(
    gcp_stub: GcpSecretManagerStub, resolver: GcpSecretManagerResolver
):
    gcp_stub.add_version("gen3-prod", "bucket-sa", b"-----BEGIN PRIVATE KEY-----raw")
    with pytest.raises(SecretNotFound, match="not valid JSON") as caught:
        await resolver.get(ref(), None)
    assert "PRIVATE KEY" not in str(caught.value)


async def test_an_unreachable_endpoint_is_unavailable(
    gcp_stub: GcpSecretManagerStub, resolver: GcpSecretManagerResolver
):
    gcp_stub.stop()
    with pytest.raises(SecretUnavailable, match="unreachable"):
        await resolver.get(ref(), None)


class _TokenEndpoint(BaseHTTPRequestHandler):
    """Google's OAuth2 token endpoint for the JWT-bearer grant a service-account key uses."""

    def log_message(self, *_args: Any) -> None:
        pass

    def do_POST(self) -> None:
        owner = self.server.owner  # type: ignore[attr-defined]
        form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        owner.grants.append(form["grant_type"][0])
        owner.issued += 1
        body = json.dumps(
            {
                "access_token": f"ya29.minted-{owner.issued}",
                "expires_in": 3600,
                "token_type": "Bearer",
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


async def test_default_credentials_mint_and_reuse_a_token(
    gcp_stub: GcpSecretManagerStub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    endpoint = BackgroundHTTPServer(_TokenEndpoint)
    endpoint.grants = []  # type: ignore[attr-defined]
    endpoint.issued = 0  # type: ignore[attr-defined]
    endpoint.start()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "sa.json"
    key_file.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "gen3-prod",
                "private_key_id": "k1",
                "private_key": key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ).decode(),
                "client_email": "bucket-registry@gen3-prod.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": f"{endpoint.url}/token",
            }
        )
    )
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    gcp_stub.valid_tokens = {"ya29.minted-1"}
    gcp_stub.add_version("gen3-prod", "bucket-sa", json.dumps(V1).encode())
    backend = GcpSecretManagerResolver(
        endpoint=gcp_stub.url, token_provider=GoogleDefaultTokenProvider()
    )
    try:
        assert await backend.get(ref(), None) == V1
        assert await backend.get(ref(), "1") == V1
        assert endpoint.grants == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]  # type: ignore[attr-defined]
    finally:
        await backend.aclose()
        endpoint.stop()


async def test_missing_default_credentials_are_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json"))
    with pytest.raises(SecretUnavailable, match="no Google credentials"):
        await GoogleDefaultTokenProvider().token()
