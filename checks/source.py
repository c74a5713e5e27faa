"""Built-in source checks (filled in by its issue)."""
CHECKS: list = []
