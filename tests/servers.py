"""Servers with a configuration of their own, for the ACL and TLS tests.

The shared ``engine`` fixture of conftest.py is one plain server per session; these tests need
servers no other test sees: one whose ``default`` user is switched off (ACL), one that speaks
TLS only and asks every client for a certificate. Each is started on a free port in its own
temporary directory and stopped at the end of its test module.

Certificates are made at test time with ``trustme`` (no key is ever committed).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import redis
import trustme

from pyscheduler.dev.cluster import (
    LocalCluster,
    ReplicatedCluster,
    local_cluster,
    local_cluster_with_replicas,
)
from pyscheduler.dev.engine import Engine, EngineNotFound, find_engine_binary, free_port

HOST = "127.0.0.1"
SECURITY_DOC = Path(__file__).resolve().parent.parent / "docs" / "security.md"
ACL_ROLES = ("psq-deploy", "psq-producer", "psq-worker", "psq-monitor")
PASSWORD_PLACEHOLDER = ">CHANGE-ME"
ADMIN_USER = "psq-test-admin"
ADMIN_PASSWORD = "admin-secret"
READY_TIMEOUT_S = 15.0

#: A TLS-capable valkey-server binary, for machines where the one found first has no TLS.
ENV_TLS_VALKEY = "PYSCHEDULER_TLS_VALKEY"
#: Where `tools/dev.sh` unpacks the Debian valkey-server (built with TLS) inside the venv.
VENV_TLS_VALKEY = Path(sys.prefix) / "opt" / "valkey-tls" / "usr" / "bin" / "valkey-server"


# --------------------------------------------------------------------------- ACL


@contextlib.contextmanager
def acl_server(kind: str) -> Iterator[tuple[Engine, redis.Redis]]:
    """A private server whose ``default`` user is off; yields it and an admin client.

    With ``default`` off, a client that gives no user name or a wrong password cannot run
    anything, so every command a test sees succeed ran as the user the test named.
    """
    with Engine(kind=kind) as engine:
        setup = redis.Redis(host=HOST, port=engine.port)
        setup.acl_setuser(
            ADMIN_USER,
            enabled=True,
            passwords=[f"+{ADMIN_PASSWORD}"],
            keys=["*"],
            channels=["*"],
            commands=["+@all"],
        )
        setup.acl_setuser("default", enabled=False)
        setup.close()
        admin = redis.Redis(
            host=HOST, port=engine.port, username=ADMIN_USER, password=ADMIN_PASSWORD
        )
        try:
            yield engine, admin
        finally:
            admin.close()


def documented_rules() -> dict[str, list[str]]:
    """{user: its ACL rules} from the `ACL SETUSER psq-...` lines of docs/security.md."""
    found = dict(re.findall(r"^ACL SETUSER (psq-[a-z]+) (.+)$", SECURITY_DOC.read_text(), re.M))
    missing = [role for role in ACL_ROLES if role not in found]
    assert not missing, f"{SECURITY_DOC} has no `ACL SETUSER` line for {missing}"
    return {user: rules.split() for user, rules in found.items()}


def with_password(rules: list[str], password: str) -> list[str]:
    """The rules with the page's password placeholder replaced."""
    return [f">{password}" if rule == PASSWORD_PLACEHOLDER else rule for rule in rules]


def user_url(port: int, user: str, password: str) -> str:
    return f"redis://{quote(user, safe='')}:{quote(password, safe='')}@{HOST}:{port}/0"


