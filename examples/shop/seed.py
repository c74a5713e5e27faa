"""Put the example shop's broker into a realistic state: queued orders, a routed queue nobody consumes,
and a pile of duplicated periodic runs, published by the shop's own Celery producer (Redis db 15)."""
import sys

from examples.shop import tasks
from examples.shop.celery import app


def main() -> int:
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1)
        # Start from a clean example database (db 15 belongs to this example alone).
        conn.default_channel.client.flushdb()
    for order in range(20):
        tasks.charge_order.apply_async((order, 1999))
    for _ in range(40):
        tasks.build_sales_report.apply_async(("2026-11-22",))
    tasks.charge_order.apply_async((99, 1999), countdown=2 * 60 * 60)
    print("seeded the example broker", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
