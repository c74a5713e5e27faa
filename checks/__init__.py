"""celery-doctor's built-in checks. Installed as `celery_doctor.checks` (see pyproject's package-dir)."""
