"""Health checks of registered buckets: the ``validate`` probe and the nightly drift check."""
