"""The handler of `tools/failover.py`: each run writes its job's id, one line, to a file of
its own process (O_APPEND, one `write` a line), so completions are counted whatever Redis
kept through the failovers."""

from __future__ import annotations

import os

from pyscheduler import current_job, task

ENV_DIR = "PSQ_FAILOVER_DIR"  # where the files go; set by tools/failover.py for its workers

_file: tuple[int, int] | None = None  # (pid, fd): a forked child opens a file of its own


@task
def done() -> None:
    global _file
    pid = os.getpid()
    if _file is None or _file[0] != pid:
        path = os.path.join(os.environ[ENV_DIR], f"done-{pid}.txt")
        _file = (pid, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644))
    os.write(_file[1], f"{current_job().id}\n".encode())
