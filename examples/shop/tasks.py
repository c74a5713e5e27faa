"""The shop's tasks."""
import logging
from datetime import datetime, timedelta

from .celery import app

log = logging.getLogger(__name__)


class PaymentGatewayError(Exception):
    pass


@app.task(bind=True, time_limit=7200, soft_time_limit=7000)
def charge_order(self, order_id, amount_cents):
    """Charge a customer's card (slow gateway, so the limits are generous)."""
    log.info("charging order %s: %s cents", order_id, amount_cents)
    return {"order": order_id, "charged": amount_cents}


@app.task
def send_receipt(order_id, email):
    try:
        log.info("sending receipt for %s to %s", order_id, email)
    except Exception:
        log.exception("receipt failed")


@app.task(time_limit=1800)
def build_sales_report(day):
    return f"report for {day}"


@app.task
def sync_inventory(sku):
    return sku


@app.task
def remind_abandoned_carts():
    return 0


def checkout(order_id, amount_cents, email):
    """Called from the web view once an order is placed."""
    charge_order.apply_async((order_id, amount_cents))
    # Follow up two hours later if the order is still unpaid.
    charge_order.apply_async((order_id, amount_cents), countdown=2 * 60 * 60)
    send_receipt.apply_async((order_id, email), expires=datetime.utcnow() + timedelta(hours=1))
