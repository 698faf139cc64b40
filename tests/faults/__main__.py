"""``python -m tests.faults report [options]``: run the fault scenarios, print the figures (see README.md)."""

from __future__ import annotations

import argparse
import sys

from tests.faults.report import add_report_command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_report_command(subparsers)
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
