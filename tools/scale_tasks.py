"""The handler of `tools/scale.py`: `pyscheduler worker --import scale_tasks` runs it.

It does nothing at all (no Redis call, no file), so what a drain costs is the scheduler's own
work: the worker's, its executor's and Redis's.
"""

from __future__ import annotations

from pyscheduler import task


@task
def noop() -> None:
    """Nothing: the job's cost is the scheduler's alone."""
