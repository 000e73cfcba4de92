"""Field rules for bucket registrations: names per provider, endpoints, labels, resource paths.

Every function raises ``InvalidInput`` with a message naming the field, so the API answers 400.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from app.authz.policy import LtreeSyntaxError, arborist_ltree
from app.errors import InvalidInput
from app.netguard import DestinationRefused, NetGuard
from app.registry.records import AuthMode, BucketStatus, Op, Provider

MAX_LABELS = 64
MAX_LABEL_KEY = 63
MAX_LABEL_VALUE = 256
LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$")

_S3_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_S3_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_S3_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
_RELAXED_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]$")
_GCS_COMPONENT_RE = re.compile(r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$")

MAX_BILLING_PROJECTS = 32
# Google Cloud project ids; the same rule as a request's ``user_project``.
GCP_PROJECT_ID_RE = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")

MAX_RESOURCE_PATH = 1024
# Characters a resource path segment may hold. Arborist would store more (it escapes almost
# everything), but not a space, which its escaping turns into a '+' that ltree refuses.
_RESOURCE_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_.~*@:+-]+$")


def _looks_like_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def validate_bucket_name(name: str, provider: Provider) -> str:
    """Apply the provider's bucket naming rules (S3 for aws/minio, GCS for gcp)."""
    if provider is Provider.GCP:
        return _validate_gcs_name(name)
    if provider is Provider.S3_COMPATIBLE:
        # On-prem stores differ; keep the shape safe for URLs and paths, not S3's exact rules.
        if not _RELAXED_NAME_RE.match(name) or ".." in name or _looks_like_ip(name):
            raise InvalidInput(
                f"name: {name!r} is not a valid bucket name (3-255 letters, digits, '.', '_', '-',"
                " starting and ending with a letter or digit)"
            )
        return name
    problems = []
    if not _S3_NAME_RE.match(name):
        problems.append(
            "must be 3-63 lowercase letters, digits, '.' or '-', starting and ending with a letter"
            " or digit"
        )
    if ".." in name:
        problems.append("must not contain '..'")
    if _looks_like_ip(name):
        problems.append("must not be formatted as an IP address")
    if name.startswith(_S3_RESERVED_PREFIXES) or name.endswith(_S3_RESERVED_SUFFIXES):
        problems.append("uses a prefix or suffix reserved by S3")
    if problems:
        raise InvalidInput(f"name: {name!r} " + "; ".join(problems))
    return name


def _validate_gcs_name(name: str) -> str:
    components = name.split(".")
    ok = (
        3 <= len(name) <= 222
        and (len(components) > 1 or len(name) <= 63)
        and all(_GCS_COMPONENT_RE.match(part) for part in components)
        and not name.startswith("goog")
        and "google" not in name
        and "g00gle" not in name
        and not _looks_like_ip(name)
    )
    if not ok:
        raise InvalidInput(
            f"name: {name!r} is not a valid GCS bucket name (3-63 lowercase letters, digits, '-',"
            " '_' and '.', dot-separated parts of at most 63, no 'goog' prefix or 'google')"
        )
    return name


