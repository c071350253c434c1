"""Payload encryption at rest: what Redis holds, what workers and readers get back, key
rotation, and jobs whose payload cannot be decrypted (real server, in-process workers)."""

from __future__ import annotations

import base64
import hashlib

import msgspec
import pytest

from jobs import (
    Broker,
    ErrorKind,
    Job,
    JobDefaults,
    JobFailed,
    JobState,
    Queue,
    RedisSettings,
    Worker,
    chain,
)
from jobs.encryption.envelope import key_id_of
from jobs.encryption.keyring import KEYS_VARIABLE
from jobs.encryption.rotation import rotate
from jobs.encryption.sealer import HIDDEN, key_of
from jobs.errors import DecryptionError
from jobs.options import unique_digest
from jobs.query import job_view
from jobs.records import decode_errors, spec_decoder
from jobs.settings import EncryptionSettings
from jobs.store.layouts import RESEAL
from tests import cryptfuncs, jobfuncs  # noqa: F401  (registers tests.jobfuncs:add)
from tests.cryptfuncs import MARKER

KEY_A = "ka:" + base64.b64encode(bytes(range(32))).decode()
KEY_B = "kb:" + base64.b64encode(bytes(range(100, 132))).decode()
KEY_A_IMPOSTOR = "ka:" + base64.b64encode(bytes(32)).decode()  # same id, other secret


@pytest.fixture
def keys(monkeypatch):
    """Set this process's keys (newest first); key A to start with."""
    def use(*entries: str) -> None:
        monkeypatch.setenv(KEYS_VARIABLE, ",".join(entries))

    use(KEY_A)
    return use


def another(broker: Broker, **encryption: object) -> Broker:
    """A second process's view of the namespace: its own keys, read now from the
    environment as it is (another host, or the same one after a key change)."""
    b = Broker(broker.url, redis_settings=RedisSettings(namespace=broker.keys.ns),
               defaults=JobDefaults(),
               encryption=EncryptionSettings(**encryption))  # type: ignore[arg-type]
    b.sealer.keyring  # noqa: B018
    return b


def stored(broker: Broker) -> bytes:
    """Every key and value of the namespace, as Redis holds them."""
    c = broker.client
    out: list[bytes] = []
    for key in c.scan_iter(match=f"{broker.keys.ns}:*", count=1000):
        out.append(key)
        kind = c.type(key).decode()
        if kind == "hash":
            out += [k + b"=" + v for k, v in c.hgetall(key).items()]
        elif kind == "string":
            out.append(c.get(key))
        elif kind == "list":
            out += c.lrange(key, 0, -1)
        elif kind == "set":
            out += list(c.smembers(key))
        elif kind == "zset":
            out += c.zrange(key, 0, -1)
        elif kind == "stream":
            out += [k + b"=" + v for _, fields in c.xrange(key) for k, v in fields.items()]
    return b"\n".join(out)


def test_an_encrypted_job_runs_and_redis_never_holds_its_arguments_or_result(broker, keys):
    j = cryptfuncs.greet.enqueue(MARKER, greeting=f"hi-{MARKER}")
    raw = broker.client.hgetall(broker.keys.job(j.id))
    spec = spec_decoder.decode(raw[b"spec"])
    assert (spec.function, spec.args, spec.kwargs) == ("tests.cryptfuncs:greet", [], {})
    assert key_of(spec.sealed) == "ka"
    assert Worker(broker=broker).run_until_empty() == {"completed": 1}
    assert j.result(timeout=5) == f"hi-{MARKER}, {MARKER}"
    everything = stored(broker)
    assert MARKER.encode() not in everything
    # What stays readable for operations: the function, queue and state.
    assert b"tests.cryptfuncs:greet" in everything and b"completed" in everything
    assert key_of(broker.client.hget(broker.keys.job(j.id), "res")) == "ka"


def test_an_encrypted_error_keeps_its_type_and_hides_its_message(broker, keys):
    j = cryptfuncs.refuse.enqueue(MARKER)
    assert Worker(broker=broker).run_until_empty() == {"dead": 1}
    assert MARKER.encode() not in stored(broker)
    (kept,) = decode_errors(broker.client.hget(broker.keys.job(j.id), "errs"))
    assert (kept.type, kept.kind, kept.message, kept.traceback) == (
        "ValueError", ErrorKind.EXCEPTION, HIDDEN, "")
    # With the key, the library and every view show the real message and traceback.
    assert j.refresh().error.message == f"cannot handle {MARKER}"
    assert "raise ValueError" in j.error.traceback
    with pytest.raises(JobFailed, match=f"ValueError: cannot handle {MARKER}"):
        j.result(timeout=1)
    view = job_view(j.record, broker)
    assert view["error"]["message"] == f"cannot handle {MARKER}"


