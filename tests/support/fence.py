"""Token issuers over real HTTP: one shaped like Fence (RS256, Fence-shaped access tokens) and
one shaped like a Kubernetes cluster issuing projected ServiceAccount tokens (RS256 or ES256)."""

from __future__ import annotations

import json
import ssl
import time
import uuid
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.support.net import BackgroundHTTPServer

DEFAULT_SCOPES = ("openid", "user", "data")
SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _jwk(key: SigningKey, kid: str) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        alg = "RS256"
    else:
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
        alg = "ES256"
    jwk.update({"kid": kid, "alg": alg, "use": "sig"})
    return jwk


def _alg(key: SigningKey) -> str:
    return "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"


class _JwksHandler(BaseHTTPRequestHandler):
    def log_message(self, *_args: Any) -> None:
        pass

    def do_GET(self) -> None:
        issuer: _Issuer = self.server.owner.issuer  # type: ignore[attr-defined]
        if self.path != issuer.jwks_path:
            self.send_error(404)
            return
        issuer.jwks_fetches += 1
        if issuer.jwks_status != 200:
            self.send_error(issuer.jwks_status)
            return
        body = json.dumps({"keys": [_jwk(key, kid) for kid, key in issuer.published.items()]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())


class _Issuer:
    jwks_path = "/.well-known/jwks"
    kid_prefix = "key"

    def __init__(self, *, tls: ssl.SSLContext | None = None) -> None:
        self.kid = f"{self.kid_prefix}-1"
        self.key: SigningKey = self._new_key()
        self.published: dict[str, SigningKey] = {self.kid: self.key}
        self.jwks_fetches = 0
        # Anything but 200 makes the JWKS endpoint fail with that status (an outage).
        self.jwks_status = 200
        self.server = BackgroundHTTPServer(_JwksHandler, tls=tls)
        self.server.issuer = self  # type: ignore[attr-defined]

    def _new_key(self) -> SigningKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def start(self) -> _Issuer:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    @property
    def jwks_url(self) -> str:
        return self.server.url + self.jwks_path

    def rotate(self) -> str:
        """Publish a new signing key (as the issuer does on key rotation) and sign with it."""
        self.kid = f"{self.kid_prefix}-{len(self.published) + 1}"
        self.key = self._new_key()
        self.published[self.kid] = self.key
        return self.kid

    def _sign(self, claims: dict[str, Any], key: SigningKey | None, kid: str | None) -> str:
        claims = {k: v for k, v in claims.items() if v is not None}
        signing_key = key or self.key
        return jwt.encode(
            claims, signing_key, algorithm=_alg(signing_key), headers={"kid": kid or self.kid}
        )

    def decode(self, token: str) -> dict[str, Any]:
        kid = jwt.get_unverified_header(token).get("kid")
        key = self.published[kid].public_key()
        return jwt.decode(token, key, algorithms=["RS256", "ES256"], options={"verify_aud": False})


class FenceIssuer(_Issuer):
    """Mints access tokens and publishes their keys at ``{user_api}/.well-known/jwks``."""

    jwks_path = "/user/.well-known/jwks"
    kid_prefix = "fence-key"

    def start(self) -> FenceIssuer:
        self.server.start()
        return self

    @property
    def user_api(self) -> str:
        return self.server.url + "/user"

    def token(
        self,
        user: str | None = "alice",
        *,
        client_id: str | None = None,
        lifetime: int = 600,
        key: SigningKey | None = None,
        kid: str | None = None,
        scopes: Iterable[str] | str | None = DEFAULT_SCOPES,
        aud: list[str] | str | None = None,
        **overrides: Any,
    ) -> str:
        """A Fence access token; ``scopes`` as Fence writes them (a list), or a string."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.user_api,
            "sub": "1" if user else None,
            "aud": aud
            if aud is not None
            else ["openid", "user", *([client_id] if client_id else [])],
            "iat": now,
            "exp": now + lifetime,
            "jti": uuid.uuid4().hex,
            "pur": "access",
            "scope": scopes if scopes is None or isinstance(scopes, str) else list(scopes),
            "context": {"user": {"name": user, "is_admin": False}} if user else {},
        }
        if client_id:
            claims["azp"] = client_id
        claims.update(overrides)
        return self._sign(claims, key, kid)


class ServiceAccountIssuer(_Issuer):
    """A cluster's ServiceAccount token issuer: keys at ``/openid/v1/jwks`` (RS256 or ES256)."""

    jwks_path = "/openid/v1/jwks"
    kid_prefix = "sa-key"

    def __init__(self, algorithm: str = "RS256", *, tls: ssl.SSLContext | None = None) -> None:
        self.algorithm = algorithm
        super().__init__(tls=tls)

    def _new_key(self) -> SigningKey:
        if self.algorithm == "ES256":
            return ec.generate_private_key(ec.SECP256R1())
        return super()._new_key()

    def start(self) -> ServiceAccountIssuer:
        self.server.start()
        return self

    @property
    def issuer(self) -> str:
        return self.server.url

    def token(
        self,
        namespace: str = "default",
        name: str = "fence",
        *,
        audience: list[str] | str | None = None,
        lifetime: int = 600,
        key: SigningKey | None = None,
        kid: str | None = None,
        **overrides: Any,
    ) -> str:
        """A projected ServiceAccount token, shaped as the kubelet requests them."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": f"system:serviceaccount:{namespace}:{name}",
            "aud": audience if audience is not None else ["bucket-registry"],
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": {"name": name, "uid": str(uuid.uuid4())},
                "pod": {"name": f"{name}-0", "uid": str(uuid.uuid4())},
            },
        }
        claims.update(overrides)
        return self._sign(claims, key, kid)
