"""Built-in configuration checks (static: they read only the app's configuration and source)."""
from . import config_acks, config_misc, config_publish, config_redis, config_routing

CHECKS = [*config_acks.CHECKS, *config_redis.CHECKS, *config_routing.CHECKS, *config_publish.CHECKS,
          *config_misc.CHECKS]
