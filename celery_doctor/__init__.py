"""celery-doctor: find lost Celery tasks."""
__version__ = "0.1.0"
