"""The project's queue, built from settings once per process."""

from functools import cache

import redis
from django.conf import settings

from pyscheduler import Queue


@cache
def connection() -> redis.Redis:
    # Built at first use: importing this module (manage.py does, for every command) touches
    # neither the settings nor Redis.
    return redis.Redis.from_url(settings.PYSCHEDULER_URL)


@cache
def queue() -> Queue:
    if settings.PYSCHEDULER_EAGER:  # tests: jobs run inline at enqueue, no Redis needed
        return Queue(settings.PYSCHEDULER_QUEUE, eager=True)
    return Queue(settings.PYSCHEDULER_QUEUE, connection=connection())
