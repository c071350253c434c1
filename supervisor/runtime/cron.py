"""The supervisor's cron thread: fires config and API schedules (``jobs.firing``).

A thread of its own, like the Redis duties, so a slow or absent Redis never delays the
main loop. It sleeps until the next tick of any schedule, at most ``REFRESH`` seconds
so schedules added through the API are picked up, and wakes at once on reload or stop.
Every supervisor runs one; the claim script makes each tick fire once in total. It also
publishes the config schedules it fires, so every process of the namespace lists them.
With ``[scheduler] enabled = false`` it fires nothing until a reload turns it on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import datetime

from jobs import Broker
from jobs.firing import Clock, Firer, Pass
from jobs.registry import registered
from jobs.schedule_control import PUBLISH_EVERY, publish_config
from jobs.schedules import Schedule

log = logging.getLogger(__name__)

REFRESH = 1.0  # longest sleep: API schedule changes and clock corrections apply this fast
# With no schedule at all, look for API additions less often: an idle cluster's cost.
REFRESH_NONE = 3.0
RETRY = 1.0  # pause after a failed pass (Redis down): its ticks follow the misfire policy


class CronThread:
    def __init__(self, broker: Broker, schedules: Sequence[Schedule],
                 clock: Clock | None = None, enabled: bool = True) -> None:
        self.firer = Firer(broker, clock)
        self.schedules = list(schedules)
        self.enabled = enabled
        self.stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        self._published: tuple[list[Schedule], float] | None = None  # what, and when
        self._publish_failing = False

    def start(self) -> None:
        _warn_unregistered(self.schedules)
        if not self.enabled:
            log.info("cron: off ([scheduler] enabled = false): this supervisor fires no "
                     "schedules")
        self._thread = threading.Thread(target=self._loop, name="cron", daemon=True)
        self._thread.start()

    def update(self, schedules: Sequence[Schedule], enabled: bool = True) -> None:
        """Fire these config schedules from now on (reload); API ones are re-read anyway."""
        self.schedules = list(schedules)
        _warn_unregistered(self.schedules)
        if enabled != self.enabled:
            log.info("cron: %s ([scheduler] enabled = %s)", "on" if enabled else "off",
                     "true" if enabled else "false")
        self.enabled = enabled
        log.info("cron: %d schedule(s) in the configuration", len(self.schedules))
        self._wake.set()

    def shutdown(self, timeout: float = 5.0) -> None:
        self.stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self.stop.is_set():
            if not self.enabled:  # off: sleep until a reload or the stop
                self._wake.wait()
                self._wake.clear()
                continue
            wait = REFRESH
            try:
                done = self.firer.run(self.schedules)
                self._report(done)
                wait = min(wait, done.wait) if done.wait is not None else REFRESH_NONE
                if self._failing:
                    log.info("cron: firing again")
                self._failing = False
            except Exception as exc:  # keep firing through any Redis trouble
                if not self._failing:
                    log.warning("cron: cannot fire schedules: %s (retrying every %.0f s)",
                                exc, RETRY)
                self._failing = True
                wait = RETRY
            self._publish()
            self._wake.wait(wait)
            self._wake.clear()

    def _publish(self) -> None:
        """Publish the config schedules at start, after a reload and every PUBLISH_EVERY
        (after firing: a tick never waits for it, and its failure never stops firing)."""
        schedules, now = self.schedules, time.monotonic()
        last = self._published
        if last is not None and last[0] is schedules and now - last[1] < PUBLISH_EVERY:
            return
        try:
            publish_config(schedules, self.firer.broker)
        except Exception as exc:  # tried again on the next pass
            if not self._publish_failing:
                log.warning("cron: cannot publish the config schedules for listing: %s", exc)
            self._publish_failing = True
            return
        self._publish_failing = False
        self._published = (schedules, now)

    def _report(self, done: Pass) -> None:
        for f in done.fired:
            log.info("schedule %s fired for %s: job %s%s", f.schedule, _when(f.tick),
                     f.job_id, f" ({f.late:.1f} s late)" if f.late > 1 else "")
        for s in done.skipped:
            log.warning("schedule %s missed %s by %.0f s: skipped (misfire policy)",
                        s.schedule, _when(s.tick), s.late)
        for e in done.failed:
            log.error("schedule %s could not enqueue the job for %s: %s", e.schedule,
                      _when(e.tick), e.error)


def _when(tick: int) -> str:
    return datetime.fromtimestamp(tick).astimezone().isoformat(timespec="seconds")


def _warn_unregistered(schedules: Sequence[Schedule]) -> None:
    """A schedule naming a function no loaded module registers would only make dead jobs."""
    known = registered()
    for s in schedules:
        if s.job not in known:
            log.warning("schedule %s names %s, which no module in [worker].modules "
                        "registers: its jobs will fail", s.name, s.job)
