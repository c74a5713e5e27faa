"""Loading what to diagnose: a Celery app (`--app`, as `celery -A` does) or a bare broker URL."""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Optional
from urllib.parse import urlsplit

from .masking import SECRETS, scrub


class TargetError(Exception):
    """The target could not be loaded; the message is one line, already masked."""

    def __init__(self, message: str) -> None:
        super().__init__(scrub(" ".join(str(message).split())))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _setup_django_if_configured() -> None:
    if not os.environ.get("DJANGO_SETTINGS_MODULE"):
        return
    try:
        import django
    except ImportError:
        return
    try:
        django.setup()
    except BaseException as exc:  # noqa: BLE001 - a broken settings module is bad input
        raise TargetError(f"Django settings {os.environ['DJANGO_SETTINGS_MODULE']!r} failed to load: "
                          f"{_one_line(exc)}") from None


def load_app(spec: str, cwd: Optional[str] = None):
    """Import the app like `celery -A SPEC`, with the current directory on sys.path."""
    from celery import Celery
    from celery.app.utils import find_app

    cwd = os.path.abspath(cwd or os.getcwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    # Importing user code must not write to stdout, which carries only the report.
    with contextlib.redirect_stdout(sys.stderr):
        _setup_django_if_configured()
        try:
            app = find_app(spec)
        except BaseException as exc:  # anything the user's module raises, SystemExit included
            if isinstance(exc, (KeyboardInterrupt, TargetError)):
                raise
            raise TargetError(f"could not load app {spec!r}: {_one_line(exc)}") from None
        if not isinstance(app, Celery):
            raise TargetError(f"{spec!r} is a {type(app).__name__}, not a Celery app")
        try:
            app.loader.import_default_modules()
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, TargetError)):
                raise
            raise TargetError(f"app {spec!r} loaded, but importing its task modules failed: {_one_line(exc)}") from None
    register_app_secrets(app)
    return app


def validate_management_url(url: str) -> str:
    """--management-url must be an http(s) URL with a host and a numeric port (when it has one)."""
    SECRETS.add_url(url if "://" in url else "http://" + url)
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        split = urlsplit(text)
        split.port  # noqa: B018 - raises ValueError for a non-numeric or out-of-range port
    except ValueError as exc:
        raise TargetError(f"malformed --management-url {scrub(url)!r}: {_one_line(exc)}") from None
    if split.scheme.lower() not in ("http", "https") or not split.hostname:
        raise TargetError(f"--management-url {scrub(url)!r} is not an http(s) URL with a host "
                          "(expected e.g. http://host:15672)")
    return url


def app_for_broker(url: str):
    """A bare app for `--broker URL` without `--app`: defaults everywhere but the broker."""
    from celery import Celery

    return Celery("celery_doctor_target", broker=url, set_as_current=False)


def register_app_secrets(app) -> None:
    """The app's secrets other than its broker URL's (which the BrokerTarget registers): the read/write broker
    URLs, the result backend, passwords set on their own."""
    conf = app.conf
    for key in ("broker_read_url", "broker_write_url", "result_backend"):
        try:
            value = conf.get(key)
        except Exception:  # noqa: BLE001
            continue
        if isinstance(value, str):
            SECRETS.add_url(value)
    for key in ("broker_password", "redis_password"):
        SECRETS.add(conf.get(key) if isinstance(conf.get(key), str) else None)
    options = conf.get("broker_transport_options") or {}
    if isinstance(options, dict):
        for key in ("password", "sentinel_kwargs"):
            value = options.get(key)
            if isinstance(value, str):
                SECRETS.add(value)
            elif isinstance(value, dict) and isinstance(value.get("password"), str):
                SECRETS.add(value["password"])
