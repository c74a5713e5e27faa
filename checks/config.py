"""Built-in configuration checks (being written)."""
CHECKS: list = []
