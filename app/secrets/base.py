"""Secret references, the payload type and the protocol every secrets backend implements.

A ``secret_ref`` names its backend by scheme (docs/secrets.md)::

    aws-sm://name-or-arn            arn:aws:secretsmanager:...   (bare ARN → default backend)
    gcp-sm://projects/P/secrets/S   vault://mount/path           (KV v2; mount = first segment)
    k8s://namespace/name            file:///abs/path.json        (local/dev only)

A Kubernetes Secret is used whole: its data keys are the payload keys, so ``k8s://`` refs take
no ``#key`` fragment. Every other backend stores the payload as one JSON object of strings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import NoReturn, Protocol, runtime_checkable

from app.errors import InvalidInput, SecretNotFound

AWS_SM = "aws-sm"
GCP_SM = "gcp-sm"
VAULT = "vault"
K8S = "k8s"
FILE = "file"

SCHEMES: tuple[str, ...] = (AWS_SM, GCP_SM, VAULT, K8S, FILE)

# Settings name backends with underscores (``aws_sm``); refs use URI schemes (``aws-sm``).
_BACKEND_SCHEMES = {
    "aws_sm": AWS_SM,
    "aws-sm": AWS_SM,
    "gcp_sm": GCP_SM,
    "gcp-sm": GCP_SM,
    "vault": VAULT,
    "k8s": K8S,
    "kubernetes": K8S,
    "file": FILE,
}

MAX_REF_LENGTH = 2048
MAX_VERSION_LENGTH = 256

AWS_SECRET_ARN = re.compile(
    r"arn:(?P<partition>aws[a-z-]*):secretsmanager:(?P<region>[a-z0-9-]+):(?P<account>\d{12})"
    r":secret:(?P<name>[A-Za-z0-9/_+=.@-]+)"
)
_AWS_SECRET_NAME = re.compile(r"[A-Za-z0-9/_+=.@-]{1,512}")
_GCP_SECRET = re.compile(r"projects/[a-z0-9][a-z0-9.:-]{0,99}/secrets/[A-Za-z0-9_-]{1,255}")
_VAULT_SEGMENT = re.compile(r"[A-Za-z0-9_.@+=:-]+")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_AWS_VERSION_ID = re.compile(r"[A-Za-z0-9-]{32,64}")
_GCP_VERSION = re.compile(r"[1-9][0-9]*|[A-Za-z][A-Za-z0-9_-]{0,62}")
_VAULT_VERSION = re.compile(r"[1-9][0-9]{0,18}")


@dataclass(frozen=True, slots=True)
class SecretRef:
    """A validated secret reference: which backend (``scheme``) and where in it (``location``).

    ``raw`` is the reference exactly as written; it is the cache key and what admins see.
    """

    scheme: str
    location: str
    raw: str

    def __str__(self) -> str:
        return self.raw


def backend_scheme(backend: str) -> str:
    """The ref scheme for a backend name as written in settings (``aws_sm`` → ``aws-sm``)."""
    try:
        return _BACKEND_SCHEMES[backend.strip().lower()]
    except KeyError:
        raise ValueError(
            f"unknown secrets backend {backend!r}; expected one of {sorted(set(_BACKEND_SCHEMES))}"
        ) from None


def parse_secret_ref(raw: str, default_backend: str) -> SecretRef:
    """Validate ``raw`` and split it into scheme and location.

    Raises ``InvalidInput`` with a message fit for an API caller when the reference is empty,
    contains whitespace or control characters, has an unknown scheme or a malformed location.
    A bare Secrets Manager ARN goes to ``default_backend`` (normally ``aws_sm``).
    """
    if not isinstance(raw, str) or not raw:
        raise InvalidInput("secret_ref must be a non-empty string")
    if len(raw) > MAX_REF_LENGTH:
        raise InvalidInput(f"secret_ref must be at most {MAX_REF_LENGTH} characters")
    if any(ch.isspace() or not ch.isprintable() for ch in raw):
        raise InvalidInput("secret_ref must not contain whitespace or control characters")

    scheme, sep, location = raw.partition("://")
    if not sep:
        if AWS_SECRET_ARN.fullmatch(raw):
            scheme = backend_scheme(default_backend)
            if scheme != AWS_SM:
                raise InvalidInput(
                    f"a bare ARN needs the aws-sm backend but the default is {scheme}; "
                    "write aws-sm://<arn>"
                )
            return SecretRef(AWS_SM, raw, raw)
        raise InvalidInput(
            "secret_ref must be scheme://location with a scheme among "
            f"{', '.join(SCHEMES)}, or an arn:aws:secretsmanager ARN"
        )
    if scheme not in SCHEMES:
        raise InvalidInput(
            f"unknown secret_ref scheme {scheme!r}; expected one of {', '.join(SCHEMES)}"
        )
    _LOCATION_CHECKS[scheme](location)
    return SecretRef(scheme, location, raw)


def validate_secret_version(ref: SecretRef, version: str | None) -> None:
    """Check that ``version`` can pin ``ref`` in its backend; raise ``InvalidInput`` if not.

    None (latest) is always valid. File secrets have no versions, so a pin is refused.
    """
    if version is None:
        return
    if not isinstance(version, str) or not version:
        raise InvalidInput("secret_version must be a non-empty string or null")
    if len(version) > MAX_VERSION_LENGTH or any(
        ch.isspace() or not ch.isprintable() for ch in version
    ):
        raise InvalidInput("secret_version must be short and free of whitespace")
    rule = _VERSION_RULES.get(ref.scheme)
    if rule is None:
        raise InvalidInput(f"{ref.scheme} secrets are not versioned; set secret_version to null")
    pattern, what = rule
    if pattern is not None and not pattern.fullmatch(version):
        raise InvalidInput(f"secret_version for {ref.scheme} must be {what}")


def _check_aws(location: str) -> None:
    if AWS_SECRET_ARN.fullmatch(location) or _AWS_SECRET_NAME.fullmatch(location):
        return
    raise InvalidInput(
        "aws-sm:// must be followed by a secret name (letters, digits, /_+=.@-) "
        "or an arn:aws:secretsmanager ARN"
    )


def _check_gcp(location: str) -> None:
    if not _GCP_SECRET.fullmatch(location):
        raise InvalidInput("gcp-sm:// must be followed by projects/<project>/secrets/<secret>")


def _check_vault(location: str) -> None:
    segments = location.split("/")
    if (
        len(segments) < 2
        or any(seg in ("", ".", "..") for seg in segments)
        or not all(_VAULT_SEGMENT.fullmatch(seg) for seg in segments)
    ):
        raise InvalidInput("vault:// must be followed by <kv-v2 mount>/<path> (no empty segments)")


def _check_k8s(location: str) -> None:
    if "#" in location:
        raise InvalidInput(
            "k8s:// names a whole Secret (its data keys are the payload keys); drop the #fragment"
        )
    namespace, sep, name = location.partition("/")
    if (
        not sep
        or not _DNS_LABEL.fullmatch(namespace)
        or len(name) > 253
        or not _DNS_SUBDOMAIN.fullmatch(name)
    ):
        raise InvalidInput("k8s:// must be followed by <namespace>/<secret name>")


def _check_file(location: str) -> None:
    if not location.startswith("/"):
        raise InvalidInput("file:// refs take an absolute path with no host: file:///path.json")
    if ".." in location.split("/"):
        raise InvalidInput("file:// paths must not contain '..'")


_LOCATION_CHECKS = {
    AWS_SM: _check_aws,
    GCP_SM: _check_gcp,
    VAULT: _check_vault,
    K8S: _check_k8s,
    FILE: _check_file,
}

_VERSION_RULES: dict[str, tuple[re.Pattern[str] | None, str]] = {
    AWS_SM: (_AWS_VERSION_ID, "a Secrets Manager VersionId (32-64 letters, digits or '-')"),
    GCP_SM: (_GCP_VERSION, "a version number or alias"),
    VAULT: (_VAULT_VERSION, "a positive integer"),
    K8S: (None, "a resourceVersion"),
}


class SecretPayload(Mapping[str, str]):
    """An immutable secret payload: string keys to string values.

    Its ``repr``/``str`` list key names only, so a payload that slips into a log line, an
    exception or a debugger view shows no secret. ``version`` is the backend's id for the
    version that was read, when the backend reports one.
    """

    __slots__ = ("_data", "_version")

    def __init__(self, data: Mapping[str, str], version: str | None = None) -> None:
        self._data = dict(data)
        self._version = version

    @property
    def version(self) -> str | None:
        return self._version

    def __getitem__(self, key: str) -> str:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"SecretPayload(keys={sorted(self._data)!r}, version={self._version!r})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        # Pickling would copy values into caches, queues or crash dumps by another route.
        raise TypeError("SecretPayload cannot be pickled")


def payload_from_mapping(data: object, ref: SecretRef, version: str | None) -> SecretPayload:
    """A payload from decoded JSON; ``SecretNotFound`` if it is not an object of strings.

    The error names offending keys, never values.
    """
    if not isinstance(data, dict):
        raise SecretNotFound(f"secret {ref.raw} does not hold a JSON object")
    bad = sorted(str(key) for key, value in data.items() if not isinstance(value, str))
    if bad:
        raise SecretNotFound(f"secret {ref.raw} has non-string values for keys {bad}")
    return SecretPayload(data, version)


def payload_from_json(text: str | bytes, ref: SecretRef, version: str | None) -> SecretPayload:
    """A payload parsed from JSON; ``SecretNotFound`` if it is not an object of strings."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        # ``from None``: JSONDecodeError keeps the whole document on ``.doc``.
        raise SecretNotFound(f"secret {ref.raw} is not valid JSON") from None
    return payload_from_mapping(data, ref, version)


