"""Fence's bucket configuration (``fence-config.yaml``) as typed entries.

Covers every form Fence reads (``fence/__init__.py``, ``fence/blueprints/data/indexd.py``):

- ``AWS_CREDENTIALS``: named key pairs ``{aws_access_key_id, aws_secret_access_key}``.
- ``S3_BUCKETS``: ``cred`` (a name in ``AWS_CREDENTIALS``, or ``'*'`` for a public bucket Fence
  never signs for), ``region``, ``endpoint_url`` (an S3-compatible store), ``role-arn`` (Fence
  assumes it with the ``cred`` keys), ``requester_pays``. A key is matched as the regular
  expression ``^key$`` when no bucket has exactly that name.
- ``GS_BUCKETS``: bucket name → ``{region}``; Fence signs GCS URLs with per-user service
  account keys it manages itself, so these entries carry no credentials.
- ``ALLOWED_DATA_UPLOAD_BUCKETS`` and ``DATA_UPLOAD_BUCKET`` (the default upload bucket).

Two registry extensions that Fence ignores let ``bucket-registry export`` produce a file that
imports back to the same registrations: an ``AWS_CREDENTIALS`` entry may name a ``secret_ref``
(and ``secret_version``) instead of holding keys, and a bucket entry may carry a ``registry:``
mapping of registration fields (``provider``, ``auth_mode``, ``owner_project``, ``labels``,
``prefixes``, ``bindings``, ...) that take precedence over what the Fence keys imply.

Errors name the entry (``S3_BUCKETS.my-bucket: cred 'x' not in AWS_CREDENTIALS``) and never
quote a credential value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from app.errors import InvalidInput
from app.registry.records import BUCKET_FIELDS, SELF_SERVICE_FIELDS

PUBLIC_CRED = "*"

# Characters that make a key a regular expression rather than a bucket name. '.' is left out:
# it is legal in bucket names, and Fence tries the exact name before any pattern.
_PATTERN_CHARS = frozenset("*+?[](){}|^$\\")

# Registration fields an entry's ``registry:`` block may set (BucketCreate, minus the name).
REGISTRY_FIELDS = (frozenset((*BUCKET_FIELDS, *SELF_SERVICE_FIELDS)) - {"name"}) | {
    "prefixes",
    "bindings",
}

_S3_KEYS = frozenset({"cred", "region", "endpoint_url", "role-arn", "requester_pays", "registry"})
_CRED_KEYS = frozenset(
    {
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "secret_ref",
        "secret_version",
    }
)


class FenceConfigError(InvalidInput):
    """The file is not valid YAML, or an entry is malformed; ``problems`` lists every one."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True, slots=True)
class AwsCredential:
    """One ``AWS_CREDENTIALS`` entry: a key pair, or (extension) a reference to one."""

    name: str
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    secret_ref: str | None = None
    secret_version: str | None = None

    @property
    def has_keys(self) -> bool:
        return bool(self.access_key_id and self.secret_access_key)

    def payload(self) -> dict[str, str]:
        """The keys in the registry's static-secret shape (docs/secrets.md)."""
        if not self.has_keys:
            raise ValueError(f"AWS_CREDENTIALS.{self.name} holds no keys")
        assert self.access_key_id is not None and self.secret_access_key is not None
        payload = {
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
        }
        if self.session_token:
            payload["session_token"] = self.session_token
        return payload


