"""The web dashboard over HTTP: a real uvicorn server (in a thread) on a real Redis/Valkey.

Pages are read as HTML text; actions are POSTed like a browser's forms, with the CSRF cookie
and field the pages hand out. Jobs are failed with the `calls` wrappers (no worker).
"""

from __future__ import annotations

import html
import http.client
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
import redis
from click.testing import CliRunner
from helpers import DashboardServer, cli_process, counting_client, failed_job, terminate, wait_until

from pyscheduler import Queue, Status, Subtask
from pyscheduler.dev.engine import free_port
from pyscheduler.ops.cli import EXIT_USAGE, main
from pyscheduler.runtime.live_workers import Heartbeat
from pyscheduler.store.keys import QueueKeys

pytest.importorskip("starlette", reason="the dashboard extra is not installed")

TOKEN = "s3cret-token-for-tests"
XSS = "<script>alert('xss')</script>"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: str


@dataclass
class Client:
    """A browser without JavaScript: keeps cookies, follows no redirect by itself."""

    base: str
    cookies: dict[str, str] = field(default_factory=dict)

    def request(
        self, method: str, path: str, body: str | None = None, headers: dict[str, str] | None = None
    ) -> Reply:
        parts = urlsplit(self.base)
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if body is not None:
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            text = response.read().decode()
            for value in response.headers.get_all("set-cookie") or []:
                jar: SimpleCookie = SimpleCookie()
                jar.load(value)
                for name, morsel in jar.items():
                    if morsel["max-age"] == "0":
                        self.cookies.pop(name, None)
                    else:
                        self.cookies[name] = morsel.value
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, text)
        finally:
            conn.close()

    def get(self, path: str, **headers: str) -> Reply:
        return self.request("GET", path, headers=headers)

    def page(self, path: str) -> str:
        reply = self.get(path)
        assert reply.status == 200, (reply.status, reply.body[:500])
        return reply.body

    def post(self, path: str, form: dict[str, Any], **headers: str) -> Reply:
        return self.request("POST", path, urlencode(form, doseq=True), headers)

    def act(self, path: str, **form: Any) -> Reply:
        """POST an action as its form would, with this browser's CSRF value."""
        if "psq_csrf" not in self.cookies:
            self.page("/")
        reply = self.post(path, {"csrf": self.cookies["psq_csrf"], **form})
        assert reply.status == 303, (reply.status, reply.body[:500])
        return reply


@pytest.fixture
def queue(conn: redis.Redis) -> Queue:
    return Queue("work", connection=conn)


@pytest.fixture
def dashboard(conn: redis.Redis, redis_url: str) -> Iterator[Client]:
    with DashboardServer(redis_url) as server:
        yield Client(server.url)


def enqueue(queue: Queue, *args: Any, **options: Any) -> str:
    return queue.enqueue_call("tasks:add", list(args), None, **options).id


def text_of(page: str) -> str:
    """The page's text, tags dropped and entities decoded (what a reader sees)."""
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def row_of(page: str, attribute: str, value: str) -> str:
    found = re.search(rf'<tr {attribute}="{re.escape(value)}">(.*?)</tr>', page, re.S)
    assert found, f"no row {attribute}={value}"
    return text_of(found.group(1))


# -- the views ------------------------------------------------------------------------------


def test_overview_shows_every_queue_with_its_counts(
    conn: redis.Redis, queue: Queue, dashboard: Client
) -> None:
    for n in range(3):
        enqueue(queue, n, 1)
    enqueue(queue, 1, 1, delay=300)
    failed_job(Queue("mail", connection=conn))
    Queue("mail", connection=conn).set_limits(concurrency=4, rate=10, period=60)
    page = dashboard.page("/")
    work = row_of(page, "data-queue", "work").split()
    assert work[:7] == ["work", "3", "1", "0", "0", "0", "0"]
    mail = row_of(page, "data-queue", "mail")
    assert "≤4 at once" in mail and "10/60s" in mail
    assert mail.split()[5] == "1"  # failed
    assert '<svg class="chart"' in page


def test_overview_charts_the_jobs_that_ended(queue: Queue, dashboard: Client) -> None:
    from pyscheduler.store import calls

    assert '<rect class="done"' not in dashboard.page("/")
    enqueue(queue, 1, 1)
    (lease,) = calls.pop(queue.connection, queue.keys, 1, 10_000, "test").leases
    calls.complete_many(queue.connection, queue.keys, [(lease.id, lease.token, "2")])
    failed_job(queue)
    page = dashboard.page("/")
    assert '<rect class="done"' in page and '<rect class="failed"' in page
    assert "1 completed, 1 failed" in page  # the bar's tooltip


