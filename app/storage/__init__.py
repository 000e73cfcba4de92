"""Per-provider clients that sign URLs for a store and make the few calls behind them.

``service.StorageService``... see docs/architecture.md.
"""
