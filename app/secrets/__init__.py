"""Secrets: references, the resolver protocol, one backend per secrets manager, and the store."""
