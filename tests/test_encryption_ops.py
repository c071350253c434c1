"""Payload encryption as operators meet it: a supervisor with keys, the CLI and the
dashboard with and without them, key files and configuration checks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from jobs import Broker, Job, JobState, Queue, Worker
from jobs.effective import describe, publish_functions
from jobs.encryption.keyring import KEYS_VARIABLE, load_keyring, parse_keys
from jobs.encryption.sealer import HIDDEN, Sealer
from jobs.environment import library_settings
from jobs.errors import ConfigurationError
from jobs.settings import EncryptionSettings
from supervisor.config import Config, check_encryption, load_config
from supervisor.errors import ConfigError, ExitCode
from tests import cryptfuncs
from tests.cryptfuncs import MARKER
from tests.helpers import wait_until
from tests.procs import start_and_wait
from tests.test_encryption import KEY_A, KEY_B, another, stored

ROOT = Path(__file__).parent.parent
MODULES = '["tests.jobfuncs", "tests.cryptfuncs"]'


def describe_functions(broker: Broker) -> None:
    """What a supervisor loading tests.cryptfuncs publishes."""
    publish_functions(broker, {cryptfuncs.echo.name: describe(cryptfuncs.echo, broker.defaults)})


def cli(config: Path, *args: str, keys: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != KEYS_VARIABLE}
    if keys is not None:
        env[KEYS_VARIABLE] = keys
    return subprocess.run([sys.executable, "-m", "supervisor", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)


def test_a_supervisor_runs_encrypted_jobs_and_kills_none_for_a_foreign_key(sup, monkeypatch):
    monkeypatch.setenv(KEYS_VARIABLE, KEY_A)
    r = start_and_wait(sup, workers=1, modules=MODULES, env={KEYS_VARIABLE: KEY_A})
    q = Queue("default", r.broker)
    good = q.enqueue(cryptfuncs.greet, MARKER)
    assert good.result(timeout=20) == f"hello, {MARKER}"
    # A producer whose only key the supervisor lacks: that job dies at once, the worker
    # that met it lives on and runs the next one.
    (worker,) = [p.pid for p in r.workers()]
    monkeypatch.setenv(KEYS_VARIABLE, KEY_B)
    foreign = Queue("default", another(r.broker)).enqueue(cryptfuncs.greet, "x")
    monkeypatch.setenv(KEYS_VARIABLE, KEY_A)
    after = Queue("default", another(r.broker)).enqueue(cryptfuncs.greet, "y")
    assert after.result(timeout=20) == "hello, y"
    foreign = Job.fetch(foreign.id, r.broker)
    assert (foreign.state, foreign.attempts, foreign.error.type) == (
        JobState.DEAD, 1, "DecryptionError")
    assert "key 'kb', which this process does not have (its keys: ka)" in foreign.error.message
    assert [p.pid for p in r.workers()] == [worker]
    assert MARKER.encode() not in stored(r.broker)
    assert "encryption keys ka from JOBVISOR_ENCRYPTION_KEYS (active: ka)" in r.logs()


def config_of(broker: Broker, tmp_path: Path) -> Path:
    """A config file naming the broker's server and namespace (no supervisor runs)."""
    path = tmp_path / "config.toml"
    path.write_text(f'[redis]\nurl = "{broker.url}"\nnamespace = "{broker.keys.ns}"\n')
    return path


def test_show_and_result_decrypt_with_the_key_and_say_encrypted_without(broker, monkeypatch,
                                                                         tmp_path):
    monkeypatch.setenv(KEYS_VARIABLE, KEY_A)
    config = config_of(broker, tmp_path)
    j = Queue("default", broker).enqueue(cryptfuncs.greet, MARKER)
    Worker(broker=broker).run_until_empty()
    shown = json.loads(cli(config, "show", j.id, "--json", keys=KEY_A).stdout)
    assert (shown["args"], shown["result"], shown["encrypted"]) == (
        [MARKER], f"hello, {MARKER}", "ka")
    blind = cli(config, "show", j.id, keys=None)
    assert blind.returncode == 0
    assert f"args          {HIDDEN}" in blind.stdout and MARKER not in blind.stdout
    assert cli(config, "result", j.id, keys=KEY_A).stdout.strip() == f'"hello, {MARKER}"'
    refused = cli(config, "result", j.id, keys=KEY_B)
    assert refused.returncode == ExitCode.ERROR
    assert "key 'ka', which this process does not have (its keys: kb)" in refused.stderr


