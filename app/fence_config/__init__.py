"""Fence's fence-config.yaml as a bucket source.

``reader`` parses the file, ``mapping`` turns its entries into registrations (used by the
offline importer too), ``source`` serves them at runtime while the registry is empty.
"""
