"""What the client raises.

``UseYamlFallback`` is deliberately not a ``RegistryClientError``: it is not a failure but an
instruction to keep Fence's YAML behaviour, and a broad ``except RegistryClientError`` must not
swallow it.
"""

from __future__ import annotations

from typing import Any

DISABLED = "disabled"
REGISTRY_EMPTY = "registry_empty"


class UseYamlFallback(Exception):
    """The registry is switched off (``FENCE_ENABLE_DYNAMIC_BUCKETS``) or holds no buckets:
    use the buckets in fence-config.yaml. ``reason`` is ``"disabled"`` or ``"registry_empty"``."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            "dynamic buckets are disabled"
            if reason == DISABLED
            else "the bucket registry holds no buckets"
        )
        self.reason = reason


class RegistryClientError(Exception):
    """The registry answered with an error, or could not be reached.

    ``status`` is the HTTP status (None when no answer came), ``code`` the registry's error
    code (``bucket_not_found``, ``forbidden``, ``bucket_suspended``, ...).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.details = details


class Invalid(RegistryClientError):
    """400: the bucket name, key, operation or part number was refused."""


class Unauthorized(RegistryClientError):
    """401: the user's token is missing, expired or not issued by this commons."""


class Forbidden(RegistryClientError):
    """403: Arborist or the bucket's bindings deny it, or the bucket is suspended
    (``code == "bucket_suspended"``)."""


class NotFound(RegistryClientError):
    """404: the bucket (or the default upload bucket) is not registered."""


class Unavailable(RegistryClientError):
    """503 or no answer after every retry: a dependency of the registry (Arborist, its
    database, a secrets manager, the store) or the registry itself is down. Fail closed."""