# --------------------------------------------------------------------------- TLS


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of one test's public key infrastructure."""

    ca: Path  # the CA the server and the clients trust
    server_cert: Path  # for 127.0.0.1 and localhost, signed by `ca`
    server_key: Path
    client_cert: Path  # signed by `ca`
    client_key: Path
    stranger_ca: Path  # a CA nobody here trusts
    stranger_cert: Path  # a client certificate signed by `stranger_ca`
    stranger_key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    ca, stranger = trustme.CA(), trustme.CA()
    server = ca.issue_cert(HOST, "localhost")
    client = ca.issue_cert("psq-client.example.org")
    outsider = stranger.issue_cert("psq-client.example.org")
    files = TlsFiles(*(directory / name for name in (
        "ca.pem",
        "server.pem",
        "server.key",
        "client.pem",
        "client.key",
        "stranger-ca.pem",
        "stranger.pem",
        "stranger.key",
    )))  # fmt: skip
    ca.cert_pem.write_to_path(str(files.ca))
    server.cert_chain_pems[0].write_to_path(str(files.server_cert))
    server.private_key_pem.write_to_path(str(files.server_key))
    client.cert_chain_pems[0].write_to_path(str(files.client_cert))
    client.private_key_pem.write_to_path(str(files.client_key))
    stranger.cert_pem.write_to_path(str(files.stranger_ca))
    outsider.cert_chain_pems[0].write_to_path(str(files.stranger_cert))
    outsider.private_key_pem.write_to_path(str(files.stranger_key))
    for key in (files.server_key, files.client_key, files.stranger_key):
        key.chmod(0o600)
    return files


class TlsUnsupported(RuntimeError):
    """The server binary was built without TLS."""


def _stop_with_parent() -> None:
    # Runs in the server's child process: SIGTERM when the test process dies without cleanup.
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop_server(proc: subprocess.Popen[bytes] | None, directory: Path) -> None:
    """Stop a server started in a process group of its own (SIGTERM, then SIGKILL after 5 s),
    and remove its folder."""
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    shutil.rmtree(directory, ignore_errors=True)


class TlsServer:
    """A redis-server/valkey-server that listens on a TLS port only (``--port 0``).

    ``tls-auth-clients yes``: a client must show a certificate signed by ``files.ca``.
    """

    def __init__(self, binary: str, files: TlsFiles) -> None:
        self.binary = binary
        self.files = files
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="psq-tls-"))
        self.log = self.directory / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        f = self.files
        return [
            self.binary,
            "--port", "0",
            "--bind", HOST,
            "--tls-port", str(self.port),
            "--tls-cert-file", str(f.server_cert),
            "--tls-key-file", str(f.server_key),
            "--tls-ca-cert-file", str(f.ca),
            "--tls-auth-clients", "yes",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(self.directory),
            "--logfile", str(self.log),
        ]  # fmt: skip

    def url(
        self,
        *,
        ca: Path | None = None,
        cert: tuple[Path, Path] | None = None,
        extra: dict[str, str] | None = None,
        login: tuple[str, str] | None = None,
    ) -> str:
        """A ``rediss://`` URL with the redis-py TLS options as query arguments (and an ACL
        user and password, `login`)."""
        query: dict[str, str] = {}
        if ca is not None:
            query["ssl_ca_certs"] = str(ca)
        if cert is not None:
            query["ssl_certfile"], query["ssl_keyfile"] = str(cert[0]), str(cert[1])
        query.update(extra or {})
        suffix = f"?{urlencode(query)}" if query else ""
        userinfo = f"{quote(login[0], safe='')}:{quote(login[1], safe='')}@" if login else ""
        return f"rediss://{userinfo}{HOST}:{self.port}/0{suffix}"

    @property
    def good_url(self) -> str:
        """Trusts the CA and shows a client certificate: the URL every role uses."""
        return self.url(ca=self.files.ca, cert=(self.files.client_cert, self.files.client_key))

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.good_url)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def start(self) -> TlsServer:
        """Start and wait until a TLS client with the right certificate gets PONG."""
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.directory,
            start_new_session=True,
            preexec_fn=_stop_with_parent,
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                tail = self.log_tail()
                self.stop()
                said = [line for line in tail.splitlines() if "TLS support" in line]
                if said:
                    raise TlsUnsupported(f"it says {said[-1].split(' # ')[-1].strip()!r}")
                raise RuntimeError(f"{self.binary} exited while starting:\n{tail}")
            if self._answers():
                return self
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise RuntimeError(f"{self.binary} gave no TLS PONG in time:\n{tail}")
            time.sleep(0.05)

    def _answers(self) -> bool:
        client = self.client()
        try:
            return bool(client.ping())
        except (redis.ConnectionError, ssl.SSLError, OSError):
            return False
        finally:
            client.close()

    def stop(self) -> None:
        stop_server(self.proc, self.directory)


