"""Built-in source checks (static AST analysis of the project's code; nothing is imported or executed)."""
from . import (
    source_db,
    source_errors,
    source_fork,
    source_locks,
    source_names,
    source_orm,
    source_retry,
    source_secrets,
)

CHECKS = [*source_errors.CHECKS, *source_db.CHECKS, *source_fork.CHECKS, *source_orm.CHECKS, *source_retry.CHECKS,
          *source_locks.CHECKS, *source_names.CHECKS, *source_secrets.CHECKS]
