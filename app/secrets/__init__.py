"""Secrets: references, the resolver protocol, one backend per secrets manager, and the store."""

from app.secrets.base import (
    SCHEMES,
    SecretPayload,
    SecretRef,
    SecretResolver,
    WritableSecretResolver,
    parse_secret_ref,
    validate_secret_version,
)
from app.secrets.store import BackendStats, SecretStore

__all__ = [
    "SCHEMES",
    "BackendStats",
    "SecretPayload",
    "SecretRef",
    "SecretResolver",
    "SecretStore",
    "WritableSecretResolver",
    "parse_secret_ref",
    "validate_secret_version",
]
