"""A token issuer shaped like Fence: RS256 keys served as JWKS over HTTP, Fence-shaped claims."""

from __future__ import annotations

import json
import time
import uuid
from http.server import BaseHTTPRequestHandler
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.net import BackgroundHTTPServer


def _jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": kid, "alg": "RS256", "use": "sig"})
    return jwk


class _JwksHandler(BaseHTTPRequestHandler):
    def log_message(self, *_args: Any) -> None:
        pass

    def do_GET(self) -> None:
        issuer: FenceIssuer = self.server.owner.issuer  # type: ignore[attr-defined]
        if self.path != "/user/.well-known/jwks":
            self.send_error(404)
            return
        issuer.jwks_fetches += 1
        body = json.dumps({"keys": [_jwk(key, kid) for kid, key in issuer.published.items()]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())


class FenceIssuer:
    """Mints access tokens and publishes their keys at ``{user_api}/.well-known/jwks``."""

    def __init__(self) -> None:
        self.kid = "fence-key-1"
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.published: dict[str, rsa.RSAPrivateKey] = {self.kid: self.key}
        self.jwks_fetches = 0
        self.server = BackgroundHTTPServer(_JwksHandler)
        self.server.issuer = self  # type: ignore[attr-defined]

    def start(self) -> FenceIssuer:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    @property
    def user_api(self) -> str:
        return self.server.url + "/user"

    def rotate(self) -> str:
        """Publish a new signing key (as Fence does on key rotation) and sign with it."""
        self.kid = f"fence-key-{len(self.published) + 1}"
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.published[self.kid] = self.key
        return self.kid

    def token(
        self,
        user: str | None = "alice",
        *,
        client_id: str | None = None,
        lifetime: int = 600,
        key: rsa.RSAPrivateKey | None = None,
        kid: str | None = None,
        **overrides: Any,
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.user_api,
            "sub": "1" if user else None,
            "aud": ["openid", "user"],
            "iat": now,
            "exp": now + lifetime,
            "jti": uuid.uuid4().hex,
            "pur": "access",
            "scope": ["openid", "user", "data"],
            "context": {"user": {"name": user, "is_admin": False}} if user else {},
        }
        if client_id:
            claims["azp"] = client_id
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(
            claims, key or self.key, algorithm="RS256", headers={"kid": kid or self.kid}
        )

    def decode(self, token: str) -> dict[str, Any]:
        kid = jwt.get_unverified_header(token).get("kid")
        key = self.published[kid].public_key()
        return jwt.decode(token, key, algorithms=["RS256"], options={"verify_aud": False})
