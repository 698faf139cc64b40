"""``sez-node run``: load the configuration, set up structured logs, run the daemon."""

from __future__ import annotations

import argparse
from typing import Any

from .config import load_config
from .logs import configure_logging

__all__ = ["add_run_command"]


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon in the foreground until SIGINT or SIGTERM."""
    from .daemon import main_run  # noqa: PLC0415 - libp2p takes 2 s to import: only for this command

    config = load_config(args.config)
    configure_logging(args.log_level or config.log_level)
    return main_run(config)


def add_run_command(sub: Any) -> None:
    """Register ``run`` on the ``sez-node`` subparsers."""
    p = sub.add_parser("run", help="run the node daemon in the foreground (SIGINT/SIGTERM stop it cleanly)")
    p.add_argument("--config", required=True, help="node.toml written by `sez-node init`")
    p.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="override node.log_level"
    )
    p.set_defaults(func=cmd_run)
