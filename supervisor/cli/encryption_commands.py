"""``jobvisor encryption``: make a key, and re-encrypt stored jobs under the active one."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import msgspec

from jobs.encryption.keyring import new_key
from jobs.encryption.rotation import rotate
from jobs.store.keys import check_name
from supervisor.cli.common import connect, output
from supervisor.errors import ExitCode

if TYPE_CHECKING:
    Commands: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]
    Command: TypeAlias = Callable[[Commands, str, str], argparse.ArgumentParser]


def add_parsers(sub: Commands, command: Command) -> None:
    p = command(sub, "encryption", "payload encryption: make a key (keygen), re-encrypt "
                "stored jobs under the active key (rotate)")
    p.add_argument("action", choices=["keygen", "rotate"],
                   help="keygen: print a new key as id:base64; rotate: re-encrypt every "
                        "stored job under the active (first) key")
    p.add_argument("--id", dest="key_id", metavar="ID",
                   help="keygen: the key's id (default: its fingerprint)")
    p.add_argument("--queue", action="append", metavar="NAME", dest="queues",
                   help="rotate: only this queue (repeat for several; default: all)")
    p.add_argument("--dry-run", action="store_true",
                   help="rotate: count what would be re-encrypted, change nothing")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_encryption)


def cmd_encryption(args: argparse.Namespace) -> int:
    if args.action == "keygen":
        entry = new_key(args.key_id)
        print(json.dumps({"key": entry}) if args.json else entry)
        if not args.json and sys.stdout.isatty():
            print("put it first in JOBVISOR_ENCRYPTION_KEYS (comma-separated) or on the "
                  "first line of [encryption] key_file (chmod 600), on every host",
                  file=sys.stderr)
        return 0
    queues = [check_name("queue", q) for q in args.queues] if args.queues else None
    report = rotate(connect(args), queues, dry_run=args.dry_run)
    output(args, {**msgspec.to_builtins(report), "done": report.done}, _text)
    return int(ExitCode.ERROR) if report.unreadable else 0


def _text(d: dict[str, Any]) -> str:
    verb = "would re-encrypt" if d["dry_run"] else "re-encrypted"
    found = ", ".join(f"{k}: {n}" for k, n in sorted(d["payloads_by_key"].items())) or "none"
    lines = [f"active key      {d['active']}",
             f"jobs scanned    {d['scanned']}",
             f"{verb:15} {d['rewritten']} job(s)",
             f"already current {d['current']} job(s)",
             f"sealed values   {found} (by key, before this run)"]
    if d["changed"]:
        lines.append(f"changed meanwhile {d['changed']} job(s), left as they were: run again")
    if d["unreadable"]:
        lines.append(f"unreadable      {d['unreadable']} job(s): keep the keys they need")
        lines += [f"  {p}" for p in d["problems"]]
    if d["done"]:
        lines.append("every stored job is under the active key: older keys may be removed")
    return "\n".join(lines)

