"""gcp buckets: V4 signed URLs (``v4``, ``keys``), the identities behind them (``identity``),
the Google API calls (``apis``) and the bucket signer with its factory (``signer``)."""
