"""The framework guides (docs/guides/) and their example apps: each app, driven through its
HTTP endpoints, enqueues a job that a real worker started as the guide says runs; and the code
the guides show is the example apps' code, file for file."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import WorkerLog, stop_worker, wait_result, wait_until

from pyscheduler import Queue

REPO = Path(__file__).resolve().parent.parent
GUIDES = REPO / "docs" / "guides"
EXAMPLES = GUIDES / "examples"
DJANGO_SITE = EXAMPLES / "django_site"
FINAL = ("complete", "failed", "cancelled", "expired")

# A guide shows a file of the examples as `<!-- example: PATH -->` then a fenced block.
EXAMPLE_BLOCK = re.compile(r"<!-- example: (\S+) -->\n```[a-z]*\n(.*?)```", re.DOTALL)


def app_env(redis_url: str, **more: str) -> dict[str, str]:
    """The environment of an example's processes: the suite's server as REDIS_URL."""
    return {**os.environ, "REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1", **more}


# Where no server listens: the examples' own tests, on eager queues, must not need one.
NO_SERVER_URL = "redis://127.0.0.1:1/0"


def run_to_end(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Run `python argv...` in `cwd` to its end, which must be a success; its output."""
    done = subprocess.run(
        [sys.executable, *argv],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout
    return done.stdout


class AppProcesses:
    """Processes of the example apps (workers, manage.py commands), killed at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start_worker(
        self, argv: list[str], cwd: Path, env: dict[str, str]
    ) -> tuple[subprocess.Popen[str], WorkerLog]:
        """Start a worker with `python argv...` in `cwd`; wait until it has started."""
        proc = subprocess.Popen(
            [sys.executable, *argv],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.procs.append(proc)
        log = WorkerLog(proc)
        try:
            log.wait_for("started on", timeout=20)
        except AssertionError:
            raise AssertionError(f"the worker did not start; its output:\n{log.text}") from None
        return proc, log

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.fixture
def app_processes(conn: Any) -> Iterator[AppProcesses]:
    """`conn`: an empty database with the library loaded, for the apps and their workers."""
    started = AppProcesses()
    yield started
    started.stop_all()


def wait_for_end(fetch_status: Any, job_id: str) -> dict[str, Any]:
    """Poll an app's job-status endpoint (`fetch_status(job_id)` -> its JSON) until the job
    ended; that JSON."""

    def ended() -> dict[str, Any] | None:
        body: dict[str, Any] = fetch_status(job_id)
        return body if body["status"] in FINAL else None

    return wait_until(ended, timeout=20, interval=0.05, what=f"job {job_id} to end")


# -- Flask ---------------------------------------------------------------------------------------


@pytest.fixture
def flask_app(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setenv("REDIS_URL", redis_url)
    from flask_app import create_app

    return create_app()


def test_flask_signup_is_sent_by_a_worker(
    flask_app: Any, app_processes: AppProcesses, redis_url: str
) -> None:
    proc, log = app_processes.start_worker(
        ["-m", "pyscheduler", "worker", "emails"], EXAMPLES, app_env(redis_url)
    )
    client = flask_app.test_client()

    placed = client.post("/signups", json={"email": "ada@example.com"})
    assert placed.status_code == 202, placed.text
    body = wait_for_end(lambda job_id: client.get(f"/jobs/{job_id}").get_json(), placed.json["job"])

    assert body["status"] == "complete", log.text
    assert body["result"] == "welcome mail from welcome@example.com to ada@example.com"
    stop_worker(proc, log)


def test_flask_status_of_an_unknown_job_is_404(flask_app: Any, conn: Any) -> None:
    assert flask_app.test_client().get("/jobs/no-such-job").status_code == 404


def test_flask_example_tests_pass_without_a_server() -> None:
    # A pytest of its own: nothing of this session's (xdist, options) reaches it.
    env = {k: v for k, v in app_env(NO_SERVER_URL).items() if not k.startswith("PYTEST_")}
    run_to_end(["-m", "pytest", "-q", "-p", "no:cacheprovider", "test_flask_app.py"], EXAMPLES, env)


# -- FastAPI -------------------------------------------------------------------------------------


@pytest.fixture
def fastapi_app(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setenv("REDIS_URL", redis_url)
    from fastapi_app.main import app

    return app


def app_clients(conn: Any) -> int:
    """How many connections the FastAPI example has open (it names them)."""
    return sum(client.get("name") == "fastapi_app" for client in conn.client_list())


def test_fastapi_report_is_built_by_a_worker(
    fastapi_app: Any, app_processes: AppProcesses, redis_url: str
) -> None:
    from fastapi.testclient import TestClient

    proc, log = app_processes.start_worker(
        ["-m", "pyscheduler", "worker", "reports"], EXAMPLES, app_env(redis_url)
    )
    with TestClient(fastapi_app) as client:  # runs the lifespan: startup, then shutdown
        placed = client.post("/reports", json={"customer_id": 42, "month": "2026-11"})
        assert placed.status_code == 202, placed.text
        job = client.get(f"/jobs/{placed.json()['job']}", params={"wait": 20}).json()

    assert job["status"] == "complete", log.text
    assert job["result"] == {"customer_id": 42, "month": "2026-11", "url": "/files/42/2026-11.pdf"}
    stop_worker(proc, log)


def test_fastapi_status_of_an_unknown_job_is_404(fastapi_app: Any, conn: Any) -> None:
    from fastapi.testclient import TestClient

    with TestClient(fastapi_app) as client:
        assert client.get("/jobs/no-such-job").status_code == 404


def test_fastapi_lifespan_closes_its_connection(fastapi_app: Any, conn: Any) -> None:
    from fastapi.testclient import TestClient

    with TestClient(fastapi_app) as client:
        client.get("/jobs/no-such-job")
        assert app_clients(conn) > 0

    wait_until(lambda: app_clients(conn) == 0, what="the app's connections to close")


# -- Django --------------------------------------------------------------------------------------

# Run by `manage.py shell -c` (Django set up with the example's settings, in a process of its
# own, so no Django settings leak into the other tests): requests through Django's test client,
# each answer printed as a line of JSON.
DJANGO_REQUESTS = """
import json
from django.test import Client
from django.test.utils import setup_test_environment

setup_test_environment()
client = Client()
for method, path, data in {requests!r}:
    response = getattr(client, method)(path, data)
    print("RESPONSE " + json.dumps([response.status_code, response.json()]))
"""


class DjangoSite:
    """The example project with a database of its own and the suite's server."""

    def __init__(self, redis_url: str, database: Path) -> None:
        self.env = app_env(
            redis_url, SHOP_DATABASE=str(database), DJANGO_SETTINGS_MODULE="shop.settings"
        )

    def manage(self, *args: str) -> str:
        return run_to_end(["manage.py", *args], DJANGO_SITE, self.env)

    def requests(self, *requests: tuple[str, str, dict[str, Any]]) -> list[tuple[int, Any]]:
        """(status code, JSON body) of each request (method, path, data), made in turn."""
        output = self.manage("shell", "-c", DJANGO_REQUESTS.format(requests=list(requests)))
        return [
            tuple(json.loads(line.removeprefix("RESPONSE ")))
            for line in output.splitlines()
            if line.startswith("RESPONSE ")
        ]


@pytest.fixture
def django_site(redis_url: str, tmp_path: Path) -> DjangoSite:
    site = DjangoSite(redis_url, tmp_path / "db.sqlite3")
    site.manage("migrate", "--noinput")
    return site


@pytest.mark.parametrize(
    "worker_command",
    [
        "manage.py pyscheduler_worker orders",
        "-m pyscheduler worker orders --import shop.worker",
        "-m pyscheduler worker orders --strict --import shop.worker --import orders.tasks",
    ],
    ids=["management-command", "cli", "cli-strict"],
)
def test_django_order_is_prepared_by_a_worker(
    django_site: DjangoSite, app_processes: AppProcesses, conn: Any, worker_command: str
) -> None:
    proc, log = app_processes.start_worker(worker_command.split(), DJANGO_SITE, django_site.env)

    [(status, placed)] = django_site.requests(
        ("post", "/orders/", {"item": "burger", "quantity": 3})
    )
    assert status == 202, placed
    wait_result(Queue("orders", connection=conn).fetch_job(placed["job"]), 20, log.text)
    job, order = django_site.requests(
        ("get", f"/jobs/{placed['job']}/", {}), ("get", f"/orders/{placed['order']}/", {})
    )

    assert job == (200, {"id": placed["job"], "status": "complete", "result": "3 x burger ready"})
    # The handler wrote through the ORM, into the database the site reads.
    assert order == (200, {"id": placed["order"], "status": "ready"})
    stop_worker(proc, log)


def test_django_example_tests_pass_without_a_server(tmp_path: Path) -> None:
    site = DjangoSite(NO_SERVER_URL, tmp_path / "db.sqlite3")

    site.manage("test", "orders", "--settings", "shop.test_settings", "--noinput")


# -- the guides show the examples' code ----------------------------------------------------------


def shown_files(guide: Path) -> dict[str, str]:
    """The example files a guide shows: {path under examples/: the block's text}."""
    return dict(EXAMPLE_BLOCK.findall(guide.read_text()))


GUIDE_OF = {"fastapi": "fastapi_app", "django": "django_site", "flask": "flask_app"}


def example_sources(example: str) -> set[str]:
    """The example's Python files that a reader needs: all but empty ones, Django's stock
    manage.py and generated migrations."""
    root = EXAMPLES / example
    return {
        str(path.relative_to(EXAMPLES))
        for path in root.rglob("*.py")
        if path.read_text().strip() and path.name != "manage.py" and "migrations" not in path.parts
    }


@pytest.mark.parametrize("guide", sorted(GUIDE_OF))
def test_guide_blocks_are_the_example_files(guide: str) -> None:
    shown = shown_files(GUIDES / f"{guide}.md")

    assert shown, f"{guide}.md shows no example file"
    for path, text in shown.items():
        assert (EXAMPLES / path).is_file(), f"{guide}.md shows {path}, which does not exist"
        assert text == (EXAMPLES / path).read_text(), f"{guide}.md shows {path} out of date"


@pytest.mark.parametrize("guide", sorted(GUIDE_OF))
def test_guide_shows_every_file_of_its_example(guide: str) -> None:
    shown = set(shown_files(GUIDES / f"{guide}.md"))

    assert example_sources(GUIDE_OF[guide]) - shown == set()
