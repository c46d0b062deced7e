"""`tools/chaos.py` runs end to end on a small scale: its checks hold and it says so."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

CHAOS = Path(__file__).resolve().parent.parent / "tools" / "chaos.py"

pytestmark = pytest.mark.crash


def test_small_chaos_run_loses_nothing_and_accepts_no_stale_result(engine: Any) -> None:
    # The tool starts a server of its own, of the kind of this session's (it kills it).
    if engine.kind not in ("redis", "valkey"):
        pytest.skip("needs a local server binary of a known kind")
    command = [sys.executable, str(CHAOS), "--jobs", "200", "--workers", "2"]
    command += ["--kind", engine.kind]
    done = subprocess.run(
        [*command, "--seconds", "12", "--drain", "40"],
        capture_output=True,
        text=True,
        timeout=120,
    )

    output = done.stdout + done.stderr
    print(f"\n[{engine.kind}] {output}")
    assert done.returncode == 0, output
    assert "PASS lost: 200/200 acknowledged jobs complete" in output, output
    assert "PASS stale: 0 results not from the run the library accepted" in output, output
    assert "PASS late starts: 0 runs" in output, output
    assert "chaos: OK" in output, output


def test_chaos_checks_catch_a_stale_result_and_a_late_start() -> None:
    sys.path.insert(0, str(CHAOS.parent))
    import chaos

    job = chaos.Planned("chaos-000000", "chaos-a", 0, 0.0)
    # The library accepted token b (the record's) and the job ended at 2.0 s, but the stored
    # result is run a's, and run c started after the end.
    record = {"status": "complete", "token": "b", "ended": 2000}
    runs = [chaos.Run(job.id, token, t, 1) for token, t in (("a", 1.0), ("b", 1.5), ("c", 2.5))]

    report = chaos.check(
        [job],
        {job.id},
        {job.id: (record, {"tok": "a"})},
        runs,
        {(job.id, "a"), (job.id, "b")},
        chaos.Events(),
        lease=2.0,
    )

    assert report.figures["stale"] == 1
    assert report.figures["late_starts"] == 1
    assert "FAIL stale: 1 results not from the run the library accepted" in report.lines
    assert "FAIL late starts: 1 runs started after their job was complete" in report.lines
