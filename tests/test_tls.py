"""TLS (``rediss://``) against Debian's redis-server built with TLS.

Certificates are made at test time (trustme): a CA, a server certificate for
``localhost`` only, a client certificate from the same CA, and a stranger CA with a
client certificate of its own. Two servers listen on loopback TLS ports only (no plain
port): one verifies nothing of the client, one requires a client certificate.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import jobs.store.tls
from jobs import Broker, BrokerUnavailable, ConfigurationError, Job, Queue, RedisSettings
from tests import jobfuncs
from tests.debian_redis import Certs, Servers, needs_redis_server
from tests.helpers import wait_until
from tests.procs import Running

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls(tmp_path_factory, certs):
    servers = Servers(tmp_path_factory.mktemp("tls"))
    try:
        yield SimpleNamespace(
            verify=servers.start("verify", certs.server_lines(auth_clients=False), tls=True),
            mutual=servers.start("mutual", certs.server_lines(auth_clients=True), tls=True))
    finally:
        servers.stop_all()


@pytest.fixture
def started(tmp_path, namespace):
    """Supervisor subprocesses on a URL of the test's choosing; all stopped afterwards."""
    runs: list[Running] = []

    def start(url: str, env: dict[str, str], workers: int = 2) -> Running:
        directory = tmp_path / f"s{len(runs)}"
        directory.mkdir()
        run = Running(directory, SimpleNamespace(url=url), namespace, workers=workers, env=env)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.stop()


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "supervisor", "--config", str(config), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=30)


@needs_redis_server
def test_supervisor_runs_jobs_over_tls_with_ca_verification(tls, certs, started, namespace):
    url = f"rediss://localhost:{tls.verify.port}/0"
    # The supervisor gets the CA from the environment (JOBVISOR_REDIS_TLS_CA_FILE), the
    # producer from its settings: both paths end in the same verified connection.
    run = started(url, env={"JOBVISOR_REDIS_TLS_CA_FILE": str(certs.ca)})
    run.wait_workers(2)
    producer = Broker(url, redis_settings=RedisSettings(namespace=namespace,
                                                        tls_ca_file=str(certs.ca)))
    jobs_ = [Queue("default", producer).enqueue("examples.cpu:count_primes", n)
             for n in (1000, 10_000) * 10]
    assert [j.result(timeout=30) for j in jobs_] == [168, 1229] * 10
    # That server has no plain port and no other workers: this supervisor's workers ran
    # them, over connections that verified the server's certificate.
    assert len(run.children()) == 2
    assert "Traceback" not in run.logs() and "cannot reach" not in run.logs()
    producer.client.close()


@needs_redis_server
def test_wrong_ca_is_refused_with_a_clear_error(tls, certs, started, namespace, tmp_path):
    url = f"rediss://localhost:{tls.verify.port}/0"
    wrong = Broker(url, redis_settings=RedisSettings(namespace=namespace,
                                                     tls_ca_file=str(certs.other_ca)))
    with pytest.raises(BrokerUnavailable) as info:
        Queue("default", wrong).enqueue("examples.cpu:noop")
    message = str(info.value)
    assert "CERTIFICATE_VERIFY_FAILED" in message
    assert "redis.tls_ca_file must name the CA that signed it" in message

    config = tmp_path / "wrong-ca.toml"
    config.write_text(f'[redis]\nurl = "{url}"\nnamespace = "{namespace}"\n'
                      f'tls_ca_file = "{certs.other_ca}"\n')
    out = cli(config, "stats")
    assert out.returncode == 4, out.stderr  # ExitCode.REDIS_UNAVAILABLE
    assert out.stderr.startswith(f"jobvisor: cannot reach Redis at {url}: ")
    assert "CERTIFICATE_VERIFY_FAILED" in out.stderr and "tls_ca_file" in out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr

    # A supervisor with the wrong CA: its workers say why and keep retrying, as in any
    # outage (the supervisor never stops on Redis trouble); no traceback from redis-py.
    run = started(url, env={"JOBVISOR_REDIS_TLS_CA_FILE": str(certs.other_ca)}, workers=1)
    wait_until(lambda: "redis.tls_ca_file must name the CA" in run.logs(), timeout=20,
               what="the worker to log the certificate failure")
    assert run.proc.poll() is None
    assert "Traceback" not in run.logs()


