"""Presigned URLs and the few storage calls behind them (docs/signing.md).

The API layer uses ``SigningService``; everything else here is how it does its job.
"""

from app.signing.base import HTTP_METHOD_FOR_OP, BucketSigner, PresignedRequest, SignerFactory
from app.signing.credentials import SecretSource, SigningCredentials
from app.signing.keys import validate_key, validate_prefix
from app.signing.service import SigningService, SigningStats
from app.signing.sts import RoleNotAssumable

__all__ = [
    "HTTP_METHOD_FOR_OP",
    "BucketSigner",
    "PresignedRequest",
    "RoleNotAssumable",
    "SecretSource",
    "SignerFactory",
    "SigningCredentials",
    "SigningService",
    "SigningStats",
    "validate_key",
    "validate_prefix",
]
