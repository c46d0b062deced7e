"""pytest fixtures for applications that use pyscheduler: an opt-in plugin.

Turn it on in your `conftest.py` with `pytest_plugins = ["pyscheduler.testing"]`, or with
`pytest -p pyscheduler.testing`. docs/testing.md says when each kind of fixture fits.

Eager queues (no Redis; each job runs inline at enqueue, `job.result` is there at once):

- `psq_eager_queue`: `Queue("default", eager=True)`, new for each test.
- `psq_eager_queues`: a factory, `psq_eager_queues("emails", default_timeout=5)`; the same name
  gives the same queue within a test.

A private engine (a real server and real workers):

- `psq_server` (session): the server, started for the session (redis-server or valkey-server,
  see pyscheduler/dev/engine.py), or the one `REDIS_URL` names, which is used as it is: the
  plugin never empties a server, and loads the Lua library only into one it started.
- `psq_connection` (session): a client of it, with the library checked (loaded when ours).
- `psq_queue`: a real `Queue` of a name no other test uses; its keys are deleted afterwards.
- `psq_run_jobs`: `psq_run_jobs()` runs the ready jobs of `psq_queue` (or of the queues
  given) with a burst `Worker` in this process and returns how many it finished.

The ini option `pyscheduler_import` lists modules handlers may come from although they are
installed (the worker's `--import`), for eager jobs and for `psq_run_jobs`'s worker.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from .client import eager
from .client.queue import Queue
from .runtime.worker import Worker
from .store.connection import Client, connect
from .store.keys import QUEUES_KEY
from .store.library import ensure_loaded

IMPORT_OPTION = "pyscheduler_import"

__all__ = ["Server", "eager_jobs"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        IMPORT_OPTION,
        "modules pyscheduler handlers may come from although installed (a worker's --import)",
        type="linelist",
        default=[],
    )


def _allowed_modules(config: pytest.Config) -> list[str]:
    return [str(module) for module in config.getini(IMPORT_OPTION)]


def pytest_configure(config: pytest.Config) -> None:
    allowed = _allowed_modules(config)
    if allowed:
        eager.set_handler_policy(allowed_modules=allowed)


eager_jobs = eager.jobs_of  # the jobs an eager queue ran, callbacks included


# -- eager queues ----------------------------------------------------------------------------


@pytest.fixture
def psq_eager_queue() -> Queue:
    """An eager queue named "default", new for this test."""
    return Queue("default", eager=True)


@pytest.fixture
def psq_eager_queues() -> Callable[..., Queue]:
    """`make(name="default", **queue_options)`: an eager queue, the same one for a name."""
    made: dict[str, Queue] = {}

    def make(name: str = "default", **options: Any) -> Queue:
        if name not in made:
            made[name] = Queue(name, eager=True, **options)
        return made[name]

    return make


# -- a private engine ------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    """The server of a test session: its URL, and whether this session started it."""

    url: str
    ours: bool


@pytest.fixture(scope="session")
def psq_server() -> Iterator[Server]:
    """A server started for this session, or the one REDIS_URL names (used, never emptied)."""
    given = os.environ.get("REDIS_URL", "").strip()
    if given:
        yield Server(given, ours=False)
        return
    # Development tooling, loaded only when a test asks for a private engine.
    from .dev.engine import Engine

    with Engine() as engine:
        yield Server(engine.url, ours=True)


@pytest.fixture(scope="session")
def psq_connection(psq_server: Server) -> Iterator[Client]:
    """A client of `psq_server` with pyscheduler's library in place (loaded into a server
    this session started; on another, LibraryError says how to deploy it, unless
    PYSCHEDULER_AUTO_LOAD is set)."""
    client = connect(psq_server.url)
    try:
        ensure_loaded(client, auto_load=True if psq_server.ours else None)
        yield client
    finally:
        client.close()


def _forget_queue(client: Client, name: str) -> None:
    """Delete one queue's keys (all in `psq:{name}:`) and its registry entry: only what the
    test made, never the rest of the server."""
    for key in list(client.scan_iter(match=f"psq:{{{name}}}:*", count=1000)):
        client.delete(key)
    client.srem(QUEUES_KEY, name)


@pytest.fixture
def psq_queue(psq_connection: Client) -> Iterator[Queue]:
    """A real queue on `psq_server`, of a name no other test uses; deleted afterwards."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield Queue(name, connection=psq_connection)
    _forget_queue(psq_connection, name)


@pytest.fixture
def psq_run_jobs(psq_queue: Queue, pytestconfig: pytest.Config) -> Callable[..., int]:
    """`run(*queues, concurrency=1, **worker_options)`: run every job ready on the queues
    (default: `psq_queue`) with a burst worker in this process; returns how many it finished.
    Jobs delayed past the end of the burst stay queued."""
    allowed = _allowed_modules(pytestconfig)

    def run(*queues: Queue, concurrency: int = 1, **options: Any) -> int:
        options.setdefault("allowed_modules", allowed)
        worker = Worker(list(queues) or [psq_queue], concurrency=concurrency, **options)
        return worker.work(burst=True)

    return run
