"""What the client raises: one class per error the registry documents, and no other kind.

Every failure, whether the registry answered with an error, could not be reached, or the client
was handed something it cannot send, is a ``RegistryClientError``. Nothing from ``httpx``,
``json`` or ``pybreaker`` and no bare ``ValueError``/``KeyError`` escapes, so Fence can map
each class to one answer and never turn a registry problem into its own 500.

Messages are safe to log: they never carry a token (Fence's or the user's) or a secret.
"""

from __future__ import annotations

from typing import Any


class RegistryClientError(Exception):
    """Base of everything the client raises.

    ``status`` is the HTTP status (``None`` when no answer came or the request was never sent),
    ``code`` the registry's error code (``bucket_not_found``, ``forbidden``, ...), ``details``
    whatever the registry added (never a submitted value).
    """

    #: Fence's answer to its own caller when it maps this error (see the README table).
    fence_status = 500

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


class ConfigurationError(RegistryClientError):
    """The client cannot make the call as configured: no service token (the token file is
    missing, unreadable or empty), an invalid option, or a call that needs a service token
    (``on_behalf_of`` a username or anonymous) on a client that forwards user tokens.

    Fence's deployment is wrong, not the user's request: answer 503 and alert."""

    fence_status = 503


class Invalid(RegistryClientError):
    """400 (``invalid_request``), or an argument the client refused before sending it
    (``status is None``, ``code == "invalid_argument"``): bad bucket, key, op, part, field."""

    fence_status = 400


class Unauthenticated(RegistryClientError):
    """401 (``unauthenticated``): the registry refused the bearer token. With a service token
    that is Fence's own token (a deployment problem); when forwarding, the user's."""

    fence_status = 401


#: The name earlier releases used.
Unauthorized = Unauthenticated


class OnBehalfOfInvalid(RegistryClientError):
    """401 (``on_behalf_of_invalid``): Fence's own token was accepted, but the user's token it
    passed in ``on_behalf_of`` failed (expired, wrong issuer, ...). Answer 401 to the user."""

    fence_status = 401


class Forbidden(RegistryClientError):
    """403 (``forbidden``): Arborist or the bucket's bindings deny it."""

    fence_status = 403


class UnsignedNotAllowed(Forbidden):
    """403 (``unsigned_not_allowed``): a plain URL was asked for an object that is not public;
    Fence signs such records even when the caller did not force signing."""


class BucketSuspended(Forbidden):
    """403 (``bucket_suspended``): the bucket is suspended, or the default upload bucket does
    not accept uploads. Never a reason to use Fence's own path: suspension is a control."""


class NotFound(RegistryClientError):
    """404: something the registry does not know (``not_found``)."""

    fence_status = 404


class BucketNotFound(NotFound):
    """404 (``bucket_not_found``): the bucket (or a default upload bucket) is not registered."""


class RegistryEmpty(BucketNotFound):
    """404 with ``details.registry_empty``: the registry holds no bucket at all yet."""


class Conflict(RegistryClientError):
    """409 (``conflict``)."""

    fence_status = 409


class Unavailable(RegistryClientError):
    """503, 502, 504 or no answer after the retries, or the circuit breaker is open
    (``code == "circuit_open"``): the registry or one of its dependencies (Arborist, its
    database, a secrets manager, STS, the store) is down. Fail closed: answer 503.

    ``secret_not_found``, ``role_not_assumable`` and ``iam_signing_denied`` are 503s too, but
    about one bucket's configuration: they are neither retried nor counted by the breaker."""

    fence_status = 503


class UnexpectedResponse(RegistryClientError):
    """An answer the contract does not allow (a 2xx without the documented JSON, a 500)."""

    fence_status = 502


# The registry's documented error codes, most specific first; the status decides the rest.
CODES: dict[str, type[RegistryClientError]] = {
    "invalid_request": Invalid,
    "unauthenticated": Unauthenticated,
    "on_behalf_of_invalid": OnBehalfOfInvalid,
    "forbidden": Forbidden,
    "unsigned_not_allowed": UnsignedNotAllowed,
    "bucket_suspended": BucketSuspended,
    "bucket_not_found": BucketNotFound,
    "registry_empty": RegistryEmpty,
    "not_found": NotFound,
    "conflict": Conflict,
    "dependency_unavailable": Unavailable,
    "secret_not_found": Unavailable,
    "role_not_assumable": Unavailable,
    "iam_signing_denied": Unavailable,
}

STATUSES: dict[int, type[RegistryClientError]] = {
    400: Invalid,
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}

#: 503 codes about one bucket's configuration, not an outage.
BUCKET_CONFIGURATION_CODES = frozenset(
    {
        "secret_not_found",
        "role_not_assumable",
        "iam_signing_denied",
        # One bucket's trust policy (or service account roles) refuses scoped sessions.
        "credential_vending_refused",
    }
)


def error_for(status: int, code: str | None, details: Any) -> type[RegistryClientError]:
    """The class for an error answer: the documented code if it agrees with the status."""
    if status == 404 and isinstance(details, dict) and details.get("registry_empty") is True:
        return RegistryEmpty
    by_code = CODES.get(code or "")
    by_status = STATUSES.get(status, UnexpectedResponse)
    if by_code is not None and by_code.fence_status == by_status.fence_status:
        return by_code
    return by_status
