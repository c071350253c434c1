"""``jobvisor functions``: the job functions the configured modules register, with the
options each runs with."""

from __future__ import annotations

import argparse
from typing import Any

import msgspec

from jobs.effective import FunctionOptions
from supervisor.cli.common import backoff_text, load, output
from supervisor.runtime.preload import loaded_functions, preload


def function_rows(functions: dict[str, FunctionOptions]) -> list[dict[str, Any]]:
    """The user's functions: jobvisor's own (``jobs.hooks:on_failure``) are left out."""
    return [{"name": name, **msgspec.to_builtins(functions[name])} for name in sorted(functions)
            if not name.startswith("jobs.")]


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:g}s"


def _block(r: dict[str, Any]) -> str:
    lines = [r["name"],
             f"  queue         {r['queue']} (priority {r['priority']})",
             f"  timeout       {_seconds(r['timeout'])} (soft {_seconds(r['soft_timeout'])})",
             f"  max_attempts  {r['max_attempts']}",
             f"  backoff       {backoff_text(r['backoff'])}"]
    optional = (("retry_on", ", ".join(r["retry_on"])),
                ("dont_retry_on", ", ".join(r["dont_retry_on"])),
                ("rate_limit", r["rate_limit"]), ("max_concurrency", r["max_concurrency"]),
                ("unique_for", r["unique_for"] and _seconds(r["unique_for"])),
                ("on_dead", r["on_dead"]), ("should_queue", r["should_queue"]),
                ("encrypt", r["encrypt"] and "yes: arguments, result and errors"))
    lines += [f"  {key:13} {value}" for key, value in optional if value]
    lines.append(f"  result_ttl    {_seconds(r['result_ttl'])}")
    return "\n".join(lines)


def _text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no @job functions in [worker].modules"
    return "\n\n".join(_block(r) for r in rows)


def cmd_functions(args: argparse.Namespace) -> int:
    """Import ``[worker].modules`` as a supervisor does (an import error exits 3) and
    list what they register; no Redis needed."""
    config, _ = load(args)
    preload(config.worker.modules, config.worker.path)
    output(args, function_rows(loaded_functions(config.defaults)), _text)
    return 0
