"""docs/api.md (every part's fields, every fact) is generated from the code; it must not drift."""
from pathlib import Path

from celery_doctor.docs_api import render_api

DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def test_api_reference_is_in_sync():
    assert DOC.read_text(encoding="utf-8") == render_api(), "run: .venv/bin/python -m celery_doctor.docs_api docs/api.md"


def test_every_part_and_fact_is_documented():
    text = DOC.read_text(encoding="utf-8")
    for part in ("config", "source", "broker", "redis", "rabbitmq", "workers"):
        assert f"## `celery_doctor.parts.{part}`" in text
    for fact in ("acks", "limits", "timeouts", "routing", "beat", "source_tasks"):
        assert f"### `celery_doctor.facts.{fact}`" in text
    assert "| `visibility_timeout` |" in text or "visibility" in text
