"""Built-in redis checks (filled in by its issue)."""
CHECKS: list = []
