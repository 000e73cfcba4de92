"""Local development mode: no Fence, no Arborist, no cloud account.

A throwaway RSA key signs tokens minted by ``bucket-registry dev-token`` and a local policy
file (Arborist's format) makes the authorization decisions. Only ``bucket-registry serve --dev``
enables it: never an environment variable, always bound to loopback, always announced loudly.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

DEV_ISSUER = "http://127.0.0.1/dev-fence/user"
DEV_KID = "bucket-registry-dev"
DEFAULT_POLICY = Path(__file__).with_name("policy.yaml")


@dataclass(frozen=True)
class DevMode:
    state_dir: Path
    policy_file: Path = DEFAULT_POLICY

    @property
    def key_file(self) -> Path:
        return self.state_dir / "dev-signing-key.pem"

    @property
    def secrets_dir(self) -> Path:
        return self.state_dir / "secrets"


def _private_key(mode: DevMode) -> rsa.RSAPrivateKey:
    if mode.key_file.exists():
        key = serialization.load_pem_private_key(mode.key_file.read_bytes(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return key
    mode.state_dir.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(mode.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return key


def dev_jwks(mode: DevMode) -> dict[str, Any]:
    public = _private_key(mode).public_key()
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public))
    jwk.update({"kid": DEV_KID, "alg": "RS256", "use": "sig"})
    return {"keys": [jwk]}


def mint_dev_token(mode: DevMode, user: str, *, lifetime: int = 3600) -> str:
    """A Fence-shaped access token for ``user``, valid only against this dev mode's key."""
    now = int(time.time())
    claims = {
        "iss": DEV_ISSUER,
        "sub": user,
        "aud": ["openid", "user"],
        "iat": now,
        "exp": now + lifetime,
        "jti": uuid.uuid4().hex,
        "pur": "access",
        "scope": ["openid", "user", "data"],
        "context": {"user": {"name": user}},
    }
    return jwt.encode(claims, _private_key(mode), algorithm="RS256", headers={"kid": DEV_KID})
