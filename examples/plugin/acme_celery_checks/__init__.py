"""ACME's celery-doctor checks (an example plugin: see celery-doctor's docs/plugins.md)."""
