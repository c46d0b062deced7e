"""The handlers the worker runs. They use the ORM, so Django must be set up in the worker
before this module is imported: `manage.py pyscheduler_worker` or `--import shop.worker` does
that (docs/guides/django.md)."""

from django.db import close_old_connections, transaction

from pyscheduler import task

from .models import Order


def fresh_database_connection() -> None:
    """Drop a stale or broken connection before a job, as Django does before each request:
    a worker process lives long, outside the request cycle."""
    if not transaction.get_connection().in_atomic_block:  # an eager job inside a TestCase
        close_old_connections()


@task(retries=3)
def prepare_order(order_id: int) -> str:
    fresh_database_connection()
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order_id)
        # ... cook, pack, print the label ...
        order.status = "ready"
        order.save(update_fields=["status"])
    return f"{order.quantity} x {order.item} ready"