def test_overview_shows_a_paused_queue(queue: Queue, dashboard: Client) -> None:
    enqueue(queue, 1, 1)
    queue.pause()
    assert "paused" in row_of(dashboard.page("/"), "data-queue", "work")


def test_queue_page_lists_the_jobs_of_each_state(queue: Queue, dashboard: Client) -> None:
    ready = enqueue(queue, 1, 1)
    later = enqueue(queue, 2, 2, delay=300)
    broken = failed_job(Queue("other", connection=queue.connection))
    assert ready in dashboard.page("/queues/work")
    assert later not in dashboard.page("/queues/work")
    assert later in dashboard.page("/queues/work?state=delayed")
    failed_page = dashboard.page("/queues/other?state=failed")
    assert broken in failed_page
    assert "ValueError: bad row [7]" in row_of(failed_page, "data-job", broken)


def test_job_lists_come_in_bounded_pages(queue: Queue, dashboard: Client) -> None:
    ids = [
        job.id for job in queue.enqueue_many(queue.prepare("tasks:add", [n, 1]) for n in range(120))
    ]
    first = dashboard.page("/queues/work")
    third = dashboard.page("/queues/work?page=3")
    assert first.count('<tr data-job="') == 50
    assert third.count('<tr data-job="') == 20
    assert ids[0] in first and ids[-1] in third and ids[-1] not in first
    assert 'rel="next"' in first and 'rel="next"' not in third


def test_job_page_shows_the_job_in_full(queue: Queue, dashboard: Client) -> None:
    job_id = failed_job(queue)
    page = dashboard.page(f"/queues/work/jobs/{job_id}")
    text = text_of(page)
    assert "tasks:add" in text
    assert "ValueError: bad row [7]" in text and "Traceback (most recent call last)" in text
    assert "1 of 1" in text  # attempts
    assert "created" in text and "started" in text and "ended" in text  # the timeline
    assert '<svg class="timeline"' in page
    assert re.search(r'data-field="args">\[\s*1,\s*2\s*\]', page)


def test_job_page_shows_checkpoint_and_result(queue: Queue, dashboard: Client) -> None:
    from pyscheduler.store import calls

    job_id = enqueue(queue, 1, 2)
    (lease,) = calls.pop(queue.connection, queue.keys, 1, 10_000, "worker-7").leases
    calls.checkpoint(
        queue.connection, queue.keys, job_id, lease.token, '{"row": 41}', 10_000, False
    )
    running = text_of(dashboard.page(f"/queues/work/jobs/{job_id}"))
    assert "worker-7" in running  # the lease holder
    assert '"row": 41' in running


def test_job_page_shows_the_progress_a_handler_reported(queue: Queue, dashboard: Client) -> None:
    from pyscheduler.store import calls

    job_id = enqueue(queue, 1, 2)
    (lease,) = calls.pop(queue.connection, queue.keys, 1, 10_000, "worker-7").leases
    calls.set_progress(queue.connection, queue.keys, job_id, lease.token, '{"rows": 1200}')
    assert '"rows": 1200' in text_of(dashboard.page(f"/queues/work/jobs/{job_id}"))


def test_job_page_shows_subtask_progress(queue: Queue, dashboard: Client) -> None:
    parts = [Subtask("tasks:add", n, 1, queue="parts") for n in range(3)]
    parent = queue.enqueue_group(parts, "tasks:echo").id
    page = dashboard.page(f"/queues/work/jobs/{parent}")
    assert '<progress max="3" value="0">' in page
    assert "0 of 3 done" in text_of(page)


def test_lookup_goes_to_the_job_or_says_none(queue: Queue, dashboard: Client) -> None:
    job_id = enqueue(queue, 1, 1)
    found = dashboard.get(f"/lookup?id={job_id}")
    assert (found.status, found.headers["location"]) == (303, f"/queues/work/jobs/{job_id}")
    missing = dashboard.get("/lookup?id=no-such-job")
    assert missing.status == 404 and "no-such-job" in text_of(missing.body)


def test_workers_page_shows_what_each_worker_runs(queue: Queue, dashboard: Client) -> None:
    job_id = enqueue(queue, 1, 1)
    beat = Heartbeat(queue.connection, [QueueKeys("work")], "host-1:42:w", 3, 30.0, pid=42)
    assert beat.beat(time.monotonic(), [(job_id, "work", time.monotonic() - 5)])
    row = row_of(dashboard.page("/workers"), "data-worker", "host-1:42:w")
    assert job_id in row and "work" in row
    assert re.search(r"\((5|6|7)\.\ds\)", row), row  # running for about 5 s


def test_failed_page_lists_queues_with_failures(conn: redis.Redis, dashboard: Client) -> None:
    failed_job(Queue("mail", connection=conn))
    Queue("quiet", connection=conn).enqueue_call("tasks:add", [1, 1])
    page = dashboard.page("/failed")
    assert 'data-queue="mail"' in page and 'data-queue="quiet"' not in page


