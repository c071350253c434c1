"""What the supervisor does for each signal and control message (gunicorn's handlers).

A mixin of ``Arbiter``: the loop calls ``_dispatch`` after each wait; handlers change
the desired state (target size, stopping, generation) and ``manage`` acts on it.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from jobs.cluster import Control, Reload, Scale
from jobs.limits import registered_limits
from supervisor.config import Config, load_config
from supervisor.errors import ConfigError, HaltServer
from supervisor.integrations.systemd import Notifier
from supervisor.runtime.cron import CronThread
from supervisor.runtime.duties import Duties
from supervisor.runtime.preload import loaded_functions, preload
from supervisor.runtime.scaling import PoolLimit, pool_limit

log = logging.getLogger("supervisor.runtime.arbiter")


class Commands:
    # Provided by Arbiter.
    config: Config
    config_path: str | None
    limit: PoolLimit
    target: int
    stopping: bool
    stop_deadline: float
    generation: int
    config_version: int
    ready: bool
    children: dict[int, Any]
    controls: deque[Control]
    signals: deque[int]
    notifier: Notifier
    duties: Duties
    cron: CronThread
    reopen_logs: Callable[[], None] | None

    def _signal(self, pid: int, sig: int) -> None:
        raise NotImplementedError

    def _kill_all(self, release: bool) -> None:
        raise NotImplementedError

    def _status(self) -> str:
        raise NotImplementedError

    def _dispatch(self) -> None:
        while self.controls:
            message = self.controls.popleft()
            if isinstance(message, Scale):
                self.handle_scale(message.workers)
            elif isinstance(message, Reload):
                log.info("control message: reload")
                self.handle_hup()
        while self.signals:
            signum = self.signals.popleft()
            name = signal.Signals(signum).name
            if signum != signal.SIGCHLD:
                log.info("got %s", name)
            getattr(self, f"handle_{name[3:].lower()}")()

    def handle_scale(self, workers: int) -> None:
        """A ``jobvisor scale`` request; the CLI checks the maximum too, this is the last word."""
        if not 1 <= workers <= self.limit.workers:
            log.warning("control message: scale to %d workers refused: %s", workers,
                        "at least 1 is needed" if workers < 1 else self.limit.describe())
            return
        log.info("control message: scale to %d workers (was %d)", workers, self.target)
        self.target = workers

    def handle_chld(self) -> None:
        pass  # reap() runs every loop

    def handle_term(self) -> None:
        if self.stopping:
            log.warning("second stop signal: fast stop")
            self.handle_quit()
            return
        s = self.config.supervisor
        self.stopping = True
        self.stop_deadline = time.monotonic() + s.graceful_timeout
        self.notifier.stopping()
        log.info("graceful stop: waiting up to %.0f s for running jobs", s.graceful_timeout)
        for pid in self.children:
            self._signal(pid, signal.SIGTERM)

    handle_int = handle_term

    def handle_quit(self) -> None:
        self.stopping = True
        self.stop_deadline = time.monotonic()
        self._kill_all(release=True)

    def handle_hup(self) -> None:
        self.notifier.reloading()
        try:
            new = load_config(self.config_path)
            limit = pool_limit(new.supervisor)
            preload(new.worker.modules, new.worker.path, reload=True)
        except (ConfigError, HaltServer) as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            self.notifier.ready(self._status())
            return
        dropped = {name: None for name in self.config.limit_definitions()}
        self.config = new
        self.config_version += 1
        if limit != self.limit:
            log.info("now %s", limit.describe())
        self.limit = limit
        if new.autoscale:  # keep the running size, within the new bounds
            s = new.supervisor
            self.target = max(s.min_workers, min(self.target, s.max_workers))
        else:
            self.target = new.pool_size(limit.workers)
        self.duties.queues = list(new.worker.queues)
        self.duties.aging = (new.supervisor.aging_after, new.supervisor.aging_step)
        self.duties.set_limits({**dropped, **registered_limits(), **new.limit_definitions()})
        self.duties.set_functions(loaded_functions(new.defaults))
        self.cron.update(new.schedules)
        self.generation += 1
        log.info("reloaded configuration (version %d): rolling restart of %d workers",
                 self.config_version, self.target)
        self.ready = False  # READY=1 again once the new generation is up (manage)

    def handle_ttin(self) -> None:
        if self.target >= self.limit.workers:
            log.warning("SIGTTIN: staying at %d workers, the maximum (%s)", self.target,
                        self.limit.origin)
            return
        self.target += 1
        log.info("SIGTTIN: %d workers wanted", self.target)

    def handle_ttou(self) -> None:
        self.target = max(self.target - 1, max(1, self.config.supervisor.min_workers))
        log.info("SIGTTOU: %d workers wanted", self.target)

    def handle_usr1(self) -> None:
        if self.reopen_logs:
            self.reopen_logs()

