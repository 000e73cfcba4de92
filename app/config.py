"""Service configuration: one pydantic-settings object, built once and passed in."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)


class Settings(BaseSettings):
    """Everything the service reads from its environment.

    Values come from ``BUCKET_REGISTRY_*`` environment variables, then from the optional YAML
    file named by ``BUCKET_REGISTRY_CONFIG_FILE``, then the defaults below. Standard ``AWS_*``
    variables (region, ``AWS_ENDPOINT_URL``, ...) are left to botocore, which honours them itself.
    """

    model_config = SettingsConfigDict(env_prefix="BUCKET_REGISTRY_", extra="ignore")

    config_file: Path | None = None

    database_url: str = "sqlite+aiosqlite:///./bucket-registry.db"
    database_pool_size: int = Field(default=10, ge=1)
    arborist_url: str = "http://arborist-service"
    arborist_timeout: float = Field(default=2.0, gt=0)
    user_api: str = "http://fence-service/user"
    admin_resource: str = "/services/bucket-registry"
    admin_service: str = "bucket-registry"
    admin_method: str = "bucket_admin"
    # Project self-service (docs/self-service.md): this method of ``admin_service`` on a
    # project's resource path lets a user register and manage that project's buckets.
    register_method: str = "bucket_register"
    # ``validation``: a self-registered bucket turns active when a validation passes;
    # ``admin``: a bucket admin must also approve it.
    self_service_approval: Literal["validation", "admin"] = "validation"
    # Where keys submitted through PUT /admin/buckets/{name}/credentials are kept: a secret
    # reference prefix the registry owns (default: one derived from ``secrets_backend``).
    self_service_secrets: str | None = None
    # The GCP project whose Secret Manager holds those keys when ``secrets_backend`` is
    # ``gcp_sm`` and ``self_service_secrets`` is unset.
    gcp_project: str | None = None
    # Scopes a user's token must carry (comma-separated in the environment), checked before
    # Arborist is asked. Arborist itself refuses tokens without ``openid``.
    data_scopes: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["openid", "data"])
    admin_scopes: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["openid"])
    # When set, must be one of the ``aud`` values of user tokens; unset = not checked.
    token_audience: str | None = None

    # Trusted services (Fence) authenticating with their own tokens, e.g. Kubernetes projected
    # ServiceAccount tokens: issuer + JWKS, the audience they must name, and the subjects trusted.
    service_token_issuer: str | None = None
    service_token_jwks_url: str | None = None
    service_token_audience: str = "bucket-registry"  # noqa: S105 - an audience, not a secret
    # PEM bundle trusted, besides the public roots, when fetching the issuer's keys over HTTPS:
    # the cluster CA (/var/run/secrets/kubernetes.io/serviceaccount/ca.crt) for the API server's
    # https://kubernetes.default.svc/openid/v1/jwks.
    service_token_ca_file: Path | None = None
    trusted_callers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Fence's legacy rules (acl-only records; blank records uploaded by the user) arrive with
    # no authz to check; off, trusted callers must always send the record's authz.
    legacy_authz_enabled: bool = True

    secrets_backend: str = "aws_sm"
    bucket_cache_ttl: float = Field(default=60.0, ge=0)
    secret_cache_ttl: float = Field(default=300.0, ge=0)
    secret_grace_period: float = Field(default=900.0, ge=0)
    authz_cache_ttl: float = Field(default=30.0, ge=0)
    jwks_cache_ttl: float = Field(default=600.0, ge=0)
    cache_max_entries: int = Field(default=10_000, ge=1)

    max_presigned_url_ttl: int = Field(default=3600, ge=1)
    default_presigned_url_ttl: int = Field(default=3600, ge=1)
    # Comma-separated in the environment (or a JSON list); see validate_endpoint.
    endpoint_allowlist: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Secrets backends (docs/secrets.md). AWS endpoints come from the standard AWS_* variables.
    vault_addr: str = "http://vault:8200"
    vault_role: str = "bucket-registry"
    vault_auth_mount: str = "kubernetes"
    vault_token: str | None = None
    kubernetes_token_path: Path = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
    # Outside a cluster, the kubeconfig for k8s:// secrets (default: the client's own lookup).
    kubeconfig: Path | None = None
    gcp_secret_manager_endpoint: str = "https://secretmanager.googleapis.com"  # noqa: S105
    gcp_iam_credentials_endpoint: str = "https://iamcredentials.googleapis.com"
    file_secrets_dir: Path | None = None

    # Signing (docs/signing.md).
    sts_session_duration: int = Field(default=3600, ge=900, le=43200)
    sts_refresh_margin: int = Field(default=300, ge=0)
    sts_endpoint_url: str | None = None
    # The SourceIdentity of the sessions that sign URLs for role buckets with credential
    # vending on: CloudTrail names the registry, and the URLs' audit parameters the user.
    source_identity: str = Field(default="bucket-registry", pattern=r"^[\w+=,.@-]{2,64}$")
    # Vended credentials (docs/credentials.md): a bucket may lower the maximum, never raise it.
    max_credential_ttl: int = Field(default=3600, ge=900, le=43200)
    default_credential_ttl: int = Field(default=3600, ge=900, le=43200)
    # Google's token exchange (RFC 8693) for downscoped gcp tokens; a bucket may name its own
    # (sts_endpoint), which passes the destination policy.
    gcp_sts_endpoint: str = "https://sts.googleapis.com/v1/token"
    # Where a service-account key's tokens are asked for. A key file's own ``token_uri`` is
    # ignored: the file may come from a project member, and the registry would POST to it.
    gcp_oauth_token_endpoint: str = "https://oauth2.googleapis.com/token"  # noqa: S105
    # Cloud Storage JSON API (bucket validation); signed URLs always name storage.googleapis.com.
    gcs_endpoint: str = "https://storage.googleapis.com"
    # Project billed for requester-pays gcp buckets; default: the signing account's own project.
    gcp_billing_project: str | None = None

    fence_config: Path | None = None
    # OpenTelemetry spans over OTLP/HTTP (endpoint from the standard OTEL_* variables).
    tracing_enabled: bool = False
    tracing_service_name: str = "bucket-registry"
    log_level: str = "INFO"
    log_json: bool = True
    # uvicorn's --limit-concurrency for `serve`: past this many connections and requests in
    # flight per worker, new requests get 503 at once instead of queueing. Unset: no limit.
    limit_concurrency: int | None = Field(default=None, ge=1)

    @field_validator(
        "endpoint_allowlist", "data_scopes", "admin_scopes", "trusted_callers", mode="before"
    )
    @classmethod
    def _split_allowlist(cls, value: Any) -> Any:
        # Accept a comma-separated string from the environment as well as a JSON/YAML list.
        if isinstance(value, str):
            stripped = value.strip()
            if stripped.startswith("["):
                return yaml.safe_load(stripped)
            return [item.strip() for item in stripped.split(",") if item.strip()]
        return value

    @model_validator(mode="after")
    def _service_tokens_complete(self) -> Settings:
        if bool(self.service_token_issuer) != bool(self.service_token_jwks_url):
            raise ValueError("service_token_issuer and service_token_jwks_url must be set together")
        if self.service_token_issuer and self.service_token_issuer.rstrip(
            "/"
        ) == self.user_api.rstrip("/"):
            raise ValueError("service_token_issuer must differ from user_api (Fence's issuer)")
        if self.service_token_ca_file is not None and not self.service_token_jwks_url:
            raise ValueError("service_token_ca_file needs service_token_jwks_url")
        return self

    @model_validator(mode="after")
    def _file_backend_has_a_root(self) -> Settings:
        if self.secrets_backend.strip().lower() == "file" and self.file_secrets_dir is None:
            raise ValueError("secrets_backend file needs file_secrets_dir (the mounted Secrets)")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = env_settings().get("config_file") if callable(env_settings) else None
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
