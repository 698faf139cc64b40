"""``sez-node log …``, ``keygen`` and ``fsck``: log tools on a data directory, no daemon needed."""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from protocol.checkpoints import Checkpoint, open_checkpoint, sign_checkpoint
from protocol.errors import LocalProtocolError, PeerProtocolError
from protocol.jcs import loads_strict
from protocol.keys import SigningKey
from protocol.notes import format_note
from protocol.receipts import KNOWN_KINDS, Receipt, build_receipt, genesis_root, verify_receipt
from protocol.tlog_proof import TlogProof
from store import LogStore, StoreError
from store.fsck import fsck

from .keyfile import load_signing_key, write_secret_file

__all__ = ["add_log_commands", "non_negative"]

MAX_LINE_BYTES = 64 * 1024
"""One transition line; receipts are capped at 64 KiB too."""
MAX_BATCH = 100_000
"""Transitions per ``log append`` call: one write transaction, bounded memory."""


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _print_json(value: Any) -> None:
    print(json.dumps(value, sort_keys=True))


def _open_store(data_dir: str, *, readonly: bool) -> LogStore:
    path = Path(data_dir)
    if not path.is_dir():
        raise LocalProtocolError("no-data-dir", f"data directory {path} does not exist")
    return LogStore(path, readonly=readonly)


def cmd_keygen(args: argparse.Namespace) -> int:
    """Write a new signing key (0600) and print its name, did:key and C2SP verifier key."""
    key = SigningKey.generate(args.name)
    write_secret_file(args.out, key.to_private_line() + "\n")
    verifier = key.verifier()
    _print_json({"name": key.name, "did": verifier.did, "vkey": verifier.to_vkey()})
    return 0


