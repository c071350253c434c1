"""``jobvisor dashboard``: serve the web dashboard; ``dashboard passwd``: add a user."""

from __future__ import annotations

import argparse
import getpass
import sys

from jobs.errors import ConfigurationError
from supervisor.cli.common import load
from supervisor.integrations.logs import configure


def cmd_dashboard(args: argparse.Namespace) -> int:
    if args.action == "passwd":
        return _passwd(args)
    from supervisor.web.serve import serve

    configure("INFO", "text", None)
    config, _ = load(args)
    serve(config, args.bind)
    return 0


def _passwd(args: argparse.Namespace) -> int:
    """Print a users-file line for NAME; the secret is asked for, or made with --generate."""
    from supervisor.web.accounts import Role, hash_secret, new_secret

    if not args.name or ":" in args.name:
        raise ConfigurationError("dashboard passwd needs a NAME without ':'")
    if args.generate:
        secret = new_secret()
        print(f"secret for {args.name} (shown once; a script sends "
              f"'Authorization: Bearer {args.name}:<secret>'):\n{secret}", file=sys.stderr)
    elif sys.stdin.isatty():
        secret = getpass.getpass(f"password for {args.name}: ")
        if secret != getpass.getpass("again: "):
            raise ConfigurationError("the two passwords differ: nothing written")
    else:
        secret = sys.stdin.readline().rstrip("\n")
    if len(secret) < 8:
        raise ConfigurationError("use a password of at least 8 characters")
    print(f"{args.name}:{Role(args.role).value}:{hash_secret(secret)}")
    return 0