def test_cli_keygen_and_rotate(broker, monkeypatch, tmp_path):
    made = cli(tmp_path / "none.toml", "encryption", "keygen", "--id", "k3", "--json",
               keys=None)
    entry = json.loads(made.stdout)["key"]
    (key,) = parse_keys(entry, "keygen", ",")
    assert key.id == "k3" and len(key.secret) == 32
    monkeypatch.setenv(KEYS_VARIABLE, KEY_A)
    config = config_of(broker, tmp_path)
    j = Queue("default", broker).enqueue(cryptfuncs.greet, "x")
    both = f"{entry},{KEY_A}"
    dry = json.loads(cli(config, "encryption", "rotate", "--dry-run", "--json",
                         keys=both).stdout)
    assert (dry["active"], dry["rewritten"], dry["done"]) == ("k3", 1, False)
    done = cli(config, "encryption", "rotate", keys=both)
    assert done.returncode == 0, done.stderr
    assert "re-encrypted    1 job(s)" in done.stdout and "older keys may be removed" in done.stdout
    lacking = cli(config, "encryption", "rotate", keys=KEY_B)
    assert lacking.returncode == ExitCode.ERROR and f"{j.id}: cannot decrypt" in lacking.stdout
    # Enqueued by name from the command line: encrypted because the function's supervisors
    # published it as @job(encrypt=True) (a producer that never imported it).
    describe_functions(broker)
    by_name = cli(config, "enqueue", "tests.cryptfuncs:echo", json.dumps(MARKER), keys=entry)
    assert by_name.returncode == 0, by_name.stderr
    spec = broker.client.hget(broker.keys.job(by_name.stdout.strip()), "spec")
    assert b"tests.cryptfuncs:echo" in spec and MARKER.encode() not in spec


def test_the_dashboard_shows_decrypted_arguments_only_where_the_keys_are(broker, monkeypatch):
    from litestar.testing import TestClient

    from supervisor.web.app import create_app

    monkeypatch.setenv(KEYS_VARIABLE, KEY_A)
    j = cryptfuncs.refuse.enqueue(MARKER)
    Worker(broker=broker).run_until_empty()
    config = msgspec.convert({"redis": {"namespace": broker.keys.ns}}, Config)
    html = {"Accept": "text/html"}
    with TestClient(create_app(config, broker=another(broker))) as client:
        api = client.get(f"/api/jobs/{j.id}").json()
        assert (api["args"], api["error"]["message"]) == ([MARKER], f"cannot handle {MARKER}")
        page = client.get(f"/jobs/{j.id}", headers=html).text
        assert MARKER in page and "key <span class=\"mono\">ka</span>" in page
    monkeypatch.delenv(KEYS_VARIABLE)
    with TestClient(create_app(config, broker=another(broker))) as client:
        api = client.get(f"/api/jobs/{j.id}").json()
        assert (api["args"], api["error"]["message"], api["error"]["type"]) == (
            HIDDEN, HIDDEN, "ValueError")
        page = client.get(f"/jobs/{j.id}", headers=html).text
        assert MARKER not in page and "&lt;encrypted&gt;" in page


def test_keys_never_come_from_the_config_file(tmp_path, monkeypatch):
    path = tmp_path / "config.toml"
    path.write_text('[encryption]\nkeys = "ka:AAAA"\n')
    with pytest.raises(ConfigError, match="keys are not allowed in the config file"):
        load_config(path)
    monkeypatch.setenv("JOBVISOR_CONFIG", str(path))
    with pytest.raises(ConfigurationError, match="set JOBVISOR_ENCRYPTION_KEYS"):
        library_settings()


