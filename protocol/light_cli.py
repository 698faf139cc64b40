"""``sez-light``: verify receipt bundles offline. Depends on ``protocol`` only (design §11)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .errors import SezError
from .keys import VerifierKey
from .light import verify_receipt_bundle

__all__ = ["main"]

_MAX_BUNDLE_FILE = 1024 * 1024


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sez-light``; exit 0 on a verified bundle, 1 with the reason on any failure."""
    parser = argparse.ArgumentParser(
        prog="sez-light", description="offline verification of sez proof bundles"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("verify", help="verify a receipt bundle (c2sp.org/tlog-proof@v1 with the receipt)")
    p.add_argument("bundle", help="bundle file, or - for stdin")
    p.add_argument("--log-key", required=True, help="the log's C2SP verifier key (name+keyid+key)")
    args = parser.parse_args(argv)
    try:
        log_key = VerifierKey.from_vkey(args.log_key)
        if args.bundle == "-":
            data = sys.stdin.buffer.read(_MAX_BUNDLE_FILE + 1)
        else:
            with open(args.bundle, "rb") as handle:
                data = handle.read(_MAX_BUNDLE_FILE + 1)
        verdict = verify_receipt_bundle(data, log_key)
    except SezError as exc:
        print(f"REJECTED: {exc.reason}: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"REJECTED: io: {exc}", file=sys.stderr)
        return 1
    for check in verdict.checks:
        print(f"ok  {check}")
    receipt = verdict.receipt.receipt
    print(
        f"VERIFIED: receipt {receipt.origin}#{receipt.sequence} ({receipt.kind}) is in the log "
        f"at tree size {verdict.checkpoint.size}, root {verdict.checkpoint.root.hex()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
