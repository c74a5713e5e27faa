"""Facts: the questions about Celery that checks share, each answered once, as a pure function over snapshot parts.

- acks: a task's effective acknowledgement behaviour (early/late, worker lost, failure, timeout);
- limits: a task's soft and hard time limits as the prefork pool enforces them;
- timeouts: Redis' visibility timeout and RabbitMQ's consumer_timeout;
- routing: where a task is routed and whether that queue is declared;
- beat: the period of a beat schedule, crontab included;
- source_tasks: the tasks defined in the source (one discovery for every check).

Each is tested against Celery's own behaviour (tests/test_facts.py).
"""
