"""Turn a chaos report (``$JOBVISOR_CHAOS_REPORT``, one JSON line per scenario) into the
README's reliability table::

    JOBVISOR_CHAOS_REPORT=soak.jsonl python3 -m pytest -n 0 tests/chaos --duration 600
    python3 -m tests.chaos.table soak.jsonl
"""

from __future__ import annotations

import json
import sys
from typing import Any

HEADER = ("| scenario | jobs run | executions | faults injected | lost | duplicates (cause) "
          "| recovery |\n|---|---|---|---|---|---|---|")


def row(line: dict[str, Any]) -> str:
    causes = ", ".join(f"{n} {k}" for k, n in sorted(line.get("causes", {}).items()))
    dups = f"{line['duplicates']} ({causes})" if causes else str(line["duplicates"])
    rec = line.get("recovery_s")
    recovery = "-" if rec is None else f"{rec:g} s"
    return (f"| {line['scenario']} | {line['jobs']:,} | {line['executions']:,} | "
            f"{line.get('faults', 0):,} x {line.get('fault', '')} | {line['lost']} | {dups} | "
            f"{recovery} |")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1]) as source:
        lines = [json.loads(text) for text in source if text.strip()]
    print(HEADER)
    for line in lines:
        print(row(line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
