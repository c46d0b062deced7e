"""Real-Redis fixtures for the pyscheduler test suite.

Tests always talk to a real Redis-compatible server: never mocks, never fakeredis.

``engine`` (session scope) is resolved in this order:

1. ``REDIS_URL`` is set: that server is used, once (param ``external``); it is not ours, so
   tests that kill or pause the server are skipped (use the ``owned_engine`` fixture).
2. A Docker engine answers and ``testcontainers`` is importable: ``redis:7`` / ``valkey/valkey:8``
   containers (set ``PYSCHEDULER_TEST_DOCKER=0`` to skip this step).  If a container cannot
   be started (e.g. the image cannot be pulled) the local binary of step 3 is used instead.
3. A private :class:`pyscheduler.engine.Engine` of the param's kind.  A missing binary fails
   the tests rather than skipping them.

A test module marked ``pytestmark = pytest.mark.cluster`` also runs on a local Redis Cluster of
three primaries of each kind (params ``redis-cluster`` and ``valkey-cluster``; its ``redis_url``
is ``redis+cluster://...``, its ``conn`` a ``RedisCluster``): the modules whose tests need no
single server to kill. ``PYSCHEDULER_TEST_CLUSTER=0`` leaves those params out, ``=only`` runs
those params alone, ``=all`` runs every module (marked or not) on the clusters alone. With
``REDIS_URL`` set there are no cluster params (that URL may name a cluster itself).

The ``conn`` fixture empties the database (FLUSHALL) before each test, so it does so only on
a server this session started: on the server ``REDIS_URL`` names, only with
``PYSCHEDULER_TEST_FLUSH=1``; without it, every test that needs an empty database is skipped.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from pyscheduler.dev.engine import Engine, EngineNotFound, free_port, ping
from pyscheduler.store.connection import connect, is_cluster_url

EXTERNAL_REDIS_URL: str | None = os.environ.get("REDIS_URL", "").strip() or None
ENGINE_PARAMS: list[str] = ["external"] if EXTERNAL_REDIS_URL else ["redis", "valkey"]
_CLUSTER_CHOICE = os.environ.get("PYSCHEDULER_TEST_CLUSTER", "").strip().lower()
CLUSTER_PARAMS: list[str] = (
    [] if EXTERNAL_REDIS_URL or _CLUSTER_CHOICE == "0" else ["redis-cluster", "valkey-cluster"]
)
_NO_CLUSTER = pytest.mark.skip(
    reason="no local cluster: REDIS_URL is set or PYSCHEDULER_TEST_CLUSTER=0"
)
#: Lets the tests empty (FLUSHALL) a server this session did not start: the one REDIS_URL names.
FLUSH_ENV = "PYSCHEDULER_TEST_FLUSH"
NO_FLUSH_REASON = (
    f"REDIS_URL names a server this test session did not start, and this test empties its"
    f" database first: set {FLUSH_ENV}=1 to allow that (its data is lost)"
)
DOCKER_IMAGES: dict[str, str] = {"redis": "redis:7", "valkey": "valkey/valkey:8"}
OWNED_SKIP_REASON = "needs an engine owned by the test session"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "crash: tests that kill or pause processes")
    config.addinivalue_line(
        "markers", "cluster: the module's tests also run on a local 3-primary Redis Cluster"
    )
    config.addinivalue_line("markers", "cluster_only: the module's tests run on clusters only")
    config.addinivalue_line(
        "markers", "one_server(reason): a test of a `cluster` module that needs one server"
    )


def _parametrized_by_test(metafunc: pytest.Metafunc, name: str) -> bool:
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0] if mark.args else mark.kwargs.get("argnames", "")
        if name in ([n.strip() for n in names.split(",")] if isinstance(names, str) else names):
            return True
    return False


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The `engine` params of a test: one server of each kind, and a cluster of each kind for
    the modules marked `cluster`."""
    if "engine" not in metafunc.fixturenames or _parametrized_by_test(metafunc, "engine"):
        return
    marked = metafunc.definition.get_closest_marker
    on_servers = [] if _CLUSTER_CHOICE in ("only", "all") else list(ENGINE_PARAMS)
    if marked("cluster_only") is not None:
        params = list(CLUSTER_PARAMS)
        if not params:
            metafunc.parametrize("engine", [pytest.param("none", marks=_NO_CLUSTER)], indirect=True)
            return
    elif marked("one_server") is not None:  # a test that needs one server (reason in the mark)
        params = on_servers
    elif marked("cluster") is not None or _CLUSTER_CHOICE == "all":
        params = on_servers + CLUSTER_PARAMS
    else:
        params = on_servers
    metafunc.parametrize("engine", params, indirect=True, ids=params, scope="session")