def test_clear_errors_stores_error_messages_readable(broker, keys):
    readable = another(broker, clear_errors=True)
    j = cryptfuncs.refuse.enqueue(MARKER)
    assert Worker(broker=readable).run_until_empty() == {"dead": 1}
    raw = broker.client.hgetall(broker.keys.job(j.id))
    (kept,) = decode_errors(raw[b"errs"])
    assert (kept.message, kept.sealed) == (f"cannot handle {MARKER}", b"")
    assert MARKER.encode() not in raw[b"spec"]  # the arguments stay encrypted


def test_encrypt_all_and_per_enqueue_encrypt_cover_functions_not_declared_so(broker, keys):
    everything = another(broker, encrypt_all=True)
    j = Queue("default", everything).enqueue("tests.jobfuncs:add", 2, 40)
    asked = Queue("default", broker).options(encrypt=True).enqueue("tests.jobfuncs:add", 1, 1)
    plain = Queue("default", broker).enqueue("tests.jobfuncs:add", 3, 3)
    for job, sealed in ((j, True), (asked, True), (plain, False)):
        spec = spec_decoder.decode(broker.client.hget(broker.keys.job(job.id), "spec"))
        assert (spec.sealed is not None) is sealed
    assert Worker(broker=broker).run_until_empty() == {"completed": 3}
    assert (j.result(timeout=1), asked.result(timeout=1), plain.result(timeout=1)) == (42, 2, 6)


def test_a_chain_passes_an_encrypted_result_to_the_next_job(broker, keys):
    first, second, third = chain(cryptfuncs.plus_one.call(41), cryptfuncs.plus_one,
                                 Queue("default", broker).call("tests.jobfuncs:add", 100),
                                 pass_results=True).enqueue(broker)
    # The link's record holds the parent's result as stored: encrypted.
    assert Worker(broker=broker).run_until_empty(max_jobs=1) == {"completed": 1}
    assert key_of(broker.client.hget(broker.keys.job(second.id), "pres")) == "ka"
    assert Worker(broker=broker).run_until_empty() == {"completed": 2}
    assert (first.result(timeout=1), second.result(timeout=1), third.result(timeout=1)) == (
        42, 43, 143)
    stored_result = broker.client.hget(broker.keys.job(third.id), "res")
    assert msgspec.msgpack.decode(stored_result) == 143  # an unencrypted job's: not encrypted


def test_unique_jobs_stay_unique_without_a_plain_digest_of_their_arguments(broker, keys):
    first = cryptfuncs.echo.options(unique_for=60).enqueue(MARKER)
    again = cryptfuncs.echo.options(unique_for=60).enqueue(MARKER)
    other = cryptfuncs.echo.options(unique_for=60).enqueue("something else")
    assert first.id == again.id != other.id
    # The key is a digest keyed with the active key: a guess of the arguments hashed
    # without the key names no key in Redis.
    call = cryptfuncs.echo.call(MARKER)
    assert not broker.client.exists(broker.keys.unique(unique_digest(call, None)))
    keyed = unique_digest(call, None, broker.sealer.unique_key())
    assert broker.client.get(broker.keys.unique(keyed)).decode() == first.id


def test_a_payload_under_an_unknown_key_makes_the_job_dead_at_once(broker, keys):
    j = cryptfuncs.greet.enqueue(MARKER)
    assert spec_decoder.decode(broker.client.hget(broker.keys.job(j.id), "spec")).max_attempts \
        is None  # three attempts by default: none is spent on retrying it
    keys(KEY_B)
    elsewhere = another(broker)
    assert Worker(broker=elsewhere).run_until_empty() == {"dead": 1}
    j = Job(j.id, broker).refresh()
    (error,) = j.errors
    assert (j.state, j.attempts, error.kind, error.type) == (
        JobState.DEAD, 1, ErrorKind.INVALID, "DecryptionError")
    assert "key 'ka', which this process does not have (its keys: kb)" in error.message


def test_a_payload_with_a_wrong_key_of_the_same_id_makes_the_job_dead(broker, keys):
    j = cryptfuncs.greet.enqueue(MARKER)
    keys(KEY_A_IMPOSTOR)
    assert Worker(broker=another(broker)).run_until_empty() == {"dead": 1}
    error = Job(j.id, broker).refresh().errors[-1]
    assert error.type == "DecryptionError" and "with key 'ka'" in error.message
    assert "the stored data was altered" in error.message