def _read_transitions(source: TextIO, name: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Parse JSON lines ``{"kind", "payload"}`` into (where, kind, payload); any bad line refuses the file.

    ``where`` is ``FILE:LINE`` with the physical line number, so every later error names the same line.
    """
    transitions: list[tuple[str, str, dict[str, Any]]] = []
    for number, line in enumerate(source, start=1):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        try:
            item = loads_strict(line.encode("utf-8", "surrogateescape"), max_bytes=MAX_LINE_BYTES)
        except PeerProtocolError as exc:
            raise LocalProtocolError(exc.reason, f"{where}: {exc.message}") from exc
        if not isinstance(item, dict) or set(item) != {"kind", "payload"}:
            raise LocalProtocolError(
                "bad-line", f'{where}: each line must be {{"kind": …, "payload": {{…}}}}'
            )
        kind, payload = item["kind"], item["payload"]
        if not isinstance(kind, str) or kind not in KNOWN_KINDS:
            raise LocalProtocolError("unknown-kind", f"{where}: unknown transition kind {kind!r}")
        if not isinstance(payload, dict):
            raise LocalProtocolError("bad-line", f"{where}: payload must be a JSON object")
        transitions.append((where, kind, payload))
        if len(transitions) > MAX_BATCH:
            raise LocalProtocolError("too-many", f"{where}: more than {MAX_BATCH} transitions in one batch")
    if not transitions:
        raise LocalProtocolError("empty", f"{name} holds no transitions")
    return transitions


def cmd_log_append(args: argparse.Namespace) -> int:
    """Append the transitions of FILE as signed receipts in one durable batch, with a signed checkpoint."""
    key = load_signing_key(args.key)
    if key.name != args.origin:
        raise LocalProtocolError(
            "key-mismatch", f"key {args.key} is named {key.name!r}, not the origin {args.origin!r}"
        )
    if args.file == "-":
        # Decode stdin ourselves: the locale's codec would turn a bad byte into a traceback.
        stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="surrogateescape")
        transitions = _read_transitions(stdin, "<stdin>")
    else:
        try:
            with open(args.file, encoding="utf-8", errors="surrogateescape") as handle:
                transitions = _read_transitions(handle, args.file)
        except FileNotFoundError as exc:
            raise LocalProtocolError("no-file", f"transition file {args.file} does not exist") from exc
    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        raise LocalProtocolError("no-data-dir", f"data directory {data_dir} does not exist")
    verifier = key.verifier()
    with LogStore(data_dir) as store:
        # Build and check every receipt before anything is written, the origin's registration
        # included: a refused first append must not bind the origin to a corridor.
        try:
            head = store.head(args.origin)
            prev, seq = head.last_next_root, head.size
        except StoreError as exc:
            if exc.reason != "unknown-origin":
                raise
            prev, seq = genesis_root(args.corridor, args.origin), 0
        timestamp = _utc_now()
        batch = []
        for where, kind, payload in transitions:
            try:
                receipt = build_receipt(
                    key=key,
                    corridor_id=args.corridor,
                    sequence=seq,
                    timestamp=timestamp,
                    prev_root=prev,
                    kind=kind,
                    payload=payload,
                )
            except PeerProtocolError as exc:
                raise LocalProtocolError(exc.reason, f"{where}: {exc.message}") from exc
            batch.append(verify_receipt(receipt, verifier))
            prev, seq = receipt.next_root, seq + 1

        def sign(cp: Checkpoint) -> bytes:
            return format_note(sign_checkpoint(cp, key))

        store.register_origin(args.origin, args.corridor, verifier)
        result = store.append(args.origin, batch, sign=sign)
    _print_json(
        {
            "origin": args.origin,
            "size": result.head.size,
            "root": result.head.root.hex(),
            "final_state_root": result.head.last_next_root.hex(),
        }
    )
    return 0


def cmd_log_checkpoint(args: argparse.Namespace) -> int:
    """Print the signed checkpoint note (latest, or the one at --size)."""
    with _open_store(args.data_dir, readonly=True) as store:
        sys.stdout.write(store.checkpoint(args.origin, args.size).decode())
    return 0


def cmd_log_proof(args: argparse.Namespace) -> int:
    """Print the c2sp.org/tlog-proof@v1 bundle of receipt --index (the receipt rides in ``extra``)."""
    with _open_store(args.data_dir, readonly=True) as store:
        note = store.checkpoint(args.origin, args.size)
        if args.size is None:
            size = open_checkpoint(note, store.origin(args.origin).key)[0].size
        else:
            size = args.size
        if not 0 <= args.index < size:
            raise StoreError("bad-index", f"index {args.index} is outside 0..{size - 1} of the checkpoint")
        raw = store.receipt(args.origin, args.index)
        path = store.inclusion_proof(args.origin, args.index, size)
    bundle = TlogProof(index=args.index, proof=tuple(path), checkpoint=note, extra=raw)
    sys.stdout.write(bundle.encode().decode())
    return 0


def cmd_log_receipt(args: argparse.Namespace) -> int:
    """Print receipt --index as canonical JSON."""
    with _open_store(args.data_dir, readonly=True) as store:
        raw = store.receipt(args.origin, args.index)
    Receipt.from_bytes(raw)  # a stored receipt that no longer parses is corruption: say so
    sys.stdout.write(raw.decode() + "\n")
    return 0


def cmd_log_consistency(args: argparse.Namespace) -> int:
    """Print the RFC 6962 consistency proof from --old to --new, one base64 hash per line."""
    with _open_store(args.data_dir, readonly=True) as store:
        proof = store.consistency_proof(args.origin, args.old, args.new)
    for node in proof:
        print(base64.b64encode(node).decode())
    return 0


def cmd_fsck(args: argparse.Namespace) -> int:
    """Verify every log in the data directory; exit 0 only if all verify."""
    with _open_store(args.data_dir, readonly=True) as store:
        report = fsck(store)
    for log in report.logs:
        status = "ok" if log.ok else "FAILED"
        print(
            f"{status}: {log.origin} ({log.corridor_id}): {log.receipts_checked}/{log.size} receipts "
            f"(chain, digests, signatures), {log.nodes_checked} MMR nodes, "
            f"{log.checkpoints_checked} checkpoints, root {log.root}"
        )
        for problem in log.problems:
            print(f"  - {problem}")
    if not report.logs:
        print(f"ok: {args.data_dir} holds no logs")
    return 0 if report.ok else 1


def non_negative(text: str) -> int:
    """argparse type: a non-negative integer (sizes, indices)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def add_log_commands(sub: Any) -> None:
    """Register ``keygen``, ``log …`` and ``fsck`` on the ``sez-node`` subparser set ``sub``."""
    p = sub.add_parser("keygen", help="create an Ed25519 signing key (file mode 0600)")
    p.add_argument("--name", required=True, help="key name: the log's origin, or a watcher's name")
    p.add_argument("--out", required=True, help="key file to create (refuses to overwrite)")
    p.set_defaults(func=cmd_keygen)

    log = sub.add_parser("log", help="work on a log in a data directory (no daemon needed)")
    logsub = log.add_subparsers(dest="log_command", required=True, metavar="COMMAND")

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data-dir", required=True, help="LMDB data directory")
        parser.add_argument("--origin", required=True, help="log origin, e.g. sez.gov.pk/corridor/PAK-KSA")

    p = logsub.add_parser("append", help="append transitions (JSON lines) as one signed batch")
    common(p)
    p.add_argument("--corridor", required=True, help="corridor id, e.g. PAK-KSA")
    p.add_argument("--key", required=True, help="the origin's signing key file")
    p.add_argument("file", help='JSON lines {"kind": …, "payload": {…}}, or - for stdin')
    p.set_defaults(func=cmd_log_append)

    p = logsub.add_parser("checkpoint", help="print a signed checkpoint")
    common(p)
    p.add_argument("--size", type=non_negative, help="the checkpoint signed at this size (default: latest)")
    p.set_defaults(func=cmd_log_checkpoint)

    p = logsub.add_parser("proof", help="print a c2sp.org/tlog-proof@v1 bundle for one receipt")
    common(p)
    p.add_argument("--index", type=non_negative, required=True)
    p.add_argument("--size", type=non_negative, help="checkpoint size to prove against (default: latest)")
    p.set_defaults(func=cmd_log_proof)

    p = logsub.add_parser("receipt", help="print one receipt as canonical JSON")
    common(p)
    p.add_argument("--index", type=non_negative, required=True)
    p.set_defaults(func=cmd_log_receipt)

    p = logsub.add_parser("consistency", help="print an RFC 6962 consistency proof")
    common(p)
    p.add_argument("--old", type=non_negative, required=True)
    p.add_argument("--new", type=non_negative, required=True)
    p.set_defaults(func=cmd_log_consistency)

    p = sub.add_parser("fsck", help="verify every log in a data directory")
    p.add_argument("--data-dir", required=True)
    p.set_defaults(func=cmd_fsck)