def validate_endpoint(url: str, allowlist: Iterable[str]) -> str:
    """Check an S3-compatible endpoint URL and refuse targets that would make us an SSRF proxy.

    Link-local and cloud-metadata addresses are refused always; loopback, private and
    cluster-internal names only when ``allowlist`` names them (host, host:port, IP or CIDR).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidInput(f"endpoint: not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidInput("endpoint: scheme must be http or https")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise InvalidInput("endpoint: must not contain credentials (user info)")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise InvalidInput("endpoint: must not contain a query or fragment")
    host = parts.hostname or ""
    if not host.rstrip("."):
        raise InvalidInput("endpoint: a host is required")
    if any(ord(ch) < 33 or ord(ch) == 127 for ch in url):
        raise InvalidInput("endpoint: must not contain whitespace or control characters")
    if parts.path not in ("", "/"):
        raise InvalidInput("endpoint: must not contain a path (buckets are addressed path-style)")

    try:
        NetGuard(allowlist).check_literal(host, port)
    except DestinationRefused as exc:
        raise InvalidInput(f"endpoint: {exc.message}") from None
    return url.rstrip("/")


def validate_labels(labels: Mapping[str, Any]) -> dict[str, str]:
    if len(labels) > MAX_LABELS:
        raise InvalidInput(f"labels: at most {MAX_LABELS} labels")
    clean: dict[str, str] = {}
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidInput("labels: keys and values must be strings")
        if len(key) > MAX_LABEL_KEY or not LABEL_KEY_RE.match(key):
            raise InvalidInput(
                f"labels: key {key[:80]!r} must be 1-{MAX_LABEL_KEY} letters, digits, '.', '_',"
                " '-' or '/', starting and ending with a letter or digit"
            )
        if len(value) > MAX_LABEL_VALUE or any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
            raise InvalidInput(
                f"labels: value of {key!r} must be at most {MAX_LABEL_VALUE} printable characters"
            )
        clean[key] = value
    return clean


def validate_billing_projects(projects: object, provider: Provider) -> list[str]:
    """The allow-list of projects callers may bill (``user_project``), duplicates dropped."""
    if not isinstance(projects, list | tuple) or not all(isinstance(p, str) for p in projects):
        raise InvalidInput("billing_projects: must be a list of project ids")
    if projects and provider is not Provider.GCP:
        raise InvalidInput("billing_projects: only used by gcp buckets")
    unique = list(dict.fromkeys(projects))
    if len(unique) > MAX_BILLING_PROJECTS:
        raise InvalidInput(f"billing_projects: at most {MAX_BILLING_PROJECTS} projects")
    for project in unique:
        if not GCP_PROJECT_ID_RE.match(project):
            raise InvalidInput(
                f"billing_projects: {project[:80]!r} is not a project id (6-30 lowercase letters,"
                " digits or '-', starting with a letter, not ending with '-')"
            )
    return unique


def resource_path_problem(path: object) -> str | None:
    """Why Arborist could never grant anything on ``path``, or None when it is a usable path.

    Arborist keeps resource paths as PostgreSQL ltree values; a path it cannot turn into one
    makes every auth request on it fail (400), so a binding to it could never grant.
    """
    if not isinstance(path, str) or not path:
        return "must be an Arborist path such as /programs/DEV/projects/ABC"
    if not path.startswith("/"):
        return "must start with '/' (Arborist reads anything else as a tag, which never matches)"
    if len(path) > MAX_RESOURCE_PATH:
        return f"must be at most {MAX_RESOURCE_PATH} characters"
    if path == "/":
        return "'/' names no Arborist resource (Arborist refuses it); bind a path such as /programs"
    segments = path[1:].split("/")
    if "" in segments:
        where = "a trailing '/'" if segments[-1] == "" else "'//'"
        return f"{where} makes an empty segment, which Arborist's ltree paths cannot hold"
    for segment in segments:
        if segment in (".", ".."):
            return "'.' and '..' segments are not allowed"
        if not _RESOURCE_SEGMENT_RE.match(segment):
            if any(ch.isspace() for ch in segment):
                return "spaces are not allowed (Arborist's ltree paths cannot hold them)"
            return (
                "segments may hold only letters, digits and _ . ~ * @ : + -"
                f" (found {segment[:40]!r})"
            )
    try:
        arborist_ltree(path)
    except LtreeSyntaxError as exc:
        return f"Arborist cannot store this path: {exc}"
    return None


def validate_resource_path(path: str, *, field: str = "resource_path") -> str:
    """``path`` if Arborist can grant on it; ``InvalidInput`` (400) naming ``field`` otherwise."""
    problem = resource_path_problem(path)
    if problem is not None:
        raise InvalidInput(f"{field}: {problem}")
    return path


def validate_binding_path(path: str) -> str:
    """A binding's resource path: one Arborist can grant on, or ``/`` alone — the root binding,
    which serves every resource to trusted callers (it never grants a direct user, since
    Arborist holds no resource at ``/``)."""
    return path if path == "/" else validate_resource_path(path)


def validate_allowed_ops(ops: Mapping[str, Any]) -> dict[str, bool]:
    known = {op.value for op in Op}
    unknown = sorted(set(ops) - known)
    if unknown:
        raise InvalidInput(f"allowed_ops: unknown operation(s) {unknown}; allowed: {sorted(known)}")
    if not all(isinstance(value, bool) for value in ops.values()):
        raise InvalidInput("allowed_ops: values must be booleans")
    clean = {op: bool(ops.get(op, False)) for op in sorted(known)}
    if not any(clean.values()):
        raise InvalidInput("allowed_ops: at least one operation must be allowed")
    return clean


_ROLE_ARN_RE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
_EXTERNAL_ID_RE = re.compile(r"^[\w+=,.@:/-]{2,1224}$")
_SERVICE_ACCOUNT_RE = re.compile(
    r"^[a-z][a-z0-9-]{4,61}[a-z0-9]@[a-z0-9.-]+\.iam\.gserviceaccount\.com$"
)
_REGION_RE = re.compile(r"^[a-z0-9-]{2,64}$")


def validate_external_id(value: object, auth_mode: AuthMode, field: str = "external_id") -> None:
    if auth_mode is not AuthMode.ROLE:
        raise InvalidInput(f"{field}: only used when auth_mode is role")
    if not isinstance(value, str) or not _EXTERNAL_ID_RE.match(value):
        raise InvalidInput(f"{field}: 2-1224 characters of [A-Za-z0-9+=,.@:/_-]")


def validate_bucket_spec(spec: dict[str, Any], allowlist: Iterable[str]) -> dict[str, Any]:
    """Cross-field rules for a whole registration (after a PATCH is merged onto the current one).

    Returns the spec with normalised values.
    """
    provider = Provider(spec["provider"])
    auth_mode = AuthMode(spec["auth_mode"])
    validate_bucket_name(spec["name"], provider)
    if spec.get("region") is not None and not _REGION_RE.match(spec["region"]):
        raise InvalidInput("region: must be 2-64 lowercase letters, digits or '-'")

    endpoint = spec.get("endpoint")
    if provider.needs_endpoint:
        if not endpoint:
            raise InvalidInput(f"endpoint: required for provider {provider.value}")
        spec["endpoint"] = validate_endpoint(endpoint, allowlist)
    elif endpoint:
        raise InvalidInput("endpoint: only minio and s3_compatible buckets take an endpoint")

    if auth_mode is AuthMode.ROLE:
        if provider is Provider.GCP:
            raise InvalidInput("auth_mode: gcp buckets use static or workload_identity")
        if not spec.get("role_arn"):
            raise InvalidInput("role_arn: required when auth_mode is role")
        if not _ROLE_ARN_RE.match(spec["role_arn"]):
            raise InvalidInput("role_arn: must look like arn:aws:iam::123456789012:role/name")
    elif spec.get("role_arn"):
        raise InvalidInput("role_arn: only used when auth_mode is role")
    for field in ("external_id", "pending_external_id"):
        if spec.get(field) is not None:
            validate_external_id(spec[field], auth_mode, field)

    # A self-registered static bucket waits, pending, for keys PUT through the API.
    waiting = spec.get("status") in (BucketStatus.PENDING, BucketStatus.REJECTED)
    if auth_mode is AuthMode.STATIC and not spec.get("secret_ref") and not waiting:
        raise InvalidInput("secret_ref: required when auth_mode is static")
    if spec.get("secret_version") is not None and not spec.get("secret_ref"):
        raise InvalidInput("secret_version: only meaningful with a secret_ref")

    service_account = spec.get("service_account")
    if provider is Provider.GCP and auth_mode is AuthMode.WORKLOAD_IDENTITY:
        if not service_account:
            raise InvalidInput(
                "service_account: required for gcp buckets using workload_identity"
                " (the service account whose identity signs URLs)"
            )
    if service_account is not None:
        if provider is not Provider.GCP:
            raise InvalidInput("service_account: only used by gcp buckets")
        if not _SERVICE_ACCOUNT_RE.match(service_account):
            raise InvalidInput("service_account: must be a service account e-mail address")

    if spec.get("is_default_upload") and not spec.get("data_upload_allowed"):
        raise InvalidInput("is_default_upload: a default upload bucket must allow data upload")
    spec["labels"] = validate_labels(spec.get("labels") or {})
    _validate_vending(spec, provider, auth_mode, allowlist)
    if spec.get("project_resource") is not None:
        spec["project_resource"] = validate_resource_path(
            spec["project_resource"], field="project_resource"
        )
    if spec.get("pending_external_id") is not None and auth_mode is not AuthMode.ROLE:
        raise InvalidInput("pending_external_id: only used when auth_mode is role")
    spec["billing_projects"] = validate_billing_projects(
        spec.get("billing_projects") or [], provider
    )
    return spec


def _validate_vending(
    spec: dict[str, Any], provider: Provider, auth_mode: AuthMode, allowlist: Iterable[str]
) -> None:
    """Credential vending needs an STS that can scope a session: AWS's for a role, the
    store's own (MinIO's AssumeRole) for a static key pair on an S3-compatible store, or
    Google's token exchange for a gcp bucket's service account (key or workload identity)."""
    sts_endpoint = spec.get("sts_endpoint")
    if sts_endpoint:
        # For gcp buckets it is the token-exchange endpoint (Google's STS).
        try:
            spec["sts_endpoint"] = validate_endpoint(sts_endpoint, allowlist)
        except InvalidInput as exc:
            raise InvalidInput("sts_" + exc.message) from None
    if not spec.get("credential_vending"):
        return
    if provider is Provider.GCP:
        if auth_mode not in (AuthMode.STATIC, AuthMode.WORKLOAD_IDENTITY):
            raise InvalidInput(
                "credential_vending: gcp buckets vend downscoped tokens of their service"
                " account (auth_mode static or workload_identity)"
            )
        return
    if auth_mode is AuthMode.WORKLOAD_IDENTITY:
        raise InvalidInput(
            "credential_vending: needs auth_mode role (AWS STS) or static keys on a store whose"
            " STS offers AssumeRole; the registry's own identity is never vended"
        )
    if auth_mode is AuthMode.STATIC and not provider.needs_endpoint:
        raise InvalidInput(
            "credential_vending: aws buckets vend through a role (auth_mode role); static keys"
            " vend only on an S3-compatible store with its own STS"
        )
