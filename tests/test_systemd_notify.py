"""supervisor.integrations.systemd against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.integrations.systemd import ENVIRONMENT_VARIABLES, Notifier, unset_environment

RECV_TIMEOUT = 5.0


class Receiver:
    """The listening end of a notify socket, as systemd binds it."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value  # what systemd would put in NOTIFY_SOCKET

    def message(self) -> dict[str, str]:
        self.sock.settimeout(RECV_TIMEOUT)
        data = self.sock.recv(65536).decode()
        fields = dict(line.split("=", 1) for line in data.split("\n"))
        assert len(fields) == data.count("\n") + 1, f"a field was repeated: {data!r}"
        return fields

    def assert_silent(self, wait: float = 0.2) -> None:
        self.sock.settimeout(wait)
        with pytest.raises(TimeoutError):
            self.sock.recv(65536)


def bind_path(directory: Path) -> Receiver:
    path = directory / "notify.sock"
    assert len(str(path)) < 100, "AF_UNIX paths are limited to 108 bytes"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    return Receiver(sock, str(path))


def bind_abstract() -> Receiver:
    name = f"jobvisor-test-{os.getpid()}-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    return Receiver(sock, "@" + name)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run under whatever launched pytest, maybe a systemd unit: start from nothing."""
    for name in ENVIRONMENT_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(params=["path", "abstract"])
def receiver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Receiver]:
    recv = bind_path(tmp_path) if request.param == "path" else bind_abstract()
    yield recv
    recv.sock.close()


@pytest.fixture
def notifier(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> Iterator[Notifier]:
    monkeypatch.setenv("NOTIFY_SOCKET", receiver.env_value)
    n = Notifier()
    yield n
    n.close()


# --- messages -------------------------------------------------------------------------


def test_ready_sends_ready_and_status(notifier: Notifier, receiver: Receiver) -> None:
    assert notifier.enabled
    notifier.ready("4 workers, queues: default")
    assert receiver.message() == {"READY": "1", "STATUS": "4 workers, queues: default"}


def test_status(notifier: Notifier, receiver: Receiver) -> None:
    notifier.status("3/4 busy")
    assert receiver.message() == {"STATUS": "3/4 busy"}


def test_reloading_carries_monotonic_usec(notifier: Notifier, receiver: Receiver) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    fields = receiver.message()
    assert fields.keys() == {"RELOADING", "MONOTONIC_USEC"}
    assert fields["RELOADING"] == "1"
    assert before <= int(fields["MONOTONIC_USEC"]) <= after


def test_reloading_with_status(notifier: Notifier, receiver: Receiver) -> None:
    notifier.reloading("reloading config")
    fields = receiver.message()
    assert fields.keys() == {"RELOADING", "MONOTONIC_USEC", "STATUS"}
    assert fields["STATUS"] == "reloading config"


def test_stopping(notifier: Notifier, receiver: Receiver) -> None:
    notifier.stopping()
    assert receiver.message() == {"STOPPING": "1"}
    notifier.stopping("waiting for 2 jobs")
    assert receiver.message() == {"STOPPING": "1", "STATUS": "waiting for 2 jobs"}


def test_watchdog(notifier: Notifier, receiver: Receiver) -> None:
    notifier.watchdog()
    assert receiver.message() == {"WATCHDOG": "1"}


def test_send_low_level_and_newlines(notifier: Notifier, receiver: Receiver) -> None:
    assert notifier.send(STATUS="line one\nline two", ERRNO=5) is True
    assert receiver.message() == {"STATUS": "line one line two", "ERRNO": "5"}


def test_one_socket_reused_and_close_on_exec(notifier: Notifier, receiver: Receiver) -> None:
    notifier.status("a")
    sock = notifier._sock
    notifier.status("b")
    assert notifier._sock is sock is not None
    assert not os.get_inheritable(sock.fileno())
    assert [receiver.message(), receiver.message()] == [{"STATUS": "a"}, {"STATUS": "b"}]


def test_bad_field_name_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="upper-case"):
        Notifier().send(ready="1")


def test_forked_child_does_not_notify(notifier: Notifier, receiver: Receiver) -> None:
    pid = os.fork()
    if pid == 0:  # child: must not speak for the supervisor
        code = 1
        try:
            code = 0 if notifier.send(STATUS="from child") is False else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    receiver.assert_silent()
    notifier.status("from parent")
    assert receiver.message() == {"STATUS": "from parent"}


