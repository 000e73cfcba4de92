"""Client for the Gen3 Bucket Registry, for Fence. See README.md for the contract."""

from bucket_registry_client.client import (
    ENABLE_ENV,
    AsyncBucketRegistryClient,
    BucketRegistryClient,
    dynamic_buckets_enabled,
)
from bucket_registry_client.errors import (
    DISABLED,
    REGISTRY_EMPTY,
    Forbidden,
    Invalid,
    NotFound,
    RegistryClientError,
    Unauthorized,
    Unavailable,
    UseYamlFallback,
)
from bucket_registry_client.models import Binding, PresignedUrl, ResolvedBucket

__version__ = "0.1.0"

__all__ = [
    "DISABLED",
    "ENABLE_ENV",
    "REGISTRY_EMPTY",
    "AsyncBucketRegistryClient",
    "Binding",
    "BucketRegistryClient",
    "Forbidden",
    "Invalid",
    "NotFound",
    "PresignedUrl",
    "RegistryClientError",
    "ResolvedBucket",
    "Unauthorized",
    "Unavailable",
    "UseYamlFallback",
    "dynamic_buckets_enabled",
]
