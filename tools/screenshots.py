"""Screenshots of the dashboard for the README: the overview and a failed job's page.

    .venv/bin/python tools/screenshots.py [--out docs/images]

Starts a private engine (`pyscheduler.dev.engine.Engine`), fills a few queues with jobs in
every state (run through the library's calls, no handler runs), serves the dashboard on a free
port and photographs it with the system's headless Chromium (Debian package `chromium`) through
Playwright. Nothing outside the engine's own directory and `--out` is touched.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import threading
import time
from pathlib import Path

import redis
import uvicorn
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pyscheduler import Queue  # noqa: E402
from pyscheduler.dev.engine import Engine, free_port  # noqa: E402
from pyscheduler.ops.dashboard.app import create_app  # noqa: E402
from pyscheduler.runtime.live_workers import Heartbeat  # noqa: E402
from pyscheduler.store import calls, library  # noqa: E402
from pyscheduler.store.protocol import FailKind  # noqa: E402

TRACEBACK = """Traceback (most recent call last):
  File "/srv/app/pyscheduler/runtime/executor.py", line 212, in run_one
    result = handler(*args, **kwargs)
  File "/srv/app/shop/images.py", line 48, in thumbnail
    image = Image.open(fetch(url))
  File "/srv/app/shop/images.py", line 21, in fetch
    raise FetchError(f"{url}: HTTP {response.status}")
shop.images.FetchError: https://cdn.example.com/p/8841.jpg: HTTP 404
"""


def fill(conn: redis.Redis) -> str:
    """Jobs in every state on a few queues; returns the id of a failed job."""
    emails, images, reports = (Queue(n, connection=conn) for n in ("emails", "images", "reports"))
    emails.enqueue_many(
        emails.prepare("shop.mail:send_receipt", [order], {"lang": "en"})
        for order in range(1000, 1240)
    )
    emails.set_limits(rate=50, period=1)
    images.enqueue_many(
        images.prepare("shop.images:thumbnail", [f"https://cdn.example.com/p/{n}.jpg"], {"w": 320})
        for n in range(8800, 8900)
    )
    images.set_limits(concurrency=8)
    for n in range(12):
        reports.enqueue_call("shop.reports:monthly", [2026, n + 1], delay=3600 * (n + 1))
    reports.pause()
    # Complete and fail some so the throughput chart has bars.
    for queue, done in ((emails, 60), (images, 30)):
        leases = calls.pop(conn, queue.keys, done, 60_000, "web-1:4242:a").leases
        calls.complete_many(conn, queue.keys, [(lease.id, lease.token, "true") for lease in leases])
    failed_id = ""
    leases = calls.pop(conn, images.keys, 3, 60_000, "web-1:4242:a").leases
    for lease in leases:
        calls.fail(conn, images.keys, lease.id, lease.token, FailKind.REFUSED, TRACEBACK, 0.0)
        failed_id = failed_id or lease.id
    running = calls.pop(conn, images.keys, 2, 60_000, "web-2:5150:b").leases
    beat = Heartbeat(conn, [images.keys, emails.keys], "web-2:5150:b", 4, 30.0, pid=5150)
    beat.beat(time.monotonic(), [(lease.id, "images", time.monotonic() - 4) for lease in running])
    return failed_id


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "images"))
    out = Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("needs Chromium (Debian: apt-get install chromium)", file=sys.stderr)
        return 1
    with Engine() as engine:
        conn = redis.Redis.from_url(engine.url)
        library.load(conn)
        failed_id = fill(conn)
        port = free_port()
        app = create_app(conn, url_label="redis://127.0.0.1:6379/0")
        server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.02)
        base = f"http://127.0.0.1:{port}"
        shots = {
            "dashboard-overview.png": "/",
            "dashboard-job.png": f"/queues/images/jobs/{failed_id}",
        }
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium)
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                for name, path in shots.items():
                    page.goto(base + path)
                    page.screenshot(path=str(out / name), full_page=True)
                    print(out / name)
                browser.close()
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
