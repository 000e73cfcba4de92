"""Bucket Registry: Gen3 buckets as data."""

__version__ = "0.1.0"
