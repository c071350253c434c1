"""Autoscaling decisions as a pure function, so the rules are easy to read and test."""

from __future__ import annotations


def autoscale_step(target: int, low: int, high: int, backlog: int, idle_for: list[float],
                   idle_timeout: float) -> tuple[int, str]:
    """The next target and why ("" when unchanged).

    Grow by one while jobs wait and no worker is idle; shrink by one when a worker has
    been idle longer than ``idle_timeout``; always stay within ``low..high``.
    """
    if target < low:
        return low, f"below min_workers: growing to {low}"
    if target > high:
        return high, f"above max_workers: shrinking to {high}"
    if backlog > 0 and not idle_for and target < high:
        return target + 1, f"{backlog} jobs waiting and no idle worker: growing to {target + 1}"
    if backlog == 0 and target > low and any(t > idle_timeout for t in idle_for):
        return target - 1, (f"a worker idle for over {idle_timeout:g} s: "
                            f"shrinking to {target - 1}")
    return target, ""
