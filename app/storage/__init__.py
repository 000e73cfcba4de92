"""Per-provider clients that sign URLs for a store and make the few calls behind them
(docs/signing.md). The layers above use ``service.StorageService``."""
