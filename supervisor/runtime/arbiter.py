"""The supervisor loop: wait, dispatch signals, reap, murder, manage (gunicorn's verbs).

Signal handlers only enqueue; the loop sleeps until a signal, a child's exit or the
nearest deadline, and never talks to Redis itself (``Duties`` threads do).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

import msgspec

from jobs import Broker
from jobs.cluster import Control
from jobs.limits import registered_limits
from jobs.records import AttemptError
from supervisor.config import Config
from supervisor.errors import ExitCode, HaltServer
from supervisor.integrations.metrics import LocalFigures, serve
from supervisor.integrations.systemd import Notifier, unset_environment
from supervisor.runtime.child import Child, child_main
from supervisor.runtime.commands import Commands
from supervisor.runtime.cron import CronThread
from supervisor.runtime.duties import Duties, Event, Held, InFlight, Settlement, Uncounted
from supervisor.runtime.pool_report import held, status_line, worker_states, worker_views
from supervisor.runtime.preload import loaded_functions, preload
from supervisor.runtime.proctitle import set_title
from supervisor.runtime.reasons import (
    KILL_METRIC,
    canceled,
    crashed,
    describe_exit,
    hard_timeout,
    heartbeat_lost,
    oom_kills,
)
from supervisor.runtime.scaling import POOL_MAX, autoscale_step, pool_limit
from supervisor.runtime.slots import ChildState, Slots
from supervisor.runtime.wakeup import Wakeup

log = logging.getLogger(__name__)

HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTTIN,
           signal.SIGTTOU, signal.SIGUSR1, signal.SIGCHLD)
MAX_SLOTS = 2 * POOL_MAX  # a rolling restart runs two generations side by side
SLOT_POLL = 0.2  # how often busy slots are read for new deadlines
# Forks per loop turn: between turns signals and control messages are read, so a newer
# target (a `scale` or SIGTTOU after a large `scale`) stops a scale-up at once.
SPAWN_BATCH = 4


class ChildInfo(msgspec.Struct, kw_only=True):
    pid: int
    slot: int
    age: int
    generation: int
    spawned: float
    retiring: bool = False
    kill_reason: AttemptError | None = None
    release_on_kill: bool = False
    kill_at: float = 0.0  # SIGKILL due at this time after a SIGTERM grace (0: none pending)


class Arbiter(Commands):
    def __init__(self, config: Config, config_path: str | None, url: str,
                 embedded: Any = None, reopen_logs: Any = None) -> None:
        self.config = config
        self.config_path = config_path
        self.url = url
        self.embedded = embedded
        self.reopen_logs = reopen_logs
        self.limit = pool_limit(config.supervisor)  # a ConfigError before anything starts
        self.target = config.pool_size(self.limit.workers)
        self.children: dict[int, ChildInfo] = {}
        self.slots = Slots(MAX_SLOTS)
        self.wakeup = Wakeup()
        self.signals = self.wakeup.signals
        self.age = 0
        self.generation = 0
        self.boot_failures = 0
        self.spawn_not_before = 0.0
        self.stopping = False
        self.stop_deadline = 0.0
        self.started = time.time()
        self.host = socket.gethostname()
        self.oom_baseline = oom_kills()
        self.notifier = Notifier()
        self.ready = False
        self.config_version = 1
        self.last_watchdog = 0.0
        self.last_title = 0.0
        broker = Broker(url, redis_settings=config.redis, defaults=config.defaults)
        self.figures = LocalFigures(self._worker_states, lambda: self.duties.reclaims)
        self.controls: deque[Control] = deque()
        self.cancels: deque[tuple[str, str]] = deque()
        self.duties = Duties(broker, config.supervisor.lease_timeout, list(config.worker.queues),
                             self._held, self._state, self._control_arrived,
                             self._cancel_arrived)
        self.duties.aging = (config.supervisor.aging_after, config.supervisor.aging_step)
        self.cron = CronThread(broker, config.schedules)

    # -- setup ------------------------------------------------------------------------------

    def _control_arrived(self, message: Control) -> None:
        """Called on the duties thread: hand the message to the loop and wake it."""
        self.controls.append(message)
        self.wakeup.poke()

    def _cancel_arrived(self, job_id: str, reason: str) -> None:
        """Called on the duties thread: a running job of ours is to be canceled."""
        self.cancels.append((job_id, reason))
        self.wakeup.poke()

    def cancel_running(self) -> None:
        """Kill the children running jobs someone canceled; the job then ends canceled."""
        while self.cancels:
            job_id, reason = self.cancels.popleft()
            for info in list(self.children.values()):
                view = self.slots.read(info.slot)
                if view.state is ChildState.BUSY and view.job_id == job_id:
                    log.info("job %s canceled while running (%s): killing worker %d",
                             job_id, reason, info.pid)
                    self.kill(info, canceled(view, reason, f"{self.host}:{info.pid}"),
                              grace=self.config.supervisor.kill_grace)

    def run(self) -> int:
        unset_environment()
        try:
            preload(self.config.worker.modules, self.config.worker.path)
            self.duties.set_limits({**registered_limits(), **self.config.limit_definitions()})
            self.duties.set_functions(loaded_functions(self.config.defaults))
            self.wakeup.install(HANDLED)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)  # any sent while booting: now
            Path(self.config.supervisor.data_dir).mkdir(parents=True, exist_ok=True)
            self.duties.start()
            self.cron.start()
            if self.config.metrics.address:
                try:
                    serve(self.config.metrics.address, self.duties.broker, self.figures)
                except OSError as exc:
                    log.error("metrics endpoint %s not served: %s", self.config.metrics.address,
                              exc)
            log.info("supervisor %d starting %d workers on %s; %s", os.getpid(), self.target,
                     ",".join(self.config.worker.queues), self.limit.describe())
            while True:
                self._wait()
                self._dispatch()
                self.cancel_running()
                self.reap()
                if self.stopping and not self.children:
                    break
                self.murder()
                self.manage()
                self._report()
        except Exception as exc:  # a bug or an OS refusal: stop cleanly, never half-way
            log.exception("supervisor failed: %s", exc)
            return self._halt(HaltServer(f"internal error: {exc}", ExitCode.ERROR))
        except HaltServer as halt:
            return self._halt(halt)
        self._shutdown()
        log.info("supervisor %d stopped", os.getpid())
        return int(ExitCode.OK)

    def _halt(self, halt: HaltServer) -> int:
        """Kill the children, account their jobs, flush what Redis still needs to hear."""
        log.error("halting: %s", halt.reason)
        try:
            self.stopping = True
            self._kill_all(release=True)
            self._reap_all(timeout=5.0)
        finally:
            self._shutdown()
        return int(halt.code)

    def _reap_all(self, timeout: float) -> None:
        """Reap (and so account) every child before leaving; bounded by ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.children and time.monotonic() < deadline:
            self.reap()
            self.wakeup.wait(0.05)

    def _shutdown(self) -> None:
        if not self.stopping:
            self.notifier.stopping()
        self.cron.shutdown()
        self.duties.shutdown()

    # -- waiting ----------------------------------------------------------------------------

    def _next_timeout(self) -> float:
        now = time.monotonic()
        soonest = now + SLOT_POLL
        for info in self.children.values():
            if info.kill_at:
                soonest = min(soonest, info.kill_at)
            if info.kill_reason is not None or info.release_on_kill:
                continue  # already being killed: its deadline is history
            view = self.slots.read(info.slot)
            if view.state is ChildState.BUSY and view.deadline:
                soonest = min(soonest, view.deadline)
        if self.stopping and self.stop_deadline > now:
            soonest = min(soonest, self.stop_deadline)
        if self.spawn_not_before > now:
            soonest = min(soonest, self.spawn_not_before)
        elif self._spawns_due():
            return 0.0  # the next batch of a scale-up: no waiting between batches
        return max(0.0, soonest - now)

    def _spawns_due(self) -> bool:
        if self.stopping:
            return False
        current = sum(1 for c in self.children.values()
                      if not c.retiring and c.generation == self.generation)
        return current < self.target

    def _wait(self) -> None:
        if not (self.signals or self.controls):
            self.wakeup.wait(self._next_timeout())

    # -- children ------------------------------------------------------------------------

    def _free_slot(self) -> int:
        used = {c.slot for c in self.children.values()}
        return next(i for i in range(MAX_SLOTS) if i not in used)

    def spawn(self) -> None:
        slot = self._free_slot()
        self.slots.clear(slot)
        self.age += 1
        child = Child(self.config, self.slots, slot, self.url)
        parent = os.getpid()
        old = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
        # Hold every log handler's lock across fork(): no other thread can be half-way
        # through a write whose stream lock the child would inherit locked.
        handlers = list(logging.getLogger().handlers)
        for h in handlers:
            h.acquire()
        pid = -1
        try:
            pid = os.fork()
            if pid == 0:
                # The child's handler locks were re-created by logging's own fork hook.
                self.wakeup.close_in_child()
                child_main(child, parent)
        finally:
            if pid != 0:
                for h in handlers:
                    h.release()
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)  # also done by the child: whichever runs first wins
        self.children[pid] = ChildInfo(pid=pid, slot=slot, age=self.age,
                                       generation=self.generation, spawned=time.monotonic())
        log.info("worker %d started (slot %d)", pid, slot)
        self.duties.settle(Event({"e": "worker_started", "pid": pid, "host": self.host}))

    def _signal(self, pid: int, sig: int) -> None:
        """Signal the child's process group (its subprocesses too), else the child itself."""
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def kill(self, info: ChildInfo, error: AttemptError | None, release: bool = False,
             grace: float = 0.0) -> None:
        """SIGKILL the child's process group, after a SIGTERM and ``grace`` seconds if given."""
        if info.kill_reason is None and not info.release_on_kill:
            info.kill_reason = error
            info.release_on_kill = release
        if grace > 0 and not info.kill_at:
            info.kill_at = time.monotonic() + grace
            self._signal(info.pid, signal.SIGTERM)
            return
        self._signal(info.pid, signal.SIGKILL)

    def _kill_all(self, release: bool) -> None:
        for info in list(self.children.values()):
            self.kill(info, None, release=release)

    def reap(self) -> None:
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.embedded is not None and pid == self.embedded.pid:
                self.embedded.exited(status)
                log.error("embedded server exited (%s)", describe_exit(status, by_us=False))
                self.embedded.relaunch()
                continue
            info = self.children.pop(pid, None)
            if info is not None:
                self._account_exit(info, status, usage.ru_maxrss)

    def _account_exit(self, info: ChildInfo, status: int, maxrss_kib: int) -> None:
        view = self.slots.read(info.slot)
        how = describe_exit(status, info.kill_reason is not None or info.release_on_kill,
                            self.oom_baseline)
        if "OOM-killed (cgroup" in how:
            self.oom_baseline = oom_kills()
        booted = view.state in (ChildState.IDLE, ChildState.BUSY)
        code = os.waitstatus_to_exitcode(status)
        if not booted and not self.stopping and not info.retiring:
            self._boot_failed(info, how)
        elif booted:
            self.boot_failures = 0
        log.log(logging.INFO if code in (0, ExitCode.RECYCLE) else logging.WARNING,
                "worker %d %s (peak RSS %d MiB)", info.pid, how, maxrss_kib // 1024)
        killed = info.kill_reason.message if info.kill_reason else ""
        if info.kill_reason:
            self.figures.kills[KILL_METRIC.get(info.kill_reason.type, "crash")] += 1
        elif view.state is ChildState.BUSY and not info.release_on_kill:
            self.figures.kills["crash"] += 1
        if view.state is ChildState.BUSY and view.job_id:
            held = Held(view.job_id, view.queue, view.token)
            if info.release_on_kill:
                self.duties.settle(Settlement(held, None))
            else:
                error = info.kill_reason or crashed(view, how, maxrss_kib,
                                                    f"{self.host}:{info.pid}")
                self.duties.settle(Settlement(held, error))
        if view.next_token:
            # Killed with a claim in flight: a job it took but never showed goes back.
            self.duties.settle(InFlight(view.next_token))
        if view.uncounted:  # counted completions it could not write before it died
            self.duties.settle(Uncounted(view.uncounted))
        self.duties.settle(Event({
            "e": "worker_killed" if killed else "worker_stopped", "pid": info.pid,
            "host": self.host, "reason": killed or how}))
        self.slots.clear(info.slot)

    def _boot_failed(self, info: ChildInfo, how: str) -> None:
        """A worker that ended before it was ready, whatever the cause (an import error,
        a signal, a crash), is one boot failure: each is logged as an error, and
        ``max_boot_failures`` in a row stop the supervisor instead of a respawn loop."""
        self.boot_failures += 1
        limit = self.config.supervisor.max_boot_failures
        log.error("worker %d failed to boot (%s): failure %d of %d", info.pid, how,
                  self.boot_failures, limit)
        if self.boot_failures >= limit:
            raise HaltServer(f"{self.boot_failures} consecutive worker boot failures "
                             f"(the last {how})", ExitCode.BOOT_ERROR)
        self.spawn_not_before = time.monotonic() + min(0.1 * 2 ** self.boot_failures, 10.0)

    def murder(self) -> None:
        """Kill children past their hard deadline or silent past the heartbeat timeout."""
        now = time.monotonic()
        s = self.config.supervisor
        for info in list(self.children.values()):
            view = self.slots.read(info.slot)
            if info.kill_at and now >= info.kill_at:
                self._signal(info.pid, signal.SIGKILL)
                info.kill_at = 0.0
            if info.kill_reason is not None or info.release_on_kill:
                continue
            worker = f"{self.host}:{info.pid}"
            overdue = view.deadline and now >= view.deadline
            if view.state is ChildState.BUSY and overdue:
                self.kill(info, hard_timeout(view, now, worker), grace=s.kill_grace)
            elif view.heartbeat and now - view.heartbeat > s.heartbeat_timeout:
                self.kill(info, heartbeat_lost(view, now, worker))
        if self.stopping and now >= self.stop_deadline:
            self._kill_all(release=True)

    def manage(self) -> None:
        """Spawn or retire children toward the target count; roll generations on reload."""
        if self.stopping:
            return
        now = time.monotonic()
        live = [c for c in self.children.values() if not c.retiring]
        current = [c for c in live if c.generation == self.generation]
        old = sorted((c for c in live if c.generation != self.generation), key=lambda c: c.age)
        booted_new = [c for c in current if self._booted(c)]
        # Rolling restart: retire one old child for each new child that is up.
        for c in old[: max(0, len(booted_new) + len(old) - self.target)]:
            self._retire(c, "replaced after reload")
        if len(current) < self.target and now >= self.spawn_not_before:
            for _ in range(min(SPAWN_BATCH, self.target - len(current))):
                self.spawn()
        elif len(current) > self.target:
            # Idle workers go first, oldest first among them.
            order = sorted(current, key=lambda c: (self._busy(c), c.age))
            for c in order[: len(current) - self.target]:
                self._retire(c, "pool shrinks")
        if not self.ready and len(booted_new) >= min(self.target, 1):
            self.ready = True
            self.notifier.ready(self._status())
            if self.config_version == 1:
                log.info("supervisor ready: %d workers", len(booted_new))

    def _busy(self, c: ChildInfo) -> bool:
        return self.slots.read(c.slot).state is ChildState.BUSY

    def _booted(self, c: ChildInfo) -> bool:
        return self.slots.read(c.slot).state in (ChildState.IDLE, ChildState.BUSY)

    def _retire(self, c: ChildInfo, why: str) -> None:
        c.retiring = True
        log.info("worker %d retiring: %s", c.pid, why)
        self._signal(c.pid, signal.SIGTERM)

    # -- reporting -------------------------------------------------------------------------

    def _worker_states(self) -> Counter[str]:
        return worker_states(self.children.values(), self.slots)

    def _held(self) -> list[Held]:
        return held(self.children.values(), self.slots)

    def _state(self) -> dict[str, Any]:
        return {"host": self.host, "pid": os.getpid(), "started": self.started,
                "config_version": self.config_version, "queues": self.config.worker.queues,
                "target": self.target, "max_workers": self.limit.workers,
                "max_workers_from": self.limit.origin,
                "max_workers_configured": self.limit.configured,
                "workers": worker_views(self.children.values(), self.slots)}

    def _status(self) -> str:
        return status_line(self.children.values(), self.slots, self.config.worker.queues)

    def _report(self) -> None:
        now = time.monotonic()
        if now - self.last_title >= 1.0:
            self.last_title = now
            status = self._status()
            set_title(f"supervisor {status}")
            self.notifier.status(status)
        interval = self.notifier.watchdog_interval
        if interval and now - self.last_watchdog >= interval:
            self.last_watchdog = now
            self.notifier.watchdog()
        if self.config.autoscale:
            self._autoscale(now)

    def _autoscale(self, now: float) -> None:
        s = self.config.supervisor
        views = [self.slots.read(c.slot) for c in self.children.values() if not c.retiring]
        idle_for = [now - v.idle_since for v in views
                    if v.state is ChildState.IDLE and v.idle_since]
        self.target, why = autoscale_step(self.target, s.min_workers, s.max_workers,
                                          self.duties.backlog, idle_for, s.idle_timeout)
        if why:
            log.info("autoscale: %s", why)