def test_fragment_is_the_live_region_only(queue: Queue, dashboard: Client) -> None:
    enqueue(queue, 1, 1)
    fragment = dashboard.page("/queues/work?fragment=1")
    assert "<html" not in fragment and "<tr data-job=" in fragment
    assert 'name="next" value="/queues/work"' in fragment  # actions return to the page


# -- escaping ---------------------------------------------------------------------------------


def test_arguments_holding_markup_are_shown_as_text(queue: Queue, dashboard: Client) -> None:
    job_id = queue.enqueue_call("tasks:echo", [XSS], {"note": "<b>bold</b>"}).id
    error = f"ValueError: {XSS}\n"
    failed = failed_job(Queue("other", connection=queue.connection), error)
    for path in (f"/queues/work/jobs/{job_id}", "/queues/other?state=failed"):
        page = dashboard.page(path)
        assert "<script>alert" not in page and "<b>bold" not in page
        assert "&lt;script&gt;alert(" in page
    assert XSS in text_of(dashboard.page(f"/queues/other/jobs/{failed}"))
    assert "script-src 'self'" in dashboard.get("/").headers["content-security-policy"]


# -- the token --------------------------------------------------------------------------------


def test_with_a_token_every_request_must_carry_it(conn: redis.Redis, redis_url: str) -> None:
    with DashboardServer(redis_url, token=TOKEN) as server:
        client = Client(server.url)
        for path in ("/", "/workers", "/static/dashboard.css", "/queues/work"):
            assert client.get(path).status == 401
        assert client.get("/", Authorization="Bearer wrong").status == 401
        assert client.get("/?token=wrong").status == 401
        assert client.get("/", Authorization=f"Bearer {TOKEN}").status == 200


def test_the_token_in_the_url_once_signs_the_browser_in(conn: redis.Redis, redis_url: str) -> None:
    with DashboardServer(redis_url, token=TOKEN) as server:
        client = Client(server.url)
        signed_in = client.get(f"/workers?token={TOKEN}")
        assert (signed_in.status, signed_in.headers["location"]) == (303, "/workers")
        assert TOKEN not in client.cookies.get("psq_session", TOKEN)  # a digest, not the token
        assert client.get("/workers").status == 200


def test_listening_beyond_loopback_needs_a_token() -> None:
    result = CliRunner().invoke(
        main, ["dashboard", "--host", "0.0.0.0"], env={"PYSCHEDULER_DASHBOARD_TOKEN": ""}
    )
    assert result.exit_code == EXIT_USAGE
    assert "needs a token" in result.output


def test_the_command_serves_the_dashboard(queue: Queue, redis_url: str) -> None:
    enqueue(queue, 1, 1)
    port = free_port()
    proc = cli_process("dashboard", "--port", str(port), "--url", redis_url)
    try:
        client = Client(f"http://127.0.0.1:{port}")

        def answers() -> Reply | None:
            try:
                return client.get("/")
            except OSError:  # not listening yet
                return None

        reply = wait_until(answers, timeout=20, interval=0.05, what="the dashboard to answer")
        assert reply.status == 200 and 'data-queue="work"' in reply.body
    finally:
        output = terminate(proc)
    assert proc.returncode == 0, output


# -- CSRF and read-only -----------------------------------------------------------------------


def test_an_action_without_the_csrf_token_is_refused(queue: Queue, dashboard: Client) -> None:
    dashboard.page("/")  # the browser has its CSRF cookie
    refused = dashboard.post("/queues/work/pause", {})
    wrong = dashboard.post("/queues/work/pause", {"csrf": "x" * 43})
    assert (refused.status, wrong.status) == (403, 403)
    assert not queue.stats().paused


def test_an_action_from_another_site_is_refused(queue: Queue, dashboard: Client) -> None:
    dashboard.page("/")
    form = {"csrf": dashboard.cookies["psq_csrf"]}
    reply = dashboard.post("/queues/work/pause", form, Origin="https://evil.example")
    assert reply.status == 403
    assert not queue.stats().paused


def test_read_only_hides_and_refuses_actions(
    conn: redis.Redis, queue: Queue, redis_url: str
) -> None:
    job_id = failed_job(queue)
    with DashboardServer(redis_url, read_only=True) as server:
        client = Client(server.url)
        page = client.page("/queues/work?state=failed")
        assert job_id in page and 'method="post"' not in page
        reply = client.post(
            "/queues/work/retry", {"csrf": client.cookies["psq_csrf"], "id": job_id}
        )
        assert reply.status == 403
    assert queue.fetch_info(job_id).status == Status.FAILED


# -- actions ----------------------------------------------------------------------------------


