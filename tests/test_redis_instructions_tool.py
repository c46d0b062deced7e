"""`tools/redis_instructions.py` counts what the library's calls cost Redis, in instructions.

It starts its own redis-server under valgrind, so it needs no `conn`; a few dozen jobs keep it
to seconds.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parent.parent / "tools" / "redis_instructions.py"


def _counts(batch: int) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, str(TOOL), "--jobs", "64", "--batch", str(batch)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    (row,) = [r for r in rows if r and r[0] == str(batch)]
    enqueue, pop, complete, every = (int(value.replace(",", "")) for value in row[1:])
    return {"enqueue": enqueue, "pop": pop, "complete": complete, "all": every}


def test_the_instructions_per_job_of_each_phase_are_counted_and_add_up() -> None:
    counts = _counts(8)
    assert all(counts[phase] > 10_000 for phase in ("enqueue", "pop", "complete")), counts
    parts = counts["enqueue"] + counts["pop"] + counts["complete"]
    assert abs(parts - counts["all"]) <= 2, counts  # each figure is rounded on its own


def test_larger_batches_cost_fewer_instructions_per_job() -> None:
    # A call's fixed work (its checks, the clock, the tally) is shared by the jobs it carries.
    assert _counts(32)["all"] < _counts(1)["all"]