def test_tampered_or_swapped_ciphertext_makes_the_job_dead(broker, keys):
    tampered = cryptfuncs.greet.enqueue("a")
    victim = cryptfuncs.greet.enqueue("b")
    key = broker.keys.job(tampered.id)
    spec = bytearray(broker.client.hget(key, "spec"))
    spec[-1] ^= 1  # the last byte of the authentication tag
    broker.client.hset(key, "spec", bytes(spec))
    # The other job's ciphertext is valid, but bound to that job's id.
    other = cryptfuncs.greet.enqueue("c")
    broker.client.hset(broker.keys.job(victim.id), "spec",
                       broker.client.hget(broker.keys.job(other.id), "spec"))
    assert Worker(broker=broker).run_until_empty() == {"dead": 2, "completed": 1}
    for job in (tampered, victim):
        error = job.refresh().errors[-1]
        assert (error.kind, error.type) == (ErrorKind.INVALID, "DecryptionError")
        assert "altered" in error.message
    assert other.result(timeout=1) == "hello, c"


def test_a_reader_without_the_key_sees_encrypted_and_gets_a_clear_error(broker, keys):
    j = cryptfuncs.greet.enqueue(MARKER, greeting="hey")
    Worker(broker=broker).run_until_empty()
    shown = job_view(j.refresh().record, broker)
    assert (shown["args"], shown["kwargs"], shown["result"], shown["encrypted"]) == (
        [MARKER], {"greeting": "hey"}, f"hey, {MARKER}", "ka")
    keys()  # a producer or dashboard with no key at all
    blind = another(broker)
    hidden = job_view(Job.fetch(j.id, blind).record, blind)
    assert (hidden["args"], hidden["kwargs"], hidden["result"], hidden["encrypted"]) == (
        HIDDEN, HIDDEN, HIDDEN, "ka")
    with pytest.raises(DecryptionError, match="key 'ka', which this process does not have"):
        Job(j.id, blind).result(timeout=1)


def test_rotation_moves_every_stored_payload_to_the_active_key(broker, keys):
    done = cryptfuncs.greet.enqueue("done")
    failed = cryptfuncs.refuse.enqueue(MARKER)
    Worker(broker=broker).run_until_empty()
    waiting = cryptfuncs.greet.enqueue("later")
    plain = Queue("default", broker).enqueue("tests.jobfuncs:add", 1, 2)
    keys(KEY_B, KEY_A)
    both = another(broker)
    dry = rotate(both, dry_run=True)
    assert (dry.rewritten, dry.current, dry.payloads_by_key) == (3, 0, {"ka": 5})
    assert key_of(spec_decoder.decode(
        broker.client.hget(broker.keys.job(waiting.id), "spec")).sealed) == "ka"
    report = rotate(both)
    assert (report.scanned, report.rewritten, report.current, report.unreadable) == (4, 3, 0, 0)
    assert report.done
    again = rotate(both)  # idempotent
    assert (again.rewritten, again.current, again.payloads_by_key) == (0, 3, {"kb": 5})
    keys(KEY_B)  # the old key is gone everywhere
    newer = another(broker)
    assert Worker(broker=newer).run_until_empty() == {"completed": 2}
    assert Job(waiting.id, newer).result(timeout=1) == "hello, later"
    assert Job(done.id, newer).result(timeout=1) == "hello, done"
    assert Job(failed.id, newer).error.message == f"cannot handle {MARKER}"
    assert Job(plain.id, newer).result(timeout=1) == 3
    assert MARKER.encode() not in stored(broker)


def test_rotation_reports_what_it_cannot_read_and_leaves_it(broker, keys):
    j = cryptfuncs.greet.enqueue("x")
    keys(KEY_B)
    report = rotate(another(broker))
    assert (report.unreadable, report.rewritten, report.done) == (1, 0, False)
    assert report.problems == [f"{j.id}: cannot decrypt the arguments of job {j.id}: it is "
                               "encrypted with key 'ka', which this process does not have "
                               "(its keys: kb); add that key to JOBVISOR_ENCRYPTION_KEYS or "
                               "[encryption] key_file"]


def test_the_reseal_script_writes_only_what_is_unchanged(broker, keys):
    j = cryptfuncs.greet.enqueue("x")
    key = broker.keys.job(j.id)
    before = broker.client.hget(key, "spec")

    def reseal(digest: str) -> int:
        return int(broker.scripts.reseal(keys=RESEAL.keys(job=key), args=RESEAL.args(
            RESEAL.arg_item(field="spec", digest=digest, value=b"new"))))

    assert reseal("0" * 40) == 0 and broker.client.hget(key, "spec") == before
    assert reseal(hashlib.sha1(before).hexdigest()) == 1
    assert broker.client.hget(key, "spec") == b"new"


def test_envelopes_name_their_key():
    with pytest.raises(DecryptionError, match="malformed"):
        key_id_of(b"\xc1\x09nonsense" + bytes(40))
