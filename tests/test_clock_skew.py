"""Hosts with skewed clocks neither steal nor strand jobs: leases and due times come
from the Redis server's clock (TIME inside the scripts), never from a host's."""

from __future__ import annotations

import os
import time

from jobs import JobState, Queue
from tests.helpers import wait_until

SKEW = """\
import time

_real_time, _real_time_ns = time.time, time.time_ns
time.time = lambda: _real_time() + {offset}
time.time_ns = lambda: _real_time_ns() + {offset} * 1_000_000_000
"""


def _skewed(tmp_path, name: str, offset: int) -> dict[str, str]:
    """Environment for a process whose wall clock is ``offset`` seconds off."""
    site = tmp_path / name
    site.mkdir()
    (site / "sitecustomize.py").write_text(SKEW.format(offset=offset))
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def test_skewed_hosts_share_work_without_stealing(sup, tmp_path):
    ahead = sup(workers=2, env=_skewed(tmp_path, "ahead", 3600))
    behind = sup(workers=2, env=_skewed(tmp_path, "behind", -3600))
    ahead.wait_workers(2), behind.wait_workers(2)
    # The skew is real: each supervisor publishes its start time from its own clock.
    from jobs.cluster import supervisors

    started = wait_until(lambda: len(e := supervisors(ahead.broker)) == 2 and e, timeout=10)
    offsets = sorted(round((e["started"] - time.time()) / 3600) for e in started)
    assert offsets == [-1, 1]
    q = Queue("default", ahead.broker)
    busy = [q.enqueue("examples.cpu:spin", 0.3) for _ in range(16)]
    delayed = [q.options(delay=1.5).enqueue("tests.jobfuncs:add", i, i) for i in range(4)]
    for j in busy + delayed:
        wait_until(lambda j=j: j.refresh().state is JobState.COMPLETED, timeout=30,
                   what=f"job {j.id} to complete")
    # No job was taken from a live worker (lease judged by a host's clock), none retried.
    assert all(j.attempts == 1 and not j.errors for j in busy + delayed)
    for j in delayed:
        r = j.record
        due = r.due_at or (r.enqueued_at + 1.5)
        assert r.started_at >= r.enqueued_at + 1.5 - 0.01  # never early
        assert r.started_at - due < 3.0  # and not an hour late
    # Both hosts ran jobs: the skew did not lock either out (a claim token names its
    # worker as host:pid:nonce).
    ran_on = {int(j.record.token.split(":")[1].split("#")[0]) for j in busy}
    assert ran_on & {p.pid for p in ahead.children()}
    assert ran_on & {p.pid for p in behind.children()}
    assert "reclaimed" not in ahead.logs() + behind.logs()
