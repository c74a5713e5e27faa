"""Built-in rabbitmq checks (filled in by its issue)."""
CHECKS: list = []
