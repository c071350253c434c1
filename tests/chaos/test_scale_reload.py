"""Chaos 6: load while the pool is scaled up and down and reloaded, again and again.

A producer enqueues continuously while the test sends the supervisor SIGTTIN and
SIGTTOU (one worker more / fewer, kept between 1 and 4) every 0.2-0.6 s and SIGHUP
(re-read the config, rolling restart of every worker) about every 1.5 s. Retired
workers finish the job in hand; a job claimed together with the last outcome of a
retiring worker is released without spending an attempt. A reload sizes the pool
from the config file again, dropping earlier SIGTTIN/SIGTTOU changes (gunicorn does
the same). Nothing is killed, so no
job may run twice and none may be lost.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter

from jobs.events import recent_events
from tests.chaos.rig import Supervisor
from tests.chaos.workload import Producer, conclude

MIN, MAX = 1, 4
WORKERS = 2
HUP_EVERY = 1.5


def shake(sup: Supervisor, seconds: float, rng: random.Random) -> tuple[Counter[str], int]:
    """Send scaling and reload signals for ``seconds``; returns them and the final size."""
    sent: Counter[str] = Counter()
    size = WORKERS
    pause = threading.Event()
    end = time.monotonic() + seconds
    next_hup = time.monotonic() + HUP_EVERY
    while time.monotonic() < end:
        assert sup.alive(), sup.logs()[-2000:]
        if time.monotonic() >= next_hup:
            sup.signal(signal.SIGHUP)
            sent["SIGHUP"] += 1
            size = WORKERS  # a reload sizes the pool from the config again (as gunicorn)
            next_hup += HUP_EVERY * rng.uniform(0.7, 1.3)
        elif size < MAX and (size == MIN or rng.random() < 0.5):
            sup.signal(signal.SIGTTIN)
            sent["SIGTTIN"] += 1
            size += 1
        else:
            sup.signal(signal.SIGTTOU)
            sent["SIGTTOU"] += 1
            size -= 1
        pause.wait(rng.uniform(0.2, 0.6))  # the signal cadence of the scenario
    return sent, size


def test_scale_and_reload_under_load(server, namespace, job_broker, ledger, cluster, duration):
    began = time.monotonic()
    sup = cluster(server.url, workers=WORKERS, lease=3.0)
    producer = Producer(server.url, namespace, ledger.url, ledger.key, tag="scale",
                        rate=300, work_ms=4.0).start()
    producer.wait_for(40)
    sent, size = shake(sup, max(duration, 2 * HUP_EVERY), random.Random())
    sup.wait_ready(size, timeout=30)  # the pool ends at the size asked for
    logs = sup.logs()
    f = conclude("scale-reload", "SIGTTIN/SIGTTOU every 0.2-0.6 s, SIGHUP every ~1.5 s",
                 producer, ledger, began, broker=job_broker, faults=sum(sent.values()),
                 signals=dict(sent), final_workers=size,
                 workers_started=logs.count("started (slot"),
                 released=sum(e["e"] == "released"
                              for e in recent_events(job_broker, count=10**6)),
                 recovery_s=None, duration_s=duration)
    assert f.duplicates == 0 and not f.attempts_spent, (f.causes, f.attempts_spent)
    assert sent["SIGHUP"] >= 1 and sent["SIGTTIN"] >= 1 and sent["SIGTTOU"] >= 1
    assert logs.count("reloaded configuration") == sent["SIGHUP"]
    assert "Traceback" not in logs
    assert sup.alive()
