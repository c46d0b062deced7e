"""`tools/scale.py` runs end to end on a small scale: its figures parse and add up.

The tool starts clusters of its own (of this session's server kind), so it needs no `conn`;
one shard and a few hundred jobs keep it to seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

SCALE = Path(__file__).resolve().parent.parent / "tools" / "scale.py"
JOBS, QUEUES = 300, 3


def test_a_small_scale_run_completes_every_job_it_enqueued_and_says_so(
    engine: Any, tmp_path: Path
) -> None:
    kind = engine.kind.removesuffix("-cluster")
    command = [sys.executable, str(SCALE), "--shards", "1", "--jobs", str(JOBS)]
    command += ["--workers", "1", "--queues", str(QUEUES), "--idle", "0.1"]
    command += ["--json", str(tmp_path / "scale.json")]
    if kind in ("redis", "valkey"):
        command += ["--kind", kind]

    done = subprocess.run(command, capture_output=True, text=True, timeout=90)

    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    figures = json.loads((tmp_path / "scale.json").read_text())
    (run,) = figures["runs"]
    assert run["shards"] == 1
    assert run["jobs"] == run["enqueued"] == run["completed"] == JOBS
    assert run["counted"] == {"queued": 0, "delayed": 0, "active": 0, "failed": 0, "finished": JOBS}
    (shard,) = run["per_shard"]
    assert (shard["queues"], shard["jobs"]) == (QUEUES, JOBS)
    assert run["throughput"] > 0 and run["worker_total_us"] > 0
    plan = figures["projection"]
    # 1,000,000 jobs/s at R us of Redis CPU each is R cores: R shards, rounded up.
    assert 0 <= plan["shards_at_full_core"] - plan["redis_us_per_job"] < 1 + 1e-9
    assert plan["redis_us_per_job"] == run["redis_enqueue_us"] + run["redis_us"]
    assert "Projection for 1,000,000 jobs/s (from the 1-shard run):" in done.stdout
