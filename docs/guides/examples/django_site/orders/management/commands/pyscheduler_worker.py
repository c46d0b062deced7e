"""`python manage.py pyscheduler_worker QUEUE...`: a worker with Django set up."""

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from shop.scheduler import connection

from pyscheduler import Worker


class Command(BaseCommand):
    help = "Run a pyscheduler worker on QUEUES, in order, with this project's settings."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("queues", nargs="+", metavar="QUEUE")
        parser.add_argument("-c", "--concurrency", type=int, default=1)

    def handle(self, *args: Any, **options: Any) -> None:
        # manage.py has called django.setup(): the worker's child processes are forked from
        # this one, so every handler starts with the app registry ready.
        worker = Worker(
            options["queues"], connection=connection(), concurrency=options["concurrency"]
        )
        worker.work()  # until SIGTERM or Ctrl-C: running jobs finish first