@needs_redis_server
def test_host_name_is_checked_unless_turned_off(tls, certs, namespace):
    by_ip = f"rediss://127.0.0.1:{tls.verify.port}/0"  # the certificate names localhost only
    strict = Broker(by_ip, redis_settings=RedisSettings(namespace=namespace,
                                                        tls_ca_file=str(certs.ca)))
    with pytest.raises(BrokerUnavailable, match="mismatch.*tls_check_hostname = false"):
        strict.ping()
    lenient = Broker(by_ip, redis_settings=RedisSettings(
        namespace=namespace, tls_ca_file=str(certs.ca), tls_check_hostname=False))
    lenient.ping()  # the chain is still verified: only the name check is off
    other = Broker(by_ip, redis_settings=RedisSettings(
        namespace=namespace, tls_ca_file=str(certs.other_ca), tls_check_hostname=False))
    with pytest.raises(BrokerUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        other.ping()
    lenient.client.close()


@needs_redis_server
def test_server_requiring_client_certificates(tls, certs, namespace, tmp_path):
    url = f"rediss://localhost:{tls.mutual.port}/0"
    base = {"namespace": namespace, "tls_ca_file": str(certs.ca)}
    good = Broker(url, redis_settings=RedisSettings(
        **base, tls_cert_file=str(certs.client_cert), tls_key_file=str(certs.client_key)))
    job = Queue("default", good).enqueue("examples.cpu:count_primes", 10)
    assert Job.fetch(job.id, good).state == "queued"

    for name, extra in (("no certificate", {}),
                        ("a certificate from another CA",
                         {"tls_cert_file": str(certs.foreign_cert),
                          "tls_key_file": str(certs.foreign_key)})):
        refused = Broker(url, redis_settings=RedisSettings(**base, **extra))
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable) as info:
            Job.fetch(job.id, refused)
        # One round of the client's retries (0.8 s here), not retries nested three deep
        # (4 s here before): a generous bound.
        assert time.monotonic() - started < 3.0, name
        message = str(info.value)
        assert "tls_cert_file" in message, (name, message)
        assert "Traceback" not in message

    # The same from config.toml, as the CLI reads it.
    config = tmp_path / "mutual.toml"
    config.write_text(f'[redis]\nurl = "{url}"\nnamespace = "{namespace}"\n'
                      f'tls_ca_file = "{certs.ca}"\ntls_cert_file = "{certs.client_cert}"\n'
                      f'tls_key_file = "{certs.client_key}"\n')
    out = cli(config, "show", job.id, "--json")
    assert out.returncode == 0, out.stderr
    assert '"state": "queued"' in out.stdout
    good.client.close()


def test_missing_or_unusable_tls_files_name_the_key(tmp_path, certs):
    missing = tmp_path / "nope.pem"
    cases = [
        ({"tls_ca_file": str(missing)},
         f"redis.tls_ca_file '{missing}' cannot be read: No such file or directory"),
        ({"tls_ca_file": str(tmp_path)}, "redis.tls_ca_file"),  # a directory
        ({"tls_ca_file": str(certs.client_key)}, "redis.tls_ca_file"),  # no certificate
        ({"tls_cert_file": str(missing)}, "redis.tls_cert_file"),
        ({"tls_cert_file": str(certs.client_cert), "tls_key_file": str(missing)},
         "redis.tls_key_file"),
        ({"tls_cert_file": str(certs.client_cert), "tls_key_file": str(certs.foreign_key)},
         "key values mismatch"),
        ({"tls_key_file": str(certs.client_key)}, "redis.tls_key_file is set without"),
    ]
    for settings, message in cases:
        with pytest.raises(ConfigurationError) as info:
            RedisSettings(**settings)
        assert message in str(info.value), (settings, str(info.value))

    # In config.toml: refused at load (exit 2, the key path), so a reload keeps the old one.
    config = tmp_path / "c.toml"
    config.write_text(f'[redis]\nurl = "rediss://localhost:1/0"\ntls_ca_file = "{missing}"\n')
    out = cli(config, "stats")
    assert out.returncode == 2, out.stderr
    assert "redis.tls_ca_file" in out.stderr and "$.redis" in out.stderr
    assert "Traceback" not in out.stderr

    # TLS files with a URL that does not speak TLS: refused, not silently ignored.
    with pytest.raises(ConfigurationError, match="does not use TLS: use rediss://"):
        Broker("redis://localhost:1/0", redis_settings=RedisSettings(tls_ca_file=str(certs.ca)))


