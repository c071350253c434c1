"""The supervisor loop: wait, dispatch signals, reap, murder, manage (gunicorn's verbs).

Signal handlers only enqueue; the loop sleeps until a signal, a child's exit or the
nearest deadline, and never talks to Redis itself (``Duties`` threads do). Each turn it
moves the children (``Pool``) toward what they are to be (``Plan``), which ``Commands``
changes on signals and control messages.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

from jobs import Broker
from jobs.cluster import DEFAULT_POOL
from jobs.limits import registered_limits
from supervisor.config import Config, PoolSpec, check_encryption
from supervisor.errors import ExitCode, HaltServer
from supervisor.integrations.endpoint import serve
from supervisor.integrations.metrics import LocalFigures
from supervisor.integrations.systemd import Notifier, unset_environment
from supervisor.runtime.child import Child, child_main
from supervisor.runtime.commands import Commands
from supervisor.runtime.connections import refuse_cluster, supervisor_client
from supervisor.runtime.cron import CronThread
from supervisor.runtime.duties import (
    Claim,
    Duties,
    Event,
    InFlight,
    Settlement,
    Uncounted,
    Unwritten,
)
from supervisor.runtime.holding import decode_held
from supervisor.runtime.plan import Plan
from supervisor.runtime.pool import ChildInfo, Pool, signal_group
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
from supervisor.runtime.scaling import autoscale_step
from supervisor.runtime.slots import BOOTED, POKE, ChildState, SlotView
from supervisor.runtime.wakeup import Wakeup

log = logging.getLogger(__name__)

HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTTIN,
           signal.SIGTTOU, signal.SIGUSR1, signal.SIGCHLD)
# Blocked around fork(): a child must not get one before it has its handlers.
FORK_BLOCKED = (*HANDLED, POKE)
SLOT_POLL = 0.2  # how often busy slots are read for new deadlines
# Forks per loop turn: between turns signals and control messages are read, so a newer
# target (a `scale` or SIGTTOU after a large `scale`) stops a scale-up at once.
SPAWN_BATCH = 4


class Arbiter:
    def __init__(self, config: Config, config_path: str | None, url: str,
                 embedded: Any = None, reopen_logs: Any = None) -> None:
        self.plan = Plan(config)  # a ConfigError before anything starts
        self.encryption = check_encryption(config)  # as is a bad key
        self.pool = Pool()
        self.url = url
        self.embedded = embedded
        self.wakeup = Wakeup()
        self.boot_failures = 0
        self.spawn_not_before = 0.0
        self.started = time.time()
        self.host = socket.gethostname()
        self.oom_baseline = oom_kills()
        self.notifier = Notifier()
        self.last_watchdog = 0.0
        self.last_title = 0.0
        broker = Broker(url, redis_settings=config.redis, defaults=config.defaults,
                        encryption=config.encryption,
                        client=supervisor_client(url, config.redis))
        self.figures = LocalFigures(self.pool.workers, self.pool.seconds,
                                    lambda: self.duties.reclaims)
        self.duties = Duties(broker, config.supervisor.lease_timeout, config.queues,
                             self.pool.claims, self._state, self.wakeup.control_arrived,
                             self.wakeup.cancel_arrived)
        self.duties.backlog_queues = list(config.worker.queues)
        self.duties.aging = (config.supervisor.aging_after, config.supervisor.aging_step)
        self.cron = CronThread(broker, config.schedules, enabled=config.scheduler.enabled)
        self.commands = Commands(self.plan, self.pool, self.wakeup, self.notifier, self.duties,
                                 self.cron, config_path, reopen_logs)

    def run(self) -> int:
        config = self.plan.config
        unset_environment()
        try:
            if self.encryption:
                log.info("%s", self.encryption)
            preload(config.worker.modules, config.worker.path)
            self.duties.set_limits({**registered_limits(), **config.limit_definitions()})
            self.duties.set_functions(loaded_functions(config.defaults))
            self.wakeup.install(HANDLED)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)  # any sent while booting: now
            Path(config.supervisor.data_dir).mkdir(parents=True, exist_ok=True)
            refuse_cluster(self.duties.broker)
            self.duties.start()
            self.cron.start()
            if config.metrics.address:
                try:
                    serve(config.metrics.address, self.duties.broker, self.figures,
                          lambda: self.plan.config.health, self.duties.ident,
                          lambda: self.plan.config.metrics.max_functions)
                except OSError as exc:
                    log.error("HTTP endpoint %s (metrics, health) not served: %s",
                              config.metrics.address, exc)
            log.info("supervisor %d starting %d workers %s; %s", os.getpid(),
                     self.plan.target, self.plan.where(), self.plan.limit.describe())
            while True:
                self._wait()
                self.commands.dispatch()
                self.cancel_running()
                self.reap()
                if self.plan.stopping and not self.pool:
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
            self.plan.stopping = True
            self.pool.kill_all(release=True)
            self._reap_all(timeout=5.0)
        finally:
            self._shutdown()
        return int(halt.code)

    def _reap_all(self, timeout: float) -> None:
        """Reap (and so account) every child before leaving; bounded by ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.pool and time.monotonic() < deadline:
            self.reap()
            self.wakeup.wait(0.05)

    def _shutdown(self) -> None:
        if not self.plan.stopping:
            self.notifier.stopping()
        self.cron.shutdown()
        self.duties.shutdown()

    # -- waiting ----------------------------------------------------------------------------

    def _next_timeout(self) -> float:
        now = time.monotonic()
        soonest = now + SLOT_POLL
        for info in self.pool:
            if info.kill_at:
                soonest = min(soonest, info.kill_at)
            if info.kill_reason is not None or info.release_on_kill:
                continue  # already being killed: its deadline is history
            view = self.pool.view(info)
            if view.state is ChildState.BUSY and view.deadline:
                soonest = min(soonest, view.deadline)
        if self.plan.stopping and self.plan.stop_deadline > now:
            soonest = min(soonest, self.plan.stop_deadline)
        if self.spawn_not_before > now:
            soonest = min(soonest, self.spawn_not_before)
        elif self._spawns_due():
            return 0.0  # the next batch of a scale-up: no waiting between batches
        return max(0.0, soonest - now)

    def _spawns_due(self) -> bool:
        plan = self.plan
        return not plan.stopping and plan.short_of(self.pool.running(plan.generation))

    def _wait(self) -> None:
        if not self.commands.pending():
            self.wakeup.wait(self._next_timeout())

    def cancel_running(self) -> None:
        """Kill the children running jobs someone canceled; the job then ends canceled."""
        cancels = self.wakeup.cancels
        while cancels:
            job_id, reason = cancels.popleft()
            for info in self.pool:
                view = self.pool.view(info)
                if view.state is ChildState.BUSY and view.job_id == job_id:
                    log.info("job %s canceled while running (%s): killing worker %d",
                             job_id, reason, info.pid)
                    self.pool.kill(info, canceled(view, reason, f"{self.host}:{info.pid}"),
                                   grace=info.spec.kill_grace)

    # -- children ------------------------------------------------------------------------

    def spawn(self, spec: PoolSpec) -> None:
        slot = self.pool.reserve_slot()
        self.pool.slots.hold(slot, spec.name in self.plan.paused)
        child = Child(self.plan.config, spec, self.pool.slots, slot, self.url)
        parent = os.getpid()
        old = signal.pthread_sigmask(signal.SIG_BLOCK, FORK_BLOCKED)
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
        self.pool.add(pid, slot, self.plan.generation, spec)
        log.info("worker %d started (slot %d, pool %s)", pid, slot, spec.name)
        self.duties.settle(Event({"e": "worker_started", "pid": pid, "host": self.host}))

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
            info = self.pool.remove(pid)
            if info is not None:
                self._account_exit(info, status, usage.ru_maxrss)

    def _account_exit(self, info: ChildInfo, status: int, maxrss_kib: int) -> None:
        view = self.pool.view(info)
        how = describe_exit(status, info.kill_reason is not None or info.release_on_kill,
                            self.oom_baseline)
        if "OOM-killed (cgroup" in how:
            self.oom_baseline = oom_kills()
        booted = view.state in BOOTED
        code = os.waitstatus_to_exitcode(status)
        if not booted and not self.plan.stopping and not info.retiring:
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
        self._settle_exit(info, view, how, maxrss_kib)
        self.duties.settle(Event({
            "e": "worker_killed" if killed else "worker_stopped", "pid": info.pid,
            "host": self.host, "reason": killed or how}))
        self.pool.slots.clear(info.slot)

    def _settle_exit(self, info: ChildInfo, view: SlotView, how: str, maxrss_kib: int) -> None:
        """What Redis must hear of the jobs a child that is gone had claimed."""
        held = decode_held(view.held)
        kept = {(h.job_id, h.token) for h in held if h.result is not None}
        # A job shown running whose success it kept (not written yet) is written below,
        # not charged a crash.
        if view.state is ChildState.BUSY and view.job_id and (
                (view.job_id, view.token) not in kept):
            claim = Claim(view.job_id, view.queue, view.token)
            if info.release_on_kill:
                self.duties.settle(Settlement(claim, None))
            else:
                error = info.kill_reason or crashed(view, how, maxrss_kib,
                                                    f"{self.host}:{info.pid}")
                self.duties.settle(Settlement(claim, error))
        for h in held:
            # A batch's jobs it had not started go back; its successes not yet written
            # are written now.
            claim = Claim(h.job_id, h.queue, h.token)
            if h.result is None:
                self.duties.settle(Settlement(claim, None))
            else:
                self.duties.settle(Unwritten(claim, h.result, h.result_ttl, h.duration,
                                             h.function))
        if view.next_token:
            # Killed with a claim in flight: the jobs it took but never showed go back.
            self.duties.settle(InFlight(view.next_token))
        if view.uncounted:  # counted completions it could not write before it died
            self.duties.settle(Uncounted(view.uncounted))

    def _boot_failed(self, info: ChildInfo, how: str) -> None:
        """A worker that ended before it was ready, whatever the cause (an import error,
        a signal, a crash), is one boot failure: each is logged as an error, and
        ``max_boot_failures`` in a row stop the supervisor instead of a respawn loop."""
        self.boot_failures += 1
        limit = self.plan.config.supervisor.max_boot_failures
        log.error("worker %d failed to boot (%s): failure %d of %d", info.pid, how,
                  self.boot_failures, limit)
        if self.boot_failures >= limit:
            raise HaltServer(f"{self.boot_failures} consecutive worker boot failures "
                             f"(the last {how})", ExitCode.BOOT_ERROR)
        self.spawn_not_before = time.monotonic() + min(0.1 * 2 ** self.boot_failures, 10.0)

    def murder(self) -> None:
        """Kill children past their hard deadline or silent past the heartbeat timeout."""
        now = time.monotonic()
        for info in self.pool:
            view = self.pool.view(info)
            if info.kill_at and now >= info.kill_at:
                signal_group(info.pid, signal.SIGKILL)
                info.kill_at = 0.0
            if info.kill_reason is not None or info.release_on_kill:
                continue
            worker = f"{self.host}:{info.pid}"
            overdue = view.deadline and now >= view.deadline
            if view.state is ChildState.BUSY and overdue:
                self.pool.kill(info, hard_timeout(view, now, worker), grace=info.spec.kill_grace)
            elif view.heartbeat and now - view.heartbeat > info.spec.heartbeat_timeout:
                self.pool.kill(info, heartbeat_lost(view, now, worker))
        if self.plan.stopping and now >= self.plan.stop_deadline:
            self.pool.kill_all(release=True)

    def manage(self) -> None:
        """Each pool toward its count; roll generations; retire the pools a reload removed."""
        plan = self.plan
        if plan.stopping:
            return
        live = [c for c in self.pool if not c.retiring]
        for c in live:
            if c.spec.name not in plan.pools:
                self.pool.retire(c, f"its pool {c.spec.name!r} was removed")
        budget = SPAWN_BATCH if time.monotonic() >= self.spawn_not_before else 0
        booted_new = 0
        for name, spec in plan.pools.items():
            members = [c for c in live if c.spec.name == name]
            budget, up = self._manage_pool(spec, plan.targets[name], members, budget)
            booted_new += up
        if not plan.ready and booted_new >= min(plan.target, 1):
            plan.ready = True
            self.notifier.ready(self._status())
            if plan.config_version == 1:
                log.info("supervisor ready: %d workers", booted_new)

    def _manage_pool(self, spec: PoolSpec, target: int, members: list[ChildInfo],
                     budget: int) -> tuple[int, int]:
        """One pool toward ``target``, forking at most ``budget`` children; returns the
        budget left and how many of the current generation are up."""
        generation = self.plan.generation
        current = [c for c in members if c.generation == generation]
        old = sorted((c for c in members if c.generation != generation), key=lambda c: c.age)
        booted_new = [c for c in current if self.pool.booted(c)]
        # Rolling restart: retire one old child for each new child that is up.
        for c in old[: max(0, len(booted_new) + len(old) - target)]:
            self.pool.retire(c, "replaced after reload")
        if len(current) < target:
            forks = min(budget, target - len(current))
            for _ in range(forks):
                self.spawn(spec)
            budget -= forks
        elif len(current) > target:
            # Idle workers go first, oldest first among them.
            order = sorted(current, key=lambda c: (self.pool.busy(c), c.age))
            for c in order[: len(current) - target]:
                self.pool.retire(c, "pool shrinks")
        return budget, len(booted_new)

    # -- reporting -------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        """The registry entry (published on the duties thread)."""
        plan = self.plan
        return {"host": self.host, "pid": os.getpid(), "started": self.started,
                "config_version": plan.config_version, "queues": plan.config.queues,
                "target": plan.target, "max_workers": plan.limit.workers,
                "max_workers_from": plan.limit.origin,
                "max_workers_configured": plan.limit.configured,
                "pools": plan.published(self.pool.running()), "workers": self.pool.workers()}

    def _status(self) -> str:
        return self.pool.status(self.plan.config.queues)

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
        if self.plan.config.autoscale:
            self._autoscale(now)

    def _autoscale(self, now: float) -> None:
        """The default pool between min_workers and what max_workers leaves the others."""
        plan, s = self.plan, self.plan.config.supervisor
        views = [self.pool.view(c) for c in self.pool.of(DEFAULT_POOL) if not c.retiring]
        idle_for = [now - v.idle_since for v in views
                    if v.state is ChildState.IDLE and v.idle_since]
        high = max(s.min_workers, min(s.max_workers, plan.room(DEFAULT_POOL)))
        plan.targets[DEFAULT_POOL], why = autoscale_step(
            plan.targets[DEFAULT_POOL], s.min_workers, high, self.duties.backlog, idle_for,
            s.idle_timeout)
        if why:
            log.info("autoscale: %s", why)
