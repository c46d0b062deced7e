"""The asyncio client: `Queue` and `Job` of the sync client, on `redis.asyncio`.

    from pyscheduler.aio import Queue

    queue = Queue("emails", connection=redis.asyncio.Redis())
    job = await queue.enqueue(send_welcome, user_id, priority=5)
    result = await job.wait(timeout=30)

Enqueue options, validation and exceptions are the sync client's; what reads or writes Redis
is awaited. Enqueues that coroutines make at once on one client share round trips. One server
(redis://, rediss://, unix://, a `redis.asyncio.Redis`) or a Redis Cluster (redis+cluster://,
a `redis.asyncio.cluster.RedisCluster`); a Sentinel URL raises InvalidURL.
"""

from ..store.durability import Durability
from .job import Job
from .queue import Queue

__all__ = ["Durability", "Job", "Queue"]
