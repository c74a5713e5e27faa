"""Built-in configuration checks (static: they read only the app's configuration and source).

Findings about the broker, acknowledgements, limits and beat are conditional when the configuration is not a
production one (task_always_eager, test settings): see config_context.gated."""
from . import (
    config_acks,
    config_beat,
    config_broker,
    config_misc,
    config_publish,
    config_redis,
    config_routing,
    config_static,
)
from .config_context import gated

# Checks whose findings hold only where tasks go through a broker and workers (not under task_always_eager).
# Not gated: CD122 (beat sends unregistered names with send_task, which eager mode ignores), CD123 (it is the
# eager finding), CD142 (what workers deserialize), CD148 (a value of the wrong type is wrong anywhere), CD151 (it
# stays silent outside production by itself).
CONDITIONAL = frozenset({"CD101", "CD102", "CD103", "CD104", "CD110", "CD111", "CD112", "CD113", "CD114", "CD120",
                         "CD121", "CD130", "CD131", "CD132", "CD133", "CD134", "CD140", "CD141", "CD143", "CD144",
                         "CD145", "CD147", "CD150", "CD152"})

CHECKS = [gated(c) if c.id in CONDITIONAL else c
          for c in (*config_acks.CHECKS, *config_redis.CHECKS, *config_routing.CHECKS, *config_publish.CHECKS,
                    *config_misc.CHECKS, *config_beat.CHECKS, *config_broker.CHECKS,
                    *config_static.CHECKS)]