# --- outside systemd ------------------------------------------------------------------


def test_no_op_without_notify_socket() -> None:
    n = Notifier()
    assert not n.enabled
    assert n.address is None and n.watchdog_interval is None
    n.ready("x")
    n.status("x")
    n.reloading()
    n.stopping()
    n.watchdog()
    assert n.send(STATUS="x") is False
    assert n._sock is None, "no socket is opened when there is nowhere to send"


@pytest.mark.parametrize("value", ["", "relative/notify.sock", "vsock:2:1234"])
def test_unusable_notify_socket_disables(value: str) -> None:
    n = Notifier({"NOTIFY_SOCKET": value, "WATCHDOG_USEC": "30000000"})
    assert not n.enabled and n.watchdog_interval is None
    assert n.send(STATUS="x") is False


def test_abstract_address_gets_nul_prefix() -> None:
    assert Notifier({"NOTIFY_SOCKET": "@sd-notify"}).address == "\0sd-notify"
    assert Notifier({"NOTIFY_SOCKET": "/run/systemd/notify"}).address == "/run/systemd/notify"


def test_vanished_socket_does_not_raise_and_logs_once(
    receiver: Receiver, notifier: Notifier, caplog: pytest.LogCaptureFixture
) -> None:
    notifier.status("before")
    assert receiver.message() == {"STATUS": "before"}
    receiver.sock.close()
    if not receiver.env_value.startswith("@"):
        os.unlink(receiver.env_value)
    with caplog.at_level(logging.DEBUG, logger="supervisor.integrations.systemd"):
        assert notifier.send(STATUS="after") is False
        notifier.ready("x")
        notifier.watchdog()
        notifier.stopping()
    records = [r for r in caplog.records if r.name == "supervisor.integrations.systemd"]
    assert len(records) == 1
    assert records[0].levelno == logging.DEBUG
    assert "cannot notify systemd" in records[0].getMessage()


def test_send_after_close_reopens(notifier: Notifier, receiver: Receiver) -> None:
    notifier.close()
    notifier.close()
    notifier.watchdog()
    assert receiver.message() == {"WATCHDOG": "1"}


# --- watchdog interval ----------------------------------------------------------------

SOCKET = {"NOTIFY_SOCKET": "@jobvisor-test-unused"}


@pytest.mark.parametrize(
    "usec,expected",
    [
        ("30000000", 15.0),
        ("1000000", 0.5),
        ("1", 0.0000005),
        ("0", None),
        ("-1", None),
        ("", None),
        ("30s", None),
    ],
)
def test_watchdog_interval_is_half_the_period(usec: str, expected: float | None) -> None:
    n = Notifier({**SOCKET, "WATCHDOG_USEC": usec})
    if expected is None:
        assert n.watchdog_interval is None
    else:
        assert n.watchdog_interval == pytest.approx(expected)


def test_watchdog_interval_unset() -> None:
    assert Notifier(SOCKET).watchdog_interval is None


def test_watchdog_pid_matching_this_process() -> None:
    env = {**SOCKET, "WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(env).watchdog_interval == 10.0


@pytest.mark.parametrize("pid", ["1", "not-a-pid"])
def test_watchdog_pid_of_another_process(pid: str) -> None:
    if pid == str(os.getpid()):
        pytest.skip("this test runs as pid 1")
    env = {**SOCKET, "WATCHDOG_USEC": "20000000", "WATCHDOG_PID": pid}
    assert Notifier(env).watchdog_interval is None


def test_watchdog_needs_a_socket() -> None:
    assert Notifier({"WATCHDOG_USEC": "20000000"}).watchdog_interval is None


def test_watchdog_from_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert Notifier().watchdog_interval is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier().watchdog_interval == 15.0


# --- environment ----------------------------------------------------------------------


def test_unset_environment_removes_only_notify_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    monkeypatch.setenv("JOBVISOR_KEEP_ME", "1")
    n = Notifier()
    unset_environment()
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        assert name not in os.environ
    assert os.environ["JOBVISOR_KEEP_ME"] == "1"
    # The notifier built before keeps what it read.
    assert n.enabled and n.watchdog_interval == 15.0
    unset_environment()  # idempotent


def test_unset_environment_on_a_given_mapping() -> None:
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1", "PATH": "/bin"}
    unset_environment(env)
    assert env == {"PATH": "/bin"}
