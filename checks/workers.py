"""Built-in workers checks (filled in by its issue)."""
CHECKS: list = []
