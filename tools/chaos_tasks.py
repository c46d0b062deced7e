"""Handlers of `tools/chaos.py`: each run notes its start and its end, with its fencing token,
in a file of its own process that outlives the Redis server (the server is killed too).

A line is one `write` on a file opened with O_APPEND, so it lands whole even when the process
is killed at any moment; the checker reads every file of the run's directory afterwards. The
result carries the token, so the stored result tells which run's report the library accepted.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from pyscheduler import current_job, task

ENV_DIR = "PSQ_CHAOS_DIR"  # where the run files go; set by tools/chaos.py for its workers

_file: tuple[int, int] | None = None  # (pid, fd): a forked child opens a file of its own


def _note(event: str, job_id: str, token: str) -> None:
    global _file
    pid = os.getpid()
    if _file is None or _file[0] != pid:
        path = os.path.join(os.environ[ENV_DIR], f"runs-{pid}.jsonl")
        _file = (pid, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644))
    line = {"e": event, "id": job_id, "tok": token, "t": time.time(), "ppid": os.getppid()}
    os.write(_file[1], (json.dumps(line, separators=(",", ":")) + "\n").encode())


@task
def run(seconds: float) -> dict[str, Any]:
    """Sleep `seconds` between the start and end notes; the result names the run."""
    job = current_job()
    _note("start", job.id, job.token)
    if seconds > 0:
        time.sleep(seconds)
    _note("end", job.id, job.token)
    return {"tok": job.token, "pid": os.getpid()}
