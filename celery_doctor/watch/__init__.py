"""`celery-doctor watch`: follow Celery's event stream live and report tasks being lost.

Modules: redis_source / amqp_source (subscribe without leaving anything behind), decode (JSON only, argument
and result values dropped), ledger (bounded per task id and per worker), evidence (busy versus dead from the
broker's view of connections), session (everything learned, fed item by item, live or replayed), recording
(JSON lines), live (the view on stderr), control (--enable-events), engine (the run, the replay, the report).
"""