def test_a_key_file_must_be_private_and_well_formed(tmp_path, monkeypatch):
    monkeypatch.delenv(KEYS_VARIABLE, raising=False)
    path = tmp_path / "keys"
    path.write_text(f"# newest first\n{KEY_B}\n\n{KEY_A}\n")
    path.chmod(0o640)
    settings = EncryptionSettings(key_file=str(path))
    with pytest.raises(ConfigurationError, match=f"mode 640.*chmod 600 {path}"):
        load_keyring(settings)
    path.chmod(0o600)
    assert load_keyring(settings).ids == ["kb", "ka"]
    monkeypatch.setenv(KEYS_VARIABLE, KEY_A)  # the environment wins
    assert load_keyring(settings).ids == ["ka"]
    for text, message in ((f"{KEY_A},{KEY_A}", "'ka' is given twice"),
                          ("ka:c2hvcnQ=", "not the base64 of 32 bytes"),
                          ("k a:" + KEY_A.split(":")[1], "key id 'k a' is not valid")):
        with pytest.raises(ConfigurationError, match=message) as caught:
            parse_keys(text, KEYS_VARIABLE, ",")
        assert KEY_A.split(":")[1] not in str(caught.value)  # never the secret


def test_a_supervisor_refuses_to_start_on_a_bad_key_setup(tmp_path, monkeypatch):
    monkeypatch.delenv(KEYS_VARIABLE, raising=False)
    with pytest.raises(ConfigError, match="encrypt_all is true but no key"):
        check_encryption(Config(encryption=EncryptionSettings(encrypt_all=True)))
    keyfile = tmp_path / "keys"
    keyfile.write_text(KEY_A)
    keyfile.chmod(0o644)
    config = tmp_path / "config.toml"
    config.write_text(f'[supervisor]\ndata_dir = "{tmp_path / "var"}"\n'
                      f'[encryption]\nkey_file = "{keyfile}"\n')
    run = cli(config, "run", keys=None)
    assert run.returncode == ExitCode.CONFIG_ERROR
    assert "may be read or changed by other users (mode 644)" in run.stderr


def test_without_the_cryptography_package_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setenv(KEYS_VARIABLE, KEY_A)
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.ciphers.aead", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'jobvisor\[encryption\]'"):
        Sealer().seal_result("j", b"\x01")
    # A process that encrypts nothing never imports it.
    assert Sealer().open_result("j", b"\x01") == b"\x01"


def test_jobvisor_functions_shows_which_functions_encrypt(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(f'[worker]\nmodules = {MODULES}\n')
    out = cli(config, "functions", "--json", keys=None)
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["tests.cryptfuncs:greet"]["encrypt"] is True
    assert rows["tests.jobfuncs:add"]["encrypt"] is False


def test_a_reload_reads_the_key_file_again_and_refuses_a_bad_one(sup, tmp_path, monkeypatch):
    monkeypatch.delenv(KEYS_VARIABLE, raising=False)
    keyfile = tmp_path / "keys"
    keyfile.write_text(f"{KEY_A}\n")
    keyfile.chmod(0o600)
    r = start_and_wait(sup, workers=1, modules=MODULES,
                       tail=f'[encryption]\nkey_file = "{keyfile}"\n')
    producer = another(r.broker, key_file=str(keyfile))
    assert Queue("default", producer).enqueue(cryptfuncs.greet, "a").result(timeout=20) == \
        "hello, a"
    old = {p.pid for p in r.workers()}
    keyfile.write_text(f"{KEY_B}\n{KEY_A}\n")  # a new active key
    r.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "encryption keys kb, ka from" in r.logs(), timeout=10)
    wait_until(lambda: (w := {p.pid for p in r.workers()}) and not w & old, timeout=20,
               what="new workers")
    monkeypatch.setenv(KEYS_VARIABLE, KEY_B)  # a producer with only the new key
    newer = Queue("default", another(r.broker)).enqueue(cryptfuncs.greet, "b")
    assert newer.result(timeout=20) == "hello, b"
    keyfile.chmod(0o644)
    r.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload refused" in r.logs(), timeout=10)
    assert "may be read or changed by other users (mode 644)" in r.logs()
    assert Queue("default", another(r.broker)).enqueue(cryptfuncs.greet, "c").result(
        timeout=20) == "hello, c"