def test_retry_moves_a_failed_job_back_to_queued(queue: Queue, dashboard: Client) -> None:
    job_id = failed_job(queue)
    reply = dashboard.act("/queues/work/retry", id=job_id, next=f"/queues/work/jobs/{job_id}")
    assert reply.headers["location"] == f"/queues/work/jobs/{job_id}"
    assert queue.fetch_info(job_id).status == Status.QUEUED
    assert "retried 1 of 1 job" in dashboard.page(reply.headers["location"])  # the message


def test_retry_all_moves_every_failed_job(queue: Queue, dashboard: Client) -> None:
    ids = [failed_job(queue) for _ in range(3)]
    dashboard.act("/queues/work/retry", all="1")
    assert {queue.fetch_info(i).status for i in ids} == {Status.QUEUED}


def test_cancel_cancels_a_queued_job(queue: Queue, dashboard: Client) -> None:
    job_id = enqueue(queue, 1, 1)
    dashboard.act("/queues/work/cancel", id=job_id)
    assert queue.fetch_info(job_id).status == Status.CANCELLED


def test_purge_deletes_a_failed_job(queue: Queue, dashboard: Client) -> None:
    job_id, kept = failed_job(queue), failed_job(queue)
    dashboard.act("/queues/work/purge", id=job_id, status="failed")
    assert queue.job_ids(Status.FAILED) == [kept]


def test_purge_all_needs_its_confirmation(queue: Queue, dashboard: Client) -> None:
    failed_job(queue)
    dashboard.act("/queues/work/purge", all="1", status="failed")
    assert queue.stats().failed == 1
    dashboard.act("/queues/work/purge", all="1", status="failed", confirm="1")
    assert queue.stats().failed == 0


def test_pause_and_resume_change_the_queue(queue: Queue, dashboard: Client) -> None:
    enqueue(queue, 1, 1)
    dashboard.act("/queues/work/pause")
    assert queue.stats().paused
    dashboard.act("/queues/work/resume")
    assert not queue.stats().paused


def test_limits_are_set_and_cleared(queue: Queue, dashboard: Client) -> None:
    enqueue(queue, 1, 1)
    dashboard.act("/queues/work/limits", concurrency="3", rate="20", period="60")
    assert queue.limits() == type(queue.limits())(3, 20, 60.0)
    dashboard.act("/queues/work/limits", concurrency="", rate="", period="")
    assert queue.limits() == type(queue.limits())(None, None, None)


def test_a_redirect_target_stays_on_the_dashboard(queue: Queue, dashboard: Client) -> None:
    enqueue(queue, 1, 1)
    reply = dashboard.act("/queues/work/pause", next="//evil.example/x")
    assert reply.headers["location"] == "/queues/work"


# -- scale ------------------------------------------------------------------------------------


def test_the_overview_costs_the_same_round_trips_for_3_or_30_queues(
    conn: redis.Redis, redis_url: str
) -> None:
    from pyscheduler.ops.dashboard.views import overview_data

    counting, traffic = counting_client(redis_url)
    trips = []
    for queues in (3, 30):
        for n in range(queues):
            Queue(f"q{n}", connection=conn).enqueue_many(
                Queue(f"q{n}", connection=conn).prepare("tasks:add", [i, 1]) for i in range(20)
            )
        overview_data(counting)  # the library check, once per client
        traffic.reset()
        data = overview_data(counting)
        assert len(data["stats"]) == queues
        trips.append(traffic.round_trips)
    counting.close()
    assert trips[0] == trips[1] <= 3, trips


def test_metrics_are_served_beside_the_pages(
    conn: redis.Redis, queue: Queue, redis_url: str
) -> None:
    pytest.importorskip("prometheus_client")
    enqueue(queue, 1, 1)
    with DashboardServer(redis_url, token=TOKEN) as server:
        client = Client(server.url)
        assert client.get("/metrics").status == 401
        scrape = client.get("/metrics", Authorization=f"Bearer {TOKEN}")
    assert scrape.status == 200
    assert 'pyscheduler_queue_ready{queue="work"} 1.0' in scrape.body


def test_without_a_token_only_loopback_names_are_answered(dashboard: Client) -> None:
    assert dashboard.get("/", Host="rebound.example:8711").status == 403
    assert dashboard.get("/", Host="localhost:8711").status == 200


def test_a_redis_that_cannot_be_reached_is_a_503_page() -> None:
    nobody = f"redis://127.0.0.1:{free_port()}/0"
    with DashboardServer(nobody) as server:
        reply = Client(server.url).get("/")
        fragment = Client(server.url).get("/?fragment=1")
    assert reply.status == 503 and "cannot reach Redis" in text_of(reply.body)
    assert fragment.status == 503 and "<html" not in fragment.body
