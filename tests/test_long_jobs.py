"""Long jobs with real workers: time slices, pauses and resumptions from checkpoints, shutdown,
splitting into subtasks (from a handler and from a client), crashes, failures, cancelling.

Handlers live in `long_tasks.py`. Times that matter (a short job's wait) are read from job
records, both ends on the Redis clock. Figures the issue asks for are printed (run with -s).
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import statistics
import time
import uuid
from typing import Any

import pytest
import redis
from helpers import (
    as_int,
    executor_pids,
    kill_worker,
    pause_while_sleeping,
    send,
    start_worker,
    stop_worker,
    timed_stop,
    wait_until,
    worker_pid_of,
)

from pyscheduler import Job, JobFailed, Queue, Status, Subtask
from pyscheduler.client.splitting import subtask_id
from pyscheduler.runtime.allowlist import HandlerPolicy
from pyscheduler.runtime.child_protocol import RunRequest
from pyscheduler.runtime.executor import Executor
from pyscheduler.store.serialization import encode_payload

pytestmark = pytest.mark.crash


def new_key() -> str:
    return f"test:long:{uuid.uuid4().hex}"


def ints(conn: redis.Redis, key: str) -> list[int]:
    return [int(x) for x in conn.lrange(key, 0, -1)]


def texts(conn: redis.Redis, key: str) -> list[str]:
    return [x.decode() for x in conn.lrange(key, 0, -1)]


def percentile(samples: list[float], p: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def spec(func: str, *args: Any, queue: str = "sub", **options: Any) -> list[Any]:
    """One subtask for `long_tasks.split_and_gather`: [func, args, queue, options]."""
    return [func, list(args), queue, options]


def sub_info(sub: Queue, parent: Job, index: int, split: int = 1) -> Any:
    return sub.fetch_info(subtask_id(parent.id, split, index))


# -- time slices and pauses ---------------------------------------------------------------------


def test_short_jobs_wait_less_than_one_time_slice_behind_a_long_job(
    conn: redis.Redis, redis_url: str, workers: Any, engine: Any
) -> None:
    queue = Queue("work", connection=conn)
    key = new_key()
    steps, step_s, time_slice = 30, 0.1, 0.5
    start_worker(workers, "work")  # ONE worker, one job at a time
    long = queue.enqueue(
        "long_tasks:stepper", redis_url, key, steps, step_s, time_slice=time_slice, timeout=60
    )
    wait_until(lambda: conn.llen(f"{key}:steps") >= 1, what="the long job to start")

    shorts: list[Job] = []
    deadline = time.monotonic() + 30
    while long.status in (Status.QUEUED, Status.ACTIVE):  # a short job every 50 ms meanwhile
        assert time.monotonic() < deadline, "the long job did not finish within 30 s"
        shorts.append(queue.enqueue("long_tasks:short", len(shorts)))
        time.sleep(0.05)
    for i, job in enumerate(shorts):
        assert job.wait(timeout=10) == i

    records = [job.info().record for job in shorts]
    waits = [float(r["started"] - r["created"]) for r in records]
    long_info = long.info()
    pauses = int(long_info.record.get("pauses", 0))
    print(
        f"\n[{engine.kind}] time slice {time_slice} s, long job {steps} x {step_s} s:"
        f" {len(waits)} short jobs waited p50 {statistics.median(waits):.0f} ms,"
        f" p99 {percentile(waits, 99):.0f} ms, max {max(waits):.0f} ms;"
        f" the long job paused {pauses} times"
    )
    assert len(shorts) >= 40  # the stream ran for the whole ~3 s of the long job
    assert max(waits) < 750, f"a short job waited {max(waits):.0f} ms: more than about one slice"
    assert long.wait(timeout=1) == sum(range(steps))
    assert pauses >= 3
    assert long_info.attempts == 1  # pauses are not failed attempts
    assert ints(conn, f"{key}:steps") == list(range(steps))  # every step ran exactly once
    starts = [json.loads(r)["from"] for r in conn.lrange(f"{key}:runs", 0, -1)]
    assert len(starts) == pauses + 1
    assert starts == sorted(starts) and starts[0] == 0  # each run went on from the last one


def test_a_paused_job_shows_as_paused_with_its_checkpoint_between_runs(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue = Queue("work", connection=conn)
    first_key, second_key = new_key(), new_key()
    start_worker(workers, "work")
    first = queue.enqueue("long_tasks:stepper", redis_url, first_key, 10, 0.1, time_slice=0.3)
    second = queue.enqueue("long_tasks:stepper", redis_url, second_key, 10, 0.1, time_slice=0.3)

    # The only worker runs one slice of the first job, pauses it and takes the second: the
    # first waits in the queue meanwhile.
    def paused_info() -> Any:
        info = first.info()
        return info if info.paused else None

    info = wait_until(paused_info, timeout=10, what="the first job to be paused")
    assert info.status == Status.QUEUED
    step = info.checkpoint["step"]
    assert 1 <= step < 10
    assert info.checkpoint == {"step": step, "acc": sum(range(step))}
    assert info.record["pauses"] >= 1

    assert first.wait(timeout=15) == sum(range(10))
    assert second.wait(timeout=15) == sum(range(10))
    done = first.info()
    assert not done.paused
    assert done.status == Status.COMPLETE


def test_a_task_default_time_slice_pauses_the_jobs_enqueued_with_it(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    from long_tasks import sliced_stepper

    queue = Queue("work", connection=conn)
    key = new_key()
    start_worker(workers, "work")
    job = queue.enqueue(sliced_stepper, redis_url, key, 10, 0.05)  # no time_slice given
    assert job.wait(timeout=15) == sum(range(10))
    info = job.info()
    assert info.record["time_slice"] == 0.2
    assert info.record["pauses"] >= 2
    assert ints(conn, f"{key}:steps") == list(range(10))


def test_sigterm_pauses_a_checkpointing_job_and_another_worker_resumes_it(
    conn: redis.Redis, redis_url: str, workers: Any, engine: Any
) -> None:
    queue = Queue("work", connection=conn)
    key = new_key()
    steps = 40
    first, log = start_worker(workers, "work")
    job = queue.enqueue("long_tasks:stepper", redis_url, key, steps, 0.1, timeout=60)
    wait_until(lambda: conn.llen(f"{key}:steps") >= 5, what="five steps of the job")

    exit_s, text = timed_stop(first, log)
    print(f"\n[{engine.kind}] worker exited {exit_s:.3f} s after SIGTERM (job of 0.1 s steps)")
    assert exit_s < 2.0, f"the worker took {exit_s:.2f} s to exit:\n{text}"
    assert first.returncode == 0, text

    info = job.info()
    done = ints(conn, f"{key}:steps")
    resume_at = len(done)
    assert 5 <= resume_at < steps
    assert done == list(range(resume_at))
    assert info.status == Status.QUEUED
    assert info.paused
    assert info.checkpoint == {"step": resume_at, "acc": sum(range(resume_at))}

    second, _ = start_worker(workers, "work")
    assert job.wait(timeout=20) == sum(range(steps))
    assert ints(conn, f"{key}:steps") == list(range(steps))  # no step before it was redone
    runs = [json.loads(r) for r in conn.lrange(f"{key}:runs", 0, -1)]
    assert [r["from"] for r in runs] == [0, resume_at]
    assert runs[0]["pid"] != runs[1]["pid"]
    info = job.info()
    assert worker_pid_of(info.record) == second.pid
    assert info.attempts == 1
    assert info.record["pauses"] == 1


def test_sigterm_just_after_a_job_was_taken_still_pauses_it(
    conn: redis.Redis, redis_url: str, workers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = Queue("work", connection=conn)
    key = new_key()
    monkeypatch.setenv("PSQ_TEST_IMPORT_DELAY", "0.5")
    proc, log = start_worker(workers, "work")
    job = queue.enqueue("long_tasks:stepper", redis_url, key, 40, 0.1, timeout=60)
    # Leased, while its executor still imports the handler's module: no step has run yet.
    wait_until(lambda: job.status == Status.ACTIVE, what="the job to be taken")
    assert conn.llen(f"{key}:runs") == 0

    exit_s, text = timed_stop(proc, log)
    assert exit_s < 2.0, f"the worker took {exit_s:.2f} s to exit:\n{text}"
    assert proc.returncode == 0, text
    info = job.info()
    assert info.paused, info
    done = ints(conn, f"{key}:steps")
    assert 1 <= len(done) < 40
    assert info.checkpoint == {"step": len(done), "acc": sum(range(len(done)))}


def test_sigterm_pauses_every_checkpointing_job_of_a_concurrent_worker(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue = Queue("work", connection=conn)
    keys = [new_key(), new_key()]
    proc, log = start_worker(workers, "work", concurrency=2)
    jobs = [queue.enqueue("long_tasks:stepper", redis_url, k, 40, 0.1, timeout=60) for k in keys]
    for k in keys:
        wait_until(lambda k=k: conn.llen(f"{k}:steps") >= 2, what="both jobs to run")

    exit_s, text = timed_stop(proc, log)
    assert exit_s < 2.0, f"the worker took {exit_s:.2f} s to exit:\n{text}"
    assert proc.returncode == 0, text
    for job, k in zip(jobs, keys, strict=True):
        info = job.info()
        done = len(ints(conn, f"{k}:steps"))
        assert info.paused, info
        assert info.checkpoint == {"step": done, "acc": sum(range(done))}


def test_an_executor_asked_to_pause_as_it_starts_lives_and_runs_its_job() -> None:
    # The worker asks for a pause with SIGUSR1, whose default action kills: an executor must
    # not die of one that arrives before it has installed its handler.
    record = json.dumps({"status": "active", "func": "tasks:add", "priority": 0})
    payload = encode_payload([2, 3], {}, 1_000_000).encode()
    request = RunRequest("work", "j1", "1", record.encode(), payload, None, 1000, 10.0)
    for _ in range(10):
        executor = Executor(HandlerPolicy(), redis.Redis())
        try:
            executor.request_pause()  # at once, before the child had time to set up
            requests = [dataclasses.replace(request)]
            executor.number(requests)
            executor.submit(requests)
            outcome = executor.receive()
            assert outcome is not None
            assert (outcome.ok, outcome.result) == (True, b"5")
            assert executor.process.is_alive()
        finally:
            executor.kill()


def test_sigterm_lets_a_job_without_checkpoints_finish(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    queue = Queue("work", connection=conn)
    key = new_key()
    proc, log = start_worker(workers, "work")
    # A time slice, but no checkpoint to pause at: the job runs to its end.
    job = queue.enqueue(
        "long_tasks:sleep_without_checkpoints", redis_url, key, 1.0, 20, time_slice=0.2
    )
    wait_until(lambda: conn.llen(f"{key}:runs") == 1, what="the job to start")

    stop_worker(proc, log)
    assert conn.llen(f"{key}:ends") == 1  # it finished before the worker exited
    info = job.info()
    assert info.status == Status.COMPLETE, info
    assert info.result == "finished"
    assert info.attempts == 1
    assert "pauses" not in info.record
    assert info.checkpoint is None


# -- splitting ----------------------------------------------------------------------------------


def test_split_parent_waits_then_sums_its_subtasks_results_in_subtask_order(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    main = Queue("main", connection=conn)
    key = new_key()
    n, unit = 4, 0.3
    start_worker(workers, "main")
    start_worker(workers, "sub", concurrency=n)
    # Later subtasks sleep less, so they finish first.
    specs = [spec("long_tasks:square_later", redis_url, key, i, (n - i) * unit) for i in range(n)]
    parent = main.enqueue("long_tasks:split_and_gather", redis_url, key, specs)

    def progress() -> Any:
        info = parent.info()
        return info if info.status == Status.WAITING and (info.subtasks_done or 0) > 0 else None

    waiting = wait_until(progress, timeout=10, what="the waiting parent to show progress")
    assert waiting.subtasks_total == n
    assert 0 < (waiting.subtasks_done or 0) < n

    assert parent.wait(timeout=20) == {
        "results": [i * i for i in range(n)],
        "sum": sum(i * i for i in range(n)),
    }
    finished = ints(conn, f"{key}:finished")
    assert sorted(finished) == list(range(n))
    assert finished != sorted(finished)  # they did finish out of order
    assert texts(conn, f"{key}:parent") == ["split", "gather"]
    info = parent.info()
    assert (info.subtasks_done, info.subtasks_total) == (n, n)
    assert info.attempts == 1


def test_client_group_runs_its_continuation_once_with_results_and_arguments(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    main = Queue("main", connection=conn)
    key = new_key()
    start_worker(workers, "main")
    start_worker(workers, "sub", concurrency=3)
    group = main.enqueue_group(
        [
            Subtask("long_tasks:square_later", redis_url, key, i, (3 - i) * 0.2, queue="sub")
            for i in range(3)
        ],
        "long_tasks:combine",
        redis_url,
        key,
        "extra!",
    )
    assert group.info().status == Status.WAITING
    assert group.wait(timeout=20) == {"results": [0, 1, 4], "extra": "extra!"}
    assert as_int(conn.get(f"{key}:combined")) == 1
    assert sorted(ints(conn, f"{key}:finished")) == [0, 1, 2]


def test_nested_split_across_three_queues_sums_every_leaf(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    main, sub, leaf = (Queue(name, connection=conn) for name in ("main", "sub", "leaf"))
    key = new_key()
    start_worker(workers, "main", "sub", "leaf", concurrency=2)
    # 1 splits into 2, 3 (queue sub), which split into 4..7 (queue leaf).
    root = main.enqueue("long_tasks:tree", redis_url, key, 1, ["sub", "leaf"])
    assert root.wait(timeout=20) == 4 + 5 + 6 + 7
    assert sorted(ints(conn, f"{key}:leaves")) == [4, 5, 6, 7]  # each leaf ran once
    for index, value in ((1, 2), (2, 3)):
        middle = sub_info(sub, root, index)
        assert middle.status == Status.COMPLETE
        assert middle.result == 2 * value + 2 * value + 1
        assert middle.record["split"] == 1
        for b in (1, 2):
            assert leaf.fetch_info(subtask_id(middle.id, 1, b)).result == 2 * value + b - 1


# -- crashes, failures, cancelling ----------------------------------------------------------------


def split_with_a_slow_first_subtask(
    conn: redis.Redis,
    main: Queue,
    redis_url: str,
    key: str,
    first: str = "long_tasks:counted_square",
    seconds: float = 1.5,
) -> Job:
    """A job split into three squares on `sub`, the first (handler `first`) slow: `seconds`;
    returns once that one has started."""
    specs = [spec(first, redis_url, key, 1, seconds)] + [
        spec("long_tasks:counted_square", redis_url, key, i, 0.05) for i in (2, 3)
    ]
    parent = main.enqueue("long_tasks:split_and_gather", redis_url, key, specs)
    wait_until(lambda: as_int(conn.get(f"{key}:runs:1")) == 1, what="subtask 1 to start")
    return parent


def test_a_subtask_whose_worker_is_killed_runs_again_and_counts_once(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    main, sub = Queue("main", connection=conn), Queue("sub", connection=conn)
    key = new_key()
    start_worker(workers, "main")
    victim, _ = start_worker(workers, "sub", lease=1.0)
    # Its first run would last a minute: it ends only by the kill.
    parent = split_with_a_slow_first_subtask(
        conn, main, redis_url, key, "long_tasks:square_slow_on_first_run", 60.0
    )
    [executor] = executor_pids(victim.pid)

    start_worker(workers, "sub", lease=1.0)
    wait_until(
        lambda: as_int(conn.get(f"{key}:runs:3")) == 1, what="the other subtasks to run elsewhere"
    )
    kill_worker(victim, executor)

    assert parent.wait(timeout=20) == {"results": [1, 4, 9], "sum": 14}
    assert [as_int(conn.get(f"{key}:runs:{i}")) for i in (1, 2, 3)] == [2, 1, 1]
    crashed = sub_info(sub, parent, 1)
    assert (crashed.status, crashed.attempts, crashed.record["lost"]) == (Status.COMPLETE, 2, 1)
    info = parent.info()
    assert (info.subtasks_done, info.subtasks_total) == (3, 3)
    assert texts(conn, f"{key}:parent") == ["split", "gather"]  # resumed once
    assert info.attempts == 1


def test_a_stalled_workers_late_subtask_result_is_refused_and_counts_once(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    main, sub = Queue("main", connection=conn), Queue("sub", connection=conn)
    key = new_key()
    start_worker(workers, "main")
    stalled, stalled_log = start_worker(workers, "sub", lease=1.0)
    parent = split_with_a_slow_first_subtask(conn, main, redis_url, key)
    # Stop the worker while it waits on its run; its executor runs on and finishes.
    pause_while_sleeping(stalled)
    try:
        start_worker(workers, "sub", lease=1.0)
        assert parent.wait(timeout=20) == {"results": [1, 4, 9], "sum": 14}
        time.sleep(0.2)  # the stalled run has ended: its outcome waits in the pipe
    finally:
        send(stalled, signal.SIGCONT)

    late = subtask_id(parent.id, 1, 1)
    stalled_log.wait_for(f"late result of job {late} refused", timeout=5)
    assert as_int(conn.get(f"{key}:runs:1")) == 2
    info = parent.info()
    assert (info.subtasks_done, info.subtasks_total) == (3, 3)
    assert info.status == Status.COMPLETE
    assert info.result == {"results": [1, 4, 9], "sum": 14}
    assert texts(conn, f"{key}:parent") == ["split", "gather"]
    assert sub_info(sub, parent, 1).attempts == 2


def three_squares_the_second_refused(redis_url: str, key: str) -> list[list[Any]]:
    """Subtask specs whose second one fails for good (no retries)."""
    return [
        spec("long_tasks:counted_square", redis_url, key, 1, 0.0),
        spec("long_tasks:refuse", "bad subtask input", retries=0),
        spec("long_tasks:counted_square", redis_url, key, 3, 0.0),
    ]


def test_a_subtask_failing_for_good_fails_the_parent(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    main = Queue("main", connection=conn)
    key = new_key()
    start_worker(workers, "main")
    start_worker(workers, "sub")
    specs = three_squares_the_second_refused(redis_url, key)
    parent = main.enqueue("long_tasks:split_and_gather", redis_url, key, specs)
    with pytest.raises(JobFailed) as failed:
        parent.wait(timeout=20)
    assert "subtask 2 of split 1 failed" in (failed.value.error or "")
    assert "subtask 2 of split 1 failed: ValueError: bad subtask input" in str(failed.value)
    assert parent.info().status == Status.FAILED
    assert texts(conn, f"{key}:parent") == ["split"]  # never resumed


def test_a_collected_subtask_failure_appears_among_the_results(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    main = Queue("main", connection=conn)
    key = new_key()
    start_worker(workers, "main")
    start_worker(workers, "sub")
    specs = three_squares_the_second_refused(redis_url, key)
    parent = main.enqueue("long_tasks:split_and_gather", redis_url, key, specs, collect=True)
    result = parent.wait(timeout=20)
    assert result["sum"] == 10
    first, failure, third = result["results"]
    assert (first, third) == (1, 9)
    assert failure == {"failed": 2, "error": "subtask 2 failed: ValueError: bad subtask input"}
    assert parent.info().status == Status.COMPLETE


def test_cancelling_a_waiting_parent_cancels_its_pending_subtasks(
    conn: redis.Redis, redis_url: str, workers: Any
) -> None:
    main, sub = Queue("main", connection=conn), Queue("sub", connection=conn)
    key = new_key()
    n = 4
    start_worker(workers, "main")
    start_worker(workers, "sub", lease=1.0)  # one at a time: the others stay queued
    specs = [spec("long_tasks:counted_square", redis_url, key, i, 2.0) for i in range(1, n + 1)]
    parent = main.enqueue("long_tasks:split_and_gather", redis_url, key, specs)
    wait_until(lambda: as_int(conn.get(f"{key}:runs:1")) == 1, what="subtask 1 to start")
    assert parent.info().status == Status.WAITING

    assert parent.cancel() == Status.WAITING
    assert parent.info().status == Status.CANCELLED
    for index in range(1, n + 1):
        assert sub_info(sub, parent, index).status == Status.CANCELLED

    # A job queued behind them runs: had the cancelled subtasks stayed runnable, they would
    # have run before it (FIFO).
    marker = sub.enqueue("tasks:add", 1, 1)
    assert marker.wait(timeout=15) == 2
    assert [as_int(conn.get(f"{key}:runs:{i}")) for i in range(1, n + 1)] == [1, 0, 0, 0]
    for index in range(1, n + 1):
        assert sub_info(sub, parent, index).status == Status.CANCELLED
    assert parent.info().status == Status.CANCELLED
    assert texts(conn, f"{key}:parent") == ["split"]


def test_a_handler_splits_into_10000_subtasks_and_sums_their_results(
    conn: redis.Redis, workers: Any, engine: Any
) -> None:
    main, sub = Queue("main", connection=conn), Queue("sub", connection=conn)
    n = 10_000
    start_worker(workers, "main")
    start_worker(workers, "sub", concurrency=2)
    started = time.monotonic()
    parent = main.enqueue("long_tasks:fan_out", n, "sub", timeout=60)
    result = parent.wait(timeout=110)
    elapsed = time.monotonic() - started
    print(
        f"\n[{engine.kind}] {n} subtasks split, run (concurrency 2) and summed in {elapsed:.1f} s"
    )
    assert result == {"count": n, "sum": n * (n - 1) // 2}
    info = parent.info()
    assert (info.subtasks_done, info.subtasks_total) == (n, n)
    counts = sub.counts()
    assert (counts.queued, counts.active, counts.failed) == (0, 0, 0)
    assert counts.stats.get("completed") == n