def tls_binary_candidates(kind: str) -> list[tuple[str, str | None]]:
    """(where it was looked for, path or None) for each binary of `kind`, best first."""
    found: list[tuple[str, str | None]] = []
    if kind == "valkey":
        env_value = os.environ.get(ENV_TLS_VALKEY, "").strip()
        found.append((f"${ENV_TLS_VALKEY}", env_value or None))
        found.append((
            "the Debian valkey-server tools/dev.sh unpacks into the venv",
            str(VENV_TLS_VALKEY) if VENV_TLS_VALKEY.is_file() else None,
        ))  # fmt: skip
    try:
        _, path = find_engine_binary(kind)
    except EngineNotFound:
        found.append((f"pyscheduler.dev.engine.find_engine_binary({kind!r})", None))
    else:
        found.append((f"pyscheduler.dev.engine.find_engine_binary({kind!r})", path))
    return found


def start_tls_server(kind: str, files: TlsFiles) -> tuple[TlsServer | None, Sequence[str]]:
    """The first candidate binary of `kind` that starts with TLS, else None and why each not."""
    reasons: list[str] = []
    for where, path in tls_binary_candidates(kind):
        if path is None:
            reasons.append(f"{where}: not found")
            continue
        try:
            return TlsServer(path, files).start(), reasons
        except TlsUnsupported as exc:
            reasons.append(f"{where}: {path} is built without TLS ({exc})")
    return None, reasons


# --------------------------------------------------------------------------- Redis Cluster


#: A local cluster of private servers, every slot covered, no replicas (pyscheduler/dev/cluster.py).
Cluster = LocalCluster


def cluster(kind: str, primaries: int = 3) -> contextlib.AbstractContextManager[Cluster]:
    """Start `primaries` cluster-mode servers of `kind`, every slot covered, ready to use."""
    return local_cluster(kind, primaries)


# --------------------------------------------------------------------------- replication

#: Replication settings of the private primaries and replicas: a replica's first sync starts
#: at once (the default waits 5 s for more replicas to share a diskless transfer).
REPLICATION_ARGS = ("--repl-diskless-sync-delay", "0")
#: An append-only file fsynced at every write, for the WAITAOF tests.
AOF_ARGS = ("--appendonly", "yes", "--appendfsync", "always")


def online_replicas(primary: redis.Redis) -> int:
    """How many replicas the primary counts as online (INFO replication)."""
    info = primary.info("replication")
    return sum(
        1
        for name, value in info.items()
        if name.startswith("slave") and isinstance(value, dict) and value.get("state") == "online"
    )


@dataclass
class ReplicatedPair:
    """A private primary and one replica of it."""

    primary: Engine
    replica: Engine

    @property
    def url(self) -> str:
        return self.primary.url

    def primary_client(self) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.primary.port)

    def replica_client(self) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.replica.port)


@contextlib.contextmanager
def primary_with_replica(kind: str, extra_args: Sequence[str] = ()) -> Iterator[ReplicatedPair]:
    """Start a primary of `kind` and a replica of it (free ports, `extra_args` on both), and
    wait until the primary counts the replica online (its first sync is done)."""
    args = [*REPLICATION_ARGS, *extra_args]
    with Engine(kind=kind, extra_args=args) as primary:
        replica_args = [*args, "--replicaof", HOST, str(primary.port)]
        with Engine(kind=kind, extra_args=replica_args) as replica:
            client = redis.Redis(host=HOST, port=primary.port)
            try:
                deadline = time.monotonic() + READY_TIMEOUT_S
                while online_replicas(client) < 1:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the {kind} replica did not come online")
                    time.sleep(0.05)
            finally:
                client.close()
            yield ReplicatedPair(primary, replica)


# --------------------------------------------------------------------------- Sentinel

SENTINEL_SERVICE = "psq-primary"


