"""``sez-watcher``: the watcher daemon's command line.

Commands::

    sez-watcher init --name NAME --out DIR [--listen MULTIADDR] [--http HOST:PORT]
    sez-watcher follow --config F --corridor C --origin O --vkey V --peer ADDR [--peer ADDR ...]
    sez-watcher run --config F
    sez-watcher bond --config F --corridor C --amount A --currency USD --collateral-ref R
    sez-watcher unbond --config F --corridor C
    sez-watcher protection export --config F --out FILE
    sez-watcher protection import --config F FILE

``bond`` and ``unbond`` print one JSON line ``{"kind": "watcher.bond" | "watcher.unbond", "payload": …}``:
the request signed with the watcher's key (timestamp now, UTC), ready for a corridor party's
``sez-node submit --config NODE --corridor C -``.

Every failure the operator can cause ends in one line ``sez-watcher: <reason>: <message>`` on
stderr and exit status 1; usage errors exit 2. Tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from node.keyfile import write_secret_file
from node.logs import configure_logging
from node.p2p import load_or_create_identity, peer_id_of
from node.writer import LogWriter, utc_timestamp
from protocol.errors import LocalProtocolError, SezError
from protocol.stake import BOND_REQUEST, UNBOND_REQUEST, sign_request
from store import LogStore

from .config import add_followed_log, load_config, write_initial_config
from .daemon import main_run
from .protection import Protection

__all__ = ["build_parser", "main"]

DEFAULT_LISTEN = "/ip4/0.0.0.0/tcp/4101"
DEFAULT_HTTP = "127.0.0.1:8101"


def _init(args: argparse.Namespace) -> int:
    out = Path(args.out)
    config_path = write_initial_config(out, args.name, args.listen, args.http)
    identity = load_or_create_identity(out / "identity.key")
    config = load_config(config_path)
    print(
        json.dumps(
            {
                "name": config.name,
                "vkey": config.cosigner_key().to_vkey(),
                "peer_id": peer_id_of(identity),
                "listen": config.listen,
                "http": f"{config.http_host}:{config.http_port}",
                "config": str(config_path),
            }
        )
    )
    return 0


def _follow(args: argparse.Namespace) -> int:
    config = add_followed_log(
        args.config, corridor=args.corridor, origin=args.origin, vkey=args.vkey, peers=list(args.peer)
    )
    print(json.dumps({"config": str(config.path), "logs": [entry.origin for entry in config.logs]}))
    return 0


def _run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    configure_logging(config.log_level)
    return main_run(config)


def _bond(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    request = {
        "type": BOND_REQUEST,
        "watcher": config.cosigner_key().to_vkey(),
        "amount": args.amount,
        "currency": args.currency,
        "corridors": [args.corridor],
        "collateral_ref": args.collateral_ref,
        "timestamp": utc_timestamp(),
    }
    payload = sign_request(request, config.signing_key())
    LogWriter.check_transition("watcher.bond", payload)  # a bad amount fails here
    print(json.dumps({"kind": "watcher.bond", "payload": payload}))
    return 0


def _unbond(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    request = {
        "type": UNBOND_REQUEST,
        "watcher": config.cosigner_key().to_vkey(),
        "corridors": [args.corridor],
        "timestamp": utc_timestamp(),
    }
    payload = sign_request(request, config.signing_key())
    LogWriter.check_transition("watcher.unbond", payload)  # a bad amount fails here
    print(json.dumps({"kind": "watcher.unbond", "payload": payload}))
    return 0


def _export(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    with LogStore(config.data_dir) as store:
        document = Protection(store).export(config.cosigner_key(), [e.origin for e in config.logs])
    write_secret_file(args.out, json.dumps(document, indent=2, sort_keys=True) + "\n")
    print(json.dumps({"out": str(args.out), "logs": sorted(document["logs"])}))
    return 0


def _import(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    try:
        document = json.loads(Path(args.file).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LocalProtocolError("bad-protection-file", f"{args.file} is not JSON: {exc}") from exc
    with LogStore(config.data_dir) as store:
        moved = Protection(store).import_(document, config.cosigner_key(), config.log_keys)
    print(json.dumps({"imported": moved}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``sez-watcher`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="sez-watcher", description="sez watcher: cosign corridor logs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = sub.add_parser("init", help="create a watcher directory (keys, watcher.toml)")
    init.add_argument("--name", required=True, help="the watcher's cosigner key name, e.g. watcher1.example")
    init.add_argument("--out", required=True, help="directory to create")
    init.add_argument("--listen", default=DEFAULT_LISTEN, help=f"libp2p multiaddr (default {DEFAULT_LISTEN})")
    init.add_argument("--http", default=DEFAULT_HTTP, help=f"HTTP host:port (default {DEFAULT_HTTP})")
    init.set_defaults(func=_init)

    follow = sub.add_parser("follow", help="add a log to follow ([[logs]] entry)")
    follow.add_argument("--config", required=True)
    follow.add_argument("--corridor", required=True, help="corridor id, e.g. PAK-KSA")
    follow.add_argument("--origin", required=True, help="the log's origin")
    follow.add_argument("--vkey", required=True, help="the log's C2SP verifier key (type 0x01)")
    follow.add_argument("--peer", required=True, action="append", help="node multiaddr with /p2p/<id>")
    follow.set_defaults(func=_follow)

    run = sub.add_parser("run", help="run the watcher daemon")
    run.add_argument("--config", required=True)
    run.set_defaults(func=_run)

    bond = sub.add_parser("bond", help="print a signed watcher.bond request for sez-node submit")
    bond.add_argument("--config", required=True)
    bond.add_argument("--corridor", required=True, help="corridor id, e.g. PAK-KSA")
    bond.add_argument("--amount", required=True, help="stake, integer minor units")
    bond.add_argument("--currency", required=True, help="the corridor's stake currency, e.g. USD")
    bond.add_argument("--collateral-ref", required=True, help="reference of the collateral held by the party")
    bond.set_defaults(func=_bond)

    unbond = sub.add_parser("unbond", help="print a signed watcher.unbond request for sez-node submit")
    unbond.add_argument("--config", required=True)
    unbond.add_argument("--corridor", required=True, help="corridor id, e.g. PAK-KSA")
    unbond.set_defaults(func=_unbond)

    protection = sub.add_parser("protection", help="export or import the slashing-protection records")
    psub = protection.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = psub.add_parser("export", help="write the records as sez.watcher.protection/v1 JSON")
    export.add_argument("--config", required=True)
    export.add_argument("--out", required=True)
    export.set_defaults(func=_export)
    imp = psub.add_parser("import", help="import records; refuses any older than the ones held")
    imp.add_argument("--config", required=True)
    imp.add_argument("file")
    imp.set_defaults(func=_import)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sez-watcher`` with ``argv`` (default: the process arguments) and return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        status: int = args.func(args)
    except SezError as exc:
        print(f"sez-watcher: {exc.reason}: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"sez-watcher: io: {exc}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
