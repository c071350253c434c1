"""What the supervisor does for each signal and control message (gunicorn's handlers).

The loop calls ``dispatch`` after each wait. A handler changes the plan (target size,
stopping, generation) and ``Arbiter.manage`` moves the pool toward it; a stop also
signals the children at once.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable

from jobs.cluster import DEFAULT_POOL, PausePool, Reload, Scale
from jobs.limits import registered_limits
from supervisor.config import check_encryption, load_config
from supervisor.errors import ConfigError, HaltServer
from supervisor.integrations.systemd import Notifier
from supervisor.runtime.cron import CronThread
from supervisor.runtime.duties import Duties
from supervisor.runtime.plan import Plan
from supervisor.runtime.pool import Pool
from supervisor.runtime.preload import loaded_functions, preload
from supervisor.runtime.wakeup import Wakeup

log = logging.getLogger("supervisor.runtime.arbiter")  # the loop's log lines, one name


class Commands:
    def __init__(self, plan: Plan, pool: Pool, wakeup: Wakeup, notifier: Notifier,
                 duties: Duties, cron: CronThread, config_path: str | None,
                 reopen_logs: Callable[[], None] | None) -> None:
        self.plan = plan
        self.pool = pool
        self.wakeup = wakeup  # signals and control messages arrive there
        self.notifier = notifier
        self.duties = duties
        self.cron = cron
        self.config_path = config_path  # re-read on SIGHUP
        self.reopen_logs = reopen_logs

    def pending(self) -> bool:
        return bool(self.wakeup.signals or self.wakeup.controls)

    def dispatch(self) -> None:
        controls, signals = self.wakeup.controls, self.wakeup.signals
        while controls:
            message = controls.popleft()
            if isinstance(message, Scale):
                self.handle_scale(message.workers, message.pool or DEFAULT_POOL)
            elif isinstance(message, PausePool):
                self.handle_pause_pool(message.pool, message.paused)
            elif isinstance(message, Reload):
                log.info("control message: reload")
                self.handle_hup()
        while signals:
            signum = signals.popleft()
            name = signal.Signals(signum).name
            if signum != signal.SIGCHLD:
                log.info("got %s", name)
            getattr(self, f"handle_{name[3:].lower()}")()

    def handle_scale(self, workers: int, pool: str = DEFAULT_POOL) -> None:
        """A ``jobvisor scale`` request; the CLI checks the maximum too, this is the last word."""
        plan = self.plan
        named = "" if pool == DEFAULT_POOL else f" in pool {pool}"
        refusal = self._scale_refusal(workers, pool)
        if refusal:
            log.warning("control message: scale to %d workers%s refused: %s", workers, named,
                        refusal)
            return
        log.info("control message: scale to %d workers%s (was %d)", workers, named,
                 plan.targets[pool])
        plan.targets[pool] = workers

    def _scale_refusal(self, workers: int, pool: str) -> str:
        """Why ``pool`` cannot run ``workers`` workers ("" when it can)."""
        plan = self.plan
        if pool not in plan.pools:
            return f"no pool {pool!r} (pools: {', '.join(plan.pools) or 'none'})"
        least = plan.least(pool)
        if workers < least:
            return f"at least {least} is needed"
        room = plan.room(pool)
        if workers > room:
            others = plan.limit.workers - room
            return plan.limit.describe() + (f", and the other pools want {others}"
                                             if others else "")
        return ""

    def handle_pause_pool(self, pool: str, paused: bool) -> None:
        """Pause a pool (its workers stay up and claim nothing) or resume it."""
        plan = self.plan
        verb = "pause" if paused else "resume"
        if pool not in plan.pools:
            log.warning("control message: %s pool %s refused: no such pool (pools: %s)", verb,
                        pool, ", ".join(plan.pools) or "none")
            return
        log.info("control message: %s pool %s", verb, pool)
        if paused:
            plan.paused.add(pool)
        else:
            plan.paused.discard(pool)
        self.pool.hold(pool, paused)

    def handle_chld(self) -> None:
        pass  # reap() runs every loop

    def handle_term(self) -> None:
        plan = self.plan
        if plan.stopping:
            log.warning("second stop signal: fast stop")
            self.handle_quit()
            return
        s = plan.config.supervisor
        plan.stopping = True
        plan.stop_deadline = time.monotonic() + s.graceful_timeout
        self.notifier.stopping()
        log.info("graceful stop: waiting up to %.0f s for running jobs", s.graceful_timeout)
        self.pool.terminate_all()

    handle_int = handle_term

    def handle_quit(self) -> None:
        self.plan.stopping = True
        self.plan.stop_deadline = time.monotonic()
        self.pool.kill_all(release=True)

    def handle_hup(self) -> None:
        plan = self.plan
        self.notifier.reloading()
        try:
            new = load_config(self.config_path)
            keys = check_encryption(new)
            limit = new.limit()
            preload(new.worker.modules, new.worker.path, reload=True)
        except (ConfigError, HaltServer) as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            self.notifier.ready(self.pool.status(plan.config.queues))
            return
        dropped = {name: None for name in plan.config.limit_definitions()}
        if limit != plan.limit:
            log.info("now %s", limit.describe())
        plan.adopt(new, limit)
        # New workers read the keys afresh; the supervisor's own enqueues (cron, hooks) too.
        self.duties.broker.sealer.adopt(new.encryption)
        if keys:
            log.info("%s", keys)
        self.duties.queues = new.queues
        self.duties.backlog_queues = list(new.worker.queues)
        self.duties.aging = (new.supervisor.aging_after, new.supervisor.aging_step)
        self.duties.set_limits({**dropped, **registered_limits(), **new.limit_definitions()})
        self.duties.set_functions(loaded_functions(new.defaults))
        self.cron.update(new.schedules, new.scheduler.enabled)
        log.info("reloaded configuration (version %d): rolling restart of %d workers",
                 plan.config_version, plan.target)

    def _default_pool(self, name: str) -> bool:
        """Whether there is a default pool for ``name`` (a signal) to scale."""
        if DEFAULT_POOL in self.plan.pools:
            return True
        log.warning("%s: no default pool to scale ([worker] queues is empty): use `jobvisor "
                    "scale --pool NAME N`", name)
        return False

    def handle_ttin(self) -> None:
        """One worker more in the default pool; ``[[pools]]`` are scaled by name."""
        plan = self.plan
        if not self._default_pool("SIGTTIN"):
            return
        if plan.targets[DEFAULT_POOL] >= plan.room(DEFAULT_POOL):
            log.warning("SIGTTIN: staying at %d workers, the maximum (%s)", plan.target,
                        plan.limit.origin)
            return
        plan.targets[DEFAULT_POOL] += 1
        log.info("SIGTTIN: %d workers wanted%s", plan.targets[DEFAULT_POOL], self._in_default())

    def handle_ttou(self) -> None:
        plan = self.plan
        if not self._default_pool("SIGTTOU"):
            return
        least = max(plan.least(DEFAULT_POOL), plan.config.supervisor.min_workers)
        plan.targets[DEFAULT_POOL] = max(plan.targets[DEFAULT_POOL] - 1, least)
        log.info("SIGTTOU: %d workers wanted%s", plan.targets[DEFAULT_POOL], self._in_default())

    def _in_default(self) -> str:
        return " in the default pool" if len(self.plan.pools) > 1 else ""

    def handle_usr1(self) -> None:
        if self.reopen_logs:
            self.reopen_logs()
