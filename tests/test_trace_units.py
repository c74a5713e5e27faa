"""What trace says happens next to a task a worker holds: from facts.acks, never a guess (no broker needed)."""
from types import SimpleNamespace

from celery_doctor.model import Part, Snapshot, Target
from celery_doctor.parts import config as config_part
from celery_doctor.trace import _if_process_dies


def _snapshot(**task_options) -> Snapshot:
    task = config_part.example_task("proj.tasks.work", **task_options)
    config = config_part.example(tasks=[task])
    return Snapshot(target=Target(app="proj", broker=None, transport="redis"), parts={"config": Part.gathered(config)})


def test_a_running_task_whose_process_dies_follows_its_acks():
    ref = SimpleNamespace(name="proj.tasks.work", acknowledged=True)
    assert "acked when it started: the task is lost" in _if_process_dies(_snapshot(acks_late=False), ref)
    ref = SimpleNamespace(name="proj.tasks.work", acknowledged=False)
    assert "the task is lost" in _if_process_dies(_snapshot(acks_late=True, reject_on_worker_lost=False), ref)
    assert "requeued" in _if_process_dies(_snapshot(acks_late=True, reject_on_worker_lost=True), ref)
    unknown = SimpleNamespace(name="other.task", acknowledged=False)
    assert "not known" in _if_process_dies(_snapshot(), unknown)
