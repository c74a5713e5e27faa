"""A small online shop's Celery project, with the mistakes that lose tasks in real deployments."""
from .celery import app

__all__ = ["app"]