@runtime_checkable
class SecretResolver(Protocol):
    """One secrets backend. Implementations raise only ``SecretNotFound`` (the reference
    resolves to nothing or access is denied) or ``SecretUnavailable`` (outage, timeout,
    throttling), with messages that carry no secret value and no raw response body."""

    async def get(self, ref: SecretRef, version: str | None) -> Mapping[str, str]:
        """The payload of ``ref`` at ``version`` (None: the current version).

        The built-in backends return a ``SecretPayload``; the store wraps any other mapping.
        """
        ...

    async def aclose(self) -> None:
        """Release clients and connections; the resolver is not used afterwards."""
        ...


@runtime_checkable
class WritableSecretResolver(SecretResolver, Protocol):
    """A backend that can also store payloads (used by ``import-fence-config --write-secrets``)."""

    async def put(self, ref: SecretRef, payload: Mapping[str, str]) -> str | None:
        """Store ``payload`` as the new current version; returns its version id, if any."""
        ...


@dataclass(frozen=True, slots=True)
class StagedSecret:
    """A payload written but not yet current: what reads it (``ref`` at ``version``).

    Backends with versions (AWS, Vault, GCP) keep ``ref`` and name the new version; those
    without (Kubernetes, files) write a new object per version, so ``ref`` is the new one.
    """

    ref: str
    version: str | None


@runtime_checkable
class StagingSecretResolver(SecretResolver, Protocol):
    """A backend that can hold a payload aside until it is validated (credential rotation).

    ``stage`` writes without making the payload current; ``promote`` makes a staged payload
    current and keeps the one it replaces for rollback; ``discard`` forgets a staged payload
    that failed validation; ``prune`` removes every kept version but ``keep``; ``remove``
    deletes every version, current included (the bucket they belong to is gone), and is not
    an error when there is nothing to remove.
    """

    async def stage(self, ref: SecretRef, payload: Mapping[str, str]) -> StagedSecret: ...

    async def promote(self, ref: SecretRef, staged: StagedSecret) -> None: ...

    async def discard(self, ref: SecretRef, staged: StagedSecret) -> None: ...

    async def prune(self, ref: SecretRef, keep: StagedSecret) -> int: ...

    async def remove(self, ref: SecretRef) -> None: ...
