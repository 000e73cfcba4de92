"""Domain errors raised by services and mapped to HTTP responses in one place (``api.errors``).

Messages are shown to callers: they never carry secret values, tokens or raw SDK errors.
"""

from __future__ import annotations

from typing import Any


class RegistryError(Exception):
    """Base of every error the service turns into a JSON error body."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidInput(RegistryError):
    status_code = 400
    code = "invalid_request"


class CredentialsNotOffered(InvalidInput):
    """The bucket vends no temporary credentials (off, or its store has no STS to scope them)."""

    code = "credential_vending_off"


class Unauthenticated(RegistryError):
    status_code = 401
    code = "unauthenticated"


class OnBehalfOfInvalid(Unauthenticated):
    """The user token a trusted caller relayed failed, not the caller's own token."""

    code = "on_behalf_of_invalid"


class AccessDenied(RegistryError):
    status_code = 403
    code = "forbidden"


class UnsignedRefused(AccessDenied):
    """An unsigned URL was asked for an object that is not public; a signed one may be asked."""

    code = "unsigned_not_allowed"


class BillingProjectRefused(AccessDenied):
    """A ``user_project`` the bucket does not allow callers to bill."""

    code = "billing_project_not_allowed"


class BucketSuspended(RegistryError):
    status_code = 403
    code = "bucket_suspended"


class NotFound(RegistryError):
    status_code = 404
    code = "not_found"


class BucketNotFound(NotFound):
    code = "bucket_not_found"


class Conflict(RegistryError):
    status_code = 409
    code = "conflict"


class PreconditionFailed(RegistryError):
    status_code = 412
    code = "version_mismatch"


class DependencyUnavailable(RegistryError):
    """A dependency (database, Arborist, secrets manager, STS, the store) cannot answer now."""

    status_code = 503
    code = "dependency_unavailable"

    def __init__(self, dependency: str, message: str | None = None) -> None:
        super().__init__(message or f"{dependency} is unavailable; retry later")
        self.dependency = dependency


class SecretUnavailable(DependencyUnavailable):
    def __init__(self, message: str | None = None) -> None:
        super().__init__("secrets", message)


class SecretNotFound(RegistryError):
    """The reference resolves to nothing: a configuration problem, not an outage."""

    status_code = 503
    code = "secret_not_found"
