"""Big values cross between a worker and its child process in time linear in their size.

A payload goes from the worker to the child and a result back in many pieces (a pipe takes a
few hundred KB at a time). Each piece must be copied once: appending to one bytes buffer, or
cutting the sent part off one, copies everything so far at every piece (a 100 MB result took
74 s). The checks count the worker's own CPU time, which a busy machine does not inflate the
way it does wall time, against a bound far above the linear cost and far below the quadratic.
"""

from __future__ import annotations

import json
import time

import redis

from pyscheduler import Queue, Worker
from pyscheduler.dev.engine import free_port
from pyscheduler.runtime.allowlist import HandlerPolicy
from pyscheduler.runtime.child_protocol import Outcome, RunRequest
from pyscheduler.runtime.executor import Executor
from pyscheduler.store import calls

SIZE = 48 * 1024 * 1024
# The worker's CPU seconds to move SIZE bytes each way: about 0.3 s when linear, over 15 s
# when quadratic (measured with tools/bench_transfer.py).
CPU_BOUND_S = 5.0


def request(payload: str) -> RunRequest:
    record = {"status": "active", "func": "tasks:echo", "priority": 0, "attempts": 1}
    return RunRequest(
        "big", "job-1", "0" * 32, json.dumps(record).encode(), payload.encode(), None, 60_000, 600
    )


def test_big_payload_and_result_cross_a_child_in_linear_time() -> None:
    value = 'ab"c\n' * (SIZE // 5)  # quotes and newlines: escaped in the JSON envelopes
    executor = Executor(HandlerPolicy(), redis.Redis(port=free_port()))
    try:
        started = time.process_time()
        requests = [request(json.dumps({"args": [value], "kwargs": {}}))]
        executor.number(requests)
        executor.submit(requests)
        sent = time.process_time() - started
        outcomes: list[Outcome] = []
        while not outcomes:
            executor.flush()
            outcomes = executor.outcomes() or []
            assert executor.process.is_alive() or outcomes
            time.sleep(0.001)
        worker_cpu = time.process_time() - started
    finally:
        executor.kill()

    [outcome] = outcomes
    assert outcome.ok, str(outcome)[:500]
    assert json.loads(outcome.result) == value
    assert worker_cpu < CPU_BOUND_S, f"{worker_cpu:.2f} s of CPU (sending: {sent:.2f} s)"


def test_big_payload_and_result_cross_a_worker_intact(conn: redis.Redis) -> None:
    queue = Queue("big", connection=conn, max_payload_bytes=2 * SIZE)
    limits = {"max_payload_bytes": str(2 * SIZE), "max_result_bytes": str(2 * SIZE)}
    calls.configure(conn, queue.keys, limits)
    value = 'é"\n' * (SIZE // 4)
    job = queue.enqueue("tasks:echo", value)

    started = time.process_time()
    assert Worker([queue]).work(burst=True) == 1
    worker_cpu = time.process_time() - started

    assert job.result == value
    # Generous: this includes reading the payload from Redis and writing the result back.
    assert worker_cpu < 2 * CPU_BOUND_S, f"{worker_cpu:.2f} s of CPU"
