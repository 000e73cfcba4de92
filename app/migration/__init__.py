"""Moving a commons from Fence's YAML buckets to the registry (docs/migration.md).

``fence_config`` parses fence-config.yaml, ``mapping`` turns its entries into registrations,
``importer`` plans and applies an import (``report`` renders it), ``exporter`` writes the
registry back out, ``fallback`` serves the YAML while the registry is empty, and ``commands``
holds the ``import-fence-config`` and ``export`` CLI commands.
"""