def _handshake_elsewhere() -> bool:
    """Whether another thread holds the TLS set-up lock (is inside a handshake)."""
    lock = jobs.store.tls._tls_lock
    if lock.acquire(blocking=False):
        lock.release()
        return False
    return True


@needs_redis_server
def test_fork_during_a_tls_handshake_is_safe(tls, certs):
    """A fork waits (at most FORK_WAIT) for another thread's handshake, and the child
    gets a fresh lock: it can connect over TLS at once. OpenSSL is not fork-safe while a
    thread is inside it; without this a worker could hang in its first handshake."""
    settings = RedisSettings(tls_ca_file=str(certs.ca), socket_timeout=3, connect_timeout=3)
    with socket.socket() as silent:  # accepts, never answers: the handshake waits
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        stuck = Broker(f"rediss://localhost:{silent.getsockname()[1]}/0",
                       redis_settings=settings)

        def hang() -> None:
            with contextlib.suppress(BrokerUnavailable):
                stuck.ping()

        threading.Thread(target=hang, daemon=True).start()
        peer, _ = silent.accept()
        wait_until(_handshake_elsewhere, timeout=5, what="the thread to start its handshake")
        began = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            code = 1
            try:
                Broker(f"rediss://localhost:{tls.verify.port}/0", redis_settings=settings).ping()
                code = 0
            finally:
                os._exit(code)
        waited = time.monotonic() - began
        exit_code: list[int] = []

        def reaped() -> bool:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                exit_code.append(os.waitstatus_to_exitcode(status))
            return bool(done)

        try:
            wait_until(reaped, timeout=10, what="the child to connect over TLS and exit")
        finally:
            if not exit_code:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            peer.close()
    assert jobs.store.tls.FORK_WAIT * 0.9 <= waited < jobs.store.tls.FORK_WAIT + 1.0
    assert exit_code == [0]


@needs_redis_server
def test_sentinel_over_tls_finds_the_primary_and_runs_jobs(certs, tmp_path, namespace):
    """``rediss+sentinel://``: TLS to the sentinel and to the primary it names, both
    verified against the CA, the host name included (the sentinel announces the primary
    as ``localhost``, the name on its certificate)."""
    from jobs import Worker

    servers = Servers(tmp_path / "servers")
    try:
        primary = servers.start("primary", certs.server_lines(auth_clients=False), tls=True)
        sentinel = servers.start("sentinel", [
            *certs.server_lines(auth_clients=False), "tls-replication yes",
            "sentinel resolve-hostnames yes", "sentinel announce-hostnames yes",
            f"sentinel monitor tlsorders localhost {primary.port} 1",
        ], sentinel=True, tls=True)
        settings = RedisSettings(namespace=namespace, tls_ca_file=str(certs.ca))
        broker = Broker(f"rediss+sentinel://localhost:{sentinel.port}/tlsorders",
                        redis_settings=settings)
        job = Queue("default", broker).enqueue(jobfuncs.add, 2, 3)
        assert Worker(["default"], broker=broker).run_until_empty() == {"completed": 1}
        assert job.result(timeout=10) == 5
        stranger = Broker(f"rediss+sentinel://localhost:{sentinel.port}/tlsorders",
                          redis_settings=RedisSettings(namespace=namespace,
                                                       tls_ca_file=str(certs.other_ca)))
        # The sentinel's own refusal is what the message names, with what to do about it.
        with pytest.raises(BrokerUnavailable, match=f"sentinel localhost:{sentinel.port}: .*"
                           "CERTIFICATE_VERIFY_FAILED.*redis.tls_ca_file must name the CA"):
            stranger.ping()
        unknown = Broker(f"rediss+sentinel://localhost:{sentinel.port}/nosuch",
                         redis_settings=settings)
        with pytest.raises(BrokerUnavailable, match="knows no healthy primary named 'nosuch'"):
            unknown.ping()
        broker.client.close()
    finally:
        servers.stop_all()