@dataclass(frozen=True, slots=True)
class S3BucketEntry:
    """One ``S3_BUCKETS`` entry, as Fence reads it."""

    key: str
    cred: str
    region: str | None = None
    endpoint_url: str | None = None
    role_arn: str | None = None
    requester_pays: bool = False
    registry: Mapping[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return f"S3_BUCKETS.{self.key}"

    @property
    def is_public(self) -> bool:
        return self.cred == PUBLIC_CRED

    @property
    def is_pattern(self) -> bool:
        return is_pattern(self.key)

    def matches(self, name: str) -> bool:
        """Whether Fence would use this entry for bucket ``name`` (exact, else ``^key$``)."""
        if name == self.key:
            return True
        return self.is_pattern and re.fullmatch(self.key, name) is not None


@dataclass(frozen=True, slots=True)
class GsBucketEntry:
    """One ``GS_BUCKETS`` entry."""

    name: str
    region: str | None = None
    registry: Mapping[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return f"GS_BUCKETS.{self.name}"


@dataclass(frozen=True, slots=True)
class FenceBucketConfig:
    """The bucket-related part of a fence-config.yaml, checked as Fence checks it at startup."""

    aws_credentials: Mapping[str, AwsCredential]
    s3_buckets: tuple[S3BucketEntry, ...]
    gs_buckets: tuple[GsBucketEntry, ...]
    allowed_upload_buckets: tuple[str, ...]
    data_upload_bucket: str | None
    warnings: tuple[str, ...] = ()
    source: str = "fence-config.yaml"

    def upload_allowed(self, name: str) -> bool:
        """Fence lets users upload to the allow-list and to the default upload bucket."""
        return name in self.allowed_upload_buckets or name == self.data_upload_bucket

    def s3_entry_for(self, name: str) -> S3BucketEntry | None:
        """The entry Fence would use for ``name``: the exact key first, then patterns in order."""
        for entry in self.s3_buckets:
            if entry.key == name:
                return entry
        for entry in self.s3_buckets:
            if entry.is_pattern and entry.matches(name):
                return entry
        return None


def is_pattern(key: str) -> bool:
    return any(ch in _PATTERN_CHARS for ch in key)


def load_fence_config(path: Path) -> FenceBucketConfig:
    """Read and parse ``path``; ``FenceConfigError`` if it is unreadable or malformed."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FenceConfigError([f"{path}: cannot read ({type(exc).__name__})"]) from None
    return parse_fence_config(text, source=str(path))


def parse_fence_config(text: str, *, source: str = "fence-config.yaml") -> FenceBucketConfig:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FenceConfigError([_yaml_problem(exc, source)]) from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise FenceConfigError([f"{source}: the top level must be a mapping of settings"])
    return _Parser(source).parse(data)


def _yaml_problem(exc: yaml.YAMLError, source: str) -> str:
    # Only the position and the parser's short description: the offending line could hold a key.
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or "not valid YAML"
    if mark is not None:
        return (
            f"{source}: invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"
        )
    return f"{source}: invalid YAML: {problem}"


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def parse(self, data: Mapping[str, Any]) -> FenceBucketConfig:
        creds = self._credentials(self._mapping(data, "AWS_CREDENTIALS"))
        s3 = self._s3_buckets(self._mapping(data, "S3_BUCKETS"), creds)
        gs = self._gs_buckets(self._mapping(data, "GS_BUCKETS"))
        allowed = self._allowed_uploads(data.get("ALLOWED_DATA_UPLOAD_BUCKETS"))
        default = self._optional_str(data.get("DATA_UPLOAD_BUCKET"), "DATA_UPLOAD_BUCKET")

        s3_names = {entry.key for entry in s3}
        for entry in gs:
            if entry.name in s3_names:
                self.problems.append(
                    f"{entry.source}: also in S3_BUCKETS; a bucket name is registered once"
                )
        # Fence only warns about these (fence/__init__.py); so do we, and the importer says so.
        for name in [*allowed, *([default] if default else [])]:
            if name not in s3_names:
                self.warnings.append(
                    f"data upload bucket {name!r} is not configured in S3_BUCKETS; Fence cannot"
                    " sign for it, so the registry does not mark any bucket for it"
                )
        if self.problems:
            raise FenceConfigError([f"{self.source}: {problem}" for problem in self.problems])
        return FenceBucketConfig(
            aws_credentials=MappingProxyType(creds),
            s3_buckets=tuple(s3),
            gs_buckets=tuple(gs),
            allowed_upload_buckets=tuple(allowed),
            data_upload_bucket=default,
            warnings=tuple(self.warnings),
            source=self.source,
        )

    # -- sections -----------------------------------------------------------------------------

    def _mapping(self, data: Mapping[str, Any], name: str) -> Mapping[Any, Any]:
        value = data.get(name)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.problems.append(f"{name}: must be a mapping")
            return {}
        return value

    def _credentials(self, section: Mapping[Any, Any]) -> dict[str, AwsCredential]:
        creds: dict[str, AwsCredential] = {}
        for raw_name, value in section.items():
            name = str(raw_name)
            where = f"AWS_CREDENTIALS.{name}"
            if value is None:
                value = {}
            if not isinstance(value, Mapping):
                self.problems.append(f"{where}: must be a mapping")
                continue
            fields: dict[str, str | None] = {}
            for key in _CRED_KEYS:
                raw = value.get(key)
                if raw is not None and not isinstance(raw, str):
                    # Never echo the value: it may be a key typed without quotes.
                    self.problems.append(f"{where}: {key} must be a string")
                    raw = None
                fields[key] = raw or None
            if fields["secret_ref"] and (
                fields["aws_access_key_id"] or fields["aws_secret_access_key"]
            ):
                self.problems.append(
                    f"{where}: holds both keys and a secret_ref; keep one (the keys belong in"
                    " the secrets manager the reference names)"
                )
            if bool(fields["aws_access_key_id"]) != bool(fields["aws_secret_access_key"]):
                self.warnings.append(
                    f"{where}: has only one of aws_access_key_id / aws_secret_access_key;"
                    " treated as holding no keys"
                )
            creds[name] = AwsCredential(
                name=name,
                access_key_id=fields["aws_access_key_id"],
                secret_access_key=fields["aws_secret_access_key"],
                session_token=fields["aws_session_token"],
                secret_ref=fields["secret_ref"],
                secret_version=fields["secret_version"],
            )
        return creds

    def _s3_buckets(
        self, section: Mapping[Any, Any], creds: Mapping[str, AwsCredential]
    ) -> list[S3BucketEntry]:
        entries = []
        for raw_key, value in section.items():
            key = str(raw_key)
            where = f"S3_BUCKETS.{key}"
            if not isinstance(value, Mapping):
                self.problems.append(f"{where}: must be a mapping with at least 'cred'")
                continue
            if is_pattern(key):
                try:
                    re.compile(key)
                except re.error as exc:
                    self.problems.append(f"{where}: not a valid regular expression ({exc})")
                    continue
            cred = value.get("cred")
            if not cred:
                # Fence refuses to start in this case too.
                self.problems.append(f"{where}: cred is required ('*' for a public bucket)")
                continue
            if not isinstance(cred, str):
                self.problems.append(f"{where}: cred must be a string")
                continue
            if cred != PUBLIC_CRED and cred not in creds:
                self.problems.append(f"{where}: cred {cred!r} not in AWS_CREDENTIALS")
                continue
            if "role_arn" in value and "role-arn" not in value:
                self.warnings.append(
                    f"{where}: Fence reads 'role-arn', not 'role_arn'; role_arn is ignored"
                )
            unknown = sorted(str(k) for k in value if k not in _S3_KEYS and k != "role_arn")
            if unknown:
                self.warnings.append(f"{where}: keys {unknown} are not used by Fence; ignored")
            requester_pays = value.get("requester_pays", False)
            if not isinstance(requester_pays, bool):
                self.problems.append(f"{where}: requester_pays must be true or false")
                requester_pays = False
            entries.append(
                S3BucketEntry(
                    key=key,
                    cred=cred,
                    region=self._optional_str(value.get("region"), f"{where}.region"),
                    endpoint_url=self._optional_str(
                        value.get("endpoint_url"), f"{where}.endpoint_url"
                    ),
                    role_arn=self._optional_str(value.get("role-arn"), f"{where}.role-arn"),
                    requester_pays=requester_pays,
                    registry=self._registry_block(value.get("registry"), where),
                )
            )
        return entries

    def _gs_buckets(self, section: Mapping[Any, Any]) -> list[GsBucketEntry]:
        entries = []
        for raw_name, value in section.items():
            name = str(raw_name)
            where = f"GS_BUCKETS.{name}"
            if value is None:
                value = {}
            if not isinstance(value, Mapping):
                self.problems.append(f"{where}: must be a mapping")
                continue
            if is_pattern(name):
                self.problems.append(f"{where}: GS_BUCKETS keys are bucket names, not patterns")
                continue
            entries.append(
                GsBucketEntry(
                    name=name,
                    region=self._optional_str(value.get("region"), f"{where}.region"),
                    registry=self._registry_block(value.get("registry"), where),
                )
            )
        return entries

    def _allowed_uploads(self, value: Any) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            self.problems.append("ALLOWED_DATA_UPLOAD_BUCKETS: must be a list of bucket names")
            return []
        return list(dict.fromkeys(value))

    def _registry_block(self, value: Any, where: str) -> Mapping[str, Any]:
        if value is None:
            return MappingProxyType({})
        if not isinstance(value, Mapping):
            self.problems.append(f"{where}.registry: must be a mapping of registration fields")
            return MappingProxyType({})
        unknown = sorted(str(key) for key in value if key not in REGISTRY_FIELDS)
        if unknown:
            self.problems.append(
                f"{where}.registry: unknown fields {unknown}; allowed: {sorted(REGISTRY_FIELDS)}"
            )
        return MappingProxyType({str(k): v for k, v in value.items() if k in REGISTRY_FIELDS})

    def _optional_str(self, value: Any, where: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            self.problems.append(f"{where}: must be a string")
            return None
        return value.strip() or None
