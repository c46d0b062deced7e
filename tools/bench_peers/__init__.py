"""Adapters of `tools/bench.py`: pyscheduler and the peer libraries it is compared with.

Each peer module imports its library at the top; `bench.py` imports them one by one and shows
"n/a" (with the import error) for a peer that is not installed. Worker processes import the
same modules (with `tools/` on the path) to find the handlers.
"""

from __future__ import annotations

# name -> module of tools/bench_peers, in the order the columns are shown
SYSTEMS = {
    "pyscheduler": "pyscheduler_system",
    "rq": "rq_peer",
    "dramatiq": "dramatiq_peer",
    "arq": "arq_peer",
    "huey": "huey_peer",
    "saq": "saq_peer",
    "celery": "celery_peer",
    "bullmq": "bullmq_peer",  # Node.js: tools/bench_peers/bullmq/
}
