"""A broker or result backend password written literally in the source (CD173): a security exposure, not a
cause of lost tasks."""
from __future__ import annotations

from celery_doctor.masking import mask_url
from celery_doctor.model import Category, Confidence, Impact, Location, Runbook, Snapshot, check
from celery_doctor.static.secrets import LOCAL_HOSTS, literal_urls


@check(
    id="CD173",
    slug="password-in-source",
    title="A broker or result backend password is written in the source",
    category=Category.SECURITY,
    needs=("source",),
    impact=Impact.MEDIUM,
    runbook=Runbook(
        symptom="No loss symptom: the broker's (or result backend's) password is in the code, so in every clone, "
                "fork, CI log and image built from it.",
        why="Anyone who can read the repository can connect to the broker: read, delete or inject messages (with "
            "pickle accepted, run code on workers: CD142). A password in a URL literal stays in the history after "
            "it is removed. Test files (tests/, test_*.py, conftest.py) and placeholders (`${...}`, `<...>`, "
            "`***`) are not reported; a password that is only the default of an environment lookup "
            "(`os.environ.get('BROKER_URL', 'redis://:pw@...')`) is, since it is in the code all the same. Local "
            "hosts (development defaults) are reported at low impact.",
        confirm="`git grep -nE '(redis|amqp|sqs|mongodb)s?://[^:]*:[^@]+@'`.",
        fix="Read the URL (or only the password) from the environment or a secret store: `broker_url = "
            "os.environ['CELERY_BROKER_URL']`; rotate the password if the repository was ever shared.",
        risk="Rotating the password disconnects every worker and producer still using the old one: roll it out "
             "with the new configuration.",
    ),
)
def password_in_source(snapshot: Snapshot):
    seen = set()
    for path, line, url, _, host in literal_urls(snapshot.source):
        if (path, line) in seen:
            continue
        seen.add((path, line))
        local = host in LOCAL_HOSTS
        yield password_in_source.finding(
            subject=f"file:{path}:{line}",
            evidence=[f"{mask_url(url)} is written at {path}:{line} with its password (masked here)",
                      "a local host: a development default, but the same value is often deployed" if local else
                      "anyone who can read the code can use the broker or backend with it"],
            confidence=Confidence.CONFIGURED,
            location=Location(path, line),
            impact=Impact.LOW if local else Impact.MEDIUM,
        )


CHECKS = [password_in_source]
