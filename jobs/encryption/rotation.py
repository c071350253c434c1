"""Re-encrypting stored jobs under the active key (``jobvisor encryption rotate``).

It walks every state index of every queue a chunk at a time (``jobs.query.cursor``),
reads the chunk's records in one pipeline, and rewrites each job holding a value sealed
with another key in one ``reseal`` script call, the chunk's calls in one pipeline. The
script writes only if the fields are as they were read, so a job that a worker changed
meanwhile is left alone and counted: running the command again picks it up. Running it
twice rewrites nothing the second time. Once it reports no job left under an older key
(and none unreadable), that key can be removed.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence

import msgspec

from jobs.encryption.envelope import associated, is_sealed, key_id_of, seal, unseal
from jobs.encryption.keyring import Keyring
from jobs.errors import DecryptionError
from jobs.query.cursor import walk
from jobs.query.listing import LISTED_STATES
from jobs.records import AttemptError, encode_spec, encoder, errors_decoder, spec_decoder
from jobs.store.broker import Broker
from jobs.store.connection import translated
from jobs.store.layouts import RESEAL

FIELDS = ("spec", "res", "errs", "pres", "pr")  # the sealed ones, and what binds "pres"
MAX_LISTED = 20


class Rotation(msgspec.Struct, kw_only=True):
    """What a rotation found and did; counts are of jobs unless named otherwise."""

    active: str  # the key everything is moved to
    dry_run: bool
    scanned: int = 0
    rewritten: int = 0  # re-encrypted (a dry run: would be)
    current: int = 0  # encrypted, and already all under the active key
    changed: int = 0  # changed between read and write, left as they were: run again
    unreadable: int = 0  # a value under a key this process lacks, or that fails to decrypt
    payloads_by_key: dict[str, int] = {}  # sealed values found, by key id, before rotating
    problems: list[str] = []  # the first unreadable jobs, with the reason

    @property
    def done(self) -> bool:
        """Nothing left under another key: older keys may be removed."""
        return not (self.changed or self.unreadable or (self.dry_run and self.rewritten))


class _Job:
    """One job's stored fields and the new values of those sealed with an older key."""

    def __init__(self, job_id: str, fields: dict[str, bytes | None], keyring: Keyring) -> None:
        self.id = job_id
        self.fields = fields
        self.keyring = keyring
        self.active = keyring.active
        self.changes: dict[str, bytes] = {}
        self.keys: Counter[str] = Counter()

    def _moved(self, blob: bytes, aad: bytes, what: str) -> bytes:
        """``blob`` under the active key (itself when already there)."""
        kid = key_id_of(blob)
        self.keys[kid] += 1
        if kid == self.active.id:
            return blob
        return seal(self.active, unseal(self.keyring, blob, aad, what), aad)

    def reseal(self) -> None:
        self._spec()
        for field, owner in (("res", self.id), ("pres", _text(self.fields["pr"]))):
            stored = self.fields[field]
            if stored is not None and is_sealed(stored):
                moved = self._moved(stored, associated("result", owner or ""),
                                    f"the {field} field of job {self.id}")
                if moved is not stored:
                    self.changes[field] = moved
        self._errors()

    def _spec(self) -> None:
        stored = self.fields["spec"]
        try:
            spec = spec_decoder.decode(stored or b"")
        except (msgspec.DecodeError, msgspec.ValidationError):
            return  # a corrupt record: the worker that claims it marks it dead
        if spec.sealed is None:
            return
        moved = self._moved(spec.sealed, associated("args", self.id, spec.function),
                            f"the arguments of job {self.id}")
        if moved is not spec.sealed:
            self.changes["spec"] = encode_spec(msgspec.structs.replace(spec, sealed=moved))

    def _errors(self) -> None:
        try:
            errors = errors_decoder.decode(self.fields["errs"] or b"\x90")
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        if not any(e.sealed for e in errors):
            return
        moved: list[AttemptError] = []
        for e in errors:
            blob = self._moved(e.sealed, associated("error", self.id),
                               f"an error of job {self.id}") if e.sealed else e.sealed
            moved.append(e if blob is e.sealed else msgspec.structs.replace(e, sealed=blob))
        if any(a is not b for a, b in zip(moved, errors, strict=True)):
            self.changes["errs"] = encoder.encode(moved)


def _text(raw: bytes | None) -> str | None:
    return raw.decode() if raw else None


def rotate(broker: Broker, queues: Sequence[str] | None = None, *, dry_run: bool = False,
           chunk: int = 200) -> Rotation:
    """Move every stored value of ``queues`` (default: all) to the active key."""
    keyring = broker.sealer.keyring
    report = Rotation(active=keyring.active.id, dry_run=dry_run)
    for queue in queues if queues is not None else broker.jobs.known_queues():
        for state in LISTED_STATES:
            index = broker.keys.state_index(queue, state)
            for positions in walk(broker, index, newest_first=False, size=chunk):
                _rotate_chunk(broker, keyring, [p.member for p in positions], report)
    return report


def _rotate_chunk(broker: Broker, keyring: Keyring, ids: list[str], report: Rotation) -> None:
    with translated(broker.url):
        pipe = broker.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(broker.keys.job(job_id), *FIELDS)
        rows = pipe.execute()
    writes: list[_Job] = []
    for job_id, row in zip(ids, rows, strict=True):
        if row[0] is None:
            continue  # gone since the index was read
        report.scanned += 1
        job = _Job(job_id, dict(zip(FIELDS, row, strict=True)), keyring)
        try:
            job.reseal()
        except (DecryptionError, ValueError) as exc:
            report.unreadable += 1
            if len(report.problems) < MAX_LISTED:
                report.problems.append(f"{job_id}: {exc}")
            continue
        for kid, n in job.keys.items():
            report.payloads_by_key[kid] = report.payloads_by_key.get(kid, 0) + n
        if not job.keys:
            continue  # not encrypted
        if not job.changes:
            report.current += 1
        elif report.dry_run:
            report.rewritten += 1  # would be
        else:
            writes.append(job)
    if writes:
        _write(broker, writes, report)


def _write(broker: Broker, writes: list[_Job], report: Rotation) -> None:
    with translated(broker.url):
        pipe = broker.client.pipeline(transaction=False)
        for job in writes:
            each: list[bytes | str] = []
            for field, value in job.changes.items():
                old = job.fields[field] or b""
                each += RESEAL.arg_item(field=field, digest=hashlib.sha1(old).hexdigest(),
                                        value=value)
            broker.scripts.reseal(keys=RESEAL.keys(job=broker.keys.job(job.id)),
                                  args=RESEAL.args(each), client=pipe)
        replies = pipe.execute()
    for reply in replies:
        if int(reply) == 1:
            report.rewritten += 1
        else:
            report.changed += 1

