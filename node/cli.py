"""``sez-node``: the command-line entry point.

Every failure the user can cause (bad input, missing files, wrong keys) ends in
one line ``sez-node: <reason>: <message>`` on stderr and exit status 1; usage
errors exit 2. Tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from protocol.errors import SezError

from .client_cli import add_client_commands
from .devnet import add_devnet_command
from .lifecycle_cli import add_lifecycle_commands
from .log_cli import add_log_commands
from .policy_cli import add_policy_commands
from .run_cli import add_run_command
from .settle_cli import add_settle_commands

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``sez-node`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="sez-node", description="sez corridor node and log tools")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_log_commands(sub)
    add_client_commands(sub)
    add_lifecycle_commands(sub)
    add_policy_commands(sub)
    add_run_command(sub)
    add_devnet_command(sub)
    add_settle_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sez-node`` with ``argv`` (default: the process arguments) and return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.func(args)
    except SezError as exc:
        print(f"sez-node: {exc.reason}: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"sez-node: io: {exc}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