class SentinelServer:
    """A sentinel (`<binary> sentinel.conf --sentinel`) watching one primary as
    `SENTINEL_SERVICE`, with a quorum of 1 and a short `down-after-milliseconds`, so a primary
    that stops answering is failed over within about a second (and `SENTINEL FAILOVER` works
    at once)."""

    def __init__(self, binary: str, primary_port: int, down_after_ms: int = 1000) -> None:
        self.binary = binary
        self.primary_port = primary_port
        self.down_after_ms = down_after_ms
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="psq-sentinel-"))
        self.config = self.directory / "sentinel.conf"
        self.log = self.directory / "sentinel.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def write_config(self) -> None:
        name = SENTINEL_SERVICE
        self.config.write_text(
            "\n".join([
                f"port {self.port}",
                f"bind {HOST}",
                f"dir {self.directory}",
                f"logfile {self.log}",
                "daemonize no",
                f"sentinel monitor {name} {HOST} {self.primary_port} 1",
                f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
                f"sentinel failover-timeout {name} 10000",
                f"sentinel parallel-syncs {name} 1",
                "",
            ])
        )  # fmt: skip

    def start(self) -> SentinelServer:
        """Start the sentinel and wait until it knows the primary and its replicas."""
        self.write_config()
        self.proc = subprocess.Popen(
            [self.binary, str(self.config), "--sentinel"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.directory,
            start_new_session=True,
            preexec_fn=_stop_with_parent,
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self._knows_primary():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise RuntimeError(f"the sentinel {self.binary} did not come up:\n{tail}")
            time.sleep(0.05)
        return self

    def client(self) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.port, decode_responses=True)

    def _knows_primary(self) -> bool:
        client = self.client()
        try:
            found = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE)
            return bool(found)
        except (redis.ConnectionError, redis.ResponseError, OSError):
            return False
        finally:
            client.close()

    def primary_port_now(self) -> int | None:
        """The port of the primary the sentinel names now."""
        client = self.client()
        try:
            found = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE)
            return int(found[1]) if found else None
        finally:
            client.close()

    def known_replicas(self) -> int:
        client = self.client()
        try:
            return len(client.execute_command("SENTINEL", "REPLICAS", SENTINEL_SERVICE))
        finally:
            client.close()

    def failover(self) -> None:
        """`SENTINEL FAILOVER`: promote a replica now, whether or not the primary is up."""
        client = self.client()
        try:
            client.execute_command("SENTINEL", "FAILOVER", SENTINEL_SERVICE)
        finally:
            client.close()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        stop_server(self.proc, self.directory)


@dataclass
class SentinelSetup:
    """A primary, a replica of it, and a sentinel watching them."""

    pair: ReplicatedPair
    sentinel: SentinelServer

    @property
    def url(self) -> str:
        """The `redis+sentinel://` URL of the service."""
        return f"redis+sentinel://{HOST}:{self.sentinel.port}/{SENTINEL_SERVICE}/0"


@contextlib.contextmanager
def sentinel_setup(kind: str, down_after_ms: int = 1000) -> Iterator[SentinelSetup]:
    """Start a primary and a replica of `kind` and a sentinel of the same binary watching
    them; wait until the sentinel knows both."""
    with primary_with_replica(kind) as pair:
        sentinel = SentinelServer(pair.primary.binary, pair.primary.port, down_after_ms)
        try:
            sentinel.start()
            deadline = time.monotonic() + READY_TIMEOUT_S
            while sentinel.known_replicas() < 1:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the sentinel did not find the replica:\n{sentinel.log_tail()}"
                    )
                time.sleep(0.05)
            yield SentinelSetup(pair, sentinel)
        finally:
            sentinel.stop()


# --------------------------------------------------------------------------- cluster with replicas


def cluster_with_replicas(kind: str) -> contextlib.AbstractContextManager[ReplicatedCluster]:
    """A local Redis Cluster of 3 primaries with one replica each (`nodes`: all six), ready
    once every primary counts its replica online."""
    return local_cluster_with_replicas(kind, 3)