def pytest_report_header(config: pytest.Config) -> list[str]:
    if EXTERNAL_REDIS_URL is None:
        return []
    flush = "allowed" if os.environ.get(FLUSH_ENV) == "1" else f"not allowed (set {FLUSH_ENV}=1)"
    return [f"REDIS_URL is set: the tests use that server; emptying it: {flush}"]


class ServerHandle:
    """The server a test session talks to: ``url``, ``kind`` and, if ``owned``, control."""

    kind: str
    url: str
    owned: bool = False  # the tests may kill, pause and restart it
    ours: bool = True  # this session started it: the tests may empty it
    cluster: bool = False

    def ensure_running(self) -> None:
        """Bring the server back if a previous test killed or paused it."""

    def kill(self) -> None:
        raise NotImplementedError(OWNED_SKIP_REASON)

    def pause(self) -> None:
        raise NotImplementedError(OWNED_SKIP_REASON)

    def resume(self) -> None:
        raise NotImplementedError(OWNED_SKIP_REASON)

    def restart(self) -> None:
        raise NotImplementedError(OWNED_SKIP_REASON)

    def close(self) -> None:
        """Release the server at the end of the session."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.kind} {self.url} owned={self.owned}>"


class ExternalServer(ServerHandle):
    """A server named by ``REDIS_URL``: used as is, never killed."""

    def __init__(self, url: str) -> None:
        self.kind = "external"
        self.url = url
        self.owned = False
        self.ours = False
        self.cluster = is_cluster_url(url)


class LocalServer(ServerHandle):
    """A redis-server / valkey-server process started by this session."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.kind = engine.kind
        self.url = engine.url
        self.owned = True

    @property
    def pid(self) -> int | None:
        return self.engine.pid

    @property
    def version(self) -> str:
        return self.engine.version

    def ensure_running(self) -> None:
        self.engine.ensure_running()

    def kill(self) -> None:
        self.engine.kill()

    def pause(self) -> None:
        self.engine.pause()

    def resume(self) -> None:
        self.engine.resume()

    def restart(self) -> None:
        self.engine.restart()

    def close(self) -> None:
        self.engine.stop()


class ClusterServer(ServerHandle):
    """A local Redis Cluster of three primaries (tests/servers.py), for the `cluster` modules.
    Not `owned`: a test that kills "the server" means one server."""

    def __init__(self, kind: str) -> None:
        from servers import cluster

        self.kind = f"{kind}-cluster"
        self._nodes = cluster(kind)
        self.nodes = self._nodes.__enter__()
        self.url = self.nodes.url
        self.cluster = True

    def close(self) -> None:
        self._nodes.__exit__(None, None, None)


class ContainerServer(ServerHandle):
    """A testcontainers Redis/Valkey container, published on a fixed host port.

    The fixed host port keeps ``url`` valid across a kill and a restart of the container.
    """

    def __init__(self, kind: str, container: Any, host: str, port: int) -> None:
        self.kind = kind
        self.container = container
        self.host = host
        self.port = port
        self.url = f"redis://{host}:{port}/0"
        self.owned = True

    def _docker(self) -> Any:
        return self.container.get_wrapped_container()

    def _status(self) -> str:
        docker_container = self._docker()
        docker_container.reload()
        return str(docker_container.status)

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ping(self.host, self.port, timeout=0.5):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.kind} container at {self.url} did not answer PING")

    def ensure_running(self) -> None:
        status = self._status()
        if status == "paused":
            self._docker().unpause()
        elif status != "running":
            self._docker().start()
        try:
            self._wait_ready(timeout=5.0)
        except RuntimeError:
            self.restart()

    def kill(self) -> None:
        status = self._status()
        if status == "paused":
            self._docker().unpause()
        if status in ("running", "paused"):
            self._docker().kill()

    def pause(self) -> None:
        self._docker().pause()

    def resume(self) -> None:
        if self._status() == "paused":
            self._docker().unpause()

    def restart(self) -> None:
        status = self._status()
        if status == "paused":
            self._docker().unpause()
        if status in ("running", "paused"):
            self._docker().kill()
        self._docker().start()
        self._wait_ready()

    def close(self) -> None:
        try:
            if self._status() == "paused":
                self._docker().unpause()
        finally:
            self.container.stop()


