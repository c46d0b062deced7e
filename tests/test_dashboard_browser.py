"""The dashboard in a real browser: headless Chromium (the system's, Debian package `chromium`)
driven by Playwright, against a real uvicorn server and a real Redis/Valkey.

One browser for the module, a fresh context (no cookies) per test. Without Chromium or
Playwright these tests skip, except in CI (`CI` set), where they fail.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from conftest import ENGINE_PARAMS
from helpers import DashboardServer, failed_job

from pyscheduler import Queue, Status

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TOKEN = "browser-test-token"
XSS = "<script>alert('xss')</script>"
XSS_IMG = "<img src=x onerror=alert('img')>"

# One engine is enough here: the dashboard is the same on each, and test_dashboard.py runs on
# every kind. The browser is the slow part.
pytestmark = pytest.mark.parametrize("engine", ENGINE_PARAMS[:1], indirect=True)


def _missing(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{why} (CI must run the browser tests)", pytrace=False)
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright for Python is not installed (the test extra)")
    if CHROMIUM is None:
        _missing("no chromium on PATH (Debian: apt-get install chromium)")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    context.set_default_timeout(10_000)
    opened = context.new_page()
    opened.dialogs = []  # every alert/confirm/prompt that fires
    opened.on("dialog", lambda dialog: (opened.dialogs.append(dialog.message), dialog.dismiss()))
    yield opened
    context.close()


@pytest.fixture
def queue(conn: redis.Redis) -> Queue:
    return Queue("work", connection=conn)


@pytest.fixture
def base(conn: redis.Redis, redis_url: str) -> Iterator[str]:
    with DashboardServer(redis_url, refresh_ms=300) as server:
        yield server.url


def test_every_view_loads_with_real_jobs(page: Any, queue: Queue, base: str) -> None:
    ready = queue.enqueue_call("tasks:add", [1, 2]).id
    broken = failed_job(Queue("mail", connection=queue.connection))
    page.goto(base + "/")
    assert page.locator('tr[data-queue="work"] td').nth(1).inner_text() == "1"
    assert page.locator('tr[data-queue="mail"]').is_visible()
    page.click('tr[data-queue="work"] a')
    assert page.locator(f'tr[data-job="{ready}"]').is_visible()
    page.click(f'tr[data-job="{ready}"] a.id')
    assert page.locator('pre[data-field="args"]').inner_text().split() == ["[", "1,", "2", "]"]
    page.goto(base + "/failed")
    page.click('tr[data-queue="mail"] a.bad')
    assert "ValueError: bad row [7]" in page.locator(f'tr[data-job="{broken}"]').inner_text()
    page.goto(base + "/workers")
    assert "No live workers" in page.inner_text("main")


def test_every_view_reads_with_javascript_off(browser: Any, queue: Queue, base: str) -> None:
    job_id = failed_job(queue)
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        for path, shown in (
            ("/", 'tr[data-queue="work"]'),
            ("/queues/work?state=failed", f'tr[data-job="{job_id}"]'),
            (f"/queues/work/jobs/{job_id}", 'pre[data-field="error"]'),
            ("/workers", "main p.empty"),
            ("/failed", 'tr[data-queue="work"]'),
        ):
            assert page.goto(base + path).status == 200
            assert page.locator(shown).is_visible(), path
        assert page.inner_text("#refresh-status") == "static"  # no script ran
    finally:
        context.close()


def test_clicking_retry_requeues_a_failed_job(page: Any, queue: Queue, base: str) -> None:
    job_id = failed_job(queue)
    page.goto(base + "/queues/work?state=failed")
    page.locator(f'tr[data-job="{job_id}"]').get_by_role("button", name="Retry").click()
    page.wait_for_selector(".flash.ok")
    assert "retried 1 of 1 job" in page.inner_text(".flash")
    assert queue.fetch_info(job_id).status == Status.QUEUED


def test_clicking_cancel_cancels_a_job(page: Any, queue: Queue, base: str) -> None:
    job_id = queue.enqueue_call("tasks:add", [1, 2]).id
    page.goto(f"{base}/queues/work/jobs/{job_id}")
    page.get_by_role("button", name="Cancel").click()
    page.wait_for_selector(".flash.ok")
    assert queue.fetch_info(job_id).status == Status.CANCELLED
    assert page.inner_text(".badge.state-cancelled") == "cancelled"


def test_script_in_arguments_stays_text(page: Any, queue: Queue, base: str) -> None:
    job_id = queue.enqueue_call("tasks:echo", [XSS], {"html": XSS_IMG}).id
    page.goto(f"{base}/queues/work/jobs/{job_id}")
    # After the live region was swapped in by the refresh script at least once.
    page.wait_for_selector("#live[data-refreshes]", state="attached")
    assert XSS in page.inner_text('pre[data-field="args"]')
    assert XSS_IMG in page.inner_text('pre[data-field="kwargs"]')
    assert page.locator("main script, main img").count() == 0
    assert page.dialogs == []


def test_the_page_follows_redis_by_itself(page: Any, queue: Queue, base: str) -> None:
    page.goto(base + "/queues/work")
    job_id = queue.enqueue_call("tasks:add", [3, 4]).id
    # At most two seconds behind Redis; the bound here is loose on purpose (a loaded machine).
    page.wait_for_selector(f'tr[data-job="{job_id}"]', timeout=10_000)
    assert page.inner_text("#refresh-status") == "live"


def test_a_request_without_the_token_is_refused(
    page: Any, conn: redis.Redis, redis_url: str
) -> None:
    with DashboardServer(redis_url, token=TOKEN) as server:
        assert page.goto(server.url + "/").status == 401
        assert page.goto(server.url + "/?token=wrong").status == 401
        signed_in = page.goto(f"{server.url}/workers?token={TOKEN}")
        assert signed_in.status == 200 and page.url == server.url + "/workers"
        assert page.goto(server.url + "/").status == 200  # the session cookie carries it
