"""A password that is a common word is masked where it is the password, not everywhere the word appears.

`redis://:celery@host/0` or `amqp://celery:celery@host//`: the password never appears as a credential (URL
userinfo, `password=`, `'password': '...'`, `AUTH ...`) in any output, log or error, but task names, queue
names, setting names and fixes that contain the word stay readable. A distinctive password (long, or mixing
letters with digits or symbols) is still masked wherever it appears (tests/test_trust_secrets.py).
"""
from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from celery_doctor.masking import MASK, SecretRegistry, distinctive
from tests.test_trust_messages import canonical
from tests.test_trust_support import canary, cli, redis_available, redis_client, uid

DB = 10


def registry(*urls: str) -> SecretRegistry:
    reg = SecretRegistry()
    for url in urls:
        reg.add_url(url)
    return reg


@pytest.mark.parametrize("secret, expected", [
    ("celery", False), ("guest", False), ("password", False), ("rabbitmq", False), ("celery_tasks", False),
    ("proj.tasks", False), ("12345678", False), ("abc", False), ("p@ss", False),
    ("s3cr3t-pw", True), ("pw123456", True), ("Canary-9f8e7d", True), ("pw2-secret", True), ("hunter22", True),
    ("xKqPzWmRtYbNvCdEf", True), ("correct-horse-battery-staple", True),
])
def test_which_passwords_are_distinctive(secret, expected):
    assert distinctive(secret) is expected


def test_a_common_word_password_is_masked_only_where_it_is_the_password():
    reg = registry("amqp://celery:celery@rabbit//", "redis://:celery@redis:6379/0")
    cases = {
        # credential positions: always masked
        "amqp://celery:celery@rabbit//": "amqp://celery:***@rabbit//",
        "redis://:celery@redis:6379/0": "redis://:***@redis:6379/0",
        "cannot connect to celery:celery@rabbit:5672": "cannot connect to celery:***@rabbit:5672",
        "{'password': 'celery', 'userid': 'celery'}": "{'password': '***', 'userid': 'celery'}",
        '{"broker_password": "celery"}': '{"broker_password": "***"}',
        "redis_password=celery, ssl=False": "redis_password=***, ssl=False",
        "login with password celery refused": "login with password *** refused",
        "AUTH celery": "AUTH ***",
        # everywhere else the word is a word
        "queue celery: 3 message(s) waiting": "queue celery: 3 message(s) waiting",
        "tasks in it: celery.backend_cleanup (2), proj.celery_tasks.add (1)":
            "tasks in it: celery.backend_cleanup (2), proj.celery_tasks.add (1)",
        "Start a worker (`celery -A proj worker -Q celery`)": "Start a worker (`celery -A proj worker -Q celery`)",
        "user celery on vhost /": "user celery on vhost /",
        "password=celeryd (another value)": "password=celeryd (another value)",
    }
    for text, expected in cases.items():
        assert reg.scrub(text) == expected, text


def test_a_distinctive_password_is_still_masked_anywhere():
    secret = canary("D")
    reg = registry(f"amqp://celery:{secret}@rabbit//")
    assert reg.scrub(f"error near {secret} in a library message") == f"error near {MASK} in a library message"
    assert secret not in reg.scrub(f"netloc celery:{secret}@rabbit and {secret[4:]}{secret}")


WORDS = st.from_regex(r"[a-z]{3,8}(_[a-z]{2,6})?", fullmatch=True)  # up to 15: word-like


@settings(max_examples=200, deadline=None)
@given(WORDS, st.lists(st.sampled_from(["proj.{w}.add", "{w}", "queue:{w}", "{w}_queue", "setting:{w}",
                                        "`celery -A {w} worker`", "{w}@host", "{w}:", "x{w}y"]), max_size=8),
       st.sampled_from(["redis://:{w}@h:6379/0", "amqp://{w}:{w}@h//", "amqp://user:{w}@h/vhost"]))
def test_word_passwords_leave_names_alone_and_never_stay_in_a_credential_position(word, pieces, url_form):
    url = url_form.format(w=word)
    reg = registry(url)
    names = " ".join(piece.format(w=word) for piece in pieces)
    assert reg.scrub(names) == names  # no credential position: nothing to mask
    for text in (url, f"connect {url} failed", f"netloc {word}:{word}@h", f"password={word}", f"{{'password': '{word}'}}"):
        scrubbed = reg.scrub(text)
        assert f":{word}@" not in scrubbed and f"password={word}" not in scrubbed and f"'{word}'" not in scrubbed, \
            (text, scrubbed)


# ------------------------------------------------------------------------------------------- the CLI

def test_lint_with_a_word_password_reports_the_same_as_with_a_random_one(tmp_path):
    """amqp://celery:celery@host//: fixes and names mentioning `celery` are not blanked out."""
    # --fail-on low: a bare app's findings are low advice now (it exits 0 by default); exit 1 says they were found.
    # The project revokes tasks (lint reads the current directory's source), so CD147 and its fix
    # (`--statedb=/var/run/celery/%n.state`) are reported: a fix that names the word.
    (tmp_path / "ops.py").write_text("def cancel(app, task_id):\n    app.control.revoke(task_id)\n")
    word = cli("lint", "--broker", "amqp://celery:celery@127.0.0.1:5672//", "--format", "json", "-v",
               "--fail-on", "low", cwd=tmp_path)
    random = cli("lint", "--broker", f"amqp://celery:{canary('L')}@127.0.0.1:5672//", "--format", "json",
                 "--fail-on", "low", cwd=tmp_path)
    assert word.code == random.code == 1 and not word.crash_logs, str(word)
    a, b = word.json(), random.json()
    assert a["target"]["broker"] == b["target"]["broker"] == "amqp://celery:***@127.0.0.1:5672//"
    assert a["findings"] == b["findings"] and a["checks"] == b["checks"]
    assert "/var/run/celery/" in word.stdout  # a fix that names the word
    assert ":celery@" not in word.stdout + word.stderr


@pytest.mark.redis
def test_scan_with_a_word_password_keeps_task_and_queue_names_readable(tmp_path):
    """redis://:celery@...: the local Redis has no password, so it lets the client in as it lets kombu in."""
    if not redis_available():
        pytest.skip("no Redis")
    r = redis_client(DB)
    queue = f"celery-words-{uid()}"
    for _ in range(2):
        r.lpush(queue, canonical(task="proj.celery.add"))
    try:
        runs = {fmt: cli("scan", "--broker", f"redis://:celery@127.0.0.1:6379/{DB}", "--format", fmt, "-v",
                         "--timeout", "8", cwd=tmp_path) for fmt in ("text", "json", "sarif", "markdown")}
    finally:
        r.delete(queue)
    for fmt, run in runs.items():
        assert run.code in (0, 1) and not run.crash_logs, str(run)
        everything = run.everything()
        assert ":celery@" not in everything and not re.search(r"password\W+celery\b", everything), fmt
        assert queue in everything and "proj.celery.add" in everything, f"{fmt}: names were masked:\n{run}"
        assert "***.add" not in everything and f"{MASK}-words-" not in everything
    data = runs["json"].json()
    assert data["target"]["broker"] == f"redis://:***@127.0.0.1:6379/{DB}"
    evidence = " ".join(e for f in data["findings"] for e in f["evidence"])
    assert f"{queue}:" in evidence and "proj.celery.add (2)" in evidence, evidence
    assert "redis" not in {n["part"] for n in data["not_checked"]}, data["not_checked"]
    assert json.loads(runs["sarif"].stdout)["version"] == "2.1.0"