@functools.cache
def _docker_available() -> bool:
    """True if testcontainers is importable and a Docker engine answers within 3 s."""
    if os.environ.get("PYSCHEDULER_TEST_DOCKER", "").strip() == "0":
        return False
    if importlib.util.find_spec("testcontainers") is None:
        return False
    try:
        docker: Any = importlib.import_module("docker")
        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _start_container(kind: str) -> ContainerServer:
    try:
        module: Any = importlib.import_module("testcontainers.community.redis")
    except ImportError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module = importlib.import_module("testcontainers.redis")
    host_port = free_port()
    container = module.RedisContainer(DOCKER_IMAGES[kind])
    container.with_bind_ports(6379, host_port)
    container.start()
    try:
        host = container.get_container_host_ip()
        if host == "localhost":
            host = "127.0.0.1"
        server = ContainerServer(kind, container, host, int(container.get_exposed_port(6379)))
        server._wait_ready()
    except BaseException:
        container.stop()
        raise
    return server


def _start_local(kind: str) -> LocalServer:
    try:
        engine = Engine(kind=kind)
    except EngineNotFound as exc:
        missing = str(exc)
    else:
        return LocalServer(engine.start())
    # Outside the except block so the failure is not shown as a chained traceback.
    pytest.fail(f"no {kind} engine for the tests:\n{missing}", pytrace=False)


def _open_server(param: str) -> ServerHandle:
    if param == "external":
        assert EXTERNAL_REDIS_URL is not None
        return ExternalServer(EXTERNAL_REDIS_URL)
    if param.endswith("-cluster"):
        return ClusterServer(param.removesuffix("-cluster"))
    if _docker_available():
        try:
            return _start_container(param)
        except Exception as exc:
            warnings.warn(
                f"could not start a {param} container ({exc!r}); using a local binary",
                stacklevel=1,
            )
    return _start_local(param)


@pytest.fixture(scope="session")
def engine(request: pytest.FixtureRequest) -> Iterator[ServerHandle]:
    """The Redis-compatible server of this session, or cluster (see the module docstring;
    its params come from `pytest_generate_tests`)."""
    server = _open_server(str(request.param))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def owned_engine(engine: ServerHandle) -> ServerHandle:
    """``engine``, for tests that kill, pause or restart it; skipped on an external server."""
    if not engine.owned:
        pytest.skip(OWNED_SKIP_REASON)
    return engine


@pytest.fixture
def redis_url(engine: ServerHandle) -> str:
    """URL of a live server; revives it first if a previous test killed or paused it."""
    engine.ensure_running()
    return engine.url


# -- pyscheduler fixtures ---------------------------------------------------------------------

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def conn(engine: ServerHandle, redis_url: str) -> Iterator[Any]:
    """A client to an empty database with the current Lua library loaded (on a cluster: a
    `RedisCluster`, every primary emptied and loaded). Skipped on a server this session did not
    start, unless PYSCHEDULER_TEST_FLUSH=1 (see the module docstring)."""
    from pyscheduler.store import library

    if not engine.ours and os.environ.get(FLUSH_ENV) != "1":
        pytest.skip(NO_FLUSH_REASON)
    client = connect(redis_url)
    client.flushall()  # on a cluster: sent to every primary
    # FLUSHALL keeps the functions: load only where a test left another version or none.
    expected = library.code_version()
    if any(found != expected for found in library.deployed_versions(client).values()):
        library.load(client)
    yield client
    client.close()


class WorkerProcesses:
    """Worker processes started through the command line, killed at the end of the test."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.procs: list[Any] = []

    def start(
        self,
        *queues: str,
        concurrency: int = 1,
        lease: float = 1.0,
        burst: bool = False,
        extra: tuple[str, ...] = (),
    ) -> Any:
        from helpers import worker_process

        args = ["--concurrency", str(concurrency), "--lease", str(lease), *extra]
        if burst:
            args.append("--burst")
        proc = worker_process(self.redis_url, *queues, args=args)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.fixture
def workers(conn: Any, redis_url: str) -> Iterator[WorkerProcesses]:
    """Start `pyscheduler worker` processes (cwd: tests/, so `tasks` handlers import)."""
    started = WorkerProcesses(redis_url)
    yield started
    started.stop_all()
