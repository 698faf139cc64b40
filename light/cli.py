"""``sez-light``: verify receipt bundles, and follow a node's checkpoints (design §11).

``sez-light verify BUNDLE --policy POLICY [--receipt RECEIPT] [--rpc URL] [--json]`` verifies a bundle
under a corridor trust policy (JSON or C2SP tlog-policy, as ``sez-node policy export`` writes it) with
:func:`protocol.light.verify_bundle`, prints each check and a verdict, and exits 0 when verified, 1 with
``REJECTED: <reason>: <message>`` on stderr otherwise. ``--log-key VKEY`` instead of ``--policy``
checks the bundle against the log's key alone (no cosignature quorum: not a finality check).
With ``--rpc URL`` the bundle must carry an anchor record (``sez-node proof --anchor``), which is then
verified on the chain itself (``light.chain``): transaction, calldata, block, ``--confirmations``.

``sez-light follow --node URL --policy POLICY [--state DIR] [--evidence DIR] [--interval S] [--once |
--polls N] [--origin O]`` keeps the last verified checkpoint per origin on disk, demands a consistency
proof for every newer one, and on an inconsistency writes an evidence file and exits 3 (``light.follow``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from protocol.errors import SezError
from protocol.keys import VerifierKey
from protocol.light import verify_bundle, verify_receipt_bundle
from protocol.policy import MAX_POLICY_BYTES, TrustPolicy, parse_policy

from .chain import bundle_anchor, verify_on_chain
from .follow import EXIT_ERROR, NodeClient, follow

__all__ = ["main"]

_MAX_BUNDLE_FILE = 1024 * 1024
_MAX_RECEIPT_FILE = 1024 * 1024


def _read(name: str, limit: int) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read(limit + 1)
    with open(name, "rb") as handle:
        return handle.read(limit + 1)


def _load_policy(name: str) -> TrustPolicy:
    return parse_policy(_read(name, MAX_POLICY_BYTES))


def _reject(reason: str, message: str) -> int:
    print(f"REJECTED: {reason}: {message}", file=sys.stderr)
    return 1


def _verify_anchor(args: argparse.Namespace, data: bytes, policy: TrustPolicy) -> int:
    """The ``--rpc`` step, after the bundle verified: its anchor, on the chain."""
    try:
        record = bundle_anchor(data)
        if record is None:
            return _reject(
                "no-anchor", "the bundle carries no anchor record (ask the node for an anchored bundle)"
            )
        log_key = next((entry.key for entry in policy.logs if entry.origin == record.origin), None)
        verdict = verify_on_chain(record, args.rpc, confirmations=args.confirmations, log_key=log_key)
    except SezError as exc:
        print(f"FAIL anchor on chain: {exc.message}")
        return _reject(exc.reason, exc.message)
    for check in verdict.checks:
        print(f"ok   anchor on chain: {check}")
    print(
        f"ANCHORED: checkpoint of size {verdict.checkpoint.size} in block {verdict.block_number} "
        f"({verdict.block_hash}), {verdict.confirmations} confirmations"
    )
    return 0


def _verify(args: argparse.Namespace) -> int:
    if args.rpc is not None and args.policy is None:
        return _reject("usage", "--rpc needs --policy (the anchored checkpoint's log key comes from it)")
    try:
        data = _read(args.bundle, _MAX_BUNDLE_FILE)
        if args.log_key is not None:
            verdict = verify_receipt_bundle(data, VerifierKey.from_vkey(args.log_key))
            for passed in verdict.checks:
                print(f"ok  {passed}")
            receipt = verdict.receipt.receipt
            print("--  cosignature quorum: not checked (no --policy)")
            print(
                f"VERIFIED: receipt {receipt.origin}#{receipt.sequence} ({receipt.kind}) is in the log "
                f"at tree size {verdict.checkpoint.size}, root {verdict.checkpoint.root.hex()}"
            )
            return 0
        policy = _load_policy(args.policy)
        receipt_bytes = None if args.receipt is None else _read(args.receipt, _MAX_RECEIPT_FILE)
    except SezError as exc:
        return _reject(exc.reason, exc.message)
    except OSError as exc:
        return _reject("io", str(exc))
    report = verify_bundle(data, policy, receipt=receipt_bytes)
    if args.json:
        print(
            json.dumps(
                {
                    "verified": report.verified,
                    "reason": report.reason,
                    "message": report.message,
                    "checks": [
                        {"name": c.name, "ok": c.ok, "reason": c.reason, "detail": c.detail}
                        for c in report.checks
                    ],
                },
                sort_keys=True,
            )
        )
    else:
        for check in report.checks:
            mark = "ok  " if check.ok else ("FAIL" if check.reason else "--  ")
            print(f"{mark} {check.name}: {check.detail}")
    if report.verified:
        print(report.message)
        return _verify_anchor(args, data, policy) if args.rpc is not None else 0
    print(report.message, file=sys.stderr)
    return 1


def _follow(args: argparse.Namespace) -> int:
    try:
        policy = _load_policy(args.policy)
        client = NodeClient(args.node)
    except SezError as exc:
        return _reject(exc.reason, exc.message)
    except OSError as exc:
        return _reject("io", str(exc))
    origins = [entry.origin for entry in policy.logs]
    if args.origin is not None:
        if args.origin not in origins:
            return _reject(
                "unknown-origin", f"the policy has no log {args.origin!r} (it has {', '.join(origins)})"
            )
        origins = [args.origin]
    if args.interval <= 0:
        return _reject("bad-interval", "--interval must be positive")
    state_dir = Path(args.state)
    evidence_dir = Path(args.evidence) if args.evidence else state_dir / "evidence"

    def out(line: str) -> None:
        print(line, flush=True)

    def err(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    polls = 1 if args.once else args.polls
    try:
        return follow(
            client,
            policy,
            origins,
            state_dir=state_dir,
            evidence_dir=evidence_dir,
            interval=args.interval,
            polls=polls,
            out=out,
            err=err,
        )
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        err(f"error: io: {exc}")
        return EXIT_ERROR


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sez-light``; see the module docstring for the exit statuses."""
    parser = argparse.ArgumentParser(
        prog="sez-light", description="sez light client: proof bundles and checkpoints"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "verify",
        help="verify a receipt bundle under a corridor trust policy",
        description="Verify a receipt bundle (c2sp.org/tlog-proof@v1 with the receipt): the receipt's "
        "next_root and signature, the inclusion path, the log signature, and the cosignature quorum under "
        "the policy. Exit 0 when verified, 1 with the reason otherwise.",
    )
    p.add_argument("bundle", help="bundle file, or - for stdin")
    trust = p.add_mutually_exclusive_group(required=True)
    trust.add_argument("--policy", metavar="POLICY", help="trust policy file (JSON or C2SP tlog-policy)")
    trust.add_argument("--log-key", metavar="VKEY", help="the log's verifier key only (no quorum check)")
    p.add_argument("--receipt", metavar="RECEIPT", help="the receipt given separately; must be the bundle's")
    p.add_argument(
        "--rpc", metavar="URL", help="verify the bundle's anchor on the chain behind this JSON-RPC URL"
    )
    p.add_argument(
        "--confirmations",
        type=int,
        default=6,
        metavar="N",
        help="blocks that make an anchor final (default 6)",
    )
    p.add_argument("--json", action="store_true", help="print the checks as one JSON object")
    p.set_defaults(func=_verify)
    p = sub.add_parser(
        "follow",
        help="follow a node's checkpoints; alarm on any inconsistency",
        description="Keep the last verified checkpoint per origin in --state, demand a consistency proof for "
        "every newer one, and on an inconsistency write an evidence file and exit 3. Errors (unreachable "
        "node, bad answers) exit 1 after the last poll.",
    )
    p.add_argument(
        "--node", required=True, metavar="URL", help="the node's HTTP API, e.g. http://127.0.0.1:8101"
    )
    p.add_argument(
        "--policy", required=True, metavar="POLICY", help="trust policy file (JSON or tlog-policy)"
    )
    p.add_argument(
        "--state", default="sez-light-state", metavar="DIR", help="state folder (default ./sez-light-state)"
    )
    p.add_argument("--evidence", metavar="DIR", help="where evidence files go (default STATE/evidence)")
    p.add_argument("--origin", metavar="ORIGIN", help="follow this log only (default: both of the policy)")
    p.add_argument(
        "--interval", type=float, default=5.0, metavar="S", help="seconds between polls (default 5)"
    )
    when = p.add_mutually_exclusive_group()
    when.add_argument("--once", action="store_true", help="poll once and exit")
    when.add_argument(
        "--polls", type=_positive, metavar="N", help="poll N times and exit (default: until Ctrl-C)"
    )
    p.set_defaults(func=_follow)
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
